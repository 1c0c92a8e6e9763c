#!/usr/bin/env python3
"""Batching end to end: every sequence of a batched run (spread over pipeline replicas, on 1 and 2 MPI
ranks) has exactly the tokens and logits of its own single-sequence run, and the KV-cache capacity that
`plan` reports is exact: max_batch fits, max_batch + 1 fails with a clear error.
Usage: test_batch.py LPURT WORKDIR MPIEXEC [MPIEXEC_FLAGS...]"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np


def main():
    lpurt, work, mpiexec, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)
    subprocess.run([lpurt, "gen-model", "--preset", "tiny", "--out", "tiny.h5", "--seed", "6"], check=True,
                   stdout=subprocess.DEVNULL)
    failures = []
    batch = 5
    for ranks, layout in [(1, ["--chips", "4", "--tp", "2", "--pp", "1", "--replicas", "2"]),
                          (2, ["--chips", "6", "--tp", "1", "--pp", "2", "--replicas", "3"]),
                          (1, ["--chips", "2", "--tp", "1", "--pp", "2"])]:
        out = f"batch_np{ranks}_{'_'.join(layout[1::2])}.h5"
        subprocess.run([mpiexec, "-n", str(ranks), *flags, lpurt, "run", "--model", "tiny.h5", *layout, "--batch", str(batch),
                        "--prompt-len", "7", "--tokens", "5", "--out", out], check=True, stdout=subprocess.DEVNULL)
        with h5py.File(out, "r") as f:
            prompts, tokens, logits = f["prompt"][:], f["tokens"][:], f["logits"][:]
            if prompts.shape != (batch, 7) or tokens.shape != (batch, 5) or logits.shape[:2] != (batch, 5):
                failures.append(f"{out}: shapes {prompts.shape} {tokens.shape} {logits.shape}")
                continue
        if len({tuple(p) for p in prompts}) != batch:
            failures.append(f"{out}: sequences share a synthetic prompt")
        for b in range(batch):
            single = f"single_{b}.h5"
            if not os.path.exists(single):
                subprocess.run([lpurt, "run", "--model", "tiny.h5", "--chips", "1", "--prompt",
                                ",".join(map(str, prompts[b])), "--tokens", "5", "--out", single],
                               check=True, stdout=subprocess.DEVNULL)
            with h5py.File(single, "r") as f:
                if not np.array_equal(f["tokens"][:], tokens[b]):
                    failures.append(f"{out}: sequence {b} tokens {tokens[b]} differ from its own run {f['tokens'][:]}")
                if f["logits"][:].tobytes() != logits[b].tobytes():
                    failures.append(f"{out}: sequence {b} logits are not bit-identical to its own run")

    # KV capacity: the plan's max_batch at a context fits; one more sequence does not, and says so.
    small_sram = ["--set", "sram_bytes=12000000", "--context", "256"]
    plan = json.loads(subprocess.run([lpurt, "plan", "--chips", "2", "--tp", "1", "--pp", "2", "--json", *small_sram],
                                     check=True, capture_output=True, text=True).stdout)
    max_batch = plan["max_batch"]
    if max_batch < 2:
        failures.append(f"max_batch {max_batch} is too small to test")
    ok = subprocess.run([lpurt, "plan", "--chips", "2", "--tp", "1", "--pp", "2", "--batch", str(max_batch), *small_sram],
                        capture_output=True, text=True)
    over = subprocess.run([lpurt, "plan", "--chips", "2", "--tp", "1", "--pp", "2", "--batch", str(max_batch + 1),
                           *small_sram], capture_output=True, text=True)
    if ok.returncode != 0:
        failures.append(f"batch {max_batch} (the reported max) does not fit: {ok.stderr.strip()}")
    if over.returncode != 4 or "does not fit in SRAM" not in over.stderr or "KV cache" not in over.stderr:
        failures.append(f"batch {max_batch + 1} should fail with a KV-capacity error (exit 4), got "
                        f"{over.returncode}: {over.stderr.strip()}")
    for f in failures:
        print("FAIL", f)
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
