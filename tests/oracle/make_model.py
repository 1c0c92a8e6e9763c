#!/usr/bin/python3
"""Write a random, deterministic lpurt model file (SPEC "Model file (HDF5), format version 1").

Written from shared/SPEC.md only, independently of the C++ code, so that the
oracle (oracle.py) and the C++ program can be checked against each other on
models that neither of them produced.

Usage:
  make_model.py OUT.h5 --vocab V --hidden D --intermediate F --layers L
                --heads H --kv-heads HKV --max-seq S
                [--arch llama|mixtral --experts E --experts-per-token K]
                [--seed N] [--rope-theta 10000] [--norm-eps 1e-5]
                [--str-attrs utf8|ascii|fixed]

String attributes (`format`, `architecture`): --str-attrs picks how they are
stored. `utf8` (default) is what h5py writes for a plain Python str: a
variable-length string with character set UTF-8. `ascii` is variable-length
ASCII, `fixed` is fixed-length ASCII (NULLPAD). HDF5 1.10 will not convert
between these on read (UTF-8 -> ASCII memory type, or variable -> fixed, fails
with "no appropriate function for conversion path"), so a reader must build
its memory type from the attribute's own type; the option lets tests cover all
three.

Weights:
  * int8 weights uniform in [-127, 127];
  * per-output-row float32 scales sqrt(3) / (127 * sqrt(in)) * U(0.75, 1.25), so
    that y = W x keeps roughly the RMS of x (Var(w) = 127^2 / 3 per entry);
  * embedding rows scaled to RMS 1 exactly (up to float32 rounding);
  * norm vectors 1 + 0.1 * N(0, 1);
  * mixtral router N(0, 1) / sqrt(D).
Everything comes from one numpy Generator seeded with --seed, drawn in a fixed
order, so the same arguments always give the same file contents.
"""

import argparse
import sys

import h5py
import numpy as np


def random_int8(rng, shape):
    """int8 array, entries uniform in [-127, 127] (never -128)."""
    return rng.integers(-127, 127, size=shape, dtype=np.int8, endpoint=True)


def write_str_attr(obj, name, value, how):
    """Write a string attribute in one of the three layouts described in the module doc."""
    if how == "utf8":
        obj.attrs[name] = value  # h5py default: variable-length, UTF-8
    elif how == "ascii":
        obj.attrs.create(name, value, dtype=h5py.string_dtype("ascii"))
    else:
        obj.attrs[name] = np.bytes_(value.encode("ascii"))  # fixed-length ASCII


def write_matrix(group, name, rng, n_out, n_in):
    """Write group/name/weight int8 [n_out, n_in] and group/name/scale float32 [n_out]."""
    weight = random_int8(rng, (n_out, n_in))
    # Var of one int8 entry is about 127^2 / 3, so this scale makes the output
    # RMS close to the input RMS; the jitter makes the per-row scale matter.
    base = np.sqrt(3.0) / (127.0 * np.sqrt(float(n_in)))
    scale = (base * rng.uniform(0.75, 1.25, size=n_out)).astype(np.float32)
    sub = group.create_group(name)
    sub.create_dataset("weight", data=weight)
    sub.create_dataset("scale", data=scale)


def write_norm(group, name, rng, dim):
    """Write a float32 [dim] norm gain vector, 1 + 0.1 * noise."""
    gain = (1.0 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
    group.create_dataset(name, data=gain)


def write_ffn(group, rng, dim, n_inter):
    """Write w_gate [F, D], w_up [F, D], w_down [D, F] into group."""
    write_matrix(group, "w_gate", rng, n_inter, dim)
    write_matrix(group, "w_up", rng, n_inter, dim)
    write_matrix(group, "w_down", rng, dim, n_inter)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Write a random lpurt model file (SPEC format version 1).")
    p.add_argument("out", metavar="OUT.h5")
    p.add_argument("--vocab", type=int, required=True, help="V")
    p.add_argument("--hidden", type=int, required=True, help="D")
    p.add_argument("--intermediate", type=int, required=True, help="F")
    p.add_argument("--layers", type=int, required=True, help="L")
    p.add_argument("--heads", type=int, required=True, help="H")
    p.add_argument("--kv-heads", type=int, required=True, help="Hkv")
    p.add_argument("--max-seq", type=int, required=True, help="S")
    p.add_argument("--arch", choices=["llama", "mixtral"], default="llama")
    p.add_argument("--experts", type=int, default=0, help="E (mixtral only)")
    p.add_argument("--experts-per-token", type=int, default=0, help="k (mixtral only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--norm-eps", type=float, default=1e-5)
    p.add_argument("--str-attrs", choices=["utf8", "ascii", "fixed"], default="utf8",
                   help="storage of string attributes (default: h5py's, variable-length UTF-8)")
    a = p.parse_args(argv)

    def fail(msg):
        p.error(msg)

    for name in ("vocab", "hidden", "intermediate", "layers", "heads", "kv_heads", "max_seq"):
        if getattr(a, name) <= 0:
            fail("--%s must be positive (got %d)" % (name.replace("_", "-"), getattr(a, name)))
    if a.hidden % a.heads != 0:
        fail("--hidden must be divisible by --heads (got D=%d, H=%d)" % (a.hidden, a.heads))
    if (a.hidden // a.heads) % 2 != 0:
        fail("head_dim = D / H must be even for RoPE pairs (got %d)" % (a.hidden // a.heads))
    if a.heads % a.kv_heads != 0:
        fail("--heads must be divisible by --kv-heads (got H=%d, Hkv=%d)" % (a.heads, a.kv_heads))
    if a.arch == "mixtral":
        if a.experts <= 0 or not (1 <= a.experts_per_token <= a.experts):
            fail("mixtral needs --experts E >= 1 and 1 <= --experts-per-token k <= E "
                 "(got E=%d, k=%d)" % (a.experts, a.experts_per_token))
    elif a.experts or a.experts_per_token:
        fail("--experts / --experts-per-token are only for --arch mixtral")
    return a


def main(argv):
    a = parse_args(argv)
    rng = np.random.default_rng(a.seed)
    V, D, F, L = a.vocab, a.hidden, a.intermediate, a.layers
    H, Hkv = a.heads, a.kv_heads
    hd = D // H

    with h5py.File(a.out, "w") as f:
        # Root attributes, names and meaning exactly as in SPEC.
        write_str_attr(f, "format", "lpurt-model", a.str_attrs)
        f.attrs["format_version"] = np.int64(1)
        write_str_attr(f, "architecture", a.arch, a.str_attrs)
        f.attrs["vocab_size"] = np.int64(V)
        f.attrs["hidden_size"] = np.int64(D)
        f.attrs["intermediate_size"] = np.int64(F)
        f.attrs["n_layers"] = np.int64(L)
        f.attrs["n_heads"] = np.int64(H)
        f.attrs["n_kv_heads"] = np.int64(Hkv)
        f.attrs["max_seq_len"] = np.int64(a.max_seq)
        f.attrs["rope_theta"] = np.float64(a.rope_theta)
        f.attrs["norm_eps"] = np.float64(a.norm_eps)
        if a.arch == "mixtral":
            f.attrs["n_experts"] = np.int64(a.experts)
            f.attrs["n_experts_per_token"] = np.int64(a.experts_per_token)

        # Embedding: x = float(E[t]) * scale[t]; pick scale[t] = 1 / RMS(E[t]).
        emb_w = random_int8(rng, (V, D))
        rms = np.sqrt(np.mean(emb_w.astype(np.float64) ** 2, axis=1))
        rms[rms == 0.0] = 1.0
        emb = f.create_group("embedding")
        emb.create_dataset("weight", data=emb_w)
        emb.create_dataset("scale", data=(1.0 / rms).astype(np.float32))

        layers = f.create_group("layers")
        for i in range(L):
            g = layers.create_group(str(i))
            write_norm(g, "attn_norm", rng, D)
            write_matrix(g, "wq", rng, H * hd, D)
            write_matrix(g, "wk", rng, Hkv * hd, D)
            write_matrix(g, "wv", rng, Hkv * hd, D)
            write_matrix(g, "wo", rng, D, H * hd)
            write_norm(g, "ffn_norm", rng, D)
            if a.arch == "llama":
                write_ffn(g, rng, D, F)
            else:
                router = (rng.standard_normal((a.experts, D)) / np.sqrt(D)).astype(np.float32)
                g.create_dataset("router", data=router)
                experts = g.create_group("experts")
                for e in range(a.experts):
                    write_ffn(experts.create_group(str(e)), rng, D, F)

        write_norm(f, "final_norm", rng, D)
        write_matrix(f, "lm_head", rng, V, D)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
