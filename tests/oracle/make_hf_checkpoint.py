#!/usr/bin/python3
"""Write a small random Hugging Face checkpoint directory (config.json + safetensors).

Written from the public Hugging Face conventions (transformers' config.json keys and tensor
names for each model_type, the safetensors file format) and shared/SPEC.md, without reading
lpurt's C++ code, so that `lpurt import` can be tested on checkpoints it did not write.

Usage:
  make_hf_checkpoint.py OUT_DIR --family llama|llama3|mistral|mixtral|qwen2|qwen3|qwen3_moe
                        [--dtype bf16|f16|f32] [--shards N] [--tied] [--seed S]
                        [--vocab V] [--hidden D] [--intermediate F] [--layers L] [--heads H]
                        [--kv-heads HKV] [--head-dim HD] [--max-position S]
                        [--experts E] [--experts-per-token K] [--moe-intermediate FE]
                        [--norm-topk-prob 0|1] [--mlp-only-layers 1,2]
                        [--rope-theta T] [--norm-eps EPS] [--rope-scaling FACTOR,LOW,HIGH,ORIG]

Every size option has a per-family default (FAMILIES below), small enough for a NumPy oracle
and chosen to exercise the family: Qwen3 and Qwen3-MoE use head_dim 32 with hidden / heads = 16,
Llama 3's rope_scaling splits the 8 RoPE frequencies of head_dim 16 into all three bands of the
llama3 formula (keep, smooth, divide by factor).

Output directory:
  config.json                   keys as transformers writes them for the model_type
                                (sorted, indent 2), torch_dtype = bfloat16|float16|float32
  model.safetensors             with --shards 1 (the default), or
  model-0000i-of-0000N.safetensors + model.safetensors.index.json  with --shards N > 1
                                (tensors in state-dict order, split into N runs of similar size;
                                the index's weight_map names each tensor's file)

Safetensors file: 8-byte little-endian header length n, n bytes of JSON (padded with spaces to
a multiple of 8) mapping each tensor name to {"dtype": "BF16"|"F16"|"F32", "shape": [...],
"data_offsets": [begin, end]} (byte offsets into the data that follows the header) plus
"__metadata__": {"format": "pt"}, then the raw little-endian data. The JSON lists names sorted,
while the data is laid out in state-dict order, so a reader must follow data_offsets.

Values: generated in float32 from one numpy Generator seeded with --seed, in a fixed order, then
rounded to the dtype (bf16: the top 16 bits of the float32 with round-to-nearest-even; f16: numpy's
rounding, also nearest-even). The checkpoint holds exactly the rounded values; generate() returns
them as float32 so that tests can reason about the stored model. Scales (same idea as
make_model.py: activations stay O(1) through the layers, and the generated tokens vary):
  * embed_tokens N(0, 0.3^2), and N(0, 0.03^2) when tied: with tied embeddings the logits read
    the embedding, and a larger one makes the current token's own logit win (the model then
    repeats one token); 0.03 keeps it small next to the layer outputs;
  * every projection [out, in] uniform in +-sqrt(3 / in), times a per-row factor U(0.75, 1.25)
    (RMS-preserving, and the per-row quantization scale matters);
  * norm gains 1 + 0.1 N(0,1); q_norm / k_norm gains 1 + 0.2 N(0,1);
  * qwen2 biases: q and k N(0, 0.5^2), v N(0, 0.2^2);
  * MoE router (gate) N(0,1) / sqrt(D);
  * layer 0's k_proj has one all-zero row (HF row hd/2 of KV head 0), which SPEC quantizes with
    scale 1 and which the q/k permutation moves (to row 1).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

# Per-family defaults. `head_dim` None: the config has no head_dim key (Qwen2) or it is D / H.
FAMILIES = {
    "llama": dict(model_type="llama", architecture="LlamaForCausalLM", vocab=512, hidden=64,
                  intermediate=160, layers=2, heads=4, kv_heads=2, head_dim=None, max_position=128,
                  rope_theta=10000.0, norm_eps=1e-5),
    # Llama 3 / 3.1 is model_type "llama" with rope_scaling. With head_dim 16, theta 500000 and
    # original_max_position_embeddings 64, the wavelengths 2 pi / f are 6.3 (< 64/4: kept),
    # 32 (between: smoothed) and 167 .. 6e5 (> 64/1: divided by the factor).
    "llama3": dict(model_type="llama", architecture="LlamaForCausalLM", vocab=512, hidden=64,
                   intermediate=128, layers=3, heads=4, kv_heads=1, head_dim=None, max_position=128,
                   rope_theta=500000.0, norm_eps=1e-5, rope_scaling=(8.0, 1.0, 4.0, 64)),
    "mistral": dict(model_type="mistral", architecture="MistralForCausalLM", vocab=384, hidden=96,
                    intermediate=192, layers=2, heads=6, kv_heads=2, head_dim=None, max_position=128,
                    rope_theta=1000000.0, norm_eps=1e-5),
    "mixtral": dict(model_type="mixtral", architecture="MixtralForCausalLM", vocab=320, hidden=64,
                    intermediate=96, layers=2, heads=4, kv_heads=2, head_dim=None, max_position=128,
                    rope_theta=1000000.0, norm_eps=1e-5, experts=4, experts_per_token=2),
    "qwen2": dict(model_type="qwen2", architecture="Qwen2ForCausalLM", vocab=448, hidden=64,
                  intermediate=160, layers=3, heads=4, kv_heads=2, head_dim=None, max_position=128,
                  rope_theta=1000000.0, norm_eps=1e-6),
    # Qwen3's config.json writes rope_theta as the integer 1000000; so does this one.
    "qwen3": dict(model_type="qwen3", architecture="Qwen3ForCausalLM", vocab=512, hidden=64,
                  intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=32, max_position=128,
                  rope_theta=1000000, norm_eps=1e-6),
    "qwen3_moe": dict(model_type="qwen3_moe", architecture="Qwen3MoeForCausalLM", vocab=384, hidden=64,
                      intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=32, max_position=128,
                      rope_theta=1000000.0, norm_eps=1e-6, experts=8, experts_per_token=2,
                      moe_intermediate=48, norm_topk_prob=1),
}
MOE_FAMILIES = ("mixtral", "qwen3_moe")
QK_NORM_FAMILIES = ("qwen3", "qwen3_moe")

DTYPES = {  # --dtype: (safetensors dtype, config.json torch_dtype)
    "bf16": ("BF16", "bfloat16"),
    "f16": ("F16", "float16"),
    "f32": ("F32", "float32"),
}


# --------------------------------------------------------------------------
# Rounding to the storage dtype
# --------------------------------------------------------------------------

def float32_to_bf16_bits(x):
    """uint16 bfloat16 bits of float32 x: the top 16 bits, rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_float32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def to_storage(x, dtype):
    """Round float32 x to `dtype`; return (array to write, the float32 value it stores)."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "bf16":
        bits = float32_to_bf16_bits(x)
        return bits, bf16_bits_to_float32(bits)
    if dtype == "f16":
        half = x.astype(np.float16)
        return half, half.astype(np.float32)
    return x, x.copy()


# --------------------------------------------------------------------------
# Safetensors
# --------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: list of (name, safetensors dtype, storage array) in data order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name, st_dtype, arr in tensors:
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": st_dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    # Names sorted in the JSON, data in the given order: readers must use data_offsets.
    text = json.dumps({k: header[k] for k in ["__metadata__"] + sorted(k for k in header if k != "__metadata__")},
                      separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)


def shard_runs(sizes, n_shards):
    """Split tensor byte sizes (state-dict order) into n_shards contiguous, non-empty runs of similar size."""
    if not 1 <= n_shards <= len(sizes):
        raise ValueError("--shards %d: must be between 1 and the number of tensors (%d)" % (n_shards, len(sizes)))
    total = float(sum(sizes))
    runs, start, cumulative = [], 0, 0
    for j, size in enumerate(sizes):
        cumulative += size
        left_tensors = len(sizes) - (j + 1)
        left_runs = n_shards - len(runs) - 1
        # Close this run when it reaches its share of the bytes, or when every later run needs one tensor.
        if left_runs > 0 and (cumulative >= total * (len(runs) + 1) / n_shards or left_tensors == left_runs):
            runs.append((start, j + 1))
            start = j + 1
    runs.append((start, len(sizes)))
    assert len(runs) == n_shards and all(b > a for a, b in runs)
    return runs


# --------------------------------------------------------------------------
# Configuration and tensors
# --------------------------------------------------------------------------

def build_config(a):
    """config.json as transformers writes it for a.family's model_type (a: resolved options)."""
    fam = FAMILIES[a.family]
    D, H = a.hidden, a.heads
    c = {
        "architectures": [fam["architecture"]],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": a.intermediate,
        "max_position_embeddings": a.max_position,
        "model_type": fam["model_type"],
        "num_attention_heads": H,
        "num_hidden_layers": a.layers,
        "num_key_value_heads": a.kv_heads,
        "rms_norm_eps": a.norm_eps,
        "rope_theta": a.rope_theta,
        "tie_word_embeddings": bool(a.tied),
        "torch_dtype": DTYPES[a.dtype][1],
        "transformers_version": "4.51.0",
        "use_cache": True,
        "vocab_size": a.vocab,
    }
    if fam["model_type"] != "qwen2":  # Qwen2Config has no head_dim (always D / H); the others write it
        c["head_dim"] = a.head_dim
    if fam["model_type"] == "llama":
        c.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
                  "rope_scaling": None})
        if a.rope_scaling:
            factor, low, high, orig = a.rope_scaling
            c["rope_scaling"] = {"factor": factor, "high_freq_factor": high, "low_freq_factor": low,
                                 "original_max_position_embeddings": orig, "rope_type": "llama3"}
    if fam["model_type"] in ("mistral", "mixtral"):
        c["sliding_window"] = None
    if fam["model_type"] == "mixtral":
        c.update({"num_local_experts": a.experts, "num_experts_per_tok": a.experts_per_token,
                  "output_router_logits": False, "router_aux_loss_coef": 0.02})
    if fam["model_type"].startswith("qwen"):
        # Qwen2's q/k/v biases are hard-wired in transformers (no config key); Qwen3 writes attention_bias false.
        c.update({"max_window_layers": a.layers, "sliding_window": None, "use_sliding_window": False})
        if fam["model_type"] != "qwen2":
            c.update({"attention_bias": False, "rope_scaling": None})
    if fam["model_type"] == "qwen3_moe":
        c.update({"decoder_sparse_step": 1, "mlp_only_layers": list(a.mlp_only_layers),
                  "moe_intermediate_size": a.moe_intermediate, "norm_topk_prob": bool(a.norm_topk_prob),
                  "num_experts": a.experts, "num_experts_per_tok": a.experts_per_token,
                  "output_router_logits": False, "router_aux_loss_coef": 0.001})
    return c


def generate(a):
    """Return a list of (name, float32 value before rounding) in state-dict order.

    Draws in a fixed order from one Generator, so the same options give the same values; lm_head
    is drawn last, so --tied only drops it.
    """
    rng = np.random.default_rng(a.seed)
    D, V, F, L = a.hidden, a.vocab, a.intermediate, a.layers
    H, Hkv, hd = a.heads, a.kv_heads, a.head_dim
    out = []

    def proj(name, n_out, n_in):
        w = rng.uniform(-1.0, 1.0, size=(n_out, n_in)) * np.sqrt(3.0 / n_in)
        w *= rng.uniform(0.75, 1.25, size=(n_out, 1))
        out.append((name, w.astype(np.float32)))
        return out[-1][1]

    def gain(name, n, spread):
        out.append((name, (1.0 + spread * rng.standard_normal(n)).astype(np.float32)))

    def vector(name, n, std):
        out.append((name, (std * rng.standard_normal(n)).astype(np.float32)))

    def dense_mlp(prefix, n_inter):
        proj(prefix + "gate_proj.weight", n_inter, D)
        proj(prefix + "up_proj.weight", n_inter, D)
        proj(prefix + "down_proj.weight", D, n_inter)

    emb_std = 0.03 if a.tied else 0.3
    out.append(("model.embed_tokens.weight", (emb_std * rng.standard_normal((V, D))).astype(np.float32)))
    for i in range(L):
        p = "model.layers.%d." % i
        gain(p + "input_layernorm.weight", D, 0.1)
        proj(p + "self_attn.q_proj.weight", H * hd, D)
        k = proj(p + "self_attn.k_proj.weight", Hkv * hd, D)
        if i == 0:
            k[hd // 2, :] = 0.0  # an all-zero row: SPEC gives it scale 1; the permutation moves it
        proj(p + "self_attn.v_proj.weight", Hkv * hd, D)
        if a.family == "qwen2":
            vector(p + "self_attn.q_proj.bias", H * hd, 0.5)
            vector(p + "self_attn.k_proj.bias", Hkv * hd, 0.5)
            vector(p + "self_attn.v_proj.bias", Hkv * hd, 0.2)
        if a.family in QK_NORM_FAMILIES:
            gain(p + "self_attn.q_norm.weight", hd, 0.2)
            gain(p + "self_attn.k_norm.weight", hd, 0.2)
        proj(p + "self_attn.o_proj.weight", D, H * hd)
        gain(p + "post_attention_layernorm.weight", D, 0.1)
        if a.family == "mixtral":
            out.append((p + "block_sparse_moe.gate.weight",
                        (rng.standard_normal((a.experts, D)) / np.sqrt(D)).astype(np.float32)))
            for e in range(a.experts):
                q = p + "block_sparse_moe.experts.%d." % e
                proj(q + "w1.weight", F, D)  # gate
                proj(q + "w2.weight", D, F)  # down
                proj(q + "w3.weight", F, D)  # up
        elif a.family == "qwen3_moe" and i not in a.mlp_only_layers:
            out.append((p + "mlp.gate.weight", (rng.standard_normal((a.experts, D)) / np.sqrt(D)).astype(np.float32)))
            for e in range(a.experts):
                dense_mlp(p + "mlp.experts.%d." % e, a.moe_intermediate)
        else:
            dense_mlp(p + "mlp.", F)
    gain("model.norm.weight", D, 0.1)
    if not a.tied:
        proj("lm_head.weight", V, D)
    return out


def write_checkpoint(a, out_dir):
    """Write config.json and the safetensors file(s); return {name: stored value as float32}."""
    os.makedirs(out_dir, exist_ok=True)
    st_dtype = DTYPES[a.dtype][0]
    tensors, values = [], {}
    for name, x in generate(a):
        stored, value = to_storage(x, a.dtype)
        tensors.append((name, st_dtype, stored))
        values[name] = value
    config = build_config(a)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for stale in os.listdir(out_dir):  # a rerun with other --shards must not leave old files behind
        if stale.startswith("model") and (stale.endswith(".safetensors") or stale.endswith(".index.json")):
            os.remove(os.path.join(out_dir, stale))
    if a.shards == 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
        return values
    sizes = [t[2].nbytes for t in tensors]
    weight_map = {}
    for s, (begin, end) in enumerate(shard_runs(sizes, a.shards)):
        file_name = "model-%05d-of-%05d.safetensors" % (s + 1, a.shards)
        write_safetensors(os.path.join(out_dir, file_name), tensors[begin:end])
        for name, _, _ in tensors[begin:end]:
            weight_map[name] = file_name
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    return values


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def parse_int_list(text):
    return [int(t) for t in text.split(",") if t.strip() != ""]


def parse_rope_scaling(text):
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("--rope-scaling wants FACTOR,LOW,HIGH,ORIG (got %r)" % text)
    return (float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3]))


def parse_args(argv):
    p = argparse.ArgumentParser(description="Write a small random Hugging Face checkpoint directory.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--family", choices=sorted(FAMILIES), required=True)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--tied", action="store_true", help="tie_word_embeddings: no lm_head.weight")
    p.add_argument("--seed", type=int, default=0)
    for opt, kind in (("vocab", int), ("hidden", int), ("intermediate", int), ("layers", int), ("heads", int),
                      ("kv-heads", int), ("head-dim", int), ("max-position", int), ("experts", int),
                      ("experts-per-token", int), ("moe-intermediate", int), ("rope-theta", float),
                      ("norm-eps", float)):
        p.add_argument("--" + opt, type=kind, default=None, help="default: the family's")
    p.add_argument("--norm-topk-prob", type=int, choices=[0, 1], default=None, help="qwen3_moe (default 1)")
    p.add_argument("--mlp-only-layers", type=parse_int_list, default=[],
                   help="qwen3_moe: dense layers (SPEC refuses these; for negative tests)")
    p.add_argument("--rope-scaling", type=parse_rope_scaling, default=None, metavar="FACTOR,LOW,HIGH,ORIG",
                   help="llama3 rope_scaling (default: llama3 family's; other families have none)")
    return p.parse_args(argv), p.error


def resolve(a, fail):
    """Fill unset size options from the family's defaults and check them."""
    fam = FAMILIES[a.family]
    for name in ("vocab", "hidden", "intermediate", "layers", "heads", "kv_heads", "max_position",
                 "rope_theta", "norm_eps"):
        if getattr(a, name) is None:
            setattr(a, name, fam[name])
    moe = a.family in MOE_FAMILIES
    for name in ("experts", "experts_per_token", "moe_intermediate", "norm_topk_prob"):
        if getattr(a, name) is None:
            setattr(a, name, fam.get(name))
        elif not moe or (name in ("moe_intermediate", "norm_topk_prob") and a.family != "qwen3_moe"):
            fail("--%s does not apply to --family %s" % (name.replace("_", "-"), a.family))
    if a.rope_scaling is None:
        a.rope_scaling = fam.get("rope_scaling")
    elif fam["model_type"] != "llama":
        fail("--rope-scaling (llama3) applies to llama-type families only")
    if a.mlp_only_layers and a.family != "qwen3_moe":
        fail("--mlp-only-layers applies to qwen3_moe only")
    if a.head_dim is None:
        a.head_dim = fam["head_dim"] or (a.hidden // a.heads)
    elif a.family == "qwen2":
        fail("qwen2 has no head_dim key: it is always hidden / heads")
    for name in ("vocab", "hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim", "max_position"):
        if getattr(a, name) <= 0:
            fail("--%s must be positive (got %d)" % (name.replace("_", "-"), getattr(a, name)))
    if a.head_dim % 2:
        fail("head_dim must be even for RoPE (got %d)" % a.head_dim)
    if fam["head_dim"] is None and a.hidden % a.heads:
        fail("hidden (%d) must be divisible by heads (%d)" % (a.hidden, a.heads))
    if a.heads % a.kv_heads:
        fail("heads (%d) must be divisible by kv-heads (%d)" % (a.heads, a.kv_heads))
    if moe and not 1 <= a.experts_per_token <= a.experts:
        fail("need 1 <= experts-per-token <= experts (got %d, %d)" % (a.experts_per_token, a.experts))
    if a.shards < 1:
        fail("--shards must be >= 1")
    return a


def options(family, **overrides):
    """Resolved options for in-process use (tests): the family's defaults plus overrides."""
    a, _ = parse_args(["unused", "--family", family])
    for k, v in overrides.items():
        setattr(a, k, v)
    return resolve(a, lambda msg: (_ for _ in ()).throw(ValueError(msg)))


def main(argv):
    a, fail = parse_args(argv)
    a = resolve(a, fail)
    try:
        write_checkpoint(a, a.out_dir)
    except (OSError, ValueError) as e:
        print("make_hf_checkpoint: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
