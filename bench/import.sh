#!/usr/bin/env bash
# `lpurt import` speed and memory (issue 13): writes a sharded bfloat16 Hugging Face checkpoint of a
# ~155M-parameter Qwen3-shaped model (310 MB, with NumPy), imports it, and prints a markdown table:
# checkpoint and output bytes, wall time, MB/s of checkpoint read, peak RSS (/usr/bin/time -v), and peak
# RSS over the largest tensor's bytes (import holds a row block, not a tensor: the ratio stays below 1
# for a model whose largest tensor dwarfs the program's own ~20 MB). The checkpoint was just written, so
# it is read from the page cache: the figures are conversion speed, not disk speed.
# Usage: bench/import.sh [BUILD_DIR]   (default build; about a minute; writes to a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${1:-build}")
lpurt=$build/jobs/lpurt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A checkpoint as transformers writes it: shards of at most ~100 MB, an index, bf16 tensors.
/usr/bin/python3 - "$work/ckpt" <<'EOF'
import json, os, struct, sys
import numpy as np

folder = sys.argv[1]
os.makedirs(folder)
V, D, F, L, H, KV, hd = 32000, 1024, 2816, 8, 16, 4, 64
config = {"model_type": "qwen3", "vocab_size": V, "hidden_size": D, "intermediate_size": F,
          "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV, "head_dim": hd,
          "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
          "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
json.dump(config, open(os.path.join(folder, "config.json"), "w"))
shapes = {"model.embed_tokens.weight": (V, D), "lm_head.weight": (V, D), "model.norm.weight": (D,)}
for l in range(L):
    p = f"model.layers.{l}."
    shapes.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                   p + "self_attn.q_proj.weight": (H * hd, D), p + "self_attn.k_proj.weight": (KV * hd, D),
                   p + "self_attn.v_proj.weight": (KV * hd, D), p + "self_attn.o_proj.weight": (D, H * hd),
                   p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
                   p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
                   p + "mlp.down_proj.weight": (D, F)})
rng = np.random.default_rng(0)
shards, current, size = [], [], 0
for name in sorted(shapes):
    n = 2 * int(np.prod(shapes[name]))
    if current and size + n > 100_000_000:
        shards.append(current)
        current, size = [], 0
    current.append(name)
    size += n
shards.append(current)
weight_map = {}
for s, names in enumerate(shards):
    file = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in names:
        n = 2 * int(np.prod(shapes[name]))
        header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
        offset += n
        weight_map[name] = file
    text = json.dumps(header).encode()
    with open(os.path.join(folder, file), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in names:  # one tensor at a time: bf16 = the top half of float32
            x = rng.standard_normal(shapes[name], dtype=np.float32) * np.float32(0.02)
            f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
json.dump({"metadata": {"total_size": sum(2 * int(np.prod(s)) for s in shapes.values())}, "weight_map": weight_map},
          open(os.path.join(folder, "model.safetensors.index.json"), "w"))
EOF

# peak RSS (kB) and wall seconds of a command, from GNU time
measure() {
  /usr/bin/time -v "$@" > "$work/out.txt" 2> "$work/time.txt"
  local rss wall
  rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
  wall=$(awk '/Elapsed \(wall clock\)/ {n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; ++i) s = s * 60 + t[i]; print s}' "$work/time.txt")
  echo "$rss $wall"
}

checkpoint_bytes=$(cat "$work"/ckpt/*.safetensors | wc -c)
n_shards=$(ls "$work"/ckpt/*.safetensors | wc -l)
largest_bytes=$((32000 * 1024 * 2))
read -r rss_kb wall_s <<< "$(measure "$lpurt" import "$work/ckpt" --out "$work/model.h5")"
output_bytes=$(stat -c %s "$work/model.h5")
# The program's own footprint: the same import of a tiny checkpoint (the test suite's smallest shape).
mkdir "$work/tiny"
/usr/bin/python3 - "$work/tiny" <<'EOF'
import json, os, struct, sys
import numpy as np
folder = sys.argv[1]
json.dump({"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
           "num_attention_heads": 4}, open(os.path.join(folder, "config.json"), "w"))
shapes = {"model.embed_tokens.weight": (64, 32), "lm_head.weight": (64, 32), "model.norm.weight": (32,),
          "model.layers.0.input_layernorm.weight": (32,), "model.layers.0.post_attention_layernorm.weight": (32,),
          **{f"model.layers.0.self_attn.{x}_proj.weight": (32, 32) for x in "qkvo"},
          "model.layers.0.mlp.gate_proj.weight": (48, 32), "model.layers.0.mlp.up_proj.weight": (48, 32),
          "model.layers.0.mlp.down_proj.weight": (32, 48)}
header, offset, data = {}, 0, b""
for name in sorted(shapes):
    b = np.ones(shapes[name], dtype=np.float32).tobytes()
    header[name] = {"dtype": "F32", "shape": list(shapes[name]), "data_offsets": [offset, offset + len(b)]}
    offset += len(b)
    data += b
text = json.dumps(header).encode()
open(os.path.join(folder, "model.safetensors"), "wb").write(struct.pack("<Q", len(text)) + text + data)
EOF
read -r base_rss_kb _ <<< "$(measure "$lpurt" import "$work/tiny" --out "$work/tiny.h5")"

echo "## lpurt import"
echo
echo "Qwen3-shaped model, 155M parameters (V 32000, D 1024, F 2816, 8 layers, 16 heads of 64, 4 KV heads),"
echo "bf16 in $n_shards shards; largest tensor: the embedding and lm_head, $largest_bytes bytes each. Host: $(nproc) cores."
echo "The checkpoint is read from the page cache (just written)."
echo
echo "| checkpoint bytes | output bytes | wall s | MB/s (checkpoint) | peak RSS | peak RSS / largest tensor | RSS of a 20 kB import |"
echo "|---|---|---|---|---|---|---|"
awk -v c="$checkpoint_bytes" -v o="$output_bytes" -v w="$wall_s" -v r="$rss_kb" -v l="$largest_bytes" -v b="$base_rss_kb" \
  'BEGIN { printf "| %d | %d | %.2f | %.0f | %.1f MB | %.2f | %.1f MB |\n", c, o, w, c / 1e6 / w, r * 1024 / 1e6, r * 1024 / l, b * 1024 / 1e6 }'
