#!/usr/bin/env python3
"""`lpurt sweep` end to end: the table (HDF5 with units, CSV) holds exactly one row per point with the
values a plain `lpurt run` of that point gives; infeasible points are recorded with their reason; a study
killed midway and rerun ends with every point exactly once and the same table as an uninterrupted study;
flags express the same study as a job file; --point and --collect are the Slurm steps; a study on 2 MPI
ranks gives the same tokens and logits as on 1; two sweeps of one study at once share its points (claims),
a claim of a dead process is taken over and one of another host is waited for.
Usage: test_sweep.py LPURT WORKDIR MPIEXEC [MPIEXEC_FLAGS...]"""
import csv
import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

import h5py
import numpy as np

LPURT = WORK = MPIEXEC = None
MPI_FLAGS = []


def host_column(name):
    """Host timings differ run to run; everything else in a row is a pure function of the point."""
    return name.startswith("host_") or name == "int8_kernels"


def sweep(*args, mpi_ranks=0, check=True):
    argv = [LPURT, "sweep", *args]
    if mpi_ranks:
        argv = [MPIEXEC, "-n", str(mpi_ranks), *MPI_FLAGS, *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def write_job(name, body):
    path = os.path.join(WORK, name + ".toml")
    with open(path, "w") as f:
        f.write(body)
    return path


def read_csv(folder):
    with open(os.path.join(folder, "results.csv"), newline="") as f:
        return list(csv.DictReader(f))


def modelled(rows):
    return [{k: v for k, v in r.items() if not host_column(k)} for r in rows]


TINY_GRID = """# tiny model: chips x SRAM per chip
[study]
name = "tiny-grid"
output = "{out}"
mode = "functional"

[model]
preset = "tiny"

[run]
prompt_len = 8
tokens = 4

[sweep]
chips = [1, 2, 4]
sram_bytes = [230686720, 6500000]
"""

# 8 points of about 0.3 s each (4 sequences of 240 tokens on the tiny model, computed): long enough that
# two sweeps started together overlap.
SHARED = """[study]
output = "{out}"
mode = "functional"
[model]
preset = "tiny"
[run]
prompt_len = 16
tokens = 240
batch = 4
[sweep]
chips = [1, 2, 3, 4, 5, 6, 7, 8]
"""


class Sweep(unittest.TestCase):
    def test_table_matches_plain_runs_and_records_infeasible_points(self):
        out = os.path.join(WORK, "grid")
        res = sweep(write_job("grid", TINY_GRID.format(out=out)))
        self.assertIn("6 points, 0 done, 6 to run", res.stdout)
        rows = read_csv(out)
        self.assertEqual([int(r["point"]) for r in rows], list(range(6)))
        self.assertEqual([(r["chips"], r["sram_bytes"]) for r in rows],
                         [(c, s) for c in ("1", "2", "4") for s in ("230686720", "6500000")])
        infeasible = [r for r in rows if r["status"] == "infeasible"]
        self.assertTrue(infeasible, "6.5 MB of SRAM (1.3 MB usable) must not hold tiny on one chip")
        for r in infeasible:
            self.assertIn("needs at least", r["reason"])
            self.assertEqual(r["ttft_s"], "", "an infeasible point has no modelled times")
        self.assertTrue(any(r["status"] == "ok" and r["sram_bytes"] == "6500000" for r in rows),
                        "with enough chips the small SRAM fits")
        # Every ok point equals a plain `lpurt run` of the same parameters: modelled times exactly, and the
        # tokens and logits bit for bit.
        for r in rows:
            if r["status"] != "ok":
                continue
            plain = os.path.join(WORK, f"plain_{r['point']}.h5")
            run = subprocess.run([LPURT, "run", "--chips", r["chips"], "--set", f"sram_bytes={r['sram_bytes']}",
                                  "--prompt-len", "8", "--tokens", "4", "--json", "--out", plain, "--force"],
                                 capture_output=True, text=True, check=True)
            summary = json.loads(run.stdout)
            for key in ("ttft_s", "tpot_s", "tpot_compute_s", "tpot_transfer_s", "tpot_idle_s", "tokens_per_s_user"):
                self.assertEqual(float(r[key]), summary[key], f"point {r['point']} {key}")
            for key in ("tp", "pp", "replicas", "sram_bytes_max"):
                self.assertEqual(int(r[key]), summary[key], f"point {r['point']} {key}")
            with h5py.File(os.path.join(out, r["point_file"]), "r") as p, h5py.File(plain, "r") as q:
                self.assertTrue(np.array_equal(p["tokens"][:], q["tokens"][:]))
                self.assertEqual(p["logits"][:].tobytes(), q["logits"][:].tobytes())
            # The parts of the time per token add up to it.
            parts = float(r["tpot_compute_s"]) + float(r["tpot_transfer_s"]) + float(r["tpot_idle_s"])
            self.assertAlmostEqual(parts, float(r["tpot_s"]), delta=1e-12)
        # The HDF5 table holds the same values, with units.
        with h5py.File(os.path.join(out, "results.h5"), "r") as t:
            self.assertEqual(t.attrs["format"], "lpurt-study-table")
            columns = t.attrs["columns"].split(",")
            self.assertEqual(columns, list(rows[0].keys()))
            table = t["table"]
            self.assertEqual(table["ttft_s"].attrs["unit"], "s")
            self.assertEqual(table["sram_bytes"].attrs["unit"], "bytes")
            self.assertEqual(table["tokens_per_s_system"].attrs["unit"], "tokens/s")
            self.assertEqual(table["chips"].dtype, np.int64)
            for i, r in enumerate(rows):
                v = table["ttft_s"][i]
                self.assertTrue(math.isnan(v) if r["ttft_s"] == "" else v == float(r["ttft_s"]))
                self.assertEqual(table["status"][i].decode(), r["status"])
        # Plots: PNG and SVG of each figure, PNG files well under 200 KB.
        for name in ("throughput", "latency", "sram", "time_per_token"):
            for ext in ("png", "svg"):
                path = os.path.join(out, "plots", f"{name}.{ext}")
                self.assertTrue(os.path.getsize(path) > 1000, path)
            self.assertLess(os.path.getsize(os.path.join(out, "plots", f"{name}.png")), 200_000)
        # The study folder keeps the job as it ran; read back, it names the same points.
        again = sweep(os.path.join(out, "job.toml"))
        self.assertIn("6 points, 6 done, 0 to run", again.stdout)

    def test_killed_study_resumes_with_every_point_once(self):
        job = """[study]
name = "resume"
output = "{out}"
[model]
preset = "llama2-70b"
[run]
prompt_len = 512
tokens = 64
context = 1024
[sweep]
chips = [512, 576, 640, 768, 1024, 1152, 1536, 2048]
"""
        out = os.path.join(WORK, "resume")
        proc = subprocess.Popen([LPURT, "sweep", write_job("resume", job.format(out=out))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(os.path.join(out, "points", "*.h5")):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = glob.glob(os.path.join(out, "points", "*.h5"))
        self.assertTrue(1 <= len(done) < 8, f"the kill should land midway, {len(done)} of 8 points were done")
        for path in done:  # a finished point is complete
            with h5py.File(path, "r") as f:
                self.assertEqual(f.attrs["status"], "ok")
        res = sweep(os.path.join(WORK, "resume.toml"))
        self.assertIn(f"8 points, {len(done)} done, {8 - len(done)} to run", res.stdout)
        self.assertEqual(res.stdout.count("] chips="), 8 - len(done), "only the missing points run")
        rows = read_csv(out)
        self.assertEqual(sorted(int(r["point"]) for r in rows), list(range(8)))
        self.assertEqual(len(glob.glob(os.path.join(out, "points", "*.h5"))), 8)
        self.assertEqual(glob.glob(os.path.join(out, "points", "*.tmp.*")), [], "the killed run's temporaries remain")
        # Identical to a study that was never interrupted.
        clean = os.path.join(WORK, "resume_clean")
        sweep(write_job("resume_clean", job.format(out=clean)))
        self.assertEqual(modelled(rows), modelled(read_csv(clean)))

    def test_two_sweeps_at_once_share_the_points(self):
        """Both sweeps start with 8 points to run; each runs a disjoint share (claims in points/), together
        every point exactly once, and both end with the full table."""
        out = os.path.join(WORK, "shared")
        job = write_job("shared", SHARED.format(out=out))
        procs = [subprocess.Popen([LPURT, "sweep", job], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outputs = [p.communicate(timeout=300) for p in procs]
        ran = []
        for p, (stdout, stderr) in zip(procs, outputs):
            self.assertEqual(p.returncode, 0, stderr)
            self.assertIn("8 points", stdout)
            self.assertIn("table ", stdout)
            ran.append({int(l[1:l.index("/")]) for l in stdout.splitlines() if l.startswith("[")})
        self.assertEqual(ran[0] & ran[1], set(), f"points run twice: {outputs}")
        self.assertEqual(ran[0] | ran[1], set(range(1, 9)))
        self.assertEqual(sorted(int(r["point"]) for r in read_csv(out)), list(range(8)))
        self.assertEqual(glob.glob(os.path.join(out, "points", "*.claim*")), [], "claims left behind")

    def test_stale_claims_are_taken_over_and_foreign_ones_waited_for(self):
        out = os.path.join(WORK, "claims")
        job = write_job("claims", SHARED.format(out=out))
        sweep(job)
        points = sorted(glob.glob(os.path.join(out, "points", "*.h5")))
        for path in points[:2]:
            os.remove(path)
        # A claim of a process that is gone from this host (a sweep killed with -9): taken over.
        dead = subprocess.Popen(["true"])
        dead.wait()
        with open(points[0][:-3] + ".claim", "w") as f:
            f.write(f"{socket.gethostname()} {dead.pid}\n")
        # A claim of another host: respected and named until it goes.
        foreign = points[1][:-3] + ".claim"
        with open(foreign, "w") as f:
            f.write("otherhost 4242\n")
        proc = subprocess.Popen([LPURT, "sweep", job], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waiting = ""
        while "claimed by otherhost 4242 (" + foreign + ")" not in waiting:
            line = proc.stdout.readline()
            self.assertTrue(line, f"the sweep ended without waiting for the foreign claim: {waiting}")
            waiting += line
        self.assertIsNone(proc.poll(), "the sweep must wait while the point is claimed")
        os.remove(foreign)
        stdout, stderr = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 0, stderr)
        ran = [l for l in (waiting + stdout).splitlines() if l.startswith("[")]
        self.assertEqual(len(ran), 2, waiting + stdout)
        self.assertEqual(len(glob.glob(os.path.join(out, "points", "*.h5"))), 8)
        self.assertEqual(glob.glob(os.path.join(out, "points", "*.claim*")), [])

    def test_layouts_name_replicas_and_idle_chips_and_flat_sweeps_are_flagged(self):
        run = subprocess.run([LPURT, "run", "--chips", "4", "--tokens", "2"], capture_output=True, text=True, check=True)
        self.assertIn("on 1 chip(s) = tp 1 x pp 1 x 1 replica(s), 3 of the system's 4 idle", run.stdout)
        plan = subprocess.run([LPURT, "plan", "--chips", "4"], capture_output=True, text=True, check=True)
        self.assertIn("layout  1 chip(s) = tp 1 x pp 1 x 1 replica(s), 3 of the system's 4 idle", plan.stdout)
        full = subprocess.run([LPURT, "plan", "--chips", "4", "--batch", "4"], capture_output=True, text=True, check=True)
        self.assertIn("layout  4 chip(s) = tp 1 x pp 1 x 4 replica(s), context", full.stdout)
        flat = sweep("--preset", "tiny", "--sweep", "chips=1,2,4", "--out", os.path.join(WORK, "flat"))
        self.assertIn("warning table points 0-2 give identical modelled rows", flat.stdout)
        self.assertIn("the extra chips are idle", flat.stdout)
        varied = sweep("--preset", "tiny", "--sweep", "batch=1,2", "--chips", "2", "--out", os.path.join(WORK, "varied"))
        self.assertNotIn("identical", varied.stdout)

    def test_plots_name_units_categories_and_infeasible_points(self):
        out = os.path.join(WORK, "plots2")
        sweep("--preset", "tiny", "--sweep", "chips=1,2", "--sweep", "sram_bytes=230686720,6500000", "--out", out)
        plots = os.path.join(out, "plots")
        with open(os.path.join(plots, "study.gp")) as f:
            gp = f.read()
        self.assertIn("set ylabel 'time to first token (us)'", gp, "microsecond latencies are drawn in us")
        self.assertIn("set ylabel 'us per token'", gp)
        self.assertIn("1 infeasible, not drawn: chips=1 sram_bytes=6500000", gp)
        self.assertNotIn("top left", gp, "legends go outside the plot area")
        self.assertIn("set key outside", gp)
        with open(os.path.join(plots, "bars.dat")) as f:
            bars = f.read()
        self.assertIn('"chips=2 sram_bytes=6500000"', bars)
        self.assertIn('"chips=1 sram_bytes=6500000 (infeasible)"', bars)
        with open(os.path.join(plots, "data.dat")) as f:
            self.assertIn("ttft_us tpot_us", f.read())
        self.assertTrue(os.path.getsize(os.path.join(plots, "latency.png")) > 0 or shutil.which("gnuplot") is None)

    def test_flags_express_the_same_study_as_a_job_file(self):
        out_file, out_flags = os.path.join(WORK, "by_file"), os.path.join(WORK, "by_flags")
        sweep(write_job("by_file", f"""[study]
output = "{out_file}"
[model]
preset = "tiny"
[system]
set = {{ hop_latency_ns = 600.0 }}
[run]
prompt_len = 8
tokens = 3
[sweep]
chips = [2, 4]
link_bytes_per_s = {{ from = 7e9, to = 28e9, times = 2 }}
"""))
        sweep("--preset", "tiny", "--set", "hop_latency_ns=600", "--prompt-len", "8", "--tokens", "3",
              "--sweep", "chips=2,4", "--sweep", "link_bytes_per_s=7e9..28e9*2", "--out", out_flags)
        a, b = read_csv(out_file), read_csv(out_flags)
        self.assertEqual(len(a), 6)
        self.assertEqual(modelled(a), modelled(b))

    def test_point_then_collect_are_the_slurm_steps(self):
        out = os.path.join(WORK, "steps")
        job = write_job("steps", TINY_GRID.format(out=out).replace("functional", "timing-only"))
        res = sweep(job, "--point", "1")
        self.assertEqual(len(glob.glob(os.path.join(out, "points", "*.h5"))), 1)
        self.assertNotIn("table", res.stdout)
        missing = sweep(job, "--collect", check=False)
        self.assertEqual(missing.returncode, 7, missing.stderr)
        self.assertIn("5 of 6 points have no result yet (points 0,2-5)", missing.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "results.csv")), "no table from a partial study")
        for i in (0, 2, 3, 4, 5):
            sweep(job, "--point", str(i))
        sweep(job, "--collect")
        self.assertEqual(len(read_csv(out)), 6)
        bad = sweep(job, "--point", "6", check=False)
        self.assertEqual(bad.returncode, 5)
        self.assertIn("--point 6 is out of range (the study has 6 points: 0..5)", bad.stderr)

    def test_two_ranks_give_the_same_outputs_as_one(self):
        one, two = os.path.join(WORK, "np1"), os.path.join(WORK, "np2")
        body = """[study]
output = "{out}"
mode = "functional"
ranks = {ranks}
[model]
preset = "tiny"
[run]
prompt_len = 6
tokens = 5
tp = 2
[sweep]
chips = [2, 4]
"""
        sweep(write_job("np1", body.format(out=one, ranks=1)))
        sweep(write_job("np2", body.format(out=two, ranks=2)), mpi_ranks=2)
        wrong = sweep(os.path.join(WORK, "np2.toml"), check=False)
        self.assertEqual(wrong.returncode, 5)
        self.assertIn("launch it as `mpirun -np 2 lpurt sweep ...`", wrong.stderr)
        a, b = read_csv(one), read_csv(two)
        for ra, rb in zip(a, b):
            self.assertEqual(rb["ranks"], "2")
            with h5py.File(os.path.join(one, ra["point_file"]), "r") as p, \
                    h5py.File(os.path.join(two, rb["point_file"]), "r") as q:
                self.assertTrue(np.array_equal(p["tokens"][:], q["tokens"][:]))
                self.assertEqual(p["logits"][:].tobytes(), q["logits"][:].tobytes())
            self.assertEqual(ra["tpot_s"], rb["tpot_s"])

    def test_groups_of_ranks_run_points_side_by_side(self):
        # A 1-rank study on 2 ranks: two groups, each point run once, the same table as one rank gives.
        one, two = os.path.join(WORK, "side_np1"), os.path.join(WORK, "side_np2")
        sweep(write_job("side_np1", TINY_GRID.format(out=one)))
        res = sweep(write_job("side_np2", TINY_GRID.format(out=two)), mpi_ranks=2)
        self.assertIn("6 points, 0 done, 6 to run on 2 rank(s), 2 points at a time", res.stdout)
        self.assertEqual(sorted(int(l[1:l.index("/")]) for l in res.stdout.splitlines() if l.startswith("[")),
                         list(range(1, 7)), res.stdout)
        a, b = read_csv(one), read_csv(two)
        self.assertEqual(modelled(a), modelled(b))
        for ra, rb in zip(a, b):
            self.assertEqual(rb["ranks"], "1" if rb["status"] == "ok" else "")
            if ra["status"] != "ok":
                continue
            with h5py.File(os.path.join(one, ra["point_file"]), "r") as p, \
                    h5py.File(os.path.join(two, rb["point_file"]), "r") as q:
                self.assertEqual(p["logits"][:].tobytes(), q["logits"][:].tobytes())
        # 3 ranks cannot be split into groups of 2.
        job = write_job("side_bad", TINY_GRID.format(out=os.path.join(WORK, "side_bad")).replace(
            'mode = "functional"', 'mode = "functional"\nranks = 2'))
        bad = sweep(job, mpi_ranks=3, check=False)
        self.assertEqual(bad.returncode, 5, bad.stderr)
        self.assertIn("(or on a multiple of 2 ranks, to run that many points at once)", bad.stderr)

    def test_slurm_submission_without_slurm_says_so(self):
        out = os.path.join(WORK, "no_slurm")
        res = subprocess.run([LPURT, "sweep", "--preset", "tiny", "--sweep", "chips=1,2", "--out", out, "--slurm"],
                             capture_output=True, text=True, env={**os.environ, "PATH": "/nonexistent"})
        self.assertEqual(res.returncode, 7, res.stderr)
        self.assertEqual(res.stderr.strip(), "[rank 0/1] error: sbatch is not on PATH: --slurm submits from a Slurm login node")

    def test_bad_job_files_fail_with_one_line_naming_key_and_line(self):
        cases = [("[model]\npreset = \"tiny\"\n[run]\nchips = 2\nprompt = 5\n", "job_bad.toml:5: run.prompt is not a known key"),
                 ("[model]\npreset = \"tiny\"\n[sweep]\nchips = [1, \"two\"]\n", "job_bad.toml:4: sweep.chips must be an integer, got string"),
                 ("[model]\npreset = \"tiny\"\n[sweep]\nchips = [1, 2\n", "job_bad.toml:4:15:"),
                 ("[model]\nfile = \"missing.h5\"\n[run]\nchips = 2\n", "missing.h5")]
        for body, expected in cases:
            path = write_job("job_bad", body)
            res = sweep(path, check=False)
            self.assertEqual(res.returncode, 3, body)  # a malformed job file or a missing model: bad input
            self.assertEqual(len(res.stderr.strip().splitlines()), 1, res.stderr)
            self.assertIn(expected, res.stderr)
            self.assertTrue(res.stderr.startswith("[rank 0/1] error: "), res.stderr)


def main():
    global LPURT, WORK, MPIEXEC, MPI_FLAGS
    LPURT, WORK, MPIEXEC, MPI_FLAGS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    os.chdir(WORK)
    unittest.main(argv=[sys.argv[0], "-v"])


if __name__ == "__main__":
    main()
