#!/usr/bin/python3
"""Reference NumPy run of a Hugging Face checkpoint, in Hugging Face's own layout.

Reads the checkpoint directory directly (config.json, safetensors) rather than the file that
`lpurt import` writes, so that the import's q/k permutation is checked independently: this
oracle keeps Hugging Face's "rotate-half" order for q and k (RoPE pairs element i with element
i + hd/2 of each head, q/k norm gains and biases in Hugging Face order) and never permutes.
Written from SPEC ("Importing checkpoints", "Numerics", "Model file, format version 2") and the
public Hugging Face conventions, without reading lpurt's C++ code.

Usage:
  hf_oracle.py HF_DIR --prompt 1,2,3 --tokens K --out ORACLE.h5 [--sum-order spec|hf]

Output: /tokens, /prompt, /logits exactly as oracle.py writes them, so compare.py works unchanged.

What it does:
  * safetensors: its own reader (8-byte little-endian header length, JSON header, raw
    little-endian data); BF16, F16 and F32 become float32 exactly. model.safetensors, or the
    shards that model.safetensors.index.json's weight_map names. Every tensor the config implies
    must be present with its shape; unknown tensors are an error (lm_head.weight is ignored when
    the embeddings are tied, as transformers does).
  * every matrix (embedding, q/k/v/o, gate/up/down, experts, lm_head) is quantized per output row
    exactly like SPEC's quantize (scale = max|row| / 127, rint, clamp; an all-zero row gets
    scale 1); norms, biases and the MoE router stay float32.
  * then SPEC's numerics, with the format-2 additions: + bias after q/k/v (Qwen2), per-head
    RMSNorm of q and k (Qwen3), RoPE, scores / sqrt(head_dim); llama3 rope scaling; tied
    embeddings (the logits use the embedding's int8 weight and scale); MoE routing with
    norm_topk_prob 1 (softmax over the k chosen logits) or 0 (full softmax read at the k chosen).

--sum-order: a per-head reduction over hd (q/k norm sum of squares, q . k) adds float32 terms,
and float32 addition depends on the order. lpurt's numerics add in increasing index of SPEC's
interleaved layout, which visits Hugging Face's elements in the order 0, hd/2, 1, hd/2 + 1, ...
`spec` (the default) adds in that order, so the result agrees with lpurt to the bit; `hf` adds in
Hugging Face's index order, which moves results by float32 rounding only. The order of additions
is all that `spec` takes from SPEC's layout: every value stays in its Hugging Face position.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402  (helpers: quantize, linear, seq_sum, rmsnorm, silu, softmax, route, rope tables)
from oracle import F32  # noqa: E402

# --------------------------------------------------------------------------
# Safetensors
# --------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"BF16": ("<u2", 2), "F16": ("<f2", 2), "F32": ("<f4", 4)}


def read_safetensors(path):
    """Return {name: float32 array} from one safetensors file, checking the header strictly."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError("%s: shorter than the 8-byte header length" % path)
    (n_header,) = struct.unpack("<Q", blob[:8])
    if 8 + n_header > len(blob):
        raise ValueError("%s: header length %d exceeds the file (%d bytes)" % (path, n_header, len(blob)))
    header = json.loads(blob[8:8 + n_header].decode("utf-8"))
    data = memoryview(blob)[8 + n_header:]
    tensors = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError("%s: tensor %s has dtype %s, expected BF16, F16 or F32" % (path, name, dtype))
        np_dtype, n_bytes = SAFETENSORS_DTYPES[dtype]
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        if not 0 <= begin <= end <= len(data) or end - begin != n_bytes * int(np.prod(shape, dtype=np.int64)):
            raise ValueError("%s: tensor %s: data_offsets [%d, %d] do not fit shape %s of %s in %d data bytes"
                             % (path, name, begin, end, list(shape), dtype, len(data)))
        raw = np.frombuffer(data[begin:end], dtype=np_dtype).reshape(shape)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            value = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            value = raw.astype(np.float32)
        tensors[name] = value
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise ValueError("%s: tensors %s and %s overlap" % (path, a, b))
    return tensors


def read_checkpoint_tensors(hf_dir):
    """All tensors of a checkpoint directory: model.safetensors, or the shards of the index."""
    index_path = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for file_name in sorted(set(weight_map.values())):
            for name, value in read_safetensors(os.path.join(hf_dir, file_name)).items():
                if weight_map.get(name) != file_name:
                    raise ValueError("%s: holds %s, which the index maps to %s"
                                     % (file_name, name, weight_map.get(name)))
                tensors[name] = value
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ValueError("%s: the index names %s, absent from its shard" % (index_path, missing[0]))
        return tensors
    single = os.path.join(hf_dir, "model.safetensors")
    if not os.path.exists(single):
        raise ValueError("%s: neither model.safetensors nor model.safetensors.index.json" % hf_dir)
    return read_safetensors(single)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

class QuantizedMatrix:
    """A Hugging Face weight [out, in] quantized per output row by SPEC's quantize (what oracle.linear needs)."""

    def __init__(self, w, name):
        if w.ndim != 2:
            raise ValueError("%s: shape %s, expected a matrix" % (name, list(w.shape)))
        self.weight, self.scale = quantize_rows(w)  # int8 [out, in], float32 [out]
        self.weight_f64 = self.weight.astype(np.float64)


def quantize_rows(w):
    """oracle.quantize applied to every row of float32 w [out, in], all rows at once (the same float32
    operations: max|row|, / 127, division, rint half to even, clamp); an all-zero row gets scale 1."""
    assert w.dtype == np.float32
    a = np.max(np.abs(w), axis=1)                                   # float32 [out]
    scale = np.where(a == F32(0), F32(1), a / F32(127)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    assert scale.dtype == np.float32
    return q, scale


def config_int(config, key, default=None):
    value = config.get(key, default)
    if value is None:
        raise ValueError("config.json: %s missing" % key)
    return int(value)


class HFModel:
    """A Hugging Face checkpoint, configuration read the way transformers reads it for each model_type."""

    FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe")

    def __init__(self, hf_dir):
        with open(os.path.join(hf_dir, "config.json")) as f:
            c = json.load(f)
        self.model_type = c.get("model_type")
        if self.model_type not in self.FAMILIES:
            raise ValueError("config.json: model_type %r, expected one of %s" % (self.model_type, ", ".join(self.FAMILIES)))
        if c.get("hidden_act", "silu") != "silu":
            raise ValueError("config.json: hidden_act %r, expected silu" % c["hidden_act"])
        self.V = config_int(c, "vocab_size")
        self.D = config_int(c, "hidden_size")
        self.F = config_int(c, "intermediate_size")
        self.L = config_int(c, "num_hidden_layers")
        self.H = config_int(c, "num_attention_heads")
        self.Hkv = config_int(c, "num_key_value_heads", self.H)  # transformers: None means H
        self.S = config_int(c, "max_position_embeddings")
        self.hd = config_int(c, "head_dim", self.D // self.H)    # absent or null: D / H
        if self.hd <= 0 or self.hd % 2 or self.H % self.Hkv:
            raise ValueError("config.json: head_dim %d must be even, heads %d divisible by kv heads %d"
                             % (self.hd, self.H, self.Hkv))
        self.rope_theta = F32(c.get("rope_theta", 10000.0))
        self.norm_eps = F32(c["rms_norm_eps"])
        self.tied = bool(c.get("tie_word_embeddings", False))
        # Qwen2's q/k/v biases are hard-wired in transformers; attention_bias elsewhere would add an
        # o_proj bias too, which SPEC does not have.
        self.attention_bias = self.model_type == "qwen2"
        if self.model_type != "qwen2" and c.get("attention_bias", False):
            raise ValueError("config.json: attention_bias true for %s (o_proj bias) is not in SPEC" % self.model_type)
        if c.get("mlp_bias", False):
            raise ValueError("config.json: mlp_bias true is not in SPEC")
        self.qk_norm = self.model_type in ("qwen3", "qwen3_moe")
        self.sliding_window = None
        if self.model_type.startswith("qwen"):
            if c.get("use_sliding_window", False):
                raise ValueError("config.json: use_sliding_window true is not in SPEC")
        elif c.get("sliding_window") is not None:
            self.sliding_window = int(c["sliding_window"])  # full attention as long as positions stay inside

        self.rope_scaling = None
        rs = c.get("rope_scaling")
        if rs is not None:
            kind = rs.get("rope_type", rs.get("type"))
            if kind != "llama3":
                raise ValueError("config.json: rope_scaling type %r, only llama3 is in SPEC" % kind)
            self.rope_scaling = oracle.Llama3Scaling(float(rs["factor"]), float(rs["low_freq_factor"]),
                                                     float(rs["high_freq_factor"]),
                                                     int(rs["original_max_position_embeddings"]))
        self.freqs = oracle.rope_freqs(self.hd, self.rope_theta, self.rope_scaling)

        self.moe = self.model_type in ("mixtral", "qwen3_moe")
        if self.model_type == "mixtral":
            self.E, self.k = config_int(c, "num_local_experts"), config_int(c, "num_experts_per_tok")
            self.Fe, self.norm_topk_prob = self.F, 1  # Mixtral always renormalizes its top k
        elif self.model_type == "qwen3_moe":
            self.E, self.k = config_int(c, "num_experts"), config_int(c, "num_experts_per_tok")
            self.Fe = config_int(c, "moe_intermediate_size")
            self.norm_topk_prob = int(bool(c.get("norm_topk_prob", False)))  # Qwen3MoeConfig's default is false
            if c.get("mlp_only_layers") or config_int(c, "decoder_sparse_step", 1) != 1:
                raise ValueError("config.json: qwen3_moe with dense layers (mlp_only_layers %s, decoder_sparse_step %s)"
                                 " is refused by SPEC" % (c.get("mlp_only_layers"), c.get("decoder_sparse_step")))
        if self.moe and not 1 <= self.k <= self.E:
            raise ValueError("config.json: experts per token %d not in [1, %d]" % (self.k, self.E))

        self._load(read_checkpoint_tensors(hf_dir))

    def _expected_shapes(self):
        """{tensor name: shape} that this configuration implies, in Hugging Face naming."""
        V, D, H, Hkv, hd = self.V, self.D, self.H, self.Hkv, self.hd
        want = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
        if not self.tied:
            want["lm_head.weight"] = (V, D)
        for i in range(self.L):
            p = "model.layers.%d." % i
            want.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                         p + "self_attn.q_proj.weight": (H * hd, D), p + "self_attn.k_proj.weight": (Hkv * hd, D),
                         p + "self_attn.v_proj.weight": (Hkv * hd, D), p + "self_attn.o_proj.weight": (D, H * hd)})
            if self.attention_bias:
                want.update({p + "self_attn.q_proj.bias": (H * hd,), p + "self_attn.k_proj.bias": (Hkv * hd,),
                             p + "self_attn.v_proj.bias": (Hkv * hd,)})
            if self.qk_norm:
                want.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
            for prefix, n_inter in self._ffn_prefixes(i):
                for proj, shape in self._ffn_names(prefix, n_inter).values():
                    want[proj] = shape
            if self.moe:
                want[self._router_name(i)] = (self.E, D)
        return want

    def _router_name(self, i):
        block = "block_sparse_moe" if self.model_type == "mixtral" else "mlp"
        return "model.layers.%d.%s.gate.weight" % (i, block)

    def _ffn_prefixes(self, i):
        """[(tensor-name prefix, intermediate width)] of layer i's FFNs (one dense, or one per expert)."""
        if self.model_type == "mixtral":
            return [("model.layers.%d.block_sparse_moe.experts.%d." % (i, e), self.Fe) for e in range(self.E)]
        if self.model_type == "qwen3_moe":
            return [("model.layers.%d.mlp.experts.%d." % (i, e), self.Fe) for e in range(self.E)]
        return [("model.layers.%d.mlp." % i, self.F)]

    def _ffn_names(self, prefix, n_inter):
        """SPEC role -> (Hugging Face name, shape). Mixtral's w1 is the gate, w3 the up, w2 the down projection."""
        D = self.D
        if self.model_type == "mixtral":
            names = ("w1.weight", "w3.weight", "w2.weight")
        else:
            names = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")
        return {"w_gate": (prefix + names[0], (n_inter, D)), "w_up": (prefix + names[1], (n_inter, D)),
                "w_down": (prefix + names[2], (D, n_inter))}

    def _load(self, tensors):
        want = self._expected_shapes()
        for name, shape in want.items():
            if name not in tensors:
                raise ValueError("checkpoint: tensor %s missing" % name)
            if tensors[name].shape != shape:
                raise ValueError("checkpoint: %s has shape %s, expected %s" % (name, list(tensors[name].shape), list(shape)))
        ignorable = {"lm_head.weight"} if self.tied else set()
        extra = sorted(n for n in tensors if n not in want and n not in ignorable and not n.endswith("rotary_emb.inv_freq"))
        if extra:
            raise ValueError("checkpoint: unexpected tensor %s (%d unexpected)" % (extra[0], len(extra)))

        def mat(name):
            return QuantizedMatrix(tensors[name], name)

        self.embedding = mat("model.embed_tokens.weight")
        self.lm_head = self.embedding if self.tied else mat("lm_head.weight")
        self.final_norm = tensors["model.norm.weight"]
        self.layers = []
        for i in range(self.L):
            a = "model.layers.%d.self_attn." % i
            layer = {"attn_norm": tensors["model.layers.%d.input_layernorm.weight" % i],
                     "ffn_norm": tensors["model.layers.%d.post_attention_layernorm.weight" % i]}
            for role, proj in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
                layer[role] = mat(a + proj + ".weight")
                if self.attention_bias and role != "wo":
                    layer[role + "_bias"] = tensors[a + proj + ".bias"]
            if self.qk_norm:
                layer["q_norm"], layer["k_norm"] = tensors[a + "q_norm.weight"], tensors[a + "k_norm.weight"]
            ffns = [{role: mat(name) for role, (name, _) in self._ffn_names(prefix, n_inter).items()}
                    for prefix, n_inter in self._ffn_prefixes(i)]
            if self.moe:
                layer["router"] = tensors[self._router_name(i)]
                layer["experts"] = ffns
            else:
                layer["ffn"] = ffns[0]
            self.layers.append(layer)


# --------------------------------------------------------------------------
# Numerics in Hugging Face order
# --------------------------------------------------------------------------

def spec_sum_order(hd):
    """Hugging Face indices of a head in the order SPEC's interleaved layout lists them: 0, hd/2, 1, hd/2 + 1, ..."""
    half = hd // 2
    return np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)


def rope_rotate_half(x, n_heads, hd, pos, freqs):
    """Hugging Face RoPE: per head, x * cos + rotate_half(x) * sin, where element i pairs with i + hd/2.

    out[i] = x[i] cos_i - x[i + hd/2] sin_i;  out[i + hd/2] = x[i + hd/2] cos_i + x[i] sin_i.
    """
    c, s = oracle.rope_cos_sin(freqs, pos)
    xh = x.reshape(n_heads, 2, hd // 2)
    x1, x2 = xh[:, 0, :], xh[:, 1, :]
    out = np.empty_like(xh)
    out[:, 0, :] = x1 * c - x2 * s
    out[:, 1, :] = x2 * c + x1 * s
    out = out.reshape(-1)
    assert out.dtype == np.float32
    return out


def head_rmsnorm(x, g, eps, order):
    """rmsnorm over one head (Qwen3 q_norm / k_norm), the sum of squares added in `order`."""
    assert x.dtype == np.float32 and g.dtype == np.float32
    sq = x * x
    ss = F32(oracle.seq_sum(sq[order]))
    inv = F32(F32(1) / np.sqrt(F32(ss / F32(x.shape[0]) + eps)))
    y = (x * inv) * g
    assert y.dtype == np.float32
    return y


class HFRunner:
    """One token at a time with a float32 KV cache in Hugging Face's per-head order."""

    def __init__(self, model, sum_order="spec"):
        self.m = model
        self.order = spec_sum_order(model.hd) if sum_order == "spec" else np.arange(model.hd)
        kv = model.Hkv * model.hd
        self.k_cache = [np.zeros((model.S, kv), dtype=np.float32) for _ in range(model.L)]  # [S, Hkv*hd]
        self.v_cache = [np.zeros((model.S, kv), dtype=np.float32) for _ in range(model.L)]  # [S, Hkv*hd]

    def step(self, token, pos):
        m = self.m
        if m.sliding_window is not None and pos >= m.sliding_window:
            raise ValueError("position %d reaches the sliding window %d (not in SPEC)" % (pos, m.sliding_window))
        H, Hkv, hd, order = m.H, m.Hkv, m.hd, self.order
        group = H // Hkv
        sqrt_hd = np.sqrt(F32(hd))
        x = m.embedding.weight[token].astype(np.float32) * m.embedding.scale[token]
        for li, layer in enumerate(m.layers):
            h = oracle.rmsnorm(x, layer["attn_norm"], m.norm_eps)
            q, k, v = oracle.linear(layer["wq"], h), oracle.linear(layer["wk"], h), oracle.linear(layer["wv"], h)
            if m.attention_bias:
                q, k, v = q + layer["wq_bias"], k + layer["wk_bias"], v + layer["wv_bias"]
            if m.qk_norm:
                q = np.concatenate([head_rmsnorm(qh, layer["q_norm"], m.norm_eps, order) for qh in q.reshape(H, hd)])
                k = np.concatenate([head_rmsnorm(kh, layer["k_norm"], m.norm_eps, order) for kh in k.reshape(Hkv, hd)])
            q = rope_rotate_half(q, H, hd, pos, m.freqs)
            k = rope_rotate_half(k, Hkv, hd, pos, m.freqs)
            self.k_cache[li][pos] = k
            self.v_cache[li][pos] = v
            attn = np.empty(H * hd, dtype=np.float32)
            for head in range(H):
                kvh = head // group
                qh = q[head * hd:(head + 1) * hd]                          # [hd]
                kh = self.k_cache[li][:pos + 1, kvh * hd:(kvh + 1) * hd]   # [p+1, hd]
                vh = self.v_cache[li][:pos + 1, kvh * hd:(kvh + 1) * hd]   # [p+1, hd]
                scores = oracle.seq_sum((kh * qh[None, :])[:, order], axis=1) / sqrt_hd
                w = oracle.softmax(scores)
                attn[head * hd:(head + 1) * hd] = oracle.seq_sum(w[:, None] * vh, axis=0)
            x = x + oracle.linear(layer["wo"], attn)
            h = oracle.rmsnorm(x, layer["ffn_norm"], m.norm_eps)
            if m.moe:
                x = x + oracle.moe_ffn(layer, h, m.k, m.norm_topk_prob)
            else:
                x = x + oracle.ffn(layer["ffn"], h)
            assert x.dtype == np.float32
        return oracle.linear(m.lm_head, oracle.rmsnorm(x, m.final_norm, m.norm_eps))


def generate(model, prompt, n_tokens, sum_order="spec"):
    return oracle.generate(model, prompt, n_tokens, lambda m: HFRunner(m, sum_order))


def main(argv):
    p = argparse.ArgumentParser(description="NumPy reference run of a Hugging Face checkpoint (rotate-half order).")
    p.add_argument("hf_dir", metavar="HF_DIR")
    p.add_argument("--prompt", type=oracle.parse_prompt, required=True, help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--tokens", type=int, required=True, help="number of tokens to generate (K)")
    p.add_argument("--out", required=True, metavar="ORACLE.h5")
    p.add_argument("--sum-order", choices=["spec", "hf"], default="spec",
                   help="order of the float32 additions over a head (see the module doc)")
    a = p.parse_args(argv)
    try:
        model = HFModel(a.hf_dir)
        tokens, logits = generate(model, a.prompt, a.tokens, a.sum_order)
    except (OSError, KeyError, ValueError) as e:
        print("hf_oracle: %s: %s" % (a.hf_dir, e), file=sys.stderr)
        return 2
    oracle.write_result(a.out, a.prompt, tokens, logits, "tests/oracle/hf_oracle.py", a.hf_dir)
    print("hf_oracle: prompt %s -> tokens %s" % (",".join(map(str, a.prompt)), ",".join(map(str, tokens))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
