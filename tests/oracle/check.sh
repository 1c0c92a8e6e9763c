#!/usr/bin/env bash
# End-to-end oracle test: lpurt's tokens and logits against tests/oracle/oracle.py (NumPy, written from
# SPEC alone) on the tiny preset, an odd-shaped dense model and a mixtral model (also cut inside its MoE
# FFNs over 3 stages), the last two written by the oracle's own make_model.py (so the reader is also
# tested on a file lpurt did not write), and the tiny presets of the format-2 families.
# Usage: check.sh LPURT WORKDIR PYTHON
set -euo pipefail
lpurt=$1 work=$2 python=${3:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work" && cd "$work"

check() {  # check MODEL PROMPT TOKENS [extra run flags]
  local model=$1 prompt=$2 tokens=$3; shift 3
  "$lpurt" run --model "$model" --prompt "$prompt" --tokens "$tokens" --out "$model.result.h5" --force "$@" > /dev/null
  "$python" "$here/oracle.py" "$model" --prompt "$prompt" --tokens "$tokens" --out "$model.oracle.h5" > /dev/null
  "$python" "$here/compare.py" "$model.result.h5" "$model.oracle.h5"
}

"$lpurt" gen-model --preset tiny --out tiny.h5 --seed 3 > /dev/null
check tiny.h5 5,17,300,2,9,1000,44 24

"$python" "$here/make_model.py" odd.h5 --vocab 1000 --hidden 96 --intermediate 200 --layers 3 --heads 6 \
  --kv-heads 2 --max-seq 64 --seed 4
check odd.h5 1,2,3,4,999 24
# Stages that begin inside an FFN (layer 0's w_down half on stage 1): the SiLU output and its amax are
# handed from stage to stage.
check odd.h5 1,2,3,4,999 24 --chips 6 --tp 2 --pp 3
check tiny.h5 5,17,300,2,9,1000,44 24 --chips 8 --tp 1 --pp 8

"$python" "$here/make_model.py" moe.h5 --vocab 500 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
  --kv-heads 2 --max-seq 64 --arch mixtral --experts 4 --experts-per-token 2 --seed 5 --str-attrs fixed
check moe.h5 7,8,9 20
# Stages that begin inside an MoE FFN (stages 1 and 2 at the w_down halves of layers 0 and 1): the routing,
# the slot amax and the held experts' SiLU rows are handed from stage to stage.
"$lpurt" plan --model moe.h5 --chips 6 --tp 2 --pp 3 --moe-ffn-cuts allowed --json | "$python" -c 'import json, sys
begin = [int(p) for p in json.load(sys.stdin)["stage_part_begin"].split(",")]
sys.exit(0 if begin[1] % 3 == 2 and begin[2] % 3 == 2 else "moe.h5 on tp 2 x pp 3 does not cut inside its MoE FFNs")'
check moe.h5 7,8,9 20 --chips 6 --tp 2 --pp 3 --moe-ffn-cuts allowed
# Sliced experts: 8 chips of one stage over 3 experts, each expert's FFN split by columns over 2 or 3 chips.
"$python" "$here/make_model.py" moe_wide.h5 --vocab 300 --hidden 64 --intermediate 40 --layers 2 --heads 8 \
  --kv-heads 2 --max-seq 64 --arch mixtral --experts 3 --experts-per-token 2 --seed 7 > /dev/null
check moe_wide.h5 7,8,9 12 --chips 8 --tp 8
# Format 2: lpurt's tiny preset of each new family (bias, q/k norm with head_dim != D/H and tied
# embeddings, 128 experts 8 per token, llama3 rope scaling), on 4 chips as tp 2 x pp 2.
for family in qwen2 qwen3 qwen3-moe llama3; do
  "$lpurt" gen-model --preset "tiny-$family" --out "$family.h5" --seed 6 > /dev/null
  check "$family.h5" 5,6,7,8,9 12 --chips 4 --tp 2 --pp 2
done
echo "oracle: 8 models agree (and 3 layouts with stages beginning inside an FFN, one of them MoE)"
