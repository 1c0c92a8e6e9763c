#!/usr/bin/python3
"""Write a random, deterministic lpurt model file (SPEC "Model file (HDF5)", format version 1 or 2).

Written from shared/SPEC.md only, independently of the C++ code, so that the
oracle (oracle.py) and the C++ program can be checked against each other on
models that neither of them produced.

Usage:
  make_model.py OUT.h5 --vocab V --hidden D --intermediate F --layers L
                --heads H --kv-heads HKV --max-seq S
                [--arch llama|mistral|mixtral|qwen2|qwen3|qwen3_moe --experts E --experts-per-token K]
                [--seed N] [--rope-theta 10000] [--norm-eps 1e-5]
                [--str-attrs utf8|ascii|fixed]
                format 2: [--head-dim HD] [--attention-bias] [--qk-norm] [--tied]
                [--rope-scaling FACTOR,LOW,HIGH,ORIG] [--moe-intermediate FE] [--norm-topk-prob 0|1]

The file is format version 1 unless the architecture or an option needs version 2 (SPEC
"Model file, format version 2"); then every version-2 attribute that applies is written.

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
  * mixtral router N(0, 1) / sqrt(D);
  * format 2: biases N(0, 0.5^2) (q, k) and N(0, 0.2^2) (v); q_norm / k_norm gains
    1 + 0.2 * N(0, 1); with --tied, embedding rows scaled to RMS 0.03 (the logits
    read the embedding; at RMS 1 the current token's own logit wins and the model
    repeats it).
Everything comes from one numpy Generator seeded with --seed, drawn in a fixed
order, so the same arguments always give the same file contents; the version-2
draws come after the version-1 ones of the same tensor group, so a version-1
file is unchanged.
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
    p = argparse.ArgumentParser(description="Write a random lpurt model file (SPEC format version 1 or 2).")
    p.add_argument("out", metavar="OUT.h5")
    p.add_argument("--vocab", type=int, required=True, help="V")
    p.add_argument("--hidden", type=int, required=True, help="D")
    p.add_argument("--intermediate", type=int, required=True, help="F")
    p.add_argument("--layers", type=int, required=True, help="L")
    p.add_argument("--heads", type=int, required=True, help="H")
    p.add_argument("--kv-heads", type=int, required=True, help="Hkv")
    p.add_argument("--max-seq", type=int, required=True, help="S")
    p.add_argument("--arch", choices=["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe"], default="llama")
    p.add_argument("--experts", type=int, default=0, help="E (mixtral only)")
    p.add_argument("--experts-per-token", type=int, default=0, help="k (mixtral only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--norm-eps", type=float, default=1e-5)
    p.add_argument("--str-attrs", choices=["utf8", "ascii", "fixed"], default="utf8",
                   help="storage of string attributes (default: h5py's, variable-length UTF-8)")
    p.add_argument("--head-dim", type=int, default=0, help="format 2: head_dim (default D / H)")
    p.add_argument("--attention-bias", action="store_true", help="format 2: wq/wk/wv bias")
    p.add_argument("--qk-norm", action="store_true", help="format 2: per-head q_norm / k_norm")
    p.add_argument("--tied", action="store_true", help="format 2: tie_word_embeddings, no /lm_head")
    p.add_argument("--rope-scaling", default="", metavar="FACTOR,LOW,HIGH,ORIG", help="format 2: llama3 rope scaling")
    p.add_argument("--moe-intermediate", type=int, default=0, help="format 2: moe_intermediate_size (qwen3_moe)")
    p.add_argument("--norm-topk-prob", type=int, choices=[0, 1], default=None, help="format 2: MoE weights")
    a = p.parse_args(argv)

    def fail(msg):
        p.error(msg)

    for name in ("vocab", "hidden", "intermediate", "layers", "heads", "kv_heads", "max_seq"):
        if getattr(a, name) <= 0:
            fail("--%s must be positive (got %d)" % (name.replace("_", "-"), getattr(a, name)))
    if not a.head_dim and a.hidden % a.heads != 0:
        fail("--hidden must be divisible by --heads (got D=%d, H=%d), or give --head-dim" % (a.hidden, a.heads))
    a.hd = a.head_dim or a.hidden // a.heads
    if a.hd % 2 != 0:
        fail("head_dim must be even for RoPE pairs (got %d)" % a.hd)
    if a.heads % a.kv_heads != 0:
        fail("--heads must be divisible by --kv-heads (got H=%d, Hkv=%d)" % (a.heads, a.kv_heads))
    a.moe = a.arch in ("mixtral", "qwen3_moe")
    if a.moe:
        if a.experts <= 0 or not (1 <= a.experts_per_token <= a.experts):
            fail("%s needs --experts E >= 1 and 1 <= --experts-per-token k <= E "
                 "(got E=%d, k=%d)" % (a.arch, a.experts, a.experts_per_token))
    elif a.experts or a.experts_per_token or a.moe_intermediate or a.norm_topk_prob is not None:
        fail("--experts / --experts-per-token / --moe-intermediate / --norm-topk-prob are for MoE architectures")
    a.scaling = None
    if a.rope_scaling:
        try:
            factor, low, high, orig = a.rope_scaling.split(",")
            a.scaling = (float(factor), float(low), float(high), int(orig))
        except ValueError:
            fail("--rope-scaling wants FACTOR,LOW,HIGH,ORIG (got %r)" % a.rope_scaling)
    a.version = 2 if (a.arch not in ("llama", "mixtral") or a.head_dim or a.attention_bias or a.qk_norm
                      or a.tied or a.scaling or a.moe_intermediate or a.norm_topk_prob is not None) else 1
    return a


def main(argv):
    a = parse_args(argv)
    rng = np.random.default_rng(a.seed)
    V, D, F, L = a.vocab, a.hidden, a.intermediate, a.layers
    H, Hkv = a.heads, a.kv_heads
    hd = a.hd
    Fe = a.moe_intermediate or F

    with h5py.File(a.out, "w") as f:
        # Root attributes, names and meaning exactly as in SPEC.
        write_str_attr(f, "format", "lpurt-model", a.str_attrs)
        f.attrs["format_version"] = np.int64(a.version)
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
        if a.moe:
            f.attrs["n_experts"] = np.int64(a.experts)
            f.attrs["n_experts_per_token"] = np.int64(a.experts_per_token)
        if a.version == 2:
            f.attrs["head_dim"] = np.int64(hd)
            f.attrs["attention_bias"] = np.int64(a.attention_bias)
            f.attrs["qk_norm"] = np.int64(a.qk_norm)
            f.attrs["tie_word_embeddings"] = np.int64(a.tied)
            if a.scaling:
                write_str_attr(f, "rope_scaling_type", "llama3", a.str_attrs)
                f.attrs["rope_scaling_factor"] = np.float64(a.scaling[0])
                f.attrs["rope_low_freq_factor"] = np.float64(a.scaling[1])
                f.attrs["rope_high_freq_factor"] = np.float64(a.scaling[2])
                f.attrs["rope_original_max_position"] = np.int64(a.scaling[3])
            if a.moe:
                f.attrs["moe_intermediate_size"] = np.int64(Fe)
                f.attrs["norm_topk_prob"] = np.int64(1 if a.norm_topk_prob is None else a.norm_topk_prob)

        # Embedding: x = float(E[t]) * scale[t]; pick scale[t] = 1 / RMS(E[t]) (0.03 / RMS when tied).
        emb_w = random_int8(rng, (V, D))
        rms = np.sqrt(np.mean(emb_w.astype(np.float64) ** 2, axis=1))
        rms[rms == 0.0] = 1.0
        emb = f.create_group("embedding")
        emb.create_dataset("weight", data=emb_w)
        emb.create_dataset("scale", data=((0.03 if a.tied else 1.0) / rms).astype(np.float32))

        layers = f.create_group("layers")
        for i in range(L):
            g = layers.create_group(str(i))
            write_norm(g, "attn_norm", rng, D)
            write_matrix(g, "wq", rng, H * hd, D)
            write_matrix(g, "wk", rng, Hkv * hd, D)
            write_matrix(g, "wv", rng, Hkv * hd, D)
            write_matrix(g, "wo", rng, D, H * hd)
            if a.attention_bias:
                for name, n, std in (("wq", H * hd, 0.5), ("wk", Hkv * hd, 0.5), ("wv", Hkv * hd, 0.2)):
                    g[name].create_dataset("bias", data=(std * rng.standard_normal(n)).astype(np.float32))
            if a.qk_norm:
                for name in ("q_norm", "k_norm"):
                    g.create_dataset(name, data=(1.0 + 0.2 * rng.standard_normal(hd)).astype(np.float32))
            write_norm(g, "ffn_norm", rng, D)
            if not a.moe:
                write_ffn(g, rng, D, F)
            else:
                router = (rng.standard_normal((a.experts, D)) / np.sqrt(D)).astype(np.float32)
                g.create_dataset("router", data=router)
                experts = g.create_group("experts")
                for e in range(a.experts):
                    write_ffn(experts.create_group(str(e)), rng, D, Fe)

        write_norm(f, "final_norm", rng, D)
        if not a.tied:
            write_matrix(f, "lm_head", rng, V, D)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
