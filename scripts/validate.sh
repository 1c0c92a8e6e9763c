#!/usr/bin/env bash
# Regenerates docs/VALIDATION.md from lpurt's own output: published figures, lpurt's predictions, their
# ratio, the assumptions, and how the predictions move across the range the sources leave open.
# Usage: scripts/validate.sh [LPURT [--allreduce]]   (default build/jobs/lpurt; takes about a minute;
#        --allreduce prints section 6 only)
set -euo pipefail
cd "$(dirname "$0")/.."
lpurt=${1:-build/jobs/lpurt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$lpurt" gen-model --preset llama2-70b --config-only --out "$work/llama2-70b.h5" > /dev/null

field() { grep -o "\"$1\": *[^,}]*" | head -1 | sed 's/^"[^"]*": *//; s/"//g'; }  # field NAME < json
plan70() { "$lpurt" plan --model "$work/llama2-70b.h5" --chips 576 --context 4096 --prompt-len 512 --tokens 1024 --json "$@"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; }
row70() {  # row70 LABEL ARGS... : one table row for llama2-70b on 576 chips
  local label=$1; shift
  local j; j=$(plan70 "$@")
  local tps; tps=$(echo "$j" | field tokens_per_s_user)
  printf '| %s | %s x %s | %s | %s | %s | %s |\n' "$label" "$(echo "$j" | field tp)" "$(echo "$j" | field pp)" \
    "$(echo "$j" | field topology)" "$(fmt "$tps" '%.0f')" "$(awk -v t="$(echo "$j" | field tpot_s)" 'BEGIN{printf "%.3f", t*1000}')" \
    "$(fmt "$tps" '%.2f' | awk '{printf "%.2f", $1/270}')"
}

# Section 6 alone: `scripts/validate.sh --allreduce` prints it (it moves no calibrated figure).
allreduce_section() {
  local d c
  d=$("$lpurt" allreduce --chips 64 --set topology=dragonfly --bytes 32768,81920 --json)
  c=$("$lpurt" allreduce --chips 64 --set topology=chain --bytes 32768,81920 --json)
  /usr/bin/python3 - "$d" "$c" <<'PY'
import json, sys
d, c = (json.loads(a) for a in sys.argv[1:3])
print("""
## 6. SHIP: a 64-chip AllReduce reaches 50% of bandwidth at 32 KiB and 90% at 80 KiB

Published (§2.4 [S], SHIP Fig. 6a): a 64-chip AllReduce reaches 50% of the bandwidth at 32 KiB and 90% at
80 KiB; the algorithm is chosen by size (RedBcast, TiledRedBcast, PAARD). lpurt's row comes from its own
collective model (`lpurt allreduce`, partition/collective.hpp): the algorithm the schedule would choose for
a tensor-parallel group of 64 chips (8 whole nodes) is expanded into the same transfers and reductions as
in a stage, and its timeline is solved on the topology (300 ns per hop, 14 GB/s per link, activations at
2 bytes a value). **Efficiency** is the all-reduce bus bandwidth, 2 (p - 1) / p x S / time, over the same
model's at S = 64 MiB, where hop latencies no longer count: the share of the attainable bandwidth a
message reaches, the reading of "% of bandwidth" in a curve that saturates with size. (Over one link's
14 GB/s the figure would exceed 100%: each chip drives 7 local links at once.) The constants are the
facts sheet's; nothing is fitted to this row.
""")
print("| topology | S | algorithm | time | bus bandwidth | efficiency | published | band | in band |")
print("|---|---|---|---|---|---|---|---|---|")
published = {32768: 0.50, 81920: 0.90}
for name, run in (("dragonfly (the row)", d), ("chain (SHIP's QuadFour)", c)):
    for p in run["points"]:
        want = published[p["bytes"]]
        ok = abs(p["efficiency"] / want - 1) <= 0.20
        print(f"| {name} | {p['bytes'] // 1024} KiB | {p['algorithm']} | {p['time_s'] * 1e6:.2f} us | "
              f"{p['bus_bytes_per_s'] / 1e9:.1f} GB/s | **{100 * p['efficiency']:.1f}%** | {100 * want:.0f}% | "
              f"{100 * want * 0.8:.0f}-{100 * want * 1.2:.0f}% | {'yes' if ok else 'no'} |")
ref = d["points"][0]["bus_bytes_per_s"] / d["points"][0]["efficiency"]
print(f"""
The reference (64 MiB, dragonfly) reaches {ref / 1e9:.1f} GB/s of bus bandwidth. SHIP's partitions are
the chain (QuadFour, §2.4); the row uses the dragonfly's 8 all-to-all nodes because there every
same-index pair of chips has its own link [U], so the two-level schedule is one hop a step, the
closest lpurt has to SHIP's wiring within a 64-chip partition. On lpurt's chain, two of the four
neighbour distances sit on the other chip of each pair, so half the inter-node transfers take three
hops over shared links and the same collective is an order of magnitude slower.

**Reading: the model is below the band at both sizes.** The two-level all-reduce takes four steps
(reduce-scatter within the node, then among the nodes, and the two all-gathers), each at least one
300 ns hop, before the bytes count: about 1.2 us of latency, against about 0.66 us of link time at
32 KiB, so lpurt reaches 50% only at about 60 KiB. With time = a + b S the efficiency is
b S / (a + b S), 50% at the size S_half = a / b: hitting 50% at 32 KiB exactly gives 71% at 80 KiB, so
SHIP's curve is steeper than any such model (its algorithms change with the size). Both bands hold for
S_half between 21 and 31 KiB: half or less of lpurt's latency per byte, which needs steps that overlap
(tiles forwarded as they arrive, TiledRedBcast) or fewer of them. lpurt books each step as a whole, a
conservative reading left as it is rather than tuned to the figure; `ctest -R partition` pins these
figures (Collective.ShipAllReduceRowMatchesValidation), so a change that moves them must update this
section.""")
PY
}
if [ "${2:-}" = "--allreduce" ]; then allreduce_section; exit 0; fi

out="$work/VALIDATION.md"
"$lpurt" calibrate --published docs/published.toml --json 2> /dev/null > "$work/calibration.json"
"$lpurt" gen-model --preset mixtral-8x7b --config-only --out "$work/mixtral-8x7b.h5" > /dev/null
"$lpurt" gen-model --preset qwen3-235b-a22b --config-only --out "$work/qwen3-235b-a22b.h5" > /dev/null
{
cat <<'HEAD'
# Validation against published results

Generated by `scripts/validate.sh` from lpurt's own output (`lpurt calibrate --json`, `lpurt plan --json`
and `lpurt run --timing-only --json`; the modelled times of `plan`, `run` and `run --timing-only` are the
same function of the plan). Do not edit by hand; rerun the script. Sources and tags ([P] primary,
[S] secondary, [D] derived, [U] uncertain) are those of `shared/reference/lpu-v1-facts.md`.

## 1. Calibration: one declared uncertain constant, fitted inside its cited bracket

Every hardware constant of lpurt comes from the facts sheet or is derived from it, except the declared
uncertain ones (`chip::uncertain_parameters()`), which the sources only bracket. There is one: the
**weight path**, the rate at which int8 weights reach the matrix units. `lpurt calibrate` fits it to the
published figures marked `fit = true` in `docs/published.toml` (least squares of the log residuals,
golden-section search inside the bracket), starting from `groq-lpu-v1-datasheet`, which keeps the
first-principles value. `groq-lpu-v1`, the default system, takes the fitted value; no figure has a
per-model factor. Figures marked "held back" are predicted, never fitted. `lpurt calibrate --check` runs
in CI (`ctest -R calibrate_check`) and fails when a change moves a prediction of the default preset out
of its band, or the preset away from the fit.

HEAD
/usr/bin/python3 - "$work/calibration.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print("| parameter | bracket | datasheet | fitted | what the fitted value means |")
print("|---|---|---|---|---|")
for p in c["parameters"]:
    print(f"| `{p['name']}` | {p['min']:.0f} .. {p['max']:.0f} | {p['base']:.0f} | **{p['fitted']:.0f}** | {p['reading']} |")
print()
for p in c["parameters"]:
    print(f"The bracket: {p['bracket_source']}.")
print()
print(f"| published figure | published | `{c['base_system']}` | `groq-lpu-v1` (calibrated) | error | band | use |")
print("|---|---|---|---|---|---|---|")
for f in c["figures"]:
    pub = f"{f['published']:.0f}" + (f" ({f['published_low']:.0f}-{f['published_high']:.0f})" if f['published_low'] < f['published_high'] else "")
    err = f"{100 * (f['preset'] / f['published'] - 1):+.1f}%"
    print(f"| {f['name']}, {f['metric']} | {pub} | {f['base']:.0f} | {f['preset']:.0f} | {err} | ±{100 * f['band']:.0f}% | {'fit' if f['fit'] else 'held back'} |")
print()
print(f"Sources: " + " ".join(f"*{f['name']}*: {f['source']}." for f in c["figures"]))
PY
cat <<'L70'

**Reading.** With the first-principles weight path (the 64 x 320 B stream rate, 18.4 TB/s, §6.1's
recommendation) lpurt predicts several times the published speed of Llama-2 70B on 576 chips (the
datasheet column). The fit puts the weight path between the two physical limits the sources give, the
MXM's 4 x 320 B/cycle install rate and the stream rate (the first table says where), and that is the only
reading under which the published 240-300 tokens/s follow with tensor parallelism inside a node. The held-back 640-chip figure (the EE Times "10-rack"
system, chip count [U]) is then within its band without being fitted, but it checks little: the planner
picks the same layout on both systems. The §6.2 "pure pipeline"
estimate (267 tok/s = all weights through one chip's 18.4 TB/s) also matches the published figure, but
it assumes one chip streams at a time, which tensor parallelism inside a node contradicts; lpurt keeps
the parallel streaming and slows the path instead. Only further published figures with other models,
batches or layouts can separate the two readings.

## 2. Llama-2 70B, INT8, 576 chips, batch 1, by layout

Assumptions for every row: INT8 weights with float32 per-row scales (SPEC's W8A8), an FP16 KV cache
and FP16 activations in SRAM and on the links, as a deployed system stores and moves them (§6.2-6.3;
the host runtime keeps float32 for SPEC's exact numerics, which changes no modelled figure), context 4096, prompt 512,
1,024 output tokens, batch 1, prefill in chunks of 64 tokens, host I/O not modelled (device time, as
GroqFlow reports it). Hardware: `groq-lpu-v1` (900 MHz, 220 MiB SRAM, the fitted weight path, operands
streamed at 64 x 320 B per cycle, 14 GB/s per link and direction, 300 ns per hop). The ratio is to 270,
the middle of the published 240-300.

| layout | tp x pp | topology | tokens/s per user | time per token (ms) | ratio to 270 |
|---|---|---|---|---|---|
L70
row70 "as deployed: tp in nodes, pp across nodes" --tp 8 --pp 72
row70 "as deployed, SHIP chain wiring" --tp 8 --pp 72 --set topology=chain
row70 "planner's best layout" --replicas 1
row70 "planner's best layout, datasheet weight path" --replicas 1 --system groq-lpu-v1-datasheet
row70 "tp across two nodes" --tp 16 --replicas 1
row70 "planner's best with tp across nodes (--max-tp 64)" --replicas 1 --max-tp 64

cat <<'WIDE'

The published figures are from 2023 deployments, whose tensor parallelism stayed inside a node (§4,
"Partitioning": pipeline parallelism across nodes and racks); lpurt's planner therefore searches tp up to
a node unless `--max-tp` says otherwise, and the fit is made with those layouts. The last two rows are
what tp across nodes would give on the same chips and constants: two-level collectives (within each node,
then among same-index chips, `partition/collective.hpp`) and tp groups kept inside a dragonfly rack (a
group that would straddle two racks starts at the next one). They are predictions for SHIP-style
generalized tensor parallelism (§2.4), not fitted to anything.
WIDE

cat <<'MID'

### How the prediction moves across what the sources leave open

The as-deployed layout (tp 8 x pp 72, dragonfly) across the weight-path bracket and beyond it (the SRAM
and marketing figures bound the stream rate, so the weight path is raised with it there), and across
the link figures:

| parameter | value | source | tokens/s per user | ratio to 270 |
|---|---|---|---|---|
MID
for spec in "weight_bytes_per_cycle=1280|1.15 TB/s (4 MXM planes x 320 B/cycle, the bracket's low end)|§1.1-1.2 [D, U]" \
            "weight_bytes_per_cycle=2560|2.3 TB/s|sweep point" \
            "weight_bytes_per_cycle=5120|4.6 TB/s|sweep point" \
            "weight_bytes_per_cycle=10240|9.2 TB/s|sweep point" \
            "weight_bytes_per_cycle=20480|18.4 TB/s (stream rate, the bracket's high end: datasheet)|§6.1 [D]" \
            "weight_bytes_per_cycle=56320 stream_bytes_per_cycle=56320|50.7 TB/s (SRAM 55 TiB/s)|§1.1 [D]" \
            "weight_bytes_per_cycle=88889 stream_bytes_per_cycle=88889|80 TB/s (marketing)|§1.1 [S]" \
            "link_bytes_per_s=10.7e9|10.7 GB/s per link|§1.3 SHIP-derived [U]" \
            "link_bytes_per_s=15e9|15 GB/s per link|§1.3 raw 4 x 30 Gb/s [D]" \
            "hop_latency_ns=600|600 ns per hop|2 x SHIP, sensitivity" \
            "kv_bytes_per_value=4 activation_bytes_per_value=4|float32 KV cache and activations (the host's)|SPEC numerics" \
            "activation_bytes_per_value=1|INT8/FP8 activations on the links|§6.3 [D]"; do
  IFS='|' read -r set label source <<< "$spec"
  read -r -a sets <<< "$set"
  tps=$(plan70 --tp 8 --pp 72 --set "${sets[@]}" | field tokens_per_s_user)
  printf '| `%s` | %s | %s | %s | %s |\n' "${sets[0]%%=*}" "$label" "$source" "$(fmt "$tps" '%.0f')" "$(fmt "$tps" '%.2f' | awk '{printf "%.2f", $1/270}')"
done

mx=$("$lpurt" plan --model "$work/mixtral-8x7b.h5" --chips 576 --prompt-len 512 --tokens 1024 --json)
qw=$("$lpurt" run --model "$work/qwen3-235b-a22b.h5" --chips 1520 --tp 16 --pp 95 --context 4096 --prompt-len 512 \
     --tokens 128 --timing-only --json)
cat <<DEPLOY

## 3. Deployments that were served: they plan and run

Groq served Mixtral 8x7B with its 32K context on 576 chips (§4), and SHIP runs Qwen3-235B-A22B at tp 16 x
pp 95 on 1,520 LPUs with 4 KV heads, 380 concurrent requests (§2.4 [S]). No token rate is published for
either on LPU v1 hardware, so these rows check that lpurt places them, and what it predicts:

| deployment | lpurt layout | chips used | context | largest batch | time to first token | tokens/s per user |
|---|---|---|---|---|---|---|
| Mixtral 8x7B, 576 chips, planner's layout | $(echo "$mx" | field tp) x $(echo "$mx" | field pp) | $(echo "$mx" | field chips_used) | $(echo "$mx" | field context) | $(echo "$mx" | field max_batch) | $(awk -v t="$(echo "$mx" | field ttft_s)" 'BEGIN{printf "%.1f ms", t*1000}') | $(fmt "$(echo "$mx" | field tokens_per_s_user)" '%.0f') |
| Qwen3-235B-A22B, tp 16 x pp 95 on 1,520 chips (timing-only run) | $(echo "$qw" | field tp) x $(echo "$qw" | field pp) | $(echo "$qw" | field chips_used) | $(echo "$qw" | field context) | $(echo "$qw" | field max_batch) | $(awk -v t="$(echo "$qw" | field ttft_s)" 'BEGIN{printf "%.1f ms", t*1000}') | $(fmt "$(echo "$qw" | field tokens_per_s_user)" '%.0f') |

Mixtral runs at its full 32,768-token context, prompt 512, 1,024 output tokens. Qwen3-235B-A22B runs at a
4,096-token context (prompt 512, 128 output tokens); it also runs at its native 40,960 positions (one
sequence). The largest batch is lpurt's: the FP16 KV cache that fits every chip at that context, with
each of the 4 KV heads replicated on the 4 chips whose query heads read it. SHIP's 380 concurrent
requests rely on paged 8-bit KV caches and host-DRAM prefix caching that lpurt does not model.

DEPLOY
d=$("$lpurt" plan --chips 10440 --set topology=dragonfly --json)
c72=$("$lpurt" plan --chips 72 --set topology=chain --json)
c136=$("$lpurt" plan --chips 136 --set topology=chain --json)
lat=$(echo "$d" | field network_worst_vector_latency_s)
cat <<NET
## 4. The ISCA 2022 network: 10,440 chips, at most 5 hops, under 3 us end to end

Published (§2.1-2.2): 145 racks x 72 = 10,440 TSPs, at most 5 hops (local, local, global, local, local)
[S], under 3 us end to end [P]. lpurt's dragonfly over 10,440 chips (nodes of 8 all-to-all, racks of 9
nodes as groups, one global link per rack pair, inter-node links between chips of equal index [U]):

| figure | published | lpurt | ratio |
|---|---|---|---|
| diameter (hops) | 5 | $(echo "$d" | field network_diameter_hops) | $(awk -v a="$(echo "$d" | field network_diameter_hops)" 'BEGIN{printf "%.2f", a/5}') |
| worst-case latency of one 320-byte vector | < 3 us | $(fmt "$lat" '%.9f' | awk '{printf "%.2f us", $1*1e6}') | $(awk -v a="$lat" 'BEGIN{printf "%.2f", a/3e-6}') (of the bound) |

The latency is hops x 300 ns + 320 B / 14 GB/s. A larger tensor takes longer (its bytes cross at the
link bandwidth); the published bound is for the network's traversal.

## 5. SHIP: about 300 ns per hop; a 72-chip partition has a diameter of 3 hops

The 300 ns per hop is an input of lpurt (\`hop_latency_ns\`, §1.3 [S]), not a prediction. The partition
diameters are predictions of the \`chain\` topology (QuadFour: +-4 neighbour nodes, 4 links each, ends
joined):

| partition | published diameter | lpurt | ratio |
|---|---|---|---|
| 72 chips (9 nodes) | 3 hops | $(echo "$c72" | field network_diameter_hops) | $(awk -v a="$(echo "$c72" | field network_diameter_hops)" 'BEGIN{printf "%.2f", a/3}') |
| 136 chips (17 nodes) | 5 hops | $(echo "$c136" | field network_diameter_hops) | $(awk -v a="$(echo "$c136" | field network_diameter_hops)" 'BEGIN{printf "%.2f", a/5}') |

Both follow only if a partition's nodes form a ring: in a straight chain of 9 nodes the ends are 8 nodes
apart, two global hops, which makes more than 3. The ring is therefore lpurt's reading of the sources.
NET
allreduce_section

stage_row() {  # stage_row LABEL JSON: one row of the stage-balance table
  local label=$1 j=$2
  local stages; stages=$(echo "$j" | grep -o '"decode_stage_us": *"[^"]*"' | sed 's/.*: *"//; s/"$//')
  # Stages that begin at an FFN's w_down half (part 3l+2): they receive the input half's results with the
  # activations.
  local inside; inside=$(echo "$j" | grep -o '"stage_part_begin": *"[^"]*"' | sed 's/.*: *"//; s/"$//' | tr ',' '\n' |
    awk '$1 % 3 == 2 { n++ } END { print n + 0 }')
  echo "$stages" | tr ',' '\n' | awk -v label="$label" -v tp="$(echo "$j" | field tp)" -v pp="$(echo "$j" | field pp)" \
    -v topo="$(echo "$j" | field topology)" -v inside="$inside" -v tps="$(echo "$j" | field tokens_per_s_user)" '
    { t[NR] = $1; sum += $1; root += sqrt($1); if ($1 > max) max = $1 }
    END {
      mean = sum / NR
      printf "| %s | %s x %s, %s | %s | %.0f | %.1f | %.1f | +%.1f%% | %.2f%% |\n", label, tp, pp, topo, inside, tps, mean, max,
             100 * (max / mean - 1), 100 * (1 - root * root / (NR * sum))
    }'
}
cat <<'STAGES'

## 7. One tp for every stage: what it loses

SHIP sizes tp per stage to balance the stages (§4, "Partitioning"); lpurt gives every stage the same tp
and balances the stages by where the layer parts are cut. A layer has three: its attention, its FFN's
gate/up half (up to the SiLU output and its amax) and its FFN's w_down half, so a stage may begin inside
an FFN; it then receives, with the activations, the SiLU output of its FFN columns and their amax from
the chip of the same tp rank, and in an MoE layer the routing too (each token's chosen experts, one byte
each on the links, and their weights), with the per-slot amax and the SiLU rows of the slots that chip
holds. The balancer minimises the heaviest stage's weight bytes, then prefers fewer stages beginning inside
an FFN. What the remaining imbalance costs, from each layout's decode step (`plan --json`:
`decode_stage_us`, each stage's span from its first compute op to its last; `stage_part_begin`, where
each stage begins):

| deployment | layout | stages beginning inside an FFN | tokens/s per user (batch 1) | mean stage (us) | busiest stage (us) | busiest over mean: full-pipeline throughput a perfect balance could add | one token: the most a per-stage tp could save |
|---|---|---|---|---|---|---|---|
STAGES
stage_row "Llama-2 70B, 576 chips, planner's layout" "$(plan70)"
stage_row "Llama-2 70B, 576 chips, as deployed (the serving layout)" "$(plan70 --tp 8 --pp 72)"
stage_row "Llama-2 70B, 576 chips, as deployed, on the chain" "$(plan70 --tp 8 --pp 72 --set topology=chain)"
stage_row "Mixtral 8x7B, 576 chips, 32K context" "$mx"
stage_row "Qwen3-235B-A22B, 1,520 chips" "$("$lpurt" plan --model "$work/qwen3-235b-a22b.h5" --chips 1520 --tp 16 --pp 95 --context 4096 --prompt-len 512 --tokens 1024 --set topology=chain --json)"
stage_row "Qwen3-235B-A22B, 1,520 chips" "$("$lpurt" plan --model "$work/qwen3-235b-a22b.h5" --chips 1520 --tp 16 --pp 95 --context 4096 --prompt-len 512 --tokens 1024 --json)"
cat <<'STAGES'

The last column is what re-spreading the same chips over the stages could save on one token's trip:
a token crosses the stages in turn, so its time is the sum of the stage times, and with stage s given a
share of the chips proportional to the square root of its time (the best continuous choice, collectives
ignored, so an upper bound) the sum falls to (sum of square roots)^2 / stages. That is below 2% for every
deployment on its own topology: at batch 1, which is every published token rate (§4), a per-stage tp
loses nothing that matters, and uniform tp is kept.

With the pipeline full (serving many slots), the busiest stage sets the period (the seventh column).
Llama-2 70B's FFN weighs 4.7 times its attention; cut only between whole parts, the deployed tp 8 x pp 72
had stages holding two FFNs: the heaviest held 195 MB per chip against a mean of 120 MB, and the busiest
stage ran 55% over the mean on the dragonfly and 58% (80.7 us) on the chain (measured with whole-part
cuts, before cuts inside the FFN existed). Cuts inside the FFN bring the heaviest stage to 166 MB per chip,
15% less, and no finer split exists with these parts (per chip: attention 19 MB, gate/up 59 MB, w_down
29 MB): 80 layers over 72 stages need 24 stages of four parts, and every third of those holds two gate/up
halves. On both topologies that is what the rows show: the busiest stage falls from 80.7 us to the
heaviest stage's time, and what is left over the mean is that granularity.

MoE FFNs may be cut the same way. Their hand-off is dearer: with every expert whole on one chip of a tp 8
Mixtral stage, a token's SiLU row of its chip's expert is 14,336 values against 4,096 activations, and the
link carries, besides the routing and slot amax, the SiLU rows of the token-expert pairs a chip runs under
the uniform routing its MoE ops are modelled with (the host sends every row a chip may hold). The balancer
weighs only the stages' weight bytes, so for each pp the planner models both splits, MoE FFNs cut where
that lightens the heaviest stage and MoE FFNs whole, and keeps the faster (`--moe-ffn-cuts auto`; `allowed`
or `whole` ask for one). Mixtral keeps whole FFNs: with MoE cuts its best layout is 8 x 34 (busiest stage
71.0 us, +5.9%) at 427 tokens/s against 428 for 8 x 33 with whole FFNs, and at 8 x 33 the lightest split
would begin every stage inside an MoE FFN and a token would take about 5% longer. Qwen3-235B-A22B's fixed
16 x 95 cuts inside all 94 on the chain, where the busiest stage falls from 30.6 to 24.2 us (+31.5% to +3.1%
over the mean) and batch 1 gains 2% (432 to 440 tokens/s); on the dragonfly, where the rack-beginning
stages are the busiest, the cuts would lose 3% (349 to 340), and it keeps whole FFNs.

Pipeline hand-offs are split (`partition/schedule.hpp`). After a stage's last all-gather its tp chips hold
the same activations, so instead of tp identical copies chip (s, t) sends chip (s + 1, t) only member t's
range of them (inside an FFN, with its own SiLU output and amax, which differ per chip, in the same
transfer), and stage s + 1 all-gathers the ranges over its own links (its collective's all-gather steps).
A hand-off is split only when its transfers alone on an idle network finish sooner than the whole copies
(tp 1 and latency-bound hand-offs keep the copies); with Llama-2 70B's activations every hand-off of these
rows is split, on both topologies: each link carries an eighth of them and the gather runs on the
receiving node's own links. It matters most on the dragonfly where a stage begins a rack (every ninth
stage at tp 8): the previous rack's hand-offs reach it over the one global link between the two racks,
one after another. Whole, that link carried the activations eight times and the stage's last chip started
some 16 us after its first, which made a heavy rack-beginning stage the busiest (82.5 us against the
chain's 68.6); split, it carries them once, the stage's chips start together after the gather, every stage
spans what it spans on the chain, and the dragonfly's time per token is the chain's or less. What is left:
the eight ranges still cross the global link one after another, each holding it for its whole route's hop
latencies (about 1.2 us, against 0.15 us for its bytes), so a stage that begins a rack starts about 10 us
after the previous stage ends, against 1 us inside a rack: some 70 us of a 3.7 ms token over the seven rack
boundaries. Fewer, larger stripes across the racks (one transfer, then a broadcast over the rack's links)
would pay that latency once; that is another collective, not built. At batch 1 the cuts inside an FFN
cost a little: such a hand-off also carries the SiLU output (3.5 times a chip's range of the activations at
tp 8), and the planner's own layouts (the first and fourth rows) begin no stage inside an FFN.

Qwen3-235B-A22B shows two other causes. Its stages are balanced by the weights they store, but an MoE
layer streams only the experts its tokens chose while the last stage streams its whole lm_head, so on
the chain the last stage is the busiest; a per-stage tp sized by streamed bytes would fix that one. On
the dragonfly, tp groups of 16 chips do not tile its 72-chip racks: the stages whose groups straddle two
racks send their all-reduces over the one global link between the racks. That is placement, which no
tp choice cures; lpurt places groups contiguously, and a tp that divides 72 (8, 24, 36) avoids it.
STAGES
} > "$out"
mkdir -p docs
mv "$out" docs/VALIDATION.md
echo "wrote docs/VALIDATION.md"
