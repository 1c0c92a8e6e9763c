#!/usr/bin/python3
"""Bad-input tests for `lpurt`: every broken model file or bad command-line value
must end in ONE clean error line `[rank 0/1] error: ...` on stderr, a non-zero
exit code (never a crash/signal), and no result file (or temp file) left behind.

Usage: /usr/bin/python3 tests/jobs/test_bad_input.py PATH/TO/lpurt WORKDIR

Needs numpy and h5py (the system /usr/bin/python3 has both). No mpirun needed.
Prints `N passed, M failed` as the last line; exits non-zero on any failure.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import unittest

import h5py
import numpy as np

LPURT = None
WORK = None
TIMEOUT_S = 60
CRASH_MARKERS = ("Segmentation", "Aborted", "terminate called", "core dumped", "AddressSanitizer")
# 128 + SIGABRT / SIGFPE / SIGSEGV, as reported by a shell or by mpirun wrappers.
SIGNAL_CODES = (134, 136, 139)


def wpath(name):
    return os.path.join(WORK, name)


def lpurt(*args):
    """Run lpurt with the given arguments, returning the CompletedProcess (or None on timeout)."""
    try:
        return subprocess.run([LPURT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=TIMEOUT_S, cwd=WORK)
    except subprocess.TimeoutExpired:
        return None


def copy_of(src, name):
    dst = wpath(name)
    shutil.copyfile(src, dst)
    return dst


class BadInput(unittest.TestCase):
    tiny = None        # valid tiny model with weights
    tiny_cfg = None    # tiny, --config-only
    l7_cfg = None      # llama2-7b, --config-only

    @classmethod
    def setUpClass(cls):
        os.makedirs(WORK, exist_ok=True)
        for attr, preset, extra in (("tiny", "tiny", ()), ("tiny_cfg", "tiny", ("--config-only",)),
                                    ("l7_cfg", "llama2-7b", ("--config-only",))):
            path = wpath(f"valid_{attr}.h5")
            res = lpurt("gen-model", "--preset", preset, "--out", path, "--force", *extra)
            if res is None or res.returncode != 0:
                raise RuntimeError(f"gen-model --preset {preset} failed: {res and res.stderr}")
            setattr(cls, attr, path)

    # ------------------------------------------------------------------ helpers

    def check_error(self, res, *needles, what=""):
        """Common contract of a failing lpurt call; returns the single error line."""
        self.assertIsNotNone(res, f"{what}: timed out after {TIMEOUT_S} s")
        err = res.stderr.strip()
        ctx = f"{what}\n  rc={res.returncode}\n  stderr={res.stderr!r}\n  stdout={res.stdout[-500:]!r}"
        self.assertGreater(res.returncode, 0, f"expected a non-zero exit (not a signal); {ctx}")
        self.assertNotIn(res.returncode, SIGNAL_CODES, f"exit code looks like a crash; {ctx}")
        for marker in CRASH_MARKERS:
            self.assertNotIn(marker, res.stderr, f"crash marker {marker!r}; {ctx}")
        self.assertTrue(err, f"empty stderr; {ctx}")
        self.assertEqual(len(err.splitlines()), 1, f"stderr must be exactly one line; {ctx}")
        self.assertTrue(err.startswith("[rank 0/1] error:"), f"bad prefix; {ctx}")
        for needle in needles:
            self.assertIn(needle, err, f"message should mention {needle!r}; {ctx}")
        return err

    def run_bad(self, tag, *args, model=None, prompt="1,2", tokens="2"):
        """`lpurt run` with --out; checks that no result or temp file is left behind."""
        out = wpath(f"R_{tag}.h5")
        for stale in [out, *glob.glob(out + ".tmp*")]:
            if os.path.exists(stale):
                os.remove(stale)
        argv = ["run"]
        if model is not None:
            argv += ["--model", model]
        if tokens is not None:
            argv += ["--tokens", tokens]
        if prompt is not None:
            argv += ["--prompt", prompt]
        argv += [*args, "--out", out]
        res = lpurt(*argv)
        if res is None or res.returncode == 0:
            return res, " ".join(argv)   # check_error reports the timeout / unexpected success
        left = [p for p in [out, *glob.glob(out + ".tmp*")] if os.path.exists(p)]
        self.assertEqual(left, [], f"result/temp files left behind after a failing run: {' '.join(argv)}")
        return res, " ".join(argv)

    def model_error(self, tag, model, *needles, **kw):
        res, what = self.run_bad(tag, model=model, **kw)
        return self.check_error(res, model, *needles, what=what)

    def needs_at_least(self, err):
        m = re.search(r"needs at least (\d+) chips", err)
        self.assertIsNotNone(m, f"expected 'needs at least N chips' in {err!r}")
        return int(m.group(1))

    # ------------------------------------------------------- 1-13: model files

    def test_01_not_hdf5(self):
        p = wpath("bad_text.h5")
        with open(p, "w") as f:
            f.write("this is a plain text file, not HDF5\n" * 20)
        self.model_error("text", p, "not an HDF5 file")

    def test_02_nonexistent(self):
        p = wpath("does_not_exist.h5")
        if os.path.exists(p):
            os.remove(p)
        self.model_error("missing", p, "no such file")

    def test_03_truncated(self):
        p = wpath("bad_truncated.h5")
        with open(self.tiny, "rb") as f:
            data = f.read()
        with open(p, "wb") as f:
            f.write(data[: len(data) // 2])
        self.model_error("trunc", p, "truncated")

    def test_04_missing_root_attribute(self):
        p = copy_of(self.tiny, "bad_no_n_heads.h5")
        with h5py.File(p, "a") as f:
            del f.attrs["n_heads"]
        self.model_error("noattr", p, "missing root attribute", "n_heads")

    def test_05_missing_dataset(self):
        p = copy_of(self.tiny, "bad_no_wk.h5")
        with h5py.File(p, "a") as f:
            del f["/layers/1/wk/weight"]
        self.model_error("nods", p, "missing dataset", "/layers/1/wk/weight")

    def test_06_wrong_dtype(self):
        p = copy_of(self.tiny, "bad_dtype.h5")
        with h5py.File(p, "a") as f:
            shape = f["/layers/0/wq/weight"].shape
            del f["/layers/0/wq/weight"]
            f.create_dataset("/layers/0/wq/weight", data=np.zeros(shape, np.float32))
        self.model_error("dtype", p, "/layers/0/wq/weight", "float32", "expected int8")

    def test_07_wrong_shape(self):
        p = copy_of(self.tiny, "bad_shape.h5")
        with h5py.File(p, "a") as f:
            n = f["/lm_head/scale"].shape[0]
            del f["/lm_head/scale"]
            f.create_dataset("/lm_head/scale", data=np.ones(n + 5, np.float32))
        self.model_error("shape", p, "/lm_head/scale", f"[{n + 5}]", f"expected [{n}]")

    def test_08_wrong_format_version(self):
        p = copy_of(self.tiny, "bad_version.h5")
        with h5py.File(p, "a") as f:
            f.attrs["format_version"] = np.int64(3)
        self.model_error("fver", p, "format_version", "3", "expected 1 .. 2")

    def test_09_wrong_format_string(self):
        p = copy_of(self.tiny, "bad_format.h5")
        with h5py.File(p, "a") as f:
            f.attrs["format"] = "not-an-lpurt-model"
        self.model_error("fmt", p, "format", "not-an-lpurt-model", '"lpurt-model"')

    def test_10_absurd_vocab_size(self):
        p = copy_of(self.tiny_cfg, "bad_vocab.h5")
        with h5py.File(p, "a") as f:
            f.attrs["vocab_size"] = np.int64(2 ** 40)
        self.model_error("vocab", p, "vocab_size", str(2 ** 40))

    def test_11_inconsistent_config(self):
        p = copy_of(self.tiny, "bad_heads.h5")
        with h5py.File(p, "a") as f:
            f.attrs["hidden_size"] = np.int64(130)   # n_heads is 8
        self.model_error("heads", p, "hidden_size", "130", "multiple of n_heads", "8")

    def test_12a_sram_too_small_for_program_reserve(self):
        # The brief expected 'needs at least N chips' here, but 1,000,000 B is below the
        # 5 MiB program reserve, so lpurt (correctly) rejects the SRAM setting itself.
        res, what = self.run_bad("sram1e6", "--set", "sram_bytes=1000000", model=self.tiny)
        self.check_error(res, "sram_bytes", "1000000", "program_reserve_bytes", what=what)

    def test_12b_run_does_not_fit_one_chip(self):
        res, what = self.run_bad("sram6e6", "--set", "sram_bytes=6000000", model=self.tiny)
        err = self.check_error(res, "does not fit on 1 chip", "needs at least", what=what)
        self.assertGreaterEqual(self.needs_at_least(err), 2, err)

    def test_12c_run_does_not_fit_one_chip_no_reserve(self):
        res, what = self.run_bad("sram1e6r0", "--set", "program_reserve_bytes=0", "--set", "sram_bytes=1000000",
                                 model=self.tiny)
        err = self.check_error(res, "does not fit on 1 chip", "needs at least", what=what)
        self.assertGreaterEqual(self.needs_at_least(err), 2, err)

    def test_12d_plan_llama2_7b_on_one_chip(self):
        res = lpurt("plan", "--model", self.l7_cfg, "--chips", "1")
        err = self.check_error(res, "does not fit on 1 chip", "needs at least", what="plan llama2-7b --chips 1")
        self.assertGreaterEqual(self.needs_at_least(err), 2, err)

    def test_13_config_only_functional_run(self):
        self.model_error("cfgonly", self.tiny_cfg, "holds only a configuration", "--config-only")

    # ------------------------------------------------------ 14: command line

    def test_14a_prompt_not_integer(self):
        res, what = self.run_bad("prompt_x", model=self.tiny, prompt="1,x")
        self.check_error(res, "--prompt", '"x"', "token id", what=what)

    def test_14b_prompt_token_outside_vocab(self):
        res, what = self.run_bad("prompt_5000", model=self.tiny, prompt="5000")
        self.check_error(res, "5000", "vocabulary", "1024", what=what)

    def test_14c_tokens_zero(self):
        res, what = self.run_bad("tokens0", model=self.tiny, tokens="0")
        self.check_error(res, "--tokens", "at least 1", what=what)

    def test_14d_chips_zero(self):
        # NOTE: `run` says "1 MPI ranks for 0 chips ... (use at most 0 ranks, or more --chips)"
        # whereas `plan` says "--chips must be at least 1 (got 0)"; see test_90d.
        res, what = self.run_bad("chips0", "--chips", "0", model=self.tiny)
        self.check_error(res, "chips", what=what)

    def test_14e_tp_exceeds_heads(self):
        res, what = self.run_bad("tp16", "--tp", "16", "--pp", "1", "--chips", "16", model=self.tiny)
        self.check_error(res, "tp=16", "exceeds the model's 8 attention heads", what=what)

    def test_14f_unknown_system(self):
        res, what = self.run_bad("sys", "--system", "nosuch", model=self.tiny)
        self.check_error(res, '"nosuch"', "unknown system", "groq-lpu-v1", what=what)

    def test_14g_unknown_set_parameter(self):
        res, what = self.run_bad("setname", "--set", "nosuch=1", model=self.tiny)
        self.check_error(res, "nosuch", "unknown hardware parameter", "clock_hz", what=what)

    def test_14h_set_value_not_number(self):
        res, what = self.run_bad("setval", "--set", "clock_hz=abc", model=self.tiny)
        self.check_error(res, "clock_hz", '"abc"', "number", what=what)

    def test_14i_malformed_system_file(self):
        p = wpath("bad_system.txt")
        with open(p, "w") as f:
            f.write("clock_hz = 1e9\nthis line has no equals sign\n")
        res, what = self.run_bad("sysfile", "--system", p, model=self.tiny)
        self.check_error(res, f"{p}:2:", "expected '='", "this line has no equals sign", what=what)
        self.assertEqual(res.returncode, 3, res.stderr)

    # --------------------------------- 90: extras (same contract, found while writing)

    def test_90a_cli_parse_error_non_numeric(self):
        # CLI11 parse errors bypass the '[rank 0/1] error:' path and print two lines.
        res, what = self.run_bad("tokens_abc", model=self.tiny, tokens="abc")
        self.check_error(res, "--tokens", "abc", what=what)

    def test_90b_cli_parse_error_unknown_option(self):
        res, what = self.run_bad("bogus", "--bogus", model=self.tiny)
        self.check_error(res, "--bogus", what=what)

    def test_90c_empty_prompt_rejected(self):
        # `--prompt ''` is silently replaced by the synthetic 16-token prompt.
        res, what = self.run_bad("prompt_empty", model=self.tiny, prompt="")
        self.check_error(res, "--prompt", what=what)

    def test_90d_run_chips_zero_says_chips_at_least_1(self):
        res, what = self.run_bad("chips0b", "--chips", "0", model=self.tiny)
        self.check_error(res, "--chips must be at least 1", what=what)

    def test_90e_lower_bound_consistent_with_failure(self):
        # With 6,500,000 B of SRAM one chip is over by a little, yet the SRAM bound alone
        # says 1 chip: the message must name a larger system.
        res, what = self.run_bad("sram7e6", "--set", "sram_bytes=6500000", model=self.tiny)
        err = self.check_error(res, "needs at least", what=what)
        self.assertGreaterEqual(self.needs_at_least(err), 2, err)

    def test_90f_config_only_hint_names_real_option(self):
        res, _ = self.run_bad("cfgonly_hint", model=self.tiny_cfg)
        hints = re.findall(r"--[a-z][a-z-]+", res.stderr.replace("--config-only", ""))
        help_text = lpurt("run", "--help").stdout
        for opt in hints:
            self.assertIn(opt, help_text, f"error message suggests {opt}, which `lpurt run` does not accept: "
                                          f"{res.stderr.strip()!r}")

    def test_90g_output_directory_missing(self):
        # HDF5's error stack embeds a ctime() timestamp with a newline -> two lines.
        out = wpath("no_such_dir/R.h5")
        res = lpurt("run", "--model", self.tiny, "--tokens", "2", "--prompt", "1,2", "--out", out)
        self.check_error(res, out, what="run --out " + out)
        self.assertEqual(glob.glob(out + "*"), [])

    def test_90i_context_negative_or_zero_says_at_least_1(self):
        for value in ("-5", "0"):
            res, what = self.run_bad(f"context{value}", "--context", value, model=self.tiny)
            self.check_error(res, f"--context must be at least 1 (got {value})", what=what)
            self.assertEqual(res.returncode, 2, what)
            res = lpurt("plan", "--model", self.tiny, "--chips", "1", "--context", value)
            self.check_error(res, f"--context must be at least 1 (got {value})", what=f"plan --context {value}")

    def test_90h_failed_run_keeps_existing_result(self):
        out = wpath("R_existing.h5")
        with open(out, "w") as f:
            f.write("keep")
        broken = copy_of(self.tiny, "bad_no_wk_h.h5")
        with h5py.File(broken, "a") as f:
            del f["/layers/1/wk/weight"]
        for extra in ((), ("--force",)):
            res = lpurt("run", "--model", broken if extra else self.tiny, "--tokens", "2",
                        "--prompt", "1,2", "--out", out, *extra)
            self.check_error(res, what=f"run --out existing {extra}")
            with open(out) as f:
                self.assertEqual(f.read(), "keep", f"existing result clobbered by a failing run {extra}")
            self.assertEqual(glob.glob(out + ".tmp*"), [])

    # ------------------------------- 91: hardening (no hang, no silent wrong result)

    def assert_quick_error(self, argv, *needles, limit_s=10):
        """`lpurt argv` must fail with one clear line within limit_s seconds (not hang, not exhaust memory)."""
        try:
            res = subprocess.run([LPURT, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, timeout=limit_s, cwd=WORK)
        except subprocess.TimeoutExpired:
            self.fail(f"lpurt {' '.join(map(str, argv))}: still running after {limit_s} s")
        return self.check_error(res, *needles, what=" ".join(map(str, argv)))

    def test_91a_chips_beyond_topology_fail_at_once(self):
        for chips in (2 ** 40, 10_000_000):
            for cmd in ("plan", "run"):
                self.assert_quick_error([cmd, "--chips", chips], f"--chips {chips}", "at most 10440 chips")
        self.assert_quick_error(["plan", "--chips", 2 ** 40, "--set", "topology=chain"],
                                "chain topology holds at most 10440 chips")

    def test_91b_sweep_point_beyond_topology_is_infeasible_at_once(self):
        out = wpath("sweep_chips")
        shutil.rmtree(out, ignore_errors=True)
        try:
            res = subprocess.run([LPURT, "sweep", "--preset", "tiny", "--sweep", f"chips=2,{2 ** 40}", "--out", out],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30, cwd=WORK)
        except subprocess.TimeoutExpired:
            self.fail("sweep chips=2,2^40 still running after 30 s")
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(os.path.join(out, "results.csv")) as f:
            self.assertIn("at most 10440 chips", f.read())

    def test_91c_absurd_batch_fails_at_once_alike_in_plan_and_run(self):
        big = 2 ** 40
        errs = [self.assert_quick_error([cmd, "--chips", 2, "--batch", big], f"--batch {big} cannot fit")
                for cmd in ("plan", "run")]
        self.assertEqual(errs[0], errs[1])
        self.assert_quick_error(["run", "--prompt-len", big], f"prompt ({big})", "exceeds the context")

    def test_91d_step_timeout_and_replays_in_range(self):
        for value in ("nan", "-1", "inf", "1e300"):
            self.assert_quick_error(["run", "--step-timeout", value, "--tokens", 2], "--step-timeout must be 0")
        self.assert_quick_error(["run", "--max-replays", 10 ** 9, "--inject-link-errors", "0.9"],
                                "--max-replays must be 0 .. 1000")
        self.assert_quick_error(["run", "--inject-link-errors", "nan"], "--inject-link-errors")

    def test_91e_given_counts_at_least_1_and_ranks_exist(self):
        for flag in ("--tp", "--pp", "--replicas", "--block-tokens", "--batch", "--chips", "--context"):
            for value in ("0", "-1"):
                self.assert_quick_error(["run", flag, value], f"{flag} must be at least 1 (got {value})")
                self.assert_quick_error(["plan", flag, value], f"{flag} must be at least 1 (got {value})")
        for flag in ("--inject-crash-rank", "--inject-stall-rank", "--inject-mpi-error"):
            for value in ("5", "-1"):
                self.assert_quick_error(["run", flag, value], f"{flag} {value}: no such rank")
        self.assert_quick_error(["run", "--inject-stall-rank", "0"], "needs at least 2 ranks")
        job = wpath("job_tp0.toml")
        with open(job, "w") as f:
            f.write('[model]\npreset = "tiny"\n[run]\nchips = 2\ntp = 0\n')
        self.assert_quick_error(["sweep", job], "run.tp", "must be at least 1, got 0")
        self.assert_quick_error(["sweep", "--preset", "tiny", "--tp", "0", "--out", wpath("sweep_tp0")],
                                "tp must be at least 1, got 0")

    def test_91f_removed_link_counts_named(self):
        for name in ("local_links", "global_links"):
            self.assert_quick_error(["plan", "--set", f"{name}=4"], f'"{name}" was removed')
            p = wpath(f"old_{name}.toml")
            with open(p, "w") as f:
                f.write(f"{name} = 4\n")
            self.assert_quick_error(["plan", "--system", p], f"{p}:1", f'"{name}" was removed')

    def test_91g_huge_numbers_print_short(self):
        err = self.assert_quick_error(["plan", "--set", "clock_hz=1e300"], "clock_hz = 1e+300 is outside 1e+06 .. 1e+11")
        self.assertLess(len(err), 200, err)

    def test_91h_non_finite_or_bad_float_values(self):
        cases = (("/layers/1/attn_norm", 3, np.inf, "a finite value"),
                 ("/final_norm", 0, np.nan, "a finite value"),
                 ("/layers/0/wq/scale", 5, -1e30, "a finite scale > 0"),
                 ("/lm_head/scale", 7, 0.0, "a finite scale > 0"),
                 ("/embedding/scale", 2, np.inf, "a finite scale > 0"))
        for i, (dataset, index, value, expected) in enumerate(cases):
            p = copy_of(self.tiny, f"bad_value_{i}.h5")
            with h5py.File(p, "a") as f:
                data = f[dataset][...]
                data[index] = value
                f[dataset][...] = data
            shown = {np.inf: "inf", -1e30: "-1e+30", 0.0: "0"}.get(value, "nan")
            needles = (p, f"dataset {dataset}[{index}] = {shown}", expected)
            res = lpurt("check-model", p)
            self.check_error(res, *needles, what=f"check-model {dataset}[{index}] = {value}")
            self.model_error(f"value{i}", p, *needles)

    def test_91i_corrupted_weight_chunk_fails_its_checksum(self):
        p = copy_of(self.tiny, "bad_bitrot.h5")
        dataset = "/layers/2/w_up/weight"
        with h5py.File(p, "r") as f:
            ds = f[dataset]
            self.assertTrue(ds.fletcher32, "gen-model must write weights with the Fletcher32 filter")
            info = ds.id.get_chunk_info(0)
        with open(p, "r+b") as f:
            f.seek(info.byte_offset + info.size // 2)
            byte = f.read(1)
            f.seek(info.byte_offset + info.size // 2)
            f.write(bytes([byte[0] ^ 0x10]))
        self.assertEqual(lpurt("check-model", p).returncode, 0, "check-model reads no int8 weights")
        self.model_error("bitrot", p, f"dataset {dataset}", "corrupt", "checksum")

    def test_91j_old_files_without_checksums_still_read(self):
        p = wpath("old_contiguous.h5")
        with h5py.File(self.tiny, "r") as src, h5py.File(p, "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            def copy(name, obj):
                if isinstance(obj, h5py.Dataset):
                    dst.create_dataset(name, data=obj[...])   # contiguous, no filter
            src.visititems(copy)
        self.assertFalse(h5py.File(p, "r")["/layers/0/wq/weight"].fletcher32)
        runs = [lpurt("run", "--model", m, "--tokens", "3", "--prompt", "1,2") for m in (self.tiny, p)]
        for res in runs:
            self.assertEqual(res.returncode, 0, res.stderr)
        generated = [[line for line in r.stdout.splitlines() if line.startswith("generated")] for r in runs]
        self.assertEqual(generated[0], generated[1])
        self.assertEqual(len(generated[0]), 1, runs[0].stdout)

    def test_91k_soft_and_external_links_refused(self):
        for kind in ("soft", "external"):
            p = copy_of(self.tiny, f"bad_{kind}_link.h5")
            with h5py.File(p, "a") as f:
                del f["/layers/0/wk/scale"]
                f["/layers/0/wk/scale"] = (h5py.SoftLink("/layers/0/wq/scale") if kind == "soft"
                                           else h5py.ExternalLink("/etc/passwd", "/x"))
            needles = (p, "/layers/0/wk/scale", f"{kind} link", "only hard links")
            self.check_error(lpurt("check-model", p), *needles, what=f"check-model with a {kind} link")
            self.model_error(f"{kind}link", p, *needles)
    def test_92a_study_name_cannot_leave_the_job_folder(self):
        """A study's name is its default folder, next to the job file: a name with a path separator or
        '..' is refused before anything is written (name = "../../evil" wrote outside the folder)."""
        jobs = wpath("jobs/inner")
        os.makedirs(jobs, exist_ok=True)
        for name in ("../../evil", "a/b", "..", "x\\y"):
            job = os.path.join(jobs, "evil.toml")
            with open(job, "w") as f:
                f.write(f"[study]\nname = '{name}'\n[model]\npreset = 'tiny'\n[sweep]\nchips = [1]\n")
            res = lpurt("sweep", job)
            self.check_error(res, "study.name", "must be a plain name", what=f"sweep, name = {name!r}")
            self.assertEqual(res.returncode, 5, res.stderr)
            res = lpurt("sweep", "--name", name, "--preset", "tiny", "--sweep", "chips=1")
            self.check_error(res, "--name", "must be a plain name", what=f"sweep --name {name!r}")
        self.assertFalse(os.path.exists(wpath("evil")), "the study was written outside its folder")
        self.assertEqual(sorted(os.listdir(jobs)), ["evil.toml"])


def main():
    global LPURT, WORK
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    LPURT = os.path.abspath(sys.argv[1])
    WORK = os.path.abspath(sys.argv[2])
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(BadInput)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
