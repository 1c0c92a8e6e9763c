#!/usr/bin/env python3
"""Link faults end to end: with transfers corrupted at random (--inject-link-errors RATE --seed S), the
checksums catch every corruption, the affected tokens are replayed, and the tokens and logits are bit
for bit those of a clean run, on 1 and 2 ranks. The replays are counted (the same counts in a
timing-only run, where the draws alone decide: so every injected corruption was detected by its
checksum) and costed in modelled time. A replay reruns the whole forward call (the prefill, or one
decode step), so the rates here are low enough for a prefill of ~300 transfers to get through; the fault-free modelled times are unchanged. A link that cannot
deliver fails the run with one line and writes no result.
Usage: test_link_faults.py LPURT WORKDIR MPIEXEC [MPIEXEC_FLAGS...]"""
import json
import os
import shutil
import subprocess
import sys
import unittest

import h5py
import numpy as np

LPURT = WORK = MPIEXEC = None
MPI_FLAGS = []
LAYOUT = ["--chips", "4", "--tp", "2", "--pp", "2", "--prompt-len", "10", "--tokens", "12", "--block-tokens", "4"]


def run(*args, ranks=1, check=True):
    argv = [LPURT, "run", *LAYOUT, *args]
    if ranks > 1:
        argv = [MPIEXEC, "-n", str(ranks), *MPI_FLAGS, *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stderr}")
    return res


def summary(*args, ranks=1):
    return json.loads(run(*args, "--json", ranks=ranks).stdout)


class LinkFaults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.clean = os.path.join(WORK, "clean.h5")
        cls.clean_summary = summary("--out", cls.clean, "--force")

    def assert_same_outputs(self, path):
        with h5py.File(self.clean, "r") as a, h5py.File(path, "r") as b:
            self.assertTrue(np.array_equal(a["tokens"][:], b["tokens"][:]), path)
            self.assertEqual(a["logits"][:].tobytes(), b["logits"][:].tobytes(), path)

    def test_corrupted_transfers_are_replayed_and_outputs_stay_bit_identical(self):
        for ranks in (1, 2):
            for rate, seed in ((0.003, 2), (0.005, 7)):
                out = os.path.join(WORK, f"faulty_np{ranks}_{seed}.h5")
                s = summary("--inject-link-errors", str(rate), "--seed", str(seed), "--out", out, "--force", ranks=ranks)
                self.assertGreater(s["token_replays"], 0, f"rate {rate} seed {seed}: no fault was injected")
                self.assertGreaterEqual(s["link_faults_detected"], s["token_replays"])
                self.assertGreater(s["replay_time_s"], 0)
                self.assert_same_outputs(out)
                for key in ("ttft_s", "tpot_s", "tokens_per_s_user"):
                    self.assertEqual(s[key], self.clean_summary[key], key)
                # The draws alone (timing-only: no payload, no checksum) give the same counts, so every
                # corruption the functional run injected was caught by a checksum.
                t = summary("--inject-link-errors", str(rate), "--seed", str(seed), "--timing-only", ranks=ranks)
                for key in ("link_faults_detected", "token_replays", "replay_time_s"):
                    self.assertEqual(t[key], s[key], f"{key}, {ranks} rank(s), seed {seed}")

    def test_a_replay_costs_its_own_replicas_time(self):
        # Two replicas of two stages; with seed 3 the one replay is a decode step of sequence 1 (replica 1).
        argv = [LPURT, "run", "--chips", "4", "--tp", "1", "--pp", "2", "--replicas", "2", "--batch", "2",
                "--prompt-len", "6", "--tokens", "8", "--inject-link-errors", "0.05", "--seed", "3", "--json"]
        def replay(*extra):
            s = json.loads(subprocess.run(argv + list(extra), capture_output=True, text=True, check=True).stdout)
            self.assertEqual(s["token_replays"], 1)  # the draws do not depend on speeds
            return s["replay_time_s"]
        nominal = replay()
        self.assertEqual(replay("--set", "chip_speed_factor.1=0.25"), nominal)  # replica 0's chip 1: not replayed
        self.assertGreater(replay("--set", "chip_speed_factor.3=0.25"), 2 * nominal)  # replica 1's chip 3

    def test_scripted_faults_replay_exactly_their_calls(self):
        # LAYOUT is tp 2 x pp 2: chips 1 -> 0 exchange tensor-parallel partials in every call, 1 -> 3 carries
        # activations between the stages. Call 0 is the prefill, call 4 the fourth decode step.
        faults = ["--inject-link-fault", "1-0@4", "--inject-link-fault", "1-3@0"]
        for ranks in (1, 2):
            out = os.path.join(WORK, f"scripted_np{ranks}.h5")
            s = summary(*faults, "--out", out, "--force", ranks=ranks)
            self.assertEqual(s["token_replays"], 2)
            self.assertGreaterEqual(s["link_faults_detected"], 2)
            self.assert_same_outputs(out)
            t = summary(*faults, "--timing-only", ranks=ranks)
            for key in ("link_faults_detected", "token_replays", "replay_time_s"):
                self.assertEqual(t[key], s[key], f"{key}, {ranks} rank(s)")
        # Chip 0 (stage 0, tp 0) never sends to chip 3 (stage 1, tp 1): nothing to corrupt, nothing replayed.
        self.assertEqual(summary("--inject-link-fault", "0-3@1")["token_replays"], 0)
        for spec, message in (("1-9@2", "needs two different chips of the 4"), ("1to2", "expected FROM-TO@CALL")):
            res = run("--inject-link-fault", spec, check=False)
            self.assertEqual(res.returncode, 2, res.stderr)
            self.assertIn(f"--inject-link-fault {spec}: {message}", res.stderr)

    def test_a_corrupted_hand_off_inside_an_ffn_is_replayed(self):
        # tp 2 x pp 4 of tiny: stage 1 (chips 2, 3) begins at layer 0's w_down half, so chips 0 -> 2 and
        # 1 -> 3 carry the activations with the SiLU output and amax (one transfer, one checksum).
        layout = ["--chips", "8", "--tp", "2", "--pp", "4", "--prompt-len", "10", "--tokens", "12", "--block-tokens", "4"]
        plan = json.loads(subprocess.run([LPURT, "plan", *layout[:6], "--json"], capture_output=True, text=True,
                                         check=True).stdout)
        self.assertEqual(int(plan["stage_part_begin"].split(",")[1]) % 3, 2)
        clean = os.path.join(WORK, "ffn_clean.h5")
        subprocess.run([LPURT, "run", *layout, "--out", clean, "--force"], capture_output=True, check=True)
        for ranks in (1, 2):
            out = os.path.join(WORK, f"ffn_scripted_np{ranks}.h5")
            argv = [LPURT, "run", *layout, "--inject-link-fault", "1-3@0", "--inject-link-fault", "0-2@3", "--json",
                    "--out", out, "--force"]
            if ranks > 1:
                argv = [MPIEXEC, "-n", str(ranks), *MPI_FLAGS, *argv]
            s = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
            self.assertEqual(s["token_replays"], 2)
            with h5py.File(clean, "r") as a, h5py.File(out, "r") as b:
                self.assertTrue(np.array_equal(a["tokens"][:], b["tokens"][:]), out)
                self.assertEqual(a["logits"][:].tobytes(), b["logits"][:].tobytes(), out)

    def test_a_corrupted_hand_off_inside_an_moe_ffn_is_replayed(self):
        # tiny-mixtral on tp 2 x pp 3: stage 1 (chips 2, 3) begins at layer 0's MoE w_down half, so chips
        # 0 -> 2 and 1 -> 3 carry the activations with the routing, the slot amax and the held slots' SiLU
        # rows (one transfer, one checksum).
        model = os.path.join(WORK, "moe.h5")
        subprocess.run([LPURT, "gen-model", "--preset", "tiny-mixtral", "--out", model, "--seed", "3"],
                       capture_output=True, check=True)
        layout = ["--model", model, "--chips", "6", "--tp", "2", "--pp", "3", "--moe-ffn-cuts", "allowed",
                  "--prompt-len", "10", "--tokens", "12", "--block-tokens", "4"]
        plan = json.loads(subprocess.run([LPURT, "plan", *layout[:10], "--json"], capture_output=True, text=True,
                                         check=True).stdout)
        self.assertEqual(int(plan["stage_part_begin"].split(",")[1]) % 3, 2)
        clean = os.path.join(WORK, "moe_clean.h5")
        subprocess.run([LPURT, "run", *layout, "--out", clean, "--force"], capture_output=True, check=True)
        for ranks in (1, 2):
            out = os.path.join(WORK, f"moe_scripted_np{ranks}.h5")
            argv = [LPURT, "run", *layout, "--inject-link-fault", "1-3@0", "--inject-link-fault", "0-2@3", "--json",
                    "--out", out, "--force"]
            if ranks > 1:
                argv = [MPIEXEC, "-n", str(ranks), *MPI_FLAGS, *argv]
            s = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
            self.assertEqual(s["token_replays"], 2)
            with h5py.File(clean, "r") as a, h5py.File(out, "r") as b:
                self.assertTrue(np.array_equal(a["tokens"][:], b["tokens"][:]), out)
                self.assertEqual(a["logits"][:].tobytes(), b["logits"][:].tobytes(), out)

    def test_no_injection_no_replays(self):
        self.assertEqual(self.clean_summary["link_faults_detected"], 0)
        self.assertEqual(self.clean_summary["token_replays"], 0)
        self.assertEqual(self.clean_summary["replay_time_s"], 0)

    def test_a_link_that_cannot_deliver_fails_clearly(self):
        for ranks in (1, 2):
            out = os.path.join(WORK, f"dead_link_np{ranks}.h5")
            res = run("--inject-link-errors", "1", "--max-replays", "3", "--out", out, ranks=ranks, check=False)
            self.assertEqual(res.returncode, 7, res.stderr)
            lines = [l for l in res.stderr.splitlines() if l.startswith("[rank")]
            self.assertEqual(len(lines), 1, res.stderr)
            self.assertIn("arrived corrupted in each of 4 attempts", lines[0])
            self.assertIn("the links cannot deliver this token", lines[0])
            self.assertFalse(os.path.exists(out), "no result from a failed run")

    def test_bad_rates_are_refused(self):
        for rate in ("-0.1", "1.5", "nan"):
            res = run("--inject-link-errors", rate, check=False)
            self.assertEqual(res.returncode, 2, res.stderr)
            self.assertIn("--inject-link-errors must be a probability in [0, 1]", res.stderr)


def main():
    global LPURT, WORK, MPIEXEC, MPI_FLAGS
    LPURT, WORK, MPIEXEC, MPI_FLAGS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    unittest.main(argv=[sys.argv[0], "-v"])


if __name__ == "__main__":
    main()
