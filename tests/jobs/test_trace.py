#!/usr/bin/env python3
"""End-to-end test of `lpurt run --trace`: the file is Chrome trace-event JSON with one process per chip,
MXM/VXM tracks and link tracks, and (checked here independently of lpurt's own verifier) no track ever
carries two events at once. Usage: test_trace.py LPURT WORKDIR"""
import collections
import json
import os
import shutil
import subprocess
import sys


def main():
    lpurt, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    failures = []
    cases = [("4", "2", "2", "dragonfly"), ("8", "4", "2", "chain"), ("1", "1", "1", "dragonfly")]
    for chips, tp, pp, topology in cases:
        path = os.path.join(work, f"trace_{chips}_{tp}_{pp}_{topology}.json")
        subprocess.run([lpurt, "run", "--chips", chips, "--tp", tp, "--pp", pp, "--tokens", "3", "--prompt-len", "10",
                        "--block-tokens", "4", "--set", f"topology={topology}", "--trace", path],
                       check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            trace = json.load(f)
        events = trace["traceEvents"]
        names = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events if e["ph"] == "M" and "name" in e["args"]}
        processes = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
        spans = [e for e in events if e["ph"] == "X"]
        tag = f"chips={chips} tp={tp} pp={pp} {topology}"
        if processes != set(range(int(chips))):
            failures.append(f"{tag}: processes {sorted(processes)} are not one per chip")
        segments = {e["args"]["segment"] for e in spans}
        if segments != {"prefill", "decode 1", "decode 2"}:
            failures.append(f"{tag}: segments {sorted(segments)}")
        tracks = collections.defaultdict(list)
        for e in spans:
            if e["dur"] < 0 or e["ts"] < 0:
                failures.append(f"{tag}: negative time in {e['name']}")
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
            if (e["pid"], e["tid"]) not in names:
                failures.append(f"{tag}: track {(e['pid'], e['tid'])} has no name")
        link_tracks = [k for k in tracks if names.get(k, "").startswith("link")]
        if int(chips) > 1 and not link_tracks:
            failures.append(f"{tag}: no link tracks")
        for key, spans_on_track in tracks.items():
            spans_on_track.sort()
            for a, b in zip(spans_on_track, spans_on_track[1:]):
                if b[0] < a[1] - 1e-6:
                    failures.append(f"{tag}: track {names.get(key)} of chip {key[0]}: {a[2]} and {b[2]} overlap")
                    break
    for f in failures:
        print("FAIL", f)
    print(f"{len(cases) - len({f.split(':')[0] for f in failures})} passed, {len({f.split(':')[0] for f in failures})} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
