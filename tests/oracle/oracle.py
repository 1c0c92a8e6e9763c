#!/usr/bin/python3
"""Reference NumPy implementation of SPEC "Numerics (W8A8, exact integer matmuls)".

Written from shared/SPEC.md only (no C++ code was read), as an independent
oracle for the lpurt C++ program. It is deliberately plain: one token at a
time, one layer at a time, one head at a time, every non-matmul value float32.

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


class Model:
    """Configuration and all weights of a SPEC format-version-1 model file."""

    def __init__(self, path):
        with h5py.File(path, "r") as f:
            at = f.attrs
            fmt = attr_str(at["format"])
            if fmt != "lpurt-model":
                raise ValueError("%s: format attribute %r, expected 'lpurt-model'" % (path, fmt))
            if int(at["format_version"]) != 1:
                raise ValueError("%s: format_version %s, expected 1" % (path, at["format_version"]))
            self.arch = attr_str(at["architecture"])
            if self.arch not in ("llama", "mixtral"):
                raise ValueError("%s: architecture %r, expected llama or mixtral" % (path, self.arch))
            self.V = int(at["vocab_size"])
            self.D = int(at["hidden_size"])
            self.F = int(at["intermediate_size"])
            self.L = int(at["n_layers"])
            self.H = int(at["n_heads"])
            self.Hkv = int(at["n_kv_heads"])
            self.S = int(at["max_seq_len"])
            self.rope_theta = F32(at["rope_theta"])
            self.norm_eps = F32(at["norm_eps"])
            if self.arch == "mixtral":
                self.E = int(at["n_experts"])
                self.k = int(at["n_experts_per_token"])
            if self.D % self.H or self.H % self.Hkv:
                raise ValueError("%s: D=%d, H=%d, Hkv=%d do not divide" % (path, self.D, self.H, self.Hkv))
            self.hd = self.D // self.H
            if self.hd % 2:
                raise ValueError("%s: head_dim %d is odd; RoPE needs pairs" % (path, self.hd))

            V, D, F, H, Hkv, hd = self.V, self.D, self.F, self.H, self.Hkv, self.hd
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
                if self.arch == "llama":
                    layer["ffn"] = self._read_ffn(g, base)
                else:
                    router = np.asarray(g["router"][...])
                    if router.dtype != np.float32 or router.shape != (self.E, D):
                        raise ValueError("%s/router: %s %s, expected float32 %s"
                                         % (base, router.dtype, router.shape, (self.E, D)))
                    layer["router"] = router
                    layer["experts"] = [self._read_ffn(g["experts"][str(e)], "%s/experts/%d" % (base, e))
                                        for e in range(self.E)]
                self.layers.append(layer)
            self.final_norm = read_vector(f, "/final_norm", D)
            self.lm_head = Matrix(f["lm_head"], "/lm_head")
            self.lm_head.check_shape(V, D)

    def _read_ffn(self, g, base):
        ffn = {}
        for name, n_out, n_in in (("w_gate", self.F, self.D), ("w_up", self.F, self.D),
                                  ("w_down", self.D, self.F)):
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


def rope(x, n_heads, hd, pos, theta):
    """Interleaved RoPE per head on pairs (2i, 2i+1), angle pos * theta^(-2i/hd), float32."""
    i = np.arange(hd // 2, dtype=np.float32)
    exponent = (F32(-2) * i) / F32(hd)                 # -2i/hd, float32
    # theta^(-2i/hd), cos and sin correctly rounded to float32 (computed in float64, rounded once).
    freq = np.power(np.float64(theta), exponent.astype(np.float64)).astype(np.float32)
    angle = F32(pos) * freq
    c = np.cos(angle.astype(np.float64)).astype(np.float32)
    s = np.sin(angle.astype(np.float64)).astype(np.float32)
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


def moe_ffn(layer, h, k):
    """SPEC mixtral FFN: top-k router experts, softmax of their logits, summed in ascending expert index."""
    logits = seq_sum(layer["router"] * h[None, :], axis=1)  # float32 [E], each dot in index order
    assert logits.dtype == np.float32
    # Stable sort of -logits: among equal logits the lower index comes first.
    chosen = np.argsort(-logits, kind="stable")[:k]
    weights = softmax(logits[chosen])
    out = np.zeros(h.shape, dtype=np.float32)
    for e, w_e in sorted(zip(chosen.tolist(), weights.tolist())):
        out = out + F32(w_e) * ffn(layer["experts"][e], h)
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
            q = rope(linear(layer["wq"], h), H, hd, pos, m.rope_theta)
            k = rope(linear(layer["wk"], h), Hkv, hd, pos, m.rope_theta)
            v = linear(layer["wv"], h)
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
            if m.arch == "llama":
                x = x + ffn(layer["ffn"], h)
            else:
                x = x + moe_ffn(layer, h, m.k)
            assert x.dtype == np.float32
        return linear(m.lm_head, rmsnorm(x, m.final_norm, m.norm_eps))


def generate(model, prompt, n_tokens):
    """Return (tokens int32 [K], logits float32 [K, V]) per SPEC's generation rule."""
    if len(prompt) == 0:
        raise ValueError("empty prompt")
    if n_tokens < 1:
        raise ValueError("--tokens must be >= 1 (got %d)" % n_tokens)
    # The last generated token is never fed, so positions used are 0 .. P+K-2.
    if len(prompt) + n_tokens - 1 > model.S:
        raise ValueError("prompt (%d) + tokens (%d) - 1 exceeds max_seq_len %d"
                         % (len(prompt), n_tokens, model.S))
    runner = Runner(model)
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
    with h5py.File(a.out, "w") as f:
        f.create_dataset("tokens", data=tokens)
        f.create_dataset("prompt", data=np.array(a.prompt, dtype=np.int32))
        f.create_dataset("logits", data=logits)
        f.attrs["producer"] = "tests/oracle/oracle.py"
        f.attrs["model"] = a.model
    print("oracle: prompt %s -> tokens %s" % (",".join(map(str, a.prompt)), ",".join(map(str, tokens))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
