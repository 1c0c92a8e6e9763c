#!/usr/bin/python3
"""Reference NumPy implementation of SPEC "Numerics (W8A8, exact integer matmuls)".

Written from shared/SPEC.md only (no C++ code was read), as an independent
oracle for the lpurt C++ program. It is deliberately plain: one token at a
time, one layer at a time, one head at a time, every non-matmul value float32.

Reads model files of format version 1 and 2 (SPEC "Model file, format version
2"): architectures llama (also Llama 3), mistral (read as llama), mixtral,
qwen2, qwen3, qwen3_moe, with the optional root attributes head_dim,
attention_bias, qk_norm, tie_word_embeddings, rope_scaling_type "llama3" (+ its
four parameters), moe_intermediate_size and norm_topk_prob.

Usage:
  oracle.py MODEL.h5 --prompt 1,2,3 --tokens K --out ORACLE.h5

The prompt is fed at positions 0 .. P-1; the logits after the last prompt token
give generated token 1; each generated token is then fed back (positions P,
P+1, ...) to produce the next, until K tokens are generated. Output file:
  /tokens  int32   [K]     generated tokens
  /prompt  int32   [P]     the prompt
  /logits  float32 [K, V]  logits that produced each generated token

Float32 discipline: numpy promotes float32 to float64 as soon as a float64
*array* or a float64 numpy scalar meets a float32 numpy scalar, so every
constant below is wrapped in np.float32 and the helpers assert their output
dtype. The only float64 use is the integer matmul, where it is exact (see
int_matvec).
"""

import argparse
import os
import sys

import h5py
import numpy as np

F32 = np.float32
INT32_MAX = 2 ** 31 - 1


# --------------------------------------------------------------------------
# Model loading
# --------------------------------------------------------------------------

def attr_str(value):
    """HDF5 string attributes come back as str or bytes depending on how they were written."""
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, np.ndarray):  # fixed-length string stored as a 1-element array
        return attr_str(value.reshape(-1)[0])
    return str(value)


class Matrix:
    """One SPEC matrix: int8 weight [out, in] plus float32 per-output-row scale [out]."""

    def __init__(self, group, path):
        self.path = path
        self.weight = np.asarray(group["weight"][...])  # int8 [out, in]
        self.scale = np.asarray(group["scale"][...])    # float32 [out]
        if self.weight.dtype != np.int8:
            raise ValueError("%s/weight: dtype %s, expected int8" % (path, self.weight.dtype))
        if self.scale.dtype != np.float32:
            raise ValueError("%s/scale: dtype %s, expected float32" % (path, self.scale.dtype))
        if self.weight.ndim != 2 or self.scale.shape != (self.weight.shape[0],):
            raise ValueError("%s: weight shape %s and scale shape %s do not match"
                             % (path, self.weight.shape, self.scale.shape))
        # float64 copy of the int8 weights, used for the exact integer matmul.
        self.weight_f64 = self.weight.astype(np.float64)

    def check_shape(self, n_out, n_in):
        if self.weight.shape != (n_out, n_in):
            raise ValueError("%s/weight: shape %s, expected %s"
                             % (self.path, self.weight.shape, (n_out, n_in)))


def read_vector(f, path, n):
    v = np.asarray(f[path][...])
    if v.dtype != np.float32 or v.shape != (n,):
        raise ValueError("%s: %s %s, expected float32 (%d,)" % (path, v.dtype, v.shape, n))
    return v


ARCHITECTURES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe")
MOE_ARCHITECTURES = ("mixtral", "qwen3_moe")
# Root attributes that only format version 2 defines (SPEC table), with their defaults.
V2_ATTRIBUTES = ("head_dim", "attention_bias", "qk_norm", "tie_word_embeddings", "rope_scaling_type",
                 "rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                 "rope_original_max_position", "moe_intermediate_size", "norm_topk_prob")


def read_flag(at, name, path):
    """An optional 0/1 integer attribute (default 0)."""
    value = int(at[name]) if name in at else 0
    if value not in (0, 1):
        raise ValueError("%s: attribute %s = %d, expected 0 or 1" % (path, name, value))
    return value


class Model:
    """Configuration and all weights of a SPEC model file, format version 1 or 2."""

    def __init__(self, path):
        with h5py.File(path, "r") as f:
            at = f.attrs
            fmt = attr_str(at["format"])
            if fmt != "lpurt-model":
                raise ValueError("%s: format attribute %r, expected 'lpurt-model'" % (path, fmt))
            self.version = int(at["format_version"])
            if self.version not in (1, 2):
                raise ValueError("%s: format_version %s, expected 1 or 2" % (path, at["format_version"]))
            self.arch = attr_str(at["architecture"])
            allowed = ("llama", "mixtral") if self.version == 1 else ARCHITECTURES
            if self.arch not in allowed:
                raise ValueError("%s: architecture %r, expected one of %s for format_version %d"
                                 % (path, self.arch, ", ".join(allowed), self.version))
            if self.version == 1:
                extra = [n for n in V2_ATTRIBUTES if n in at]
                if extra:
                    raise ValueError("%s: format_version 1 with version-2 attributes %s" % (path, ", ".join(extra)))
            self.moe = self.arch in MOE_ARCHITECTURES
            self.V = int(at["vocab_size"])
            self.D = int(at["hidden_size"])
            self.F = int(at["intermediate_size"])
            self.L = int(at["n_layers"])
            self.H = int(at["n_heads"])
            self.Hkv = int(at["n_kv_heads"])
            self.S = int(at["max_seq_len"])
            self.rope_theta = F32(at["rope_theta"])
            self.norm_eps = F32(at["norm_eps"])
            if self.moe:
                self.E = int(at["n_experts"])
                self.k = int(at["n_experts_per_token"])
                if not 1 <= self.k <= self.E:
                    raise ValueError("%s: n_experts_per_token %d not in [1, n_experts=%d]" % (path, self.k, self.E))
            if self.H % self.Hkv:
                raise ValueError("%s: n_heads %d not divisible by n_kv_heads %d" % (path, self.H, self.Hkv))
            if "head_dim" in at:
                self.hd = int(at["head_dim"])
            elif self.D % self.H:
                raise ValueError("%s: D=%d not divisible by H=%d and no head_dim" % (path, self.D, self.H))
            else:
                self.hd = self.D // self.H
            if self.hd <= 0 or self.hd % 2:
                raise ValueError("%s: head_dim %d is not positive and even; RoPE needs pairs" % (path, self.hd))
            self.attention_bias = read_flag(at, "attention_bias", path)
            self.qk_norm = read_flag(at, "qk_norm", path)
            self.tied = read_flag(at, "tie_word_embeddings", path)
            self.norm_topk_prob = read_flag(at, "norm_topk_prob", path) if "norm_topk_prob" in at else 1
            self.Fe = int(at["moe_intermediate_size"]) if "moe_intermediate_size" in at else self.F
            self.rope_scaling = None
            scaling = attr_str(at["rope_scaling_type"]) if "rope_scaling_type" in at else "none"
            if scaling == "llama3":
                self.rope_scaling = Llama3Scaling(float(at["rope_scaling_factor"]), float(at["rope_low_freq_factor"]),
                                                  float(at["rope_high_freq_factor"]),
                                                  int(at["rope_original_max_position"]))
            elif scaling not in ("none", ""):
                raise ValueError("%s: rope_scaling_type %r, expected none or llama3" % (path, scaling))
            self.freqs = rope_freqs(self.hd, self.rope_theta, self.rope_scaling)

            V, D, H, Hkv, hd = self.V, self.D, self.H, self.Hkv, self.hd
            self.embedding = Matrix(f["embedding"], "/embedding")
            self.embedding.check_shape(V, D)
            self.layers = []
            for i in range(self.L):
                base = "/layers/%d" % i
                g = f[base]
                layer = {
                    "attn_norm": read_vector(f, base + "/attn_norm", D),
                    "ffn_norm": read_vector(f, base + "/ffn_norm", D),
                }
                for name, n_out, n_in in (("wq", H * hd, D), ("wk", Hkv * hd, D),
                                          ("wv", Hkv * hd, D), ("wo", D, H * hd)):
                    layer[name] = Matrix(g[name], base + "/" + name)
                    layer[name].check_shape(n_out, n_in)
                    if self.attention_bias and name != "wo":
                        layer[name + "_bias"] = read_vector(f, "%s/%s/bias" % (base, name), n_out)
                if self.qk_norm:
                    layer["q_norm"] = read_vector(f, base + "/q_norm", hd)
                    layer["k_norm"] = read_vector(f, base + "/k_norm", hd)
                if not self.moe:
                    layer["ffn"] = self._read_ffn(g, base, self.F)
                else:
                    router = np.asarray(g["router"][...])
                    if router.dtype != np.float32 or router.shape != (self.E, D):
                        raise ValueError("%s/router: %s %s, expected float32 %s"
                                         % (base, router.dtype, router.shape, (self.E, D)))
                    layer["router"] = router
                    layer["experts"] = [self._read_ffn(g["experts"][str(e)], "%s/experts/%d" % (base, e), self.Fe)
                                        for e in range(self.E)]
                self.layers.append(layer)
            self.final_norm = read_vector(f, "/final_norm", D)
            if self.tied:
                if "lm_head" in f:
                    raise ValueError("%s: tie_word_embeddings = 1 but /lm_head is present" % path)
                self.lm_head = self.embedding
            else:
                self.lm_head = Matrix(f["lm_head"], "/lm_head")
                self.lm_head.check_shape(V, D)

    def _read_ffn(self, g, base, n_inter):
        ffn = {}
        for name, n_out, n_in in (("w_gate", n_inter, self.D), ("w_up", n_inter, self.D),
                                  ("w_down", self.D, n_inter)):
            ffn[name] = Matrix(g[name], base + "/" + name)
            ffn[name].check_shape(n_out, n_in)
        return ffn


# --------------------------------------------------------------------------
# Numerics, one function per SPEC bullet
# --------------------------------------------------------------------------

def quantize(v):
    """SPEC quantize(v): returns (q int8-valued array, s float32 scale)."""
    assert v.dtype == np.float32
    a = F32(np.max(np.abs(v)))
    if a == F32(0):
        return np.zeros(v.shape, dtype=np.int8), F32(1)
    s = F32(a / F32(127))
    # np.rint rounds half to even, as SPEC asks; the division is float32 / float32.
    q = np.clip(np.rint(v / s), -127, 127).astype(np.int8)
    return q, s


def int_matvec(weight_f64, q):
    """acc_j = sum_k W[j,k] * q_k, exactly.

    Done in float64 BLAS for speed. It is exact: every product is an integer of
    magnitude <= 127*127 and every partial sum, in whatever order BLAS adds them,
    is an integer of magnitude <= 127*127*in < 2^53, so no rounding can happen.
    """
    acc = weight_f64 @ q.astype(np.float64)
    if np.max(np.abs(acc), initial=0.0) > INT32_MAX:
        raise OverflowError("integer matmul accumulator exceeds int32")
    return acc.astype(np.int64)


def linear(m, v):
    """SPEC linear(W, v): y_j = (float(acc_j) * s) * W.scale[j], all float32."""
    q, s = quantize(v)
    acc = int_matvec(m.weight_f64, q)
    # int -> float32 rounds to nearest even, like a C++ static_cast<float>(int32).
    y = (acc.astype(np.float32) * s) * m.scale
    assert y.dtype == np.float32
    return y


def seq_sum(a, axis=-1):
    """Float32 sum in increasing index order along `axis` (lpurt's numerics fix the order of every sum:
    np.sum adds pairwise and BLAS in SIMD lanes, which rounds differently). A prefix sum is sequential."""
    assert a.dtype == np.float32
    return np.take(np.add.accumulate(a, axis=axis, dtype=np.float32), -1, axis=axis)


def exp32(z):
    """expf, correctly rounded: computed in float64 and rounded once (glibc's expf is correctly rounded)."""
    with np.errstate(over="ignore"):
        return np.exp(z.astype(np.float64)).astype(np.float32)


def rmsnorm(x, g, eps):
    """SPEC rmsnorm: x_i * (1 / sqrt(sum_i(x_i^2) / D + eps)) * g_i."""
    assert x.dtype == np.float32 and g.dtype == np.float32
    ss = F32(seq_sum(x * x))
    inv = F32(F32(1) / np.sqrt(F32(ss / F32(x.shape[0]) + eps)))
    y = (x * inv) * g
    assert y.dtype == np.float32
    return y


def silu(z):
    """SPEC silu(z) = z / (1 + exp(-z)); exp may overflow to inf for very negative z, giving -0."""
    with np.errstate(over="ignore"):
        y = z / (F32(1) + exp32(-z))
    assert y.dtype == np.float32
    return y


def softmax(z):
    """Softmax subtracting the max, float32."""
    e = exp32(z - F32(np.max(z)))
    y = e / F32(seq_sum(e))
    assert y.dtype == np.float32
    return y


class Llama3Scaling:
    """SPEC rope_scaling_type "llama3" (Hugging Face rope_type "llama3"): factor, low/high_freq_factor, orig."""

    def __init__(self, factor, low_freq_factor, high_freq_factor, original_max_position):
        if not (factor > 0 and 0 < low_freq_factor < high_freq_factor and original_max_position > 0):
            raise ValueError("llama3 rope scaling: need factor > 0, 0 < low < high, orig > 0 (got %r, %r, %r, %r)"
                             % (factor, low_freq_factor, high_freq_factor, original_max_position))
        self.factor = float(factor)
        self.low = float(low_freq_factor)
        self.high = float(high_freq_factor)
        self.orig = int(original_max_position)

    def bands(self, f):
        """For float64 frequencies f: per frequency 'keep', 'smooth' or 'divide' (which formula applies)."""
        wl = 2.0 * np.pi / f
        lo, hi = self.orig / self.low, self.orig / self.high
        return np.where(wl < hi, "keep", np.where(wl > lo, "divide", "smooth"))

    def apply(self, f):
        """SPEC's formula on float64 frequencies f, in float64."""
        wl = 2.0 * np.pi / f
        s = (self.orig / wl - self.low) / (self.high - self.low)
        smooth = (1.0 - s) * f / self.factor + s * f
        band = self.bands(f)
        return np.where(band == "keep", f, np.where(band == "divide", f / self.factor, smooth))


def rope_freqs(hd, theta, scaling=None):
    """RoPE frequency of pair i (i = 0 .. hd/2-1): theta^(-2i/hd), float32 [hd/2].

    The exponent -2i/hd is float32 and the power is correctly rounded to float32 (float64, rounded
    once), like powf. With llama3 scaling, SPEC's formula runs in float64 on the float64 power and
    the result is rounded once; its "keep" band is then the unscaled table to the bit.
    """
    i = np.arange(hd // 2, dtype=np.float32)
    exponent = (F32(-2) * i) / F32(hd)                 # -2i/hd, float32
    freq = np.power(np.float64(theta), exponent.astype(np.float64))
    if scaling is not None:
        freq = scaling.apply(freq)
    return freq.astype(np.float32)


def rope_cos_sin(freqs, pos):
    """cos and sin of the angles pos * f (float32 product), each correctly rounded to float32."""
    angle = F32(pos) * freqs
    assert angle.dtype == np.float32
    return np.cos(angle.astype(np.float64)).astype(np.float32), np.sin(angle.astype(np.float64)).astype(np.float32)


def rope(x, n_heads, hd, pos, freqs):
    """Interleaved RoPE per head on pairs (2i, 2i+1), angle pos * freqs[i], float32."""
    c, s = rope_cos_sin(freqs, pos)
    xh = x.reshape(n_heads, hd // 2, 2)
    x0, x1 = xh[:, :, 0], xh[:, :, 1]
    out = np.empty_like(xh)
    out[:, :, 0] = x0 * c - x1 * s
    out[:, :, 1] = x0 * s + x1 * c
    out = out.reshape(-1)
    assert out.dtype == np.float32
    return out


def ffn(w, h):
    """SPEC dense FFN: linear(w_down, silu(linear(w_gate, h)) * linear(w_up, h))."""
    return linear(w["w_down"], silu(linear(w["w_gate"], h)) * linear(w["w_up"], h))


def route(router, h, k, norm_topk_prob=1):
    """SPEC MoE routing: (chosen experts in ascending index, their float32 weights).

    Router logits router . h in float32 (each dot in index order); the top k by a stable sort
    (ties: lower index); weights = softmax of the k chosen logits (norm_topk_prob 1), or the
    softmax over all E logits read at the chosen experts (norm_topk_prob 0).
    """
    logits = seq_sum(router * h[None, :], axis=1)  # float32 [E]
    assert logits.dtype == np.float32
    chosen = np.argsort(-logits, kind="stable")[:k]  # stable sort of -logits: equal logits keep index order
    weights = softmax(logits[chosen]) if norm_topk_prob else softmax(logits)[chosen]
    order = np.argsort(chosen, kind="stable")
    return chosen[order], weights[order]


def moe_ffn(layer, h, k, norm_topk_prob=1):
    """SPEC MoE FFN (mixtral, qwen3_moe): routed experts summed in ascending expert index."""
    chosen, weights = route(layer["router"], h, k, norm_topk_prob)
    out = np.zeros(h.shape, dtype=np.float32)
    for e, w_e in zip(chosen.tolist(), weights):
        out = out + w_e * ffn(layer["experts"][e], h)
    assert out.dtype == np.float32
    return out


# --------------------------------------------------------------------------
# Forward pass with KV cache
# --------------------------------------------------------------------------

class Runner:
    def __init__(self, model):
        self.m = model
        # KV cache per layer: float32 [S, Hkv*hd] (row p holds position p, after RoPE for k).
        kv = model.Hkv * model.hd
        self.k_cache = [np.zeros((model.S, kv), dtype=np.float32) for _ in range(model.L)]
        self.v_cache = [np.zeros((model.S, kv), dtype=np.float32) for _ in range(model.L)]

    def step(self, token, pos):
        """Feed one token at position pos; return the float32 logits [V]."""
        m = self.m
        if not 0 <= token < m.V:
            raise ValueError("token %d out of range [0, %d)" % (token, m.V))
        if not 0 <= pos < m.S:
            raise ValueError("position %d out of range [0, max_seq_len=%d)" % (pos, m.S))
        H, Hkv, hd = m.H, m.Hkv, m.hd
        group = H // Hkv
        sqrt_hd = np.sqrt(F32(hd))  # SPEC divides the scores by sqrt(hd)

        x = m.embedding.weight[token].astype(np.float32) * m.embedding.scale[token]
        for li, layer in enumerate(m.layers):
            h = rmsnorm(x, layer["attn_norm"], m.norm_eps)
            q, k, v = linear(layer["wq"], h), linear(layer["wk"], h), linear(layer["wv"], h)
            if m.attention_bias:
                q, k, v = q + layer["wq_bias"], k + layer["wk_bias"], v + layer["wv_bias"]
            if m.qk_norm:  # per head, over hd
                q = np.concatenate([rmsnorm(qh, layer["q_norm"], m.norm_eps) for qh in q.reshape(H, hd)])
                k = np.concatenate([rmsnorm(kh, layer["k_norm"], m.norm_eps) for kh in k.reshape(Hkv, hd)])
            q = rope(q, H, hd, pos, m.freqs)
            k = rope(k, Hkv, hd, pos, m.freqs)
            self.k_cache[li][pos] = k
            self.v_cache[li][pos] = v

            attn = np.empty(H * hd, dtype=np.float32)
            for head in range(H):
                kvh = head // group
                qh = q[head * hd:(head + 1) * hd]                          # [hd]
                kh = self.k_cache[li][:pos + 1, kvh * hd:(kvh + 1) * hd]   # [p+1, hd]
                vh = self.v_cache[li][:pos + 1, kvh * hd:(kvh + 1) * hd]   # [p+1, hd]
                scores = seq_sum(kh * qh[None, :], axis=1) / sqrt_hd      # dots in index order
                w = softmax(scores)
                attn[head * hd:(head + 1) * hd] = seq_sum(w[:, None] * vh, axis=0)  # sum over j in order
            x = x + linear(layer["wo"], attn)

            h = rmsnorm(x, layer["ffn_norm"], m.norm_eps)
            if m.moe:
                x = x + moe_ffn(layer, h, m.k, m.norm_topk_prob)
            else:
                x = x + ffn(layer["ffn"], h)
            assert x.dtype == np.float32
        # Tied embeddings: lm_head is the embedding matrix (its int8 weight and its scale).
        return linear(m.lm_head, rmsnorm(x, m.final_norm, m.norm_eps))


def generate(model, prompt, n_tokens, make_runner=None):
    """Return (tokens int32 [K], logits float32 [K, V]) per SPEC's generation rule.

    make_runner(model) gives an object with step(token, pos) -> logits (default: Runner).
    """
    if len(prompt) == 0:
        raise ValueError("empty prompt")
    if n_tokens < 1:
        raise ValueError("--tokens must be >= 1 (got %d)" % n_tokens)
    # The last generated token is never fed, so positions used are 0 .. P+K-2.
    if len(prompt) + n_tokens - 1 > model.S:
        raise ValueError("prompt (%d) + tokens (%d) - 1 exceeds max_seq_len %d"
                         % (len(prompt), n_tokens, model.S))
    for t in prompt:
        if not 0 <= t < model.V:
            raise ValueError("prompt token %d out of range [0, vocab_size=%d)" % (t, model.V))
    runner = (make_runner or Runner)(model)
    pos = 0
    for t in prompt:
        logits = runner.step(t, pos)
        pos += 1
    tokens, all_logits = [], []
    while True:
        nxt = int(np.argmax(logits))  # first occurrence of the max: lowest index on ties
        tokens.append(nxt)
        all_logits.append(logits)
        if len(tokens) == n_tokens:
            break
        logits = runner.step(nxt, pos)
        pos += 1
    return np.array(tokens, dtype=np.int32), np.stack(all_logits).astype(np.float32)


def write_result(path, prompt, tokens, logits, producer, model):
    """/tokens int32 [K], /prompt int32 [P], /logits float32 [K, V] (SPEC "Result file"), written atomically."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.create_dataset("tokens", data=np.asarray(tokens, dtype=np.int32))
        f.create_dataset("prompt", data=np.array(prompt, dtype=np.int32))
        f.create_dataset("logits", data=np.asarray(logits, dtype=np.float32))
        f.attrs["producer"] = producer
        f.attrs["model"] = model
    os.replace(tmp, path)


def parse_prompt(text):
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError("--prompt wants comma-separated integers (got %r)" % text)


def main(argv):
    p = argparse.ArgumentParser(description="NumPy reference implementation of SPEC numerics.")
    p.add_argument("model", metavar="MODEL.h5")
    p.add_argument("--prompt", type=parse_prompt, required=True, help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--tokens", type=int, required=True, help="number of tokens to generate (K)")
    p.add_argument("--out", required=True, metavar="ORACLE.h5")
    a = p.parse_args(argv)

    try:
        model = Model(a.model)
        tokens, logits = generate(model, a.prompt, a.tokens)
    except (OSError, KeyError, ValueError) as e:
        # Bad model file, missing dataset/attribute, or bad prompt/token count.
        print("oracle: %s: %s" % (a.model, e), file=sys.stderr)
        return 2
    write_result(a.out, a.prompt, tokens, logits, "tests/oracle/oracle.py", a.model)
    print("oracle: prompt %s -> tokens %s" % (",".join(map(str, a.prompt)), ",".join(map(str, tokens))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
