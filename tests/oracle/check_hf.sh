#!/usr/bin/env bash
# End-to-end import test: small Hugging Face checkpoints of every family (written by make_hf_checkpoint.py:
# bf16, f16 and f32; one file and sharded; tied and untied embeddings) go through `lpurt import`, run on
# 1 to 6 chips over 1 to 3 MPI ranks, and must agree with hf_oracle.py, which reads the checkpoint itself in
# Hugging Face's rotate-half order (so the import's q/k permutation is checked independently). Every run of
# one checkpoint must also be bit-identical to its 1-chip run (SPEC's invariant). Then: the import refuses a
# qwen3_moe with dense layers and leaves no output, and format-2 files written directly by make_model.py
# (no import) agree with oracle.py.
# Usage: check_hf.sh LPURT WORKDIR PYTHON MPIEXEC [MPIEXEC_FLAGS...]
set -Eeuo pipefail
lpurt=$1 work=$2 python=$3 mpiexec=$4; shift 4
mpi_flags=("$@")
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work" && cd "$work"
step="setup"
trap 'echo "check_hf: failed at: $step" >&2' ERR

prompt=3,1,4,1,5
tokens=8

# Layouts "chips tp pp ranks": tensor parallel splits q heads, KV heads, biases and q/k norms across chips;
# pipeline stages split layers; 3 ranks host 3 to 6 chips.
layouts=("2 2 1 2" "3 1 3 3" "4 2 2 3" "4 4 1 3" "6 2 3 3")

runs=0
run_layout() {  # run_layout MODEL.h5 NAME "chips tp pp ranks": run, compare with the oracle and the 1-chip run
  local model=$1 name=$2 chips tp pp ranks out
  read -r chips tp pp ranks <<< "$3"
  out="$name.c${chips}_tp${tp}_pp${pp}_np${ranks}.h5"
  step="$name: lpurt run --chips $chips --tp $tp --pp $pp on $ranks rank(s)"
  timeout 300 "$mpiexec" -n "$ranks" "${mpi_flags[@]}" "$lpurt" run --model "$model" --chips "$chips" --tp "$tp" \
    --pp "$pp" --prompt "$prompt" --tokens "$tokens" --out "$out" > /dev/null
  step="$name: compare.py $out"
  "$python" "$here/compare.py" "$out" "$name.oracle.h5" > /dev/null || "$python" "$here/compare.py" "$out" "$name.oracle.h5"
  if [ "$chips" -eq 1 ]; then
    cp "$out" "$name.one_chip.h5"
  else
    step="$name: $out bit-identical to 1 chip"
    h5diff -q "$name.one_chip.h5" "$out" /tokens
    h5diff -q "$name.one_chip.h5" "$out" /logits
  fi
  runs=$((runs + 1))
}

# family dtype shards tied seed [extra make_hf_checkpoint options]: every family, every dtype, one file and
# sharded, tied and untied; seeds where the generated tokens vary.
cases=(
  "llama bf16 1 no 13"
  "llama f16 3 tied 17"
  "llama3 bf16 2 no 14"
  "llama3 f32 1 tied 6"
  "mistral f16 1 no 14"
  "mistral bf16 2 tied 20"
  "mixtral bf16 3 no 15"
  "mixtral f16 1 tied 19"
  "qwen2 bf16 1 tied 18"
  "qwen2 f16 2 no 12"
  "qwen3 bf16 2 tied 18"
  "qwen3 f16 1 no 12"
  "qwen3_moe bf16 4 no 17"
  "qwen3_moe f16 1 tied 56 --norm-topk-prob 0 --experts-per-token 4"
)
index=0
for case in "${cases[@]}"; do
  read -r family dtype shards tied seed extra <<< "$case"
  name="${family}_${dtype}_s${shards}_${tied}"
  tied_flag=()
  [ "$tied" = tied ] && tied_flag=(--tied)
  step="$name: make_hf_checkpoint.py"
  # shellcheck disable=SC2086  # extra holds separate options
  "$python" "$here/make_hf_checkpoint.py" "$name" --family "$family" --dtype "$dtype" --shards "$shards" \
    "${tied_flag[@]}" --seed "$seed" $extra
  step="$name: hf_oracle.py"
  "$python" "$here/hf_oracle.py" "$name" --prompt "$prompt" --tokens "$tokens" --out "$name.oracle.h5" > /dev/null
  step="$name: lpurt import"
  "$lpurt" import "$name" --out "$name.h5" > /dev/null
  run_layout "$name.h5" "$name" "1 1 1 1"
  # Two multi-chip layouts per checkpoint, rotating, so that each family meets four of the five.
  run_layout "$name.h5" "$name" "${layouts[$((index % 5))]}"
  run_layout "$name.h5" "$name" "${layouts[$(((index + 2) % 5))]}"
  index=$((index + 1))
done
imported=$index

# SPEC: a qwen3_moe whose mlp_only_layers is non-empty is refused with a clear error, and no output is left.
step="import refuses mlp_only_layers"
"$python" "$here/make_hf_checkpoint.py" dense_layer --family qwen3_moe --mlp-only-layers 1 --seed 3
if "$lpurt" import dense_layer --out dense_layer.h5 > refuse.out 2>&1; then
  echo "lpurt import accepted a qwen3_moe with mlp_only_layers [1]"; exit 1
fi
grep -q "mlp_only_layers" refuse.out || { echo "the refusal does not name mlp_only_layers:"; cat refuse.out; exit 1; }
[ ! -e dense_layer.h5 ] || { echo "a refused import left dense_layer.h5 behind"; exit 1; }

# Format 2 without the import: files make_model.py writes from SPEC directly, read by lpurt's engine.
direct=(
  "qwen2 --arch qwen2 --attention-bias --tied --rope-scaling 8,1,4,64 --rope-theta 500000 --seed 6"
  "qwen3_moe --arch qwen3_moe --experts 8 --experts-per-token 2 --moe-intermediate 40 --head-dim 32 --qk-norm --norm-topk-prob 0 --seed 5"
)
for entry in "${direct[@]}"; do
  read -r name options <<< "$entry"
  name="direct_$name"
  step="$name: make_model.py"
  # shellcheck disable=SC2086
  "$python" "$here/make_model.py" "$name.h5" --vocab 500 --hidden 64 --intermediate 96 --layers 2 --heads 4 \
    --kv-heads 2 --max-seq 64 $options
  "$python" "$here/oracle.py" "$name.h5" --prompt "$prompt" --tokens "$tokens" --out "$name.oracle.h5" > /dev/null
  run_layout "$name.h5" "$name" "1 1 1 1"
  run_layout "$name.h5" "$name" "4 2 2 3"
done
echo "check_hf: $imported imported checkpoints, $runs runs agree with the oracles (1 to 6 chips, 1 to 3 ranks)"
