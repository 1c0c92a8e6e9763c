#!/usr/bin/python3
"""Self-test of the oracle scripts (make_model.py, oracle.py, compare.py, make_hf_checkpoint.py, hf_oracle.py).

Usage:
  selftest.py [--keep DIR]

Needs nothing but /usr/bin/python3 with numpy and h5py; does not touch the C++
program. Exit 0 if every check passes, 1 otherwise. With --keep DIR the
generated models and oracle files are left in DIR (otherwise a temp dir is
removed).

Checks:
  * make_model.py writes every SPEC path with the right dtype and shape, and the
    same seed gives identical files;
  * oracle.py gives finite float32 logits, int32 tokens, tokens that vary, and
    bit-identical output when run twice;
  * oracle.py agrees (within compare.py's tolerance) with a second, scalar-loop
    float64 implementation written here, on tiny llama and mixtral models; this
    catches indexing/reshape slips in the vectorised oracle;
  * unit checks: quantize rounds half to even and handles zero vectors, the
    float64 integer matmul equals an int64 one, mixtral top-k ties go to the
    lower expert index;
  * compare.py passes a file against itself and a sub-tolerance perturbation,
    fails (exit 1) on a large logit change, a token change, a prompt change and
    a shape change, and exits 2 on a missing file or dataset;
  * format 2: make_model.py writes it, oracle.py agrees with the scalar
    implementation on it and refuses a version-1 file with version-2 attributes;
  * Hugging Face checkpoints (hf_checks): bf16 rounding, the safetensors format
    and reader, rotate-half vs interleaved RoPE, llama3 bands, MoE routing, row
    quantization; for 14 checkpoints (every family, bf16/f16/f32, sharded or
    not, tied or not) every tensor reads back exactly, and oracle.py on a
    conversion written here from SPEC "Importing checkpoints" (convert_hf) is
    bit-identical to hf_oracle.py on the checkpoint; the same conversion with an
    injected import bug fails compare.py; the scalar implementation agrees with
    oracle.py on tiny conversions of six families.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
sys.dont_write_bytecode = True  # keep tests/oracle free of __pycache__
sys.path.insert(0, HERE)
import compare as compare_module  # noqa: E402
import hf_oracle  # noqa: E402
import make_hf_checkpoint as mk  # noqa: E402
import oracle  # noqa: E402

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def run(args):
    """Run one of the scripts; return (exit code, stdout+stderr)."""
    r = subprocess.run([PY] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return r.returncode, r.stdout


def make_model(path, *extra):
    rc, out = run([os.path.join(HERE, "make_model.py"), path] + list(extra))
    if rc != 0:
        print(out)
    return rc


def run_oracle(model, prompt, n_tokens, out):
    rc, text = run([os.path.join(HERE, "oracle.py"), model, "--prompt", prompt,
                    "--tokens", str(n_tokens), "--out", out])
    if rc != 0:
        print(text)
    return rc


def compare(a, b):
    rc, text = run([os.path.join(HERE, "compare.py"), a, b])
    return rc, text


def compare_inproc(a, b):
    """compare.py's rule without a new process (the HF checks compare many files)."""
    failures, _ = compare_module.compare(a, b)
    return (1 if failures else 0), "\n".join(failures)


def read_result(path):
    with h5py.File(path, "r") as f:
        return f["prompt"][...], f["tokens"][...], f["logits"][...]


def write_result(path, prompt, tokens, logits):
    with h5py.File(path, "w") as f:
        f.create_dataset("prompt", data=prompt)
        f.create_dataset("tokens", data=tokens)
        f.create_dataset("logits", data=logits)


# --------------------------------------------------------------------------
# Second implementation: scalar Python loops, float64, from SPEC again.
# --------------------------------------------------------------------------

def slow_generate(path, prompt, n_tokens):
    with h5py.File(path, "r") as f:
        at = f.attrs
        arch = oracle.attr_str(at["architecture"])
        V, D = int(at["vocab_size"]), int(at["hidden_size"])
        L, H, Hkv = int(at["n_layers"]), int(at["n_heads"]), int(at["n_kv_heads"])
        theta, eps = float(at["rope_theta"]), float(at["norm_eps"])
        # Format 2 (each attribute optional, SPEC's default otherwise).
        hd = int(at["head_dim"]) if "head_dim" in at else D // H
        bias = int(at.get("attention_bias", 0))
        qk_norm = int(at.get("qk_norm", 0))
        tied = int(at.get("tie_word_embeddings", 0))
        norm_topk = int(at.get("norm_topk_prob", 1))
        llama3 = None
        if "rope_scaling_type" in at and oracle.attr_str(at["rope_scaling_type"]) == "llama3":
            llama3 = (float(at["rope_scaling_factor"]), float(at["rope_low_freq_factor"]),
                      float(at["rope_high_freq_factor"]), float(at["rope_original_max_position"]))
        moe = arch in ("mixtral", "qwen3_moe")
        k_top = int(at["n_experts_per_token"]) if moe else 0

        def mat(p):
            return f[p + "/weight"][...].tolist(), f[p + "/scale"][...].tolist()

        def vec(p):
            return f[p][...].tolist()

        emb_w, emb_s = mat("/embedding")
        layers = []
        for i in range(L):
            b = "/layers/%d" % i
            lay = {n: mat(b + "/" + n) for n in ("wq", "wk", "wv", "wo")}
            lay["attn_norm"], lay["ffn_norm"] = vec(b + "/attn_norm"), vec(b + "/ffn_norm")
            if bias:
                lay["bias"] = {n: vec(b + "/" + n + "/bias") for n in ("wq", "wk", "wv")}
            if qk_norm:
                lay["q_norm"], lay["k_norm"] = vec(b + "/q_norm"), vec(b + "/k_norm")
            if not moe:
                lay["ffn"] = {n: mat(b + "/" + n) for n in ("w_gate", "w_up", "w_down")}
            else:
                lay["router"] = f[b + "/router"][...].tolist()
                n_exp = len(lay["router"])
                lay["experts"] = [{n: mat("%s/experts/%d/%s" % (b, e, n)) for n in ("w_gate", "w_up", "w_down")}
                                  for e in range(n_exp)]
            layers.append(lay)
        final_norm = vec("/final_norm")
        lm_head = (emb_w, emb_s) if tied else mat("/lm_head")

    def freq(i):
        f0 = theta ** (-2 * i / hd)
        if llama3 is None:
            return f0
        factor, low, high, orig = llama3
        wl = 2 * math.pi / f0
        if wl < orig / high:
            return f0
        if wl > orig / low:
            return f0 / factor
        s = (orig / wl - low) / (high - low)
        return (1 - s) * f0 / factor + s * f0

    def linear(m, v):
        w, sc = m
        a = max(abs(t) for t in v)
        if a == 0:
            s, q = 1.0, [0] * len(v)
        else:
            s = a / 127
            q = [max(-127, min(127, round(t / s))) for t in v]  # Python round(): half to even
        return [sum(wr[j] * q[j] for j in range(len(q))) * s * sc[r] for r, wr in enumerate(w)]

    def rmsnorm(x, g):
        inv = 1 / math.sqrt(sum(t * t for t in x) / len(x) + eps)
        return [x[i] * inv * g[i] for i in range(len(x))]

    def rope(x, n_heads, pos):
        out = list(x)
        for h in range(n_heads):
            for i in range(hd // 2):
                ang = pos * freq(i)
                a0, a1 = x[h * hd + 2 * i], x[h * hd + 2 * i + 1]
                out[h * hd + 2 * i] = a0 * math.cos(ang) - a1 * math.sin(ang)
                out[h * hd + 2 * i + 1] = a0 * math.sin(ang) + a1 * math.cos(ang)
        return out

    def ffn(w, h):
        g, u = linear(w["w_gate"], h), linear(w["w_up"], h)
        return linear(w["w_down"], [g[i] / (1 + math.exp(-g[i])) * u[i] for i in range(len(g))])

    kc = [[] for _ in range(L)]
    vc = [[] for _ in range(L)]

    def step(tok, pos):
        x = [emb_w[tok][i] * emb_s[tok] for i in range(D)]
        for li, lay in enumerate(layers):
            h = rmsnorm(x, lay["attn_norm"])
            q, k, v = linear(lay["wq"], h), linear(lay["wk"], h), linear(lay["wv"], h)
            if bias:
                q = [a + b for a, b in zip(q, lay["bias"]["wq"])]
                k = [a + b for a, b in zip(k, lay["bias"]["wk"])]
                v = [a + b for a, b in zip(v, lay["bias"]["wv"])]
            if qk_norm:
                q = sum((rmsnorm(q[hh * hd:(hh + 1) * hd], lay["q_norm"]) for hh in range(H)), [])
                k = sum((rmsnorm(k[hh * hd:(hh + 1) * hd], lay["k_norm"]) for hh in range(Hkv)), [])
            q = rope(q, H, pos)
            k = rope(k, Hkv, pos)
            kc[li].append(k)
            vc[li].append(v)
            att = []
            for hh in range(H):
                g = hh // (H // Hkv)
                sc = [sum(q[hh * hd + d] * kc[li][j][g * hd + d] for d in range(hd)) / math.sqrt(hd)
                      for j in range(pos + 1)]
                mx = max(sc)
                e = [math.exp(t - mx) for t in sc]
                z = sum(e)
                for d in range(hd):
                    att.append(sum(e[j] / z * vc[li][j][g * hd + d] for j in range(pos + 1)))
            o = linear(lay["wo"], att)
            x = [x[i] + o[i] for i in range(D)]
            h = rmsnorm(x, lay["ffn_norm"])
            if not moe:
                o = ffn(lay["ffn"], h)
            else:
                r = [sum(row[i] * h[i] for i in range(D)) for row in lay["router"]]
                chosen = sorted(range(len(r)), key=lambda e: (-r[e], e))[:k_top]
                mx = max(r)  # the top logit, chosen in either case
                z = sum(math.exp(r[e] - mx) for e in (chosen if norm_topk else range(len(r))))
                o = [0.0] * D
                for e in sorted(chosen):
                    w = math.exp(r[e] - mx) / z
                    y = ffn(lay["experts"][e], h)
                    o = [o[i] + w * y[i] for i in range(D)]
            x = [x[i] + o[i] for i in range(D)]
        return linear(lm_head, rmsnorm(x, final_norm))

    pos = 0
    for t in prompt:
        logits = step(t, pos)
        pos += 1
    toks, all_logits = [], []
    while True:
        nxt = max(range(V), key=lambda j: (logits[j], -j))
        toks.append(nxt)
        all_logits.append(logits)
        if len(toks) == n_tokens:
            break
        logits = step(nxt, pos)
        pos += 1
    return np.array(toks, dtype=np.int32), np.array(all_logits, dtype=np.float32)


# --------------------------------------------------------------------------

def check_model_layout(path, V, D, F, L, H, Hkv, E=0):
    hd = D // H
    want = {"/embedding/weight": ((V, D), np.int8), "/embedding/scale": ((V,), np.float32),
            "/final_norm": ((D,), np.float32),
            "/lm_head/weight": ((V, D), np.int8), "/lm_head/scale": ((V,), np.float32)}
    ffn = {"w_gate": (F, D), "w_up": (F, D), "w_down": (D, F)}
    for i in range(L):
        b = "/layers/%d/" % i
        want[b + "attn_norm"] = ((D,), np.float32)
        want[b + "ffn_norm"] = ((D,), np.float32)
        for n, shp in (("wq", (H * hd, D)), ("wk", (Hkv * hd, D)), ("wv", (Hkv * hd, D)), ("wo", (D, H * hd))):
            want[b + n + "/weight"] = (shp, np.int8)
            want[b + n + "/scale"] = ((shp[0],), np.float32)
        prefixes = [b] if E == 0 else [b + "experts/%d/" % e for e in range(E)]
        if E:
            want[b + "router"] = ((E, D), np.float32)
        for pre in prefixes:
            for n, shp in ffn.items():
                want[pre + n + "/weight"] = (shp, np.int8)
                want[pre + n + "/scale"] = ((shp[0],), np.float32)
    ok = True
    with h5py.File(path, "r") as f:
        for p, (shp, dt) in want.items():
            if p not in f or f[p].shape != shp or f[p].dtype != dt:
                print("   layout: %s missing or wrong (%s)" % (p, (f[p].shape, f[p].dtype) if p in f else "absent"))
                ok = False
        w = f["/embedding/weight"][...]
        ok = ok and int(w.min()) >= -127
        attrs = {"format", "format_version", "architecture", "vocab_size", "hidden_size", "intermediate_size",
                 "n_layers", "n_heads", "n_kv_heads", "max_seq_len", "rope_theta", "norm_eps"}
        if E:
            attrs |= {"n_experts", "n_experts_per_token"}
        missing = attrs - set(f.attrs.keys())
        if missing:
            print("   layout: missing attributes %s" % sorted(missing))
            ok = False
    return ok


def same_file_contents(a, b):
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        if names_a != names_b or dict(fa.attrs).keys() != dict(fb.attrs).keys():
            return False
        for n in names_a:
            if isinstance(fa[n], h5py.Dataset) and not np.array_equal(fa[n][...], fb[n][...]):
                return False
    return True


def unit_checks():
    F32 = np.float32
    # max 127 gives s = 1 exactly, so v / s hits the halves exactly.
    vals = np.array([127, 0.5, 1.5, -2.5, 2.5, -127], dtype=np.float32)
    q, s = oracle.quantize(vals)
    check(s == F32(1) and q.tolist() == [127, 0, 2, -2, 2, -127], "quantize rounds half to even (%s)" % q.tolist())
    q, s = oracle.quantize(np.zeros(5, dtype=np.float32))
    check(s == F32(1) and not q.any(), "quantize of zeros: scale 1, all zeros")

    rng = np.random.default_rng(5)
    w = rng.integers(-127, 127, size=(64, 4096), dtype=np.int8, endpoint=True)
    w[0, :] = 127
    qv = rng.integers(-127, 127, size=4096, dtype=np.int8, endpoint=True)
    qv[:] = np.where(np.arange(4096) % 2 == 0, 127, qv)
    exact = w.astype(np.int64) @ qv.astype(np.int64)
    check(np.array_equal(oracle.int_matvec(w.astype(np.float64), qv), exact), "float64 integer matmul is exact")

    # Experts 1, 2, 3 tie on the router logit; k = 2 must pick 1 and 2.
    lay = {"router": np.zeros((4, 3), dtype=np.float32),
           "experts": []}
    lay["router"][:, 0] = [1.0, 2.0, 2.0, 2.0]
    picked = []
    orig = oracle.ffn
    oracle.ffn = lambda w, h: (picked.append(w), np.zeros(3, dtype=np.float32))[1]
    lay["experts"] = [0, 1, 2, 3]
    oracle.moe_ffn(lay, np.array([1, 0, 0], dtype=np.float32), 2)
    oracle.ffn = orig
    check(picked == [1, 2], "mixtral top-k ties go to the lower index (picked %s)" % picked)


# --------------------------------------------------------------------------
# Hugging Face checkpoints: an independent converter to lpurt format 2
# --------------------------------------------------------------------------

def spec_permutation(hd):
    """SPEC "Importing checkpoints": HF row r < hd/2 of a head goes to 2r, row r >= hd/2 to 2(r - hd/2) + 1."""
    return np.array([2 * r if r < hd // 2 else 2 * (r - hd // 2) + 1 for r in range(hd)])


def quantize_rows(w):
    """SPEC quantize per output row, vectorised: (int8 [out, in], float32 scale [out])."""
    F32 = np.float32
    w = w.astype(np.float32)
    a = np.max(np.abs(w), axis=1)
    s = np.where(a == 0, F32(1), a / F32(127)).astype(np.float32)
    q = np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8)
    return q, s


def convert_hf(hf_dir, out_path, bug=None):
    """HF checkpoint -> lpurt model file, format 2, written from SPEC alone.

    bug injects one import mistake, to show that the HF-vs-converted comparison catches it:
    "no_permutation", "unpermuted_vectors" (q/k rows permuted but not their bias or norm gains),
    "no_rope_scaling", "flip_norm_topk", "swap_up_gate".
    """
    with open(os.path.join(hf_dir, "config.json")) as f:
        c = json.load(f)
    t = hf_oracle.read_checkpoint_tensors(hf_dir)
    mt = c["model_type"]
    D, H, Hkv, L = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    hd = c.get("head_dim") or D // H
    perm = np.arange(hd) if bug == "no_permutation" else spec_permutation(hd)
    vec_perm = np.arange(hd) if bug in ("no_permutation", "unpermuted_vectors") else perm

    def permute_heads(x, n_heads, p):
        """Rows of each head: HF row r -> file row p[r] (x: [n_heads*hd] or [n_heads*hd, in])."""
        xh = x.reshape((n_heads, hd) + x.shape[1:])
        out = np.empty_like(xh)
        out[:, p] = xh
        return out.reshape(x.shape)

    with h5py.File(out_path, "w") as f:
        def matrix(path, w):
            q, s = quantize_rows(w)
            f.create_dataset(path + "/weight", data=q)
            f.create_dataset(path + "/scale", data=s)

        def vector(path, v):
            f.create_dataset(path, data=v.astype(np.float32))

        at = f.attrs
        at["format"] = "lpurt-model"
        at["format_version"] = np.int64(2)
        at["architecture"] = mt
        for name, key in (("vocab_size", "vocab_size"), ("hidden_size", "hidden_size"),
                          ("intermediate_size", "intermediate_size"), ("n_layers", "num_hidden_layers"),
                          ("n_heads", "num_attention_heads"), ("n_kv_heads", "num_key_value_heads"),
                          ("max_seq_len", "max_position_embeddings")):
            at[name] = np.int64(c[key])
        at["rope_theta"] = np.float64(c["rope_theta"])
        at["norm_eps"] = np.float64(c["rms_norm_eps"])
        if "head_dim" in c:
            at["head_dim"] = np.int64(hd)
        bias = mt == "qwen2"
        qk_norm = mt in ("qwen3", "qwen3_moe")
        tied = bool(c["tie_word_embeddings"])
        at["attention_bias"] = np.int64(bias)
        at["qk_norm"] = np.int64(qk_norm)
        at["tie_word_embeddings"] = np.int64(tied)
        rs = c.get("rope_scaling")
        if rs and bug != "no_rope_scaling":
            at["rope_scaling_type"] = "llama3"
            at["rope_scaling_factor"] = np.float64(rs["factor"])
            at["rope_low_freq_factor"] = np.float64(rs["low_freq_factor"])
            at["rope_high_freq_factor"] = np.float64(rs["high_freq_factor"])
            at["rope_original_max_position"] = np.int64(rs["original_max_position_embeddings"])
        if mt == "mixtral":
            at["n_experts"], at["n_experts_per_token"] = np.int64(c["num_local_experts"]), np.int64(c["num_experts_per_tok"])
        if mt == "qwen3_moe":
            at["n_experts"], at["n_experts_per_token"] = np.int64(c["num_experts"]), np.int64(c["num_experts_per_tok"])
            at["moe_intermediate_size"] = np.int64(c["moe_intermediate_size"])
            at["norm_topk_prob"] = np.int64(bool(c["norm_topk_prob"]) != (bug == "flip_norm_topk"))

        matrix("/embedding", t["model.embed_tokens.weight"])
        for i in range(L):
            p, b = "model.layers.%d." % i, "/layers/%d/" % i
            vector(b + "attn_norm", t[p + "input_layernorm.weight"])
            vector(b + "ffn_norm", t[p + "post_attention_layernorm.weight"])
            matrix(b + "wq", permute_heads(t[p + "self_attn.q_proj.weight"], H, perm))
            matrix(b + "wk", permute_heads(t[p + "self_attn.k_proj.weight"], Hkv, perm))
            matrix(b + "wv", t[p + "self_attn.v_proj.weight"])
            matrix(b + "wo", t[p + "self_attn.o_proj.weight"])
            if bias:
                vector(b + "wq/bias", permute_heads(t[p + "self_attn.q_proj.bias"], H, vec_perm))
                vector(b + "wk/bias", permute_heads(t[p + "self_attn.k_proj.bias"], Hkv, vec_perm))
                vector(b + "wv/bias", t[p + "self_attn.v_proj.bias"])
            if qk_norm:
                vector(b + "q_norm", permute_heads(t[p + "self_attn.q_norm.weight"], 1, vec_perm))
                vector(b + "k_norm", permute_heads(t[p + "self_attn.k_norm.weight"], 1, vec_perm))
            up, gate = ("w_gate", "w_up") if bug == "swap_up_gate" else ("w_up", "w_gate")
            if mt == "mixtral":
                vector(b + "router", t[p + "block_sparse_moe.gate.weight"])
                for e in range(c["num_local_experts"]):
                    x = p + "block_sparse_moe.experts.%d." % e
                    matrix(b + "experts/%d/%s" % (e, gate), t[x + "w1.weight"])
                    matrix(b + "experts/%d/w_down" % e, t[x + "w2.weight"])
                    matrix(b + "experts/%d/%s" % (e, up), t[x + "w3.weight"])
            elif mt == "qwen3_moe":
                vector(b + "router", t[p + "mlp.gate.weight"])
                for e in range(c["num_experts"]):
                    x = p + "mlp.experts.%d." % e
                    matrix(b + "experts/%d/%s" % (e, gate), t[x + "gate_proj.weight"])
                    matrix(b + "experts/%d/%s" % (e, up), t[x + "up_proj.weight"])
                    matrix(b + "experts/%d/w_down" % e, t[x + "down_proj.weight"])
            else:
                matrix(b + gate, t[p + "mlp.gate_proj.weight"])
                matrix(b + up, t[p + "mlp.up_proj.weight"])
                matrix(b + "w_down", t[p + "mlp.down_proj.weight"])
        vector("/final_norm", t["model.norm.weight"])
        if not tied:
            matrix("/lm_head", t["lm_head.weight"])


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def hf_unit_checks(tmp):
    F32 = np.float32
    # bfloat16: top 16 bits, round to nearest, ties to even (7 stored mantissa bits: ulp(1) = 2^-7).
    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 1 + 2 ** -8 + 2 ** -20, 3e38, 1e-40],
                 dtype=np.float32)
    bits = mk.float32_to_bf16_bits(x)
    # 1, tie -> even 1, tie -> even 1 + 2^-6, -1, above the tie -> 1 + 2^-7, 0x7f61b1e6 up, 0x000116c2 down.
    want = [0x3F80, 0x3F80, 0x3F82, 0xBF80, 0x3F81, 0x7F62, 0x0001]
    check(bits.tolist() == want and same_bits(mk.bf16_bits_to_float32(bits)[:5],
                                              np.array([1, 1, 1 + 2 ** -6, -1, 1 + 2 ** -7], dtype=np.float32)),
          "bf16 rounds to nearest even (%s)" % [hex(b) for b in bits.tolist()])

    # Safetensors round trip, and the header as the format defines it (read here without hf_oracle).
    rng = np.random.default_rng(11)
    arrays = {"a.bf16": rng.standard_normal((3, 5)).astype(np.float32), "b.f16": rng.standard_normal(7).astype(np.float32),
              "c.f32": rng.standard_normal((2, 2, 2)).astype(np.float32)}
    tensors, want = [], {}
    for name, value in arrays.items():
        dtype = name.split(".")[1]
        stored, want[name] = mk.to_storage(value, dtype)
        tensors.append((name, mk.DTYPES[dtype][0], stored))
    path = os.path.join(tmp, "roundtrip.safetensors")
    mk.write_safetensors(path, tensors)
    back = hf_oracle.read_safetensors(path)
    check(set(back) == set(want) and all(same_bits(back[n], want[n]) for n in want), "safetensors round trip")
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    check(n % 8 == 0 and header["__metadata__"] == {"format": "pt"} and spans[0][0] == 0
          and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] == len(blob) - 8 - n
          and header["a.bf16"] == {"dtype": "BF16", "shape": [3, 5], "data_offsets": list(header["a.bf16"]["data_offsets"])},
          "safetensors header: 8-byte length, padded JSON, __metadata__, contiguous data_offsets")

    # Rotate-half RoPE on HF order equals interleaved RoPE on SPEC's permuted order, to the bit.
    hd, n_heads = 16, 3
    v = rng.standard_normal(n_heads * hd).astype(np.float32)
    freqs = oracle.rope_freqs(hd, F32(10000))
    perm = spec_permutation(hd)
    permuted = np.empty_like(v).reshape(n_heads, hd)
    permuted[:, perm] = v.reshape(n_heads, hd)
    half = hf_oracle.rope_rotate_half(v, n_heads, hd, 7, freqs).reshape(n_heads, hd)
    inter = oracle.rope(permuted.reshape(-1), n_heads, hd, 7, freqs).reshape(n_heads, hd)
    check(same_bits(inter[:, perm], half), "rotate-half RoPE in HF order == interleaved RoPE after SPEC's permutation")
    check(hf_oracle.spec_sum_order(8).tolist() == [0, 4, 1, 5, 2, 6, 3, 7], "SPEC-layout sum order over an HF head")

    # Llama 3 scaling: the test family's table uses all three bands of the formula.
    a = mk.options("llama3")
    factor, low, high, orig = a.rope_scaling
    scaling = oracle.Llama3Scaling(factor, low, high, orig)
    i = np.arange(a.head_dim // 2, dtype=np.float32)
    f64 = np.power(np.float64(F32(a.rope_theta)), ((F32(-2) * i) / F32(a.head_dim)).astype(np.float64))
    bands = scaling.bands(f64).tolist()
    check({"keep", "smooth", "divide"} <= set(bands), "llama3 test config exercises keep/smooth/divide (%s)" % bands)
    plain = oracle.rope_freqs(a.head_dim, F32(a.rope_theta))
    scaled = oracle.rope_freqs(a.head_dim, F32(a.rope_theta), scaling)
    keep = np.array(bands) == "keep"
    check(same_bits(plain[keep], scaled[keep]) and np.all(scaled[~keep] < plain[~keep]),
          "llama3: kept frequencies equal the unscaled table to the bit, the others shrink")

    # hf_oracle quantizes all rows at once: the same as SPEC's quantize row by row (oracle.quantize).
    w = (rng.standard_normal((40, 33)) * np.logspace(-3, 3, 40)[:, None]).astype(np.float32)
    w[5] = 0
    w[7, :4] = [127, 0.5, 1.5, -2.5]  # max 127: scale 1, so the halves round to even
    w[7, 4:] = 0
    q, s = hf_oracle.quantize_rows(w)
    rows = [oracle.quantize(row) for row in w]
    check(np.array_equal(q, np.stack([r[0] for r in rows])) and same_bits(s, np.array([r[1] for r in rows], dtype=np.float32))
          and s[5] == 1 and q[7, :4].tolist() == [127, 0, 2, -2], "hf_oracle.quantize_rows == quantize per row")

    # MoE routing: norm_topk_prob 1 = softmax over the chosen, 0 = full softmax at the chosen.
    router = np.eye(4, dtype=np.float32)
    h = np.array([1.0, 2.0, 3.0, 0.0], dtype=np.float32)
    c1, w1 = oracle.route(router, h, 2, 1)
    c0, w0 = oracle.route(router, h, 2, 0)
    e = np.exp(np.array([1.0, 2.0, 3.0, 0.0]))
    check(c1.tolist() == [1, 2] and np.allclose(w1, e[1:3] / e[1:3].sum(), rtol=1e-6)
          and c0.tolist() == [1, 2] and np.allclose(w0, e[1:3] / e.sum(), rtol=1e-6),
          "routing: norm_topk_prob 1 and 0 (%s, %s)" % (w1.tolist(), w0.tolist()))

    # Sharding: runs are contiguous, non-empty and cover every tensor; 1 shard per tensor works.
    sizes = [100, 1, 1, 50, 50, 1, 300, 2]
    for n_shards in (1, 2, 3, 8):
        runs = mk.shard_runs(sizes, n_shards)
        check(len(runs) == n_shards and runs[0][0] == 0 and runs[-1][1] == len(sizes)
              and all(a[1] == b[0] for a, b in zip(runs, runs[1:])), "shard_runs %d: %s" % (n_shards, runs))


# (family, dtype, shards, tied, seed, extra options): every family, bf16/f16/f32, sharded and not, tied and not.
# Seeds where the generated tokens vary (a random tied model easily repeats one token).
HF_CASES = [
    ("llama", "bf16", 1, False, 13, {}),
    ("llama", "f16", 3, True, 17, {}),
    ("llama3", "bf16", 2, False, 14, {}),
    ("llama3", "f32", 1, True, 6, {}),
    ("mistral", "f16", 1, False, 14, {}),
    ("mistral", "bf16", 2, True, 20, {}),
    ("mixtral", "bf16", 3, False, 15, {}),
    ("mixtral", "f16", 1, True, 19, {}),
    ("qwen2", "bf16", 1, True, 18, {}),
    ("qwen2", "f16", 2, False, 12, {}),
    ("qwen3", "bf16", 2, True, 18, {}),
    ("qwen3", "f16", 1, False, 12, {}),
    ("qwen3_moe", "bf16", 4, False, 17, {}),
    ("qwen3_moe", "f16", 1, True, 56, {"norm_topk_prob": 0, "experts_per_token": 4}),
]
HF_PROMPT, HF_TOKENS = [3, 1, 4, 1, 5], 6


def hf_case_name(family, dtype, shards, tied, extra):
    return "%s_%s_s%d%s%s" % (family, dtype, shards, "_tied" if tied else "",
                              "".join("_%s%s" % (k, v) for k, v in sorted(extra.items())))


def run_pair(hf_model, converted):
    """(hf_oracle result, oracle.py result on the converted file) as (tokens, logits) pairs."""
    ours = hf_oracle.generate(hf_model, HF_PROMPT, HF_TOKENS)
    theirs = oracle.generate(oracle.Model(converted), HF_PROMPT, HF_TOKENS)
    return ours, theirs


def hf_checks(tmp):
    hf_unit_checks(tmp)
    P = lambda n: os.path.join(tmp, n)  # noqa: E731
    prompt = np.array(HF_PROMPT, dtype=np.int32)
    families = set()
    for family, dtype, shards, tied, seed, extra in HF_CASES:
        name = hf_case_name(family, dtype, shards, tied, extra)
        families.add(family)
        a = mk.options(family, dtype=dtype, shards=shards, tied=tied, seed=seed, **extra)
        stored = mk.write_checkpoint(a, P(name))
        files = sorted(os.listdir(P(name)))
        want_files = (["config.json", "model.safetensors"] if shards == 1 else
                      ["config.json"] + ["model-%05d-of-%05d.safetensors" % (i + 1, shards) for i in range(shards)]
                      + ["model.safetensors.index.json"])
        check(files == sorted(want_files), "%s: files %s" % (name, files))
        back = hf_oracle.read_checkpoint_tensors(P(name))
        check(set(back) == set(stored) and all(same_bits(back[n], stored[n]) for n in stored)
              and ("lm_head.weight" in back) != tied, "%s: every tensor reads back exactly (%d tensors)" % (name, len(back)))
        convert_hf(P(name), P(name + ".h5"))
        with h5py.File(P(name + ".h5"), "r") as f:  # HF row hd/2 of layer 0's k_proj is zero; SPEC moves it to 1
            check(not f["layers/0/wk/weight"][1].any() and f["layers/0/wk/scale"][1] == 1
                  and f["layers/0/wk/weight"][0].any(), "%s: the zero k row lands on row 1 with scale 1" % name)
        hf_model = hf_oracle.HFModel(P(name))
        (t_hf, l_hf), (t_sp, l_sp) = run_pair(hf_model, P(name + ".h5"))
        write_result(P(name + ".hf.h5"), prompt, t_hf, l_hf)
        write_result(P(name + ".spec.h5"), prompt, t_sp, l_sp)
        rc, text = compare_inproc(P(name + ".spec.h5"), P(name + ".hf.h5"))
        check(rc == 0, "%s: oracle.py on the SPEC conversion agrees with hf_oracle (compare.py)" % name)
        if rc:
            print(text)
        check(np.array_equal(t_hf, t_sp) and same_bits(l_hf, l_sp), "%s: ... to the bit" % name)
        check(len(set(t_hf.tolist())) > 1 and np.all(np.isfinite(l_hf)),
              "%s: finite logits, tokens vary: %s" % (name, t_hf.tolist()))
        # Adding over a head in Hugging Face's index order changes float32 rounding only.
        t_ho, l_ho = hf_oracle.generate(hf_model, HF_PROMPT, HF_TOKENS, "hf")
        write_result(P(name + ".hforder.h5"), prompt, t_ho, l_ho)
        check(compare_inproc(P(name + ".hforder.h5"), P(name + ".hf.h5"))[0] == 0,
              "%s: --sum-order hf within compare.py's rule (max |diff| %.2g of max|logit|)"
              % (name, np.max(np.abs(l_ho - l_hf)) / np.max(np.abs(l_hf))))
    check(families == set(mk.FAMILIES), "every family covered")

    # The same seed, sharded or not: the same tensors.
    for shards in (1, 5):
        mk.write_checkpoint(mk.options("qwen3", shards=shards, seed=9), P("shard%d" % shards))
    one, five = (hf_oracle.read_checkpoint_tensors(P("shard%d" % s)) for s in (1, 5))
    check(set(one) == set(five) and all(same_bits(one[n], five[n]) for n in one), "1 shard and 5 shards hold the same tensors")

    # The command lines, once each.
    rc, text = run([os.path.join(HERE, "make_hf_checkpoint.py"), P("cli"), "--family", "qwen2", "--dtype", "f16",
                    "--shards", "2", "--tied", "--seed", "4"])
    check(rc == 0, "make_hf_checkpoint.py command line")
    rc, text = run([os.path.join(HERE, "hf_oracle.py"), P("cli"), "--prompt", "1,2,3", "--tokens", "4", "--out", P("cli.h5")])
    check(rc == 0 and "-> tokens" in text, "hf_oracle.py command line")
    pr, tok, lg = read_result(P("cli.h5"))
    check(pr.tolist() == [1, 2, 3] and tok.dtype == np.int32 and lg.shape == (4, 448) and lg.dtype == np.float32,
          "hf_oracle.py writes /prompt, /tokens, /logits")

    # Each import mistake changes the output beyond compare.py's rule: the comparison can fail.
    for family, bug, extra in (("llama", "no_permutation", {}), ("qwen3", "no_permutation", {}),
                               ("qwen3", "unpermuted_vectors", {}), ("qwen2", "unpermuted_vectors", {}),
                               ("llama3", "no_rope_scaling", {}), ("qwen3_moe", "flip_norm_topk", {}),
                               ("mixtral", "swap_up_gate", {})):
        name = "bug_%s_%s" % (family, bug)
        mk.write_checkpoint(mk.options(family, seed=21, **extra), P(name))
        convert_hf(P(name), P(name + ".h5"), bug=bug)
        (t_hf, l_hf), (t_sp, l_sp) = run_pair(hf_oracle.HFModel(P(name)), P(name + ".h5"))
        write_result(P(name + ".hf.h5"), prompt, t_hf, l_hf)
        write_result(P(name + ".spec.h5"), prompt, t_sp, l_sp)
        check(compare_inproc(P(name + ".spec.h5"), P(name + ".hf.h5"))[0] == 1, "%s: import bug %s is caught" % (family, bug))

    # hf_oracle refuses what SPEC refuses, naming it.
    mk.write_checkpoint(mk.options("qwen3_moe", mlp_only_layers=[1]), P("dense_layer"))
    try:
        hf_oracle.HFModel(P("dense_layer"))
        refused = ""
    except ValueError as e:
        refused = str(e)
    check("mlp_only_layers" in refused, "hf_oracle refuses qwen3_moe with mlp_only_layers (%s)" % refused)
    os.remove(P("shard5/model-00003-of-00005.safetensors"))
    try:
        hf_oracle.HFModel(P("shard5"))
        refused = ""
    except (OSError, ValueError) as e:
        refused = str(e)
    check("model-00003-of-00005" in refused, "hf_oracle names a missing shard (%s)" % refused)

    # The scalar float64 implementation (slow_generate) on tiny conversions: format 2 in oracle.py.
    tiny = dict(vocab=64, hidden=16, intermediate=24, layers=2, heads=2, kv_heads=1)
    for family, extra in (("qwen2", {"tied": True}), ("qwen3", {"head_dim": 12}), ("llama3", {"head_dim": 16}),
                          ("qwen3_moe", {"experts": 4, "experts_per_token": 2, "moe_intermediate": 12,
                                         "head_dim": 12, "norm_topk_prob": 0}),
                          ("mixtral", {"experts": 3, "experts_per_token": 2}), ("mistral", {})):
        name = "tiny_hf_" + family
        options = dict(tiny, **extra)
        if family == "llama3":  # head_dim 16 with D / H = 8: keep the three bands at this size
            options["hidden"] = 32
        mk.write_checkpoint(mk.options(family, seed=5, **options), P(name))
        convert_hf(P(name), P(name + ".h5"))
        t_sp, l_sp = oracle.generate(oracle.Model(P(name + ".h5")), [2, 7, 1], 5)
        t_sl, l_sl = slow_generate(P(name + ".h5"), [2, 7, 1], 5)
        write_result(P(name + ".spec.h5"), np.array([2, 7, 1], dtype=np.int32), t_sp, l_sp)
        write_result(P(name + ".slow.h5"), np.array([2, 7, 1], dtype=np.int32), t_sl, l_sl)
        rc, text = compare_inproc(P(name + ".slow.h5"), P(name + ".spec.h5"))
        check(rc == 0, "%s: scalar float64 implementation agrees with oracle.py on format 2" % name)
        if rc:
            print(text)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", metavar="DIR")
    a = p.parse_args(argv)
    tmp = a.keep or tempfile.mkdtemp(prefix="lpurt_oracle_selftest_")
    os.makedirs(tmp, exist_ok=True)
    P = lambda n: os.path.join(tmp, n)  # noqa: E731

    unit_checks()

    # --- models as in the brief ------------------------------------------
    common = ["--vocab", "1000", "--hidden", "96", "--intermediate", "200", "--layers", "3",
              "--heads", "6", "--kv-heads", "2", "--max-seq", "64"]
    check(make_model(P("llama.h5"), *common, "--seed", "1") == 0, "make_model llama")
    check(make_model(P("llama_again.h5"), *common, "--seed", "1") == 0, "make_model llama again")
    check(make_model(P("llama_ascii.h5"), *common, "--seed", "1", "--str-attrs", "ascii") == 0,
          "make_model llama, ascii strings")
    check(make_model(P("llama_fixed.h5"), *common, "--seed", "1", "--str-attrs", "fixed") == 0,
          "make_model llama, fixed strings")
    check(make_model(P("mixtral.h5"), *common, "--arch", "mixtral", "--experts", "4",
                     "--experts-per-token", "2", "--seed", "2") == 0, "make_model mixtral")
    check(check_model_layout(P("llama.h5"), 1000, 96, 200, 3, 6, 2), "llama file has every SPEC path/dtype/shape")
    check(check_model_layout(P("mixtral.h5"), 1000, 96, 200, 3, 6, 2, E=4),
          "mixtral file has every SPEC path/dtype/shape")
    check(same_file_contents(P("llama.h5"), P("llama_again.h5")), "same seed -> same model contents")

    K = 24
    for name, prompt in (("llama", "1,2,3,4,5"), ("mixtral", "7,8,9"),
                         ("llama_ascii", "1,2,3,4,5"), ("llama_fixed", "1,2,3,4,5")):
        check(run_oracle(P(name + ".h5"), prompt, K, P("o_" + name + ".h5")) == 0, "oracle %s runs" % name)
        pr, tok, lg = read_result(P("o_" + name + ".h5"))
        check(pr.dtype == np.int32 and tok.dtype == np.int32 and lg.dtype == np.float32
              and tok.shape == (K,) and lg.shape == (K, 1000),
              "oracle %s output dtypes/shapes (%s %s %s)" % (name, tok.dtype, lg.dtype, lg.shape))
        check(bool(np.all(np.isfinite(lg))), "oracle %s logits finite" % name)
        check(len(set(tok.tolist())) > 1, "oracle %s tokens vary: %s" % (name, tok.tolist()))
        check(np.array_equal(np.argmax(lg, axis=1), tok), "oracle %s tokens are argmax of logits" % name)
    check(run_oracle(P("llama.h5"), "1,2,3,4,5", K, P("o_llama_again.h5")) == 0, "oracle llama again")
    _, t1, l1 = read_result(P("o_llama.h5"))
    _, t2, l2 = read_result(P("o_llama_again.h5"))
    check(np.array_equal(t1, t2) and np.array_equal(l1.view(np.uint32), l2.view(np.uint32)),
          "oracle is bit-reproducible")
    for variant in ("llama_ascii", "llama_fixed"):
        _, tv, lv = read_result(P("o_%s.h5" % variant))
        check(np.array_equal(t1, tv) and np.array_equal(l1, lv), "%s gives the same output as utf8" % variant)

    # --- second implementation on tiny models -----------------------------
    tiny = ["--vocab", "60", "--hidden", "16", "--intermediate", "24", "--layers", "2",
            "--heads", "4", "--kv-heads", "2", "--max-seq", "16"]
    make_model(P("tiny_llama.h5"), *tiny, "--seed", "3")
    make_model(P("tiny_mixtral.h5"), *tiny, "--arch", "mixtral", "--experts", "3",
               "--experts-per-token", "2", "--seed", "4")
    # Format 2 written directly (int8 weights, no conversion): every version-2 attribute.
    make_model(P("tiny_qwen2.h5"), *tiny, "--arch", "qwen2", "--attention-bias", "--tied",
               "--rope-scaling", "8,1,4,16", "--rope-theta", "500000", "--seed", "6")
    make_model(P("tiny_qwen3_moe.h5"), *tiny, "--arch", "qwen3_moe", "--experts", "4", "--experts-per-token", "3",
               "--moe-intermediate", "10", "--head-dim", "6", "--qk-norm", "--norm-topk-prob", "0", "--seed", "7")
    for name, prompt in (("tiny_llama", [3, 1, 4, 1, 5]), ("tiny_mixtral", [2, 7, 1]),
                         ("tiny_qwen2", [9, 8, 7]), ("tiny_qwen3_moe", [5, 5, 2])):
        run_oracle(P(name + ".h5"), ",".join(map(str, prompt)), 6, P("o_" + name + ".h5"))
        tok, lg = slow_generate(P(name + ".h5"), prompt, 6)
        write_result(P("slow_" + name + ".h5"), np.array(prompt, dtype=np.int32), tok, lg)
        rc, text = compare(P("slow_" + name + ".h5"), P("o_" + name + ".h5"))
        check(rc == 0, "%s: scalar float64 implementation agrees with oracle.py" % name)
        if rc != 0:
            print(text)

    # oracle.py reads what SPEC says and refuses the rest.
    with h5py.File(P("tiny_qwen2.h5"), "r") as f:
        check(int(f.attrs["format_version"]) == 2 and "lm_head" not in f and "bias" in f["layers/0/wq"],
              "make_model writes format 2 (tied: no /lm_head; wq/bias)")
    shutil.copy(P("tiny_llama.h5"), P("v1_with_head_dim.h5"))
    with h5py.File(P("v1_with_head_dim.h5"), "a") as f:
        f.attrs["head_dim"] = np.int64(4)
    rc, text = run([os.path.join(HERE, "oracle.py"), P("v1_with_head_dim.h5"), "--prompt", "1", "--tokens", "1",
                    "--out", P("never.h5")])
    check(rc == 2 and "version-2 attributes head_dim" in text, "oracle.py refuses a version-1 file with head_dim")

    # --- compare.py --------------------------------------------------------
    o = P("o_llama.h5")
    rc, text = compare(o, o)
    check(rc == 0, "compare: file against itself passes")
    pr, tok, lg = read_result(o)
    scale = np.abs(lg).max(axis=1)

    small = lg.copy()
    small[:, 10] += (0.5e-3 * scale).astype(np.float32)
    write_result(P("small.h5"), pr, tok, small)
    check(compare(P("small.h5"), o)[0] == 0, "compare: perturbation of 0.5e-3*max passes")

    big = lg.copy()
    big[5, 123] += np.float32(2e-3) * scale[5]
    write_result(P("big.h5"), pr, tok, big)
    rc, text = compare(P("big.h5"), o)
    check(rc == 1 and "step 5" in text and "logit[123]" in text, "compare: 2e-3*max perturbation fails, names step/index")

    nan = lg.copy()
    nan[2, 7] = np.nan
    write_result(P("nan.h5"), pr, tok, nan)
    check(compare(P("nan.h5"), o)[0] == 1, "compare: NaN logit fails")

    tok2 = tok.copy()
    tok2[3] = (tok2[3] + 1) % 1000
    write_result(P("tok.h5"), pr, tok2, lg)
    rc, text = compare(P("tok.h5"), o)
    check(rc == 1 and "step 3: token" in text, "compare: changed token fails")

    write_result(P("prompt.h5"), pr + 1, tok, lg)
    check(compare(P("prompt.h5"), o)[0] == 1, "compare: changed prompt fails")

    write_result(P("short.h5"), pr, tok[:-1], lg[:-1])
    check(compare(P("short.h5"), o)[0] == 1, "compare: fewer steps fails")

    check(compare(P("does_not_exist.h5"), o)[0] == 2, "compare: missing file exits 2")
    with h5py.File(P("nologits.h5"), "w") as f:
        f.create_dataset("prompt", data=pr)
        f.create_dataset("tokens", data=tok)
    check(compare(o, P("nologits.h5"))[0] == 2, "compare: missing /logits exits 2")

    # --- Hugging Face checkpoints, hf_oracle.py, oracle.py on format 2 -----
    hf_checks(tmp)

    if not a.keep:
        shutil.rmtree(tmp)
    print("%s: %d failure(s)" % ("PASS" if not failures else "FAIL", len(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
