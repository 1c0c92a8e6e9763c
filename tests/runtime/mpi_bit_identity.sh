#!/usr/bin/env bash
# MPI end-to-end test: for each (chips, tp, pp) layout and each rank count 1..4 (<= chips), the tokens and
# every logit are bit-identical to the single-chip run, and the modelled times equal the 1-rank run's.
# Prompts are prefilled in chunks of 2 tokens, so consecutive blocks overlap in the pipeline across ranks.
# Models: the tiny preset, the tiny presets of the format-2 families, an odd-shaped model (H=6, Hkv=2, L=3),
# a wide one (H=16, Hkv=4, also as a 16-expert mixtral) and two MoE models with more query heads than
# experts (sliced experts), written by the oracle's make_model.py. Layouts include tp across nodes (16 chips
# a stage, two-level collectives, on both topologies), systems with idle chips, and stages that begin
# inside an FFN, dense or MoE.
# Usage: mpi_bit_identity.sh LPURT WORKDIR PYTHON MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
lpurt=$1 work=$2 python=$3 mpiexec=$4; shift 4
mpi_flags=("$@")
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$lpurt" gen-model --preset tiny --out tiny.h5 --seed 2 > /dev/null
"$lpurt" gen-model --preset tiny-mixtral --out moe.h5 --seed 3 > /dev/null
# Format 2 families: q/k/v bias (qwen2), per-head q/k norm with head_dim != D/H and tied embeddings (qwen3),
# 128 narrow experts, 8 per token (qwen3_moe), llama3 rope scaling.
for family in qwen2 qwen3 qwen3-moe llama3; do
  "$lpurt" gen-model --preset "tiny-$family" --out "$family.h5" --seed 4 > /dev/null
done
"$python" "$here/../oracle/make_model.py" odd.h5 --vocab 1000 --hidden 96 --intermediate 200 --layers 3 \
  --heads 6 --kv-heads 2 --max-seq 64 --seed 8 > /dev/null
# More query heads than experts, so that a stage's chips exceed its experts and slice each expert's FFN
# by columns over 2 or 3 chips (groups of unequal size at 4 and 8 chips over 3 experts).
"$python" "$here/../oracle/make_model.py" moe_wide.h5 --vocab 300 --hidden 64 --intermediate 40 --layers 2 \
  --heads 8 --kv-heads 2 --max-seq 64 --arch mixtral --experts 3 --experts-per-token 2 --seed 11 > /dev/null
"$python" "$here/../oracle/make_model.py" qwen3_moe_wide.h5 --vocab 300 --hidden 64 --intermediate 48 --layers 2 \
  --heads 8 --kv-heads 2 --max-seq 64 --arch qwen3_moe --experts 4 --experts-per-token 2 --moe-intermediate 24 \
  --head-dim 16 --qk-norm --seed 12 > /dev/null
# 16 query heads over 4 KV heads: tensor parallelism across two nodes of 8 chips, and beyond the KV heads.
"$python" "$here/../oracle/make_model.py" wide.h5 --vocab 500 --hidden 128 --intermediate 160 --layers 2 \
  --heads 16 --kv-heads 4 --max-seq 64 --seed 9 > /dev/null
# Three layers (6 parts), so that a 576-chip dragonfly holds a fifth stage of 16: its tp group would
# straddle the first two racks and is placed at the second rack's first chip instead.
"$python" "$here/../oracle/make_model.py" wide3.h5 --vocab 500 --hidden 128 --intermediate 160 --layers 3 \
  --heads 16 --kv-heads 4 --max-seq 64 --seed 13 > /dev/null
# The same heads with 16 experts, 2 per token: expert slots summed across two nodes.
"$python" "$here/../oracle/make_model.py" widemoe.h5 --vocab 500 --hidden 128 --intermediate 64 --layers 2 \
  --heads 16 --kv-heads 4 --max-seq 64 --arch mixtral --experts 16 --experts-per-token 2 --seed 10 > /dev/null

same_times() {  # same_times A.h5 B.h5: modelled times equal to the last bit
  "$python" - "$1" "$2" <<'PY'
import sys, h5py
a, b = (h5py.File(f, "r").attrs for f in sys.argv[1:3])
for k in ("ttft_s", "tpot_s", "tokens_per_s_user", "tokens_per_s_system", "sram_bytes_max"):
    if a[k] != b[k]:
        sys.exit(f"modelled {k} differs: {a[k]!r} vs {b[k]!r}")
PY
}

own_share() {  # own_share RESULT.h5: every rank read exactly its chips' weight bytes, and less than the model
  "$python" - "$1" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    m = f["metrics"]
    chip_rank, chip_bytes, read = m["chip_rank"][:], m["chip_weight_bytes"][:], m["rank_weight_bytes_read"][:]
    model = f.attrs["weight_bytes_model"]
for r, got in enumerate(read):
    want = chip_bytes[chip_rank == r].sum()
    if got != want:
        sys.exit(f"rank {r} read {got:.0f} bytes, its chips hold {want:.0f}")
    if len(read) > 1 and got >= model:
        sys.exit(f"rank {r} read {got:.0f} bytes, the whole model is {model}")
PY
}

inside_ffn() {  # inside_ffn MODEL CHIPS TP PP: whether a stage of the plan begins inside an FFN (part 3l+2)
  "$lpurt" plan --model "$1" --chips "$2" --tp "$3" --pp "$4" "${extra[@]}" --json |
    "$python" -c 'import json, sys; sys.exit(0 if any(int(p) % 3 == 2 for p in json.load(sys.stdin)["stage_part_begin"].split(",")) else 1)'
}

checked=0
ffn_cuts=0  # layouts with a stage that begins at an FFN's output half (receives the SiLU output and amax)
extra=()  # flags every multi-chip run of check_model gets (a topology)
check_model() {  # check_model MODEL PROMPT "chips tp pp"...
  local model=$1 prompt=$2 layout chips tp pp ranks out first
  shift 2
  "$lpurt" run --model "$model" --chips 1 --prompt "$prompt" --tokens 6 --block-tokens 2 --out "ref_$model" --force > /dev/null
  "$python" - "$model" <<'PY'  # config.h5: the model's configuration alone, for the timing-only runs
import sys, h5py
with h5py.File(sys.argv[1], "r") as src, h5py.File("config.h5", "w") as dst:
    for k, v in src.attrs.items():
        dst.attrs[k] = v
PY
  for layout in "$@"; do
    read -r chips tp pp <<< "$layout"
    first="first_${model%.h5}_${chips}_${tp}_${pp}.h5"
    if inside_ffn "$model" "$chips" "$tp" "$pp"; then ffn_cuts=$((ffn_cuts + 1)); fi
    for ranks in 1 2 3 4; do
      [ "$ranks" -le "$chips" ] || continue
      out="out_${model%.h5}_${chips}_${tp}_${pp}_np${ranks}.h5"
      "$mpiexec" -n "$ranks" "${mpi_flags[@]}" "$lpurt" run --model "$model" --chips "$chips" --tp "$tp" \
        --pp "$pp" --prompt "$prompt" --tokens 6 --block-tokens 2 "${extra[@]}" --out "$out" > /dev/null
      h5diff -q "ref_$model" "$out" /tokens || { echo "tokens differ from 1 chip: $out"; exit 1; }
      h5diff -q "ref_$model" "$out" /logits || { echo "logits differ from 1 chip: $out"; exit 1; }
      [ "$ranks" -eq 1 ] && cp "$out" "$first"
      same_times "$first" "$out" || { echo "modelled times differ across rank counts: $out"; exit 1; }
      own_share "$out" || { echo "a rank read more than its chips' weights: $out"; exit 1; }
      if [ "$ranks" -eq 2 ]; then  # timing-only: same plan, schedule and message pattern, no payload
        "$mpiexec" -n 2 "${mpi_flags[@]}" "$lpurt" run --model config.h5 --timing-only --chips "$chips" --tp "$tp" \
          --pp "$pp" --prompt "$prompt" --tokens 6 --block-tokens 2 "${extra[@]}" --out "timing_$out" > /dev/null
        same_times "$out" "timing_$out" || { echo "timing-only times differ from the functional run: $out"; exit 1; }
      fi
      checked=$((checked + 1))
    done
  done
}

check_model tiny.h5 3,4,5,6,7 "1 1 1" "2 2 1" "2 1 2" "4 2 2" "4 4 1" "8 8 1" "8 2 4" "8 1 8" "16 4 4" "16 2 8" "24 8 3" "24 6 4" "24 3 8"
check_model odd.h5 1,2,999,4 "2 2 1" "3 3 1" "6 6 1" "6 2 3" "6 3 2" "6 1 6" "12 2 6"
check_model moe.h5 5,6,7 "2 2 1" "4 4 1" "4 2 2" "8 4 2"
check_model qwen2.h5 5,6,7 "4 2 2" "6 2 3"
check_model qwen3.h5 5,6,7 "8 4 2" "6 2 3"
check_model qwen3-moe.h5 5,6,7 "4 4 1" "8 4 2"
# Sliced experts: tp above the expert count.
check_model moe_wide.h5 5,6,7 "4 4 1" "6 6 1" "8 8 1" "16 8 2"
check_model qwen3_moe_wide.h5 5,6,7 "8 8 1" "16 8 2"
check_model llama3.h5 5,6,7 "4 2 2" "3 1 3"
# Layouts that leave chips of the system idle (10 chips, 8 used), and tp across nodes.
check_model tiny.h5 3,4,5 "10 4 2" "7 2 3"
check_model wide.h5 7,8,9 "16 16 1" "32 16 2" "20 12 1"
# tp across nodes runs the two-level collectives (partition/collective.hpp): within each node, then among
# the chips of the same index; on the chain as on the dragonfly.
check_model widemoe.h5 7,8,9 "16 16 1" "32 16 2"
# tp groups kept off the dragonfly's rack boundaries (network chips 72.. hold stage 4; 64..71 stay idle).
check_model wide3.h5 7,8,9 "576 16 5"
extra=(--set topology=chain)
check_model wide.h5 7,8,9 "48 16 3"
# Split hand-offs (partition/schedule.hpp): on links slow enough that the split pays, each chip of a stage
# sends the next its share of the activations, which that stage all-gathers; into an FFN's output half with
# the SiLU output and amax (tp 4 and tp 3's unequal shares), and across the racks with the two-level
# gather (test_schedule asserts that the tp 4 layout splits).
extra=(--set link_bytes_per_s=1e8)
cp tiny.h5 tiny_slow_links.h5 && cp wide3.h5 wide3_slow_links.h5  # their own output names
check_model tiny_slow_links.h5 3,4,5 "16 4 4" "24 3 8"
check_model wide3_slow_links.h5 7,8,9 "576 16 5"
# Split into an MoE FFN's w_down half: each share carries its chip's routing, slot amax and SiLU rows
# (test_schedule asserts that this layout splits).
cp moe.h5 moe_slow_links.h5
extra=(--set link_bytes_per_s=1e8 --moe-ffn-cuts allowed)
check_model moe_slow_links.h5 5,6,7 "12 4 3"
extra=()
# Stage boundaries inside an MoE FFN: a stage that begins at its w_down half receives with the activations
# the routing (each token's chosen experts and weights), the stage's per-slot amax and the SiLU rows of
# the slots its chip holds. One chip a stage; whole experts at tp 2 (two a chip) and tp 4 (one a chip);
# sliced experts at tp 8 (3 experts over 8 chips); qwen3-moe's 128 narrow experts, 8 per token. The planner
# keeps MoE FFNs whole where that is faster (--moe-ffn-cuts auto): these layouts ask for the cuts.
extra=(--moe-ffn-cuts allowed)
check_model moe.h5 5,6,7 "6 1 6" "6 2 3" "12 4 3"
check_model moe_wide.h5 5,6,7 "32 8 4"
check_model qwen3-moe.h5 5,6,7 "3 1 3" "6 2 3"
extra=()
# Regression: with prefill chunks large enough for Open MPI's rendezvous protocol (16 tokens x 128 x 4 B =
# 8 KB), a middle stage's send of one chunk's activations must finish before the next chunk overwrites x.
"$lpurt" run --model tiny.h5 --chips 4 --tp 1 --pp 4 --prompt-len 200 --block-tokens 16 --tokens 8 --out chunks_ref.h5 > /dev/null
for ranks in 2 4 2 4 2 4; do
  rm -f chunks.h5
  "$mpiexec" -n "$ranks" "${mpi_flags[@]}" "$lpurt" run --model tiny.h5 --chips 4 --tp 1 --pp 4 --prompt-len 200 \
    --block-tokens 16 --tokens 8 --out chunks.h5 > /dev/null
  h5diff -q chunks_ref.h5 chunks.h5 /logits || { echo "chunked prefill on $ranks ranks differs from 1 rank"; exit 1; }
  checked=$((checked + 1))
done
# Stage boundaries inside an FFN, dense and MoE, with one chip a stage (the amax is the chip's own) and with
# tp 2, 3, 4 and 8 (the stage's gathered amax): these layouts must cut there, or the runs above test
# nothing of it (MoE cuts asked for, as in those runs).
extra=(--moe-ffn-cuts allowed)
for layout in "tiny.h5 8 1 8" "tiny.h5 8 2 4" "tiny.h5 24 3 8" "odd.h5 6 2 3" "moe.h5 6 1 6" "moe.h5 6 2 3" \
  "moe.h5 12 4 3" "moe_wide.h5 32 8 4" "qwen3-moe.h5 3 1 3" "qwen3-moe.h5 6 2 3"; do
  read -r model chips tp pp <<< "$layout"
  inside_ffn "$model" "$chips" "$tp" "$pp" || { echo "no stage of $model on tp $tp x pp $pp begins inside an FFN"; exit 1; }
done
echo "bit-identical to one chip: $checked runs (layouts x rank counts 1-4), $ffn_cuts layouts with a stage beginning"\
  "inside an FFN (dense or MoE); timing-only times equal at 2 ranks"
