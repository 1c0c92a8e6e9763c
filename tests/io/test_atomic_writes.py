#!/usr/bin/env python3
"""Outputs are atomic: a writer killed (SIGKILL) in the middle of writing leaves no file under the final
name, or the old file untouched when it was replacing one; the next write of the same path succeeds; an
existing output is never replaced without --force.
The writer here is `gen-model` of a 1.1 GB model, killed once its temporary file holds 50 MB: every
output of lpurt (result files, traces, model files, study tables) goes through the same io::write_atomically.
Usage: test_atomic_writes.py LPURT WORKDIR"""
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

LPURT = WORK = None


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def kill_mid_write(out, *extra):
    """Starts a 1.1 GB gen-model into `out` and kills it once its temporary file holds 50 MB."""
    proc = subprocess.Popen([LPURT, "gen-model", "--preset", "tinyllama-1.1b", "--out", out, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        temps = glob.glob(out + ".tmp.*")
        if temps and os.path.getsize(temps[0]) > 50_000_000:
            break
        if proc.poll() is not None:
            raise AssertionError(f"gen-model ended (exit {proc.returncode}) before it could be killed mid-write")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    temps = glob.glob(out + ".tmp.*")
    assert temps, "the killed writer's temporary file should still be there"
    return temps


class AtomicWrites(unittest.TestCase):
    def test_killed_writer_leaves_no_file_under_the_final_name(self):
        out = os.path.join(WORK, "new.h5")
        kill_mid_write(out)
        self.assertFalse(os.path.exists(out), "a partial file appeared under the final name")
        # The next write of the same path completes, under a temporary name of its own.
        subprocess.run([LPURT, "gen-model", "--preset", "tiny", "--out", out], check=True, stdout=subprocess.DEVNULL)
        plan = subprocess.run([LPURT, "plan", "--model", out, "--chips", "1"], capture_output=True, text=True)
        self.assertEqual(plan.returncode, 0, plan.stderr)

    def test_killed_replacement_leaves_the_old_file_intact(self):
        out = os.path.join(WORK, "old.h5")
        subprocess.run([LPURT, "gen-model", "--preset", "tiny", "--out", out], check=True, stdout=subprocess.DEVNULL)
        before = sha(out)
        kill_mid_write(out, "--force")
        self.assertEqual(sha(out), before, "the old file changed while its replacement was being written")
        plan = subprocess.run([LPURT, "plan", "--model", out, "--chips", "1"], capture_output=True, text=True)
        self.assertEqual(plan.returncode, 0, plan.stderr)

    def test_existing_outputs_are_not_replaced_without_force(self):
        model = os.path.join(WORK, "kept.h5")
        subprocess.run([LPURT, "gen-model", "--preset", "tiny", "--out", model], check=True, stdout=subprocess.DEVNULL)
        result, trace = os.path.join(WORK, "kept_result.h5"), os.path.join(WORK, "kept_trace.json")
        subprocess.run([LPURT, "run", "--tokens", "2", "--out", result, "--trace", trace], check=True,
                       stdout=subprocess.DEVNULL)
        for argv, path in (([LPURT, "gen-model", "--preset", "tiny", "--out", model], model),
                           ([LPURT, "run", "--tokens", "2", "--out", result], result),
                           ([LPURT, "run", "--tokens", "2", "--trace", trace], trace)):
            before = sha(path)
            res = subprocess.run(argv, capture_output=True, text=True)
            self.assertEqual(res.returncode, 6, res.stderr)
            self.assertIn(f"{path}: already exists; pass --force to replace it", res.stderr)
            self.assertEqual(sha(path), before)
        res = subprocess.run([LPURT, "run", "--tokens", "2", "--out", result, "--force"], capture_output=True, text=True)
        self.assertEqual(res.returncode, 0, res.stderr)


def main():
    global LPURT, WORK
    LPURT, WORK = sys.argv[1], sys.argv[2]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    unittest.main(argv=[sys.argv[0], "-v"])


if __name__ == "__main__":
    main()
