#!/usr/bin/python3
"""Self-test of the oracle scripts (make_model.py, oracle.py, compare.py).

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
    a shape change, and exits 2 on a missing file or dataset.
"""

import argparse
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
        V, D, F = int(at["vocab_size"]), int(at["hidden_size"]), int(at["intermediate_size"])
        L, H, Hkv = int(at["n_layers"]), int(at["n_heads"]), int(at["n_kv_heads"])
        theta, eps = float(at["rope_theta"]), float(at["norm_eps"])
        hd = D // H
        k_top = int(at["n_experts_per_token"]) if arch == "mixtral" else 0

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
            if arch == "llama":
                lay["ffn"] = {n: mat(b + "/" + n) for n in ("w_gate", "w_up", "w_down")}
            else:
                lay["router"] = f[b + "/router"][...].tolist()
                n_exp = len(lay["router"])
                lay["experts"] = [{n: mat("%s/experts/%d/%s" % (b, e, n)) for n in ("w_gate", "w_up", "w_down")}
                                  for e in range(n_exp)]
            layers.append(lay)
        final_norm = vec("/final_norm")
        lm_head = mat("/lm_head")

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
                ang = pos * theta ** (-2 * i / hd)
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
            q = rope(linear(lay["wq"], h), H, pos)
            k = rope(linear(lay["wk"], h), Hkv, pos)
            v = linear(lay["wv"], h)
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
            if arch == "llama":
                o = ffn(lay["ffn"], h)
            else:
                r = [sum(row[i] * h[i] for i in range(D)) for row in lay["router"]]
                chosen = sorted(range(len(r)), key=lambda e: (-r[e], e))[:k_top]
                mx = max(r[e] for e in chosen)
                z = sum(math.exp(r[e] - mx) for e in chosen)
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
    for name, prompt in (("tiny_llama", [3, 1, 4, 1, 5]), ("tiny_mixtral", [2, 7, 1])):
        run_oracle(P(name + ".h5"), ",".join(map(str, prompt)), 6, P("o_" + name + ".h5"))
        tok, lg = slow_generate(P(name + ".h5"), prompt, 6)
        write_result(P("slow_" + name + ".h5"), np.array(prompt, dtype=np.int32), tok, lg)
        rc, text = compare(P("slow_" + name + ".h5"), P("o_" + name + ".h5"))
        check(rc == 0, "%s: scalar float64 implementation agrees with oracle.py" % name)
        if rc != 0:
            print(text)

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

    if not a.keep:
        shutil.rmtree(tmp)
    print("%s: %d failure(s)" % ("PASS" if not failures else "FAIL", len(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
