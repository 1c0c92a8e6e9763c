#!/usr/bin/env python3
"""`lpurt serve` end to end.

- The serving invariant: in functional runs, every request's generated tokens and logits are bit-identical
  to a solo `lpurt run` of its prompt and token count, for each policy, slot count, arrival pattern
  (Poisson, gamma, a trace with prompts), layout and rank count (1, 2, 3 ranks under mpiexec); rejected
  requests (longer than a slot's context) have none.
- A functional run and a timing-only run report the same modelled figures.
- The outputs: --json has SPEC's fields; the result file has /requests (SPEC's columns, one row per request,
  units), /requests/tokens and /requests/logits, /timeline; the CSV has the same rows; the trace is
  Chrome-trace JSON with a process per replica, a track per slot, the requests and the counters.
- --slots without --tp/--pp plans the layout for the slots (where the single-request layout cannot hold them)
  and reports what that layout given explicitly reports; too many slots fail with exit 4, naming --slots.
- Bad input fails with one line and SPEC's exit codes.
Usage: test_serve.py LPURT WORKDIR MPIEXEC [MPIEXEC_FLAGS...]"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

SPEC_FIELDS = ["requests", "completed", "rejected", "makespan_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s",
               "tpot_p50_s", "tpot_p90_s", "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "output_tokens_per_s",
               "goodput_requests_per_s", "joules_per_output_token", "policy", "slots", "replicas", "host_wall_s"]
SPEC_COLUMNS = ["id", "arrived_at", "first_token_at", "finished_at", "num_prefill_tokens", "num_decode_tokens",
                "replica", "slot"]


def main():
    lpurt, work, mpiexec, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)
    failures = []
    for preset in ("tiny", "tiny-mixtral"):
        subprocess.run([lpurt, "gen-model", "--preset", preset, "--out", f"{preset}.h5", "--seed", "3"], check=True,
                       stdout=subprocess.DEVNULL)
    with h5py.File("tiny.h5", "r") as f:
        vocab = int(f.attrs["vocab_size"])

    def serve(*args, ranks=0, check=True, model="tiny.h5"):
        launch = [mpiexec, "-n", str(ranks), *flags] if ranks else []
        res = subprocess.run([*launch, lpurt, "serve", "--model", model, *args], capture_output=True, text=True)
        if check and res.returncode != 0:
            raise RuntimeError(f"lpurt serve {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    solo = {}

    def solo_run(model, prompt, tokens):
        key = (model, tuple(int(t) for t in prompt), tokens)
        if key not in solo:
            out = f"solo_{len(solo)}.h5"
            subprocess.run([lpurt, "run", "--model", model, "--chips", "1", "--prompt", ",".join(map(str, key[1])),
                            "--tokens", str(tokens), "--out", out], check=True, stdout=subprocess.DEVNULL)
            with h5py.File(out, "r") as f:
                solo[key] = (f["tokens"][:], f["logits"][:].reshape(tokens, -1))
        return solo[key]

    # A trace with prompts of its own: request 4 is longer than --context 48 in the last configuration.
    rng = np.random.default_rng(5)
    with open("trace.csv", "w") as f:
        f.write("arrived_at,num_prefill_tokens,num_decode_tokens,prompt\n")
        for i, (n, k) in enumerate([(5, 3), (17, 6), (33, 2), (1, 4), (40, 12), (9, 1), (24, 7)]):
            f.write(f"{i * 2e-6},{n},{k},\"{' '.join(str(t) for t in rng.integers(0, vocab, n))}\"\n")

    generated = ["--requests", "9", "--prompt-len-dist", "uniform:2:40", "--tokens-dist", "uniform:1:9", "--seed", "4"]
    configs = [
        (2, ["--chips", "2", "--tp", "2", "--pp", "1", "--slots", "2", "--rate", "3e5", *generated], "tiny-mixtral.h5"),
        (1, ["--chips", "4", "--tp", "1", "--pp", "2", "--slots", "3", "--rate", "4e5", *generated]),
        (2, ["--chips", "4", "--tp", "2", "--pp", "1", "--slots", "2", "--policy", "static-batch", "--rate", "2e5",
             "--arrivals", "gamma", "--cv", "3", *generated]),
        (2, ["--chips", "6", "--tp", "1", "--pp", "3", "--replicas", "2", "--slots", "1", "--router", "least-loaded",
             "--workload", "trace.csv"]),
        (3, ["--chips", "6", "--tp", "1", "--pp", "2", "--slots", "2", "--policy", "static-batch", "--context", "48",
             "--workload", "trace.csv"]),
        # A shared KV pool small enough to preempt (recompute): 4 slots share 10 pages of 8 tokens.
        (1, ["--chips", "2", "--tp", "1", "--pp", "2", "--slots", "4", "--kv-page-tokens", "8", "--kv-pages", "10",
             "--rate", "4e5", "--requests", "12", "--prompt-len-dist", "uniform:2:40", "--tokens-dist", "uniform:1:30",
             "--seed", "4"]),
        (3, ["--chips", "6", "--tp", "2", "--pp", "3", "--slots", "3", "--kv-page-tokens", "4", "--kv-pages", "14",
             "--workload", "trace.csv"]),
        (2, ["--chips", "4", "--tp", "2", "--pp", "2", "--slots", "3", "--kv-page-tokens", "8", "--kv-pages", "7",
             "--rate", "4e5", "--requests", "10", "--prompt-len-dist", "uniform:2:30", "--tokens-dist", "uniform:1:24",
             "--seed", "6"], "tiny-mixtral.h5"),
        # static-batch reserves each member's whole KV in the pool: no preemption.
        (2, ["--chips", "4", "--tp", "1", "--pp", "2", "--slots", "4", "--policy", "static-batch", "--kv-page-tokens",
             "8", "--kv-pages", "10", "--rate", "4e5", "--requests", "12", "--prompt-len-dist", "uniform:2:40",
             "--tokens-dist", "uniform:1:30", "--seed", "4"]),
    ]
    for n, (ranks, args, *model) in enumerate(configs):
        model = model[0] if model else "tiny.h5"
        label = f"config {n} (np {ranks}, {model}: {' '.join(args)})"
        out = f"serve_{n}.h5"
        with h5py.File(model, "r") as f:
            model_vocab = int(f.attrs["vocab_size"])
        res = serve(*args, "--out", out, "--json", ranks=ranks, model=model)
        summary = json.loads(res.stdout)
        with h5py.File(out, "r") as f:
            r = f["requests"]
            prefill, decode, rejected = r["num_prefill_tokens"][:], r["num_decode_tokens"][:], r["rejected"][:]
            tokens, logits, rows = r["tokens"][:], r["logits"][:], r["logits_row"][:]
            if "trace.csv" in args:
                with open("trace.csv") as t:
                    prompts = [[int(x) for x in row["prompt"].split()] for row in csv.DictReader(t)]
            else:
                prompts = None
        if summary["completed"] + summary["rejected"] != len(prefill) or ("48" in args) != (summary["rejected"] > 0):
            failures.append(f"{label}: completed {summary['completed']} rejected {summary['rejected']}")
        # A pool that forces preemptions under decode-priority; never above the pool; none in a static batch.
        pooled = "--kv-pages" in args
        if summary["kv_pages_in_use_max"] > summary["kv_pages_per_replica"] or summary["kv_pool_shared"] != pooled \
                or (summary["preemptions"] > 0) != (pooled and "static-batch" not in args):
            failures.append(f"{label}: {summary['preemptions']} preemptions, at most "
                            f"{summary['kv_pages_in_use_max']} of {summary['kv_pages_per_replica']} pages, "
                            f"shared {summary['kv_pool_shared']}")
        for i in range(len(prefill)):
            if rejected[i]:
                if len(tokens[i]) != 0:
                    failures.append(f"{label}: rejected request {i} has tokens")
                continue
            prompt = prompts[i] if prompts else synthetic_prompt(int(prefill[i]), i, model_vocab)
            want_tokens, want_logits = solo_run(model, prompt, int(decode[i]))
            got = logits[rows[i]:rows[i] + decode[i]]
            if not np.array_equal(tokens[i], want_tokens):
                failures.append(f"{label}: request {i} tokens {list(tokens[i])} differ from its solo run {list(want_tokens)}")
            elif got.tobytes() != want_logits.tobytes():
                failures.append(f"{label}: request {i} logits are not bit-identical to its solo run")
        # The same configuration timing-only: the same modelled figures.
        timing = json.loads(serve(*args, "--timing-only", "--json", model=model).stdout)
        for key, value in summary.items():
            if key.startswith("host_") or key in ("timing_only", "ranks"):
                continue
            if timing.get(key) != value and not (isinstance(value, float) and math.isnan(value)):
                failures.append(f"{label}: {key} is {value} functional but {timing.get(key)} timing-only")

    # --json: SPEC's fields; percentiles in order.
    summary = json.loads(serve("--chips", "4", "--rate", "3e5", "--requests", "40", "--prompt-len", "24", "--tokens", "6",
                               "--timing-only", "--json", "--slo-ttft-ms", "0.02", "--slo-tpot-ms", "0.002").stdout)
    missing = [k for k in SPEC_FIELDS if k not in summary]
    if missing:
        failures.append(f"--json lacks {missing}")
    elif not (summary["ttft_p50_s"] <= summary["ttft_p90_s"] <= summary["ttft_p99_s"]
              and summary["tpot_p50_s"] <= summary["tpot_p90_s"] <= summary["tpot_p99_s"]):
        failures.append(f"percentiles out of order: {summary}")
    if summary.get("requests") != 40 or not summary.get("goodput_requests_per_s", -1) >= 0:
        failures.append(f"summary: {summary}")

    # --slots without --tp/--pp plans the layout for the slots. With 1.8 MB of SRAM a chip, the single-request
    # layout (tp 1 x pp 1) holds 6 KV caches of 64 positions, so 12 slots need a layout of their own; given
    # explicitly, that layout reports the same figures. Too many slots for the system: exit 4, naming --slots.
    small = ["--chips", "8", "--set", "sram_bytes=1800000", "--set", "program_reserve_bytes=100000", "--context", "64",
             "--rate", "3e5", "--requests", "30", "--prompt-len", "16", "--tokens", "8", "--timing-only", "--json"]
    single = json.loads(serve(*small).stdout)
    planned = json.loads(serve(*small, "--slots", "12").stdout)
    if (single["tp"], single["pp"]) != (1, 1) or planned["slots"] != 12 or planned["chips_used"] > 8 \
            or planned["tp"] * planned["pp"] < 2:
        failures.append(f"--slots 12 without a layout: single-request tp {single['tp']} x pp {single['pp']}, planned "
                        f"tp {planned.get('tp')} x pp {planned.get('pp')} x {planned.get('replicas')} of "
                        f"{planned.get('slots')} slots on {planned.get('chips_used')} chips")
    else:
        given = json.loads(serve(*small, "--slots", "12", "--tp", str(planned["tp"]), "--pp", str(planned["pp"])).stdout)
        for key, value in planned.items():
            if not key.startswith("host_") and given.get(key) != value:
                failures.append(f"--slots 12: {key} is {value} planned but {given.get(key)} with the layout given")
    res = serve(*small, "--slots", "100000", check=False)
    if res.returncode != 4 or "--slots 100000: " not in res.stderr or len(res.stderr.strip().splitlines()) != 1:
        failures.append(f"--slots 100000 on 8 chips: exit {res.returncode}, stderr {res.stderr.strip()!r}")

    # Result file, CSV and trace of one timing-only run (6 slots sharing 8 pages: some preemptions).
    args = ["--chips", "4", "--tp", "1", "--pp", "2", "--rate", "2e5", "--requests", "30", "--prompt-len-dist",
            "zipf:1.1:60", "--tokens-dist", "uniform:1:20", "--context", "64", "--timing-only", "--slots", "6",
            "--kv-page-tokens", "8", "--kv-pages", "8"]
    summary = json.loads(serve(*args, "--out", "t.h5", "--csv", "t.csv", "--trace", "t.json", "--json").stdout)
    with open("t.csv") as f:
        table = list(csv.DictReader(f))
    with h5py.File("t.h5", "r") as f:
        r = f["requests"]
        for column in SPEC_COLUMNS:
            if column not in r or len(r[column]) != 30:
                failures.append(f"/requests/{column} missing or not 30 rows")
        if r["arrived_at"].attrs["unit"] != "s" or "tokens" in r or "logits" in r:
            failures.append("/requests: units, or tokens/logits in a timing-only run")
        if f.attrs["requests"] != 30 or f.attrs["policy"] != "decode-priority":
            failures.append("root attributes lack the summary")
        kv = f["timeline/kv_pages"][:]
        if len(kv) == 0 or kv.max() > summary["kv_pages_per_replica"] * summary["replicas"] or kv[-1] != 0:
            failures.append(f"/timeline/kv_pages {kv}")
        if len(table) != 30 or list(table[0])[:8] != SPEC_COLUMNS:
            failures.append(f"CSV: {len(table)} rows, columns {list(table[0]) if table else []}")
        else:
            for i, row in enumerate(table):
                if int(row["id"]) != i or int(row["num_prefill_tokens"]) != r["num_prefill_tokens"][i]:
                    failures.append(f"CSV row {i} differs from /requests")
                    break
            rejected = sum(int(row["rejected"]) for row in table)
            if rejected != summary["rejected"] or rejected == 0:
                failures.append(f"CSV has {rejected} rejected requests, the summary {summary['rejected']} (expected some)")
    with open("t.json") as f:
        trace = json.load(f)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e.get("ph") == "M" and e["name"].endswith("_name")}
    counters = {e["name"] for e in trace["traceEvents"] if e.get("ph") == "C"}
    slices = [e for e in trace["traceEvents"] if e.get("ph") == "X" and e["name"].startswith("request ")]
    if not {"replica 0", "replica 1", "slot 0", "system"} <= names or "queued requests" not in counters \
            or "KV pages in use" not in counters or len(slices) < summary["completed"]:
        failures.append(f"trace: names {sorted(names)[:6]}, counters {counters}, {len(slices)} request slices")
    # The requests through the stages: a track per replica stage, every turn once on each, one at a time.
    stage_tid = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"]
                 if e.get("ph") == "M" and e["name"] == "thread_name" and e["args"]["name"].startswith("stage ")}
    on_stage = {}
    for e in trace["traceEvents"]:
        if e.get("cat") == "stage":
            on_stage.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"], e["args"]["request"]))
    if set(stage_tid.values()) != {"stage 0", "stage 1"} or set(on_stage) != set(stage_tid) \
            or sum(len(v) for v in on_stage.values()) != 2 * summary["turns"]:
        failures.append(f"trace: stage tracks {sorted(stage_tid.values())}, "
                        f"{sum(len(v) for v in on_stage.values())} stage slices for {summary['turns']} turns")
    # Slot tracks: one request at a time; a preempted one is drawn where it finished.
    on_slot = {}
    for e in trace["traceEvents"]:
        if e.get("cat") in ("prefill", "decode", "resumed"):
            on_slot.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"], e["args"]["request"]))
    resumed = sum(1 for e in trace["traceEvents"] if e.get("cat") == "resumed")
    if summary["preemptions"] == 0 or resumed == 0 or resumed > summary["preemptions"]:
        failures.append(f"trace: {resumed} resumed slices for {summary['preemptions']} preemptions (expected some)")
    for track, spans in list(on_stage.items()) + list(on_slot.items()):
        spans.sort()
        overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1] - 1e-6 * max(1.0, abs(a[1]))]
        if overlaps:
            failures.append(f"trace: track {track} of replica {track[0]} overlaps: {overlaps[:2]}")

    # A serving study: latency against load under both policies, from flags; a rerun runs nothing; a point
    # whose slots cannot exist is recorded as infeasible; a functional study on 2 ranks.
    def sweep(*args, ranks=0):
        launch = [mpiexec, "-n", str(ranks), *flags] if ranks else []
        res = subprocess.run([*launch, lpurt, "sweep", "--model", "tiny.h5", "--chips", "4", "--prompt-len", "16",
                              "--tokens", "8", "--serve", "requests=30", "--serve", "slo_ttft_ms=0.05", *args],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"lpurt sweep {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout
    load = ["--name", "load", "--out", "load", "--sweep", "rate=1e4,3e5", "--sweep", "policy=decode-priority,static-batch",
            "--sweep", "slots=2,2000000"]
    sweep(*load)
    with open("load/results.csv") as f:
        rows = list(csv.DictReader(f))
    statuses = [(r["rate"], r["policy"], r["slots"], r["status"]) for r in rows]
    if len(rows) != 8 or [r[3] for r in statuses].count("infeasible") != 4 or any(
            (r[2] == "2") != (r[3] == "ok") for r in statuses):
        failures.append(f"serving study: {statuses}")
    elif not all(float(r["ttft_p99_s"]) >= float(r["ttft_p50_s"]) > 0 for r in rows if r["status"] == "ok"):
        failures.append("serving study: percentiles missing or out of order in results.csv")
    elif "4 done" in sweep(*load) or "8 done, 0 to run" not in sweep(*load):
        failures.append("serving study: a rerun ran points again")
    if shutil.which("gnuplot") and not os.path.exists("load/plots/ttft.png"):
        failures.append("serving study: no load/plots/ttft.png")
    sweep("--name", "load2", "--out", "load2", "--functional", "--ranks", "2", "--sweep", "rate=1e5", "--serve",
          "policy=static-batch", "--tp", "1", "--pp", "2", ranks=2)
    points = [p for p in os.listdir("load2/points") if p.endswith(".h5")]
    with h5py.File(os.path.join("load2/points", points[0]), "r") as f:
        if len(points) != 1 or f.attrs["status"] != "ok" or "tokens" not in f["requests"] or f.attrs["ranks"] != 2:
            failures.append(f"functional serving study on 2 ranks: {points}, {dict(f.attrs)}")

    # Bad input: one line, SPEC's exit codes.
    for args, code, text in [
            (["--chips", "2"], 2, "needs a workload"),
            (["--rate", "10", "--requests", "3", "--cv", "2"], 2, "--cv applies to --arrivals gamma"),
            (["--rate", "10", "--requests", "3", "--policy", "fastest"], 2, "--policy must be decode-priority or static-batch"),
            (["--rate", "0", "--requests", "3"], 2, "--rate must be above 0"),
            (["--rate", "10", "--requests", "3", "--prompt-len-dist", "uniform:5:2"], 2, "uniform:A:B needs"),
            (["--workload", "missing.csv"], 3, "missing.csv"),
            (["--workload", "bad.csv"], 3, "bad.csv:3: num_decode_tokens"),
            (["--rate", "10", "--requests", "3", "--slots", "0"], 2, "--slots must be at least 1"),
            (["--rate", "10", "--requests", "3", "--kv-pages", "lots"], 2, "--kv-pages must be a count of pages or sram"),
            (["--chips", "1", "--rate", "10", "--requests", "3", "--kv-pages", "100000000"], 4, "--kv-pages 100000000: "),
            (["--rate", "10", "--requests", "3", "--set", "power_idle_w=400"], 5, "power_idle_w"),
            (["--rate", "10", "--requests", "3", "--timing-only", "--out", "t.h5"], 6, "t.h5")]:
        with open("bad.csv", "w") as f:
            f.write("arrived_at,num_prefill_tokens,num_decode_tokens\n0,4,2\n0.1,4,two\n")
        res = serve(*args, check=False)
        lines = res.stderr.strip().splitlines()
        if res.returncode != code or len(lines) != 1 or text not in res.stderr:
            failures.append(f"serve {' '.join(args)}: exit {res.returncode} (expected {code}), stderr {res.stderr.strip()!r}")

    for f in failures:
        print("FAIL", f)
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed ({len(solo)} solo runs compared)")
    return 1 if failures else 0


def synthetic_prompt(n, sequence, vocab):
    """SPEC: without a prompt column, request i's prompt is the synthetic prompt of sequence i (xorshift64 from
    a seed of the sequence, as runtime::synthetic_prompt)."""
    mask = (1 << 64) - 1
    state = (0x2545f4914f6cdd1d + 0x9e3779b97f4a7c15 * sequence) & mask
    tokens = []
    for _ in range(n):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        tokens.append(state % vocab)
    return tokens


if __name__ == "__main__":
    sys.exit(main())
