#!/usr/bin/python3
"""Command-line fuzz test for `lpurt plan`, `lpurt run` and `lpurt serve`: every numeric flag (and `--set` of a few
hardware parameters) gets each of 0, -1, 2^31, 2^40, 2^63, nan, inf and 1e300, one flag at a time on
the default tiny model. Each call must end within 10 s with either a result (exit 0, the command's
normal output) or one clean error line `[rank 0/1] error: ...` and an exit code 2..8: never a timeout,
a signal, an exit code of 124 or more, or a crash marker.

Usage: /usr/bin/python3 tests/jobs/test_cli_fuzz.py PATH/TO/lpurt WORKDIR

Prints one line per failing call and `N calls, M failed` last; exits non-zero on any failure.
"""

import concurrent.futures
import os
import subprocess
import sys

VALUES = ("0", "-1", str(2 ** 31), str(2 ** 40), str(2 ** 63), "nan", "inf", "1e300")
LAYOUT_FLAGS = ("--chips", "--tp", "--pp", "--context", "--batch", "--replicas", "--block-tokens", "--prompt-len",
                "--tokens")
RUN_FLAGS = ("--step-timeout", "--inject-stall-rank", "--inject-crash-rank", "--inject-mpi-error",
             "--inject-link-errors", "--seed", "--max-replays")
SERVE_FLAGS = ("--chips", "--tp", "--pp", "--replicas", "--context", "--block-tokens", "--slots", "--rate",
               "--requests", "--cv", "--prompt-len", "--tokens", "--seed", "--kv-page-tokens", "--kv-pages",
               "--slo-ttft-ms", "--slo-tpot-ms", "--step-timeout")
HARDWARE = ("clock_hz", "sram_bytes", "link_bytes_per_s", "hop_latency_ns", "chip_speed_factor.0", "power_idle_w")
# Short runs: the fuzzed flag replaces these when it is one of them.
BASE = {"plan": ["--prompt-len", "2", "--tokens", "2"], "run": ["--prompt-len", "2", "--tokens", "2"],
        "serve": ["--rate", "1000", "--requests", "4", "--prompt-len", "2", "--tokens", "2", "--arrivals", "gamma"]}
# A rank that kills itself on purpose is the one outcome that must be a signal.
INTENDED_SIGNAL = {("run", "--inject-crash-rank", "0")}
CRASH_MARKERS = ("Segmentation", "Aborted", "terminate called", "core dumped", "AddressSanitizer", "internal error")
TIMEOUT_S = 10


def calls():
    for cmd, flags in (("plan", LAYOUT_FLAGS), ("run", LAYOUT_FLAGS + RUN_FLAGS), ("serve", SERVE_FLAGS)):
        for flag in flags:
            for value in VALUES:
                if (cmd, flag, value) in INTENDED_SIGNAL:
                    continue
                base = BASE[cmd]
                if flag in base:
                    i = base.index(flag)
                    base = base[:i] + base[i + 2:]
                yield [cmd, *base, flag, value]
    for name in HARDWARE:
        for value in VALUES:
            for cmd in ("plan", "run", "serve"):
                yield [cmd, *BASE[cmd], "--set", f"{name}={value}"]


def check(lpurt, work, argv):
    """None if the call kept the contract, else a description of how it broke it."""
    try:
        res = subprocess.run([lpurt, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=TIMEOUT_S, cwd=work)
    except subprocess.TimeoutExpired:
        return f"still running after {TIMEOUT_S} s"
    err = res.stderr.strip()
    where = f"rc={res.returncode} stderr={err[-300:]!r}"
    if res.returncode < 0 or res.returncode >= 124:
        return f"signal or abnormal exit: {where}"
    for marker in CRASH_MARKERS:
        if marker in res.stderr:
            return f"crash marker {marker!r}: {where}"
    if res.returncode == 0:
        expected = {"plan": "modelled", "run": "lpurt run:", "serve": "lpurt serve:"}[argv[0]]
        return None if expected in res.stdout else f"exit 0 without a result: stdout={res.stdout[-300:]!r}"
    if not 2 <= res.returncode <= 8:
        return f"exit code outside 2..8: {where}"
    if len(err.splitlines()) != 1 or not err.startswith("[rank 0/1] error: "):
        return f"not one error line: {where}"
    return None


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    lpurt, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(work, exist_ok=True)
    todo = list(calls())
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda argv: (argv, check(lpurt, work, argv)), todo))
    failed = [(argv, why) for argv, why in results if why]
    for argv, why in failed:
        print(f"FAIL lpurt {' '.join(argv)}: {why}")
    print(f"{len(todo)} calls, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
