#!/usr/bin/env python3
"""Outputs are atomic: a writer killed (SIGKILL) in the middle of writing leaves no file under the final
name, or the old file untouched when it was replacing one; the next write of the same path succeeds; an
existing output is never replaced without --force; a symbolic link, device, FIFO or directory at an output
path is never replaced, even with --force; a writer removes the temporary files that killed writers of
the same target left behind; gen-model says how big the file is, refuses before writing when it will not
fit, shows its progress, and fails cleanly (no crash) when the disk fills up anyway.
The writer here is `gen-model` of a 1.1 GB model, killed once its temporary file holds 50 MB: every
output of lpurt (result files, traces, model files, study tables) goes through the same io::write_atomically.
Usage: test_atomic_writes.py LPURT WORKDIR"""
import glob
import contextlib
import hashlib
import os
import re
import socket
import stat
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


@contextlib.contextmanager
def small_tmpfs(test, name):
    """A 2 MB tmpfs mounted at WORK/name (root only: the test is skipped if the mount fails)."""
    folder = os.path.join(WORK, name)
    os.makedirs(folder)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", folder], capture_output=True, text=True)
    if res.returncode != 0:
        test.skipTest(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", folder], check=True)


def free_bytes(folder):
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def one_clean_error(test, res, what):
    test.assertEqual(res.returncode, 6, f"{what}: {res.stderr}")
    lines = res.stderr.strip().splitlines()
    test.assertEqual(len(lines), 1, f"{what}: expected one error line, got {res.stderr!r}")
    test.assertTrue(lines[0].startswith("[rank 0/1] error:"), lines[0])
    return lines[0]


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

    def test_special_files_and_links_are_never_replaced(self):
        """`--out`, `--trace` and `gen-model --out` refuse a device, FIFO, directory or symlink, even with
        --force, and do not suggest --force; the node, FIFO or link is unchanged afterwards."""
        regular = os.path.join(WORK, "regular.json")
        with open(regular, "w") as f:
            f.write("keep")
        targets = {}
        fifo = os.path.join(WORK, "fifo")
        os.mkfifo(fifo)
        targets[fifo] = "a FIFO"
        link = os.path.join(WORK, "link.json")
        os.symlink(regular, link)
        targets[link] = "is a symbolic link to " + regular
        folder = os.path.join(WORK, "folder.h5")
        os.makedirs(folder)
        targets[folder] = "a directory"
        if os.geteuid() == 0:
            node = os.path.join(WORK, "null_node")
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            targets[node] = "a character device"
        for path, kind in targets.items():
            before = os.lstat(path)
            for argv in (["gen-model", "--preset", "tiny", "--out", path],
                         ["run", "--tokens", "2", "--out", path],
                         ["run", "--tokens", "2", "--trace", path]):
                for force in ((), ("--force",)):
                    res = subprocess.run([LPURT, *argv, *force], capture_output=True, text=True, timeout=60)
                    what = " ".join(argv + list(force))
                    self.assertEqual(res.returncode, 6, f"{what}: {res.stderr}")
                    self.assertIn(path + ":", res.stderr, what)
                    self.assertIn(kind, res.stderr, what)
                    self.assertNotIn("--force", res.stderr, what)
                    after = os.lstat(path)
                    self.assertEqual((after.st_mode, after.st_ino, after.st_rdev, after.st_size),
                                     (before.st_mode, before.st_ino, before.st_rdev, before.st_size), what)
            self.assertEqual(glob.glob(path + ".tmp.*"), [])
        self.assertEqual(os.readlink(link), regular)
        with open(regular) as f:
            self.assertEqual(f.read(), "keep")

    def test_a_writer_removes_the_stale_temporaries_of_its_target(self):
        """A killed gen-model's temporary file goes when the same target is written again; a live
        writer's temporary file, and those of other targets, stay."""
        out = os.path.join(WORK, "stale.h5")
        stale = kill_mid_write(out)
        host = socket.gethostname()
        live = f"{out}.tmp.{host}.{os.getpid()}"  # this test process is alive
        other = os.path.join(WORK, f"other.h5.tmp.{host}.{stale[0].rsplit('.', 1)[1]}")
        for path in (live, other):
            with open(path, "w") as f:
                f.write("x")
        subprocess.run([LPURT, "gen-model", "--preset", "tiny", "--out", out], check=True, stdout=subprocess.DEVNULL)
        self.assertFalse(any(os.path.exists(t) for t in stale), "the killed writer's temporary file is still there")
        self.assertTrue(os.path.exists(live), "a live writer's temporary file was removed")
        self.assertTrue(os.path.exists(other), "another target's temporary file was removed")
        # The same for `run --out` (a result file) after a killed gen-model of that name.
        result = os.path.join(WORK, "stale_result.h5")
        dead = f"{result}.tmp.{host}.{stale[0].rsplit('.', 1)[1]}"
        with open(dead, "w") as f:
            f.write("x")
        subprocess.run([LPURT, "run", "--tokens", "2", "--out", result], check=True, stdout=subprocess.DEVNULL)
        self.assertFalse(os.path.exists(dead))
        for path in (live, other):
            os.remove(path)

    def test_gen_model_refuses_a_model_that_does_not_fit_before_writing(self):
        with small_tmpfs(self, "small_fs") as folder:
            out = os.path.join(folder, "small.h5")
            res = subprocess.run([LPURT, "gen-model", "--preset", "small", "--out", out], capture_output=True,
                                 text=True, timeout=60)
            err = one_clean_error(self, res, "gen-model --preset small onto 2 MB")
            available = free_bytes(folder)
            self.assertRegex(err, rf"{re.escape(out)}: preset small needs \d+ bytes .* but {re.escape(folder)} has "
                                  rf"{available} bytes .* free")
            self.assertEqual(os.listdir(folder), [], "something was written although it could not fit")
            subprocess.run([LPURT, "gen-model", "--preset", "small", "--out", out, "--config-only"], check=True,
                           stdout=subprocess.DEVNULL)

    def test_a_disk_that_fills_up_while_writing_fails_cleanly(self):
        """The free-space check passes (the weights fit) but HDF5's metadata does not: the write fails with
        ENOSPC. One error line, exit 6, no crash at exit (was SIGSEGV in H5F__close_cb), no file left."""
        probe = os.path.join(WORK, "probe.h5")
        res = subprocess.run([LPURT, "gen-model", "--preset", "tiny", "--out", probe], capture_output=True, text=True,
                             check=True)
        weights = int(re.search(r"(\d+) parameters", res.stdout).group(1))  # int8 weights: ~1 byte each
        file_size = os.path.getsize(probe)
        with small_tmpfs(self, "full_fs") as folder:
            # Leave room for the data and part of the metadata, in whole pages (tmpfs allocates pages).
            page = os.sysconf("SC_PAGE_SIZE")
            keep = (weights + file_size) // 2 // page * page
            with open(os.path.join(folder, "fill"), "wb") as f:
                f.write(b"\0" * (free_bytes(folder) - keep))
            self.assertEqual(free_bytes(folder), keep)
            out = os.path.join(folder, "tiny.h5")
            res = subprocess.run([LPURT, "gen-model", "--preset", "tiny", "--out", out], capture_output=True,
                                 text=True, timeout=60)
            self.assertNotIn(res.returncode, (-11, 139), f"crashed: {res.stderr}")
            err = res.stderr.strip().splitlines()
            self.assertEqual(res.returncode, 6, res.stderr)
            self.assertIn("No space left on device", err[-1])
            self.assertTrue(err[-1].startswith(f"[rank 0/1] error: {out}: cannot write:"), err[-1])
            self.assertEqual(os.listdir(folder), ["fill"], "the failed write left a file behind")

    def test_gen_model_shows_its_size_and_progress(self):
        out = os.path.join(WORK, "small.h5")
        res = subprocess.run([LPURT, "gen-model", "--preset", "small", "--out", out], capture_output=True, text=True,
                             check=True, timeout=120)
        lines = res.stderr.splitlines()
        self.assertRegex(lines[0], r"^\[lpurt\] gen-model: writing 100.0 MB \(99496704 parameters\) to .*small.h5, "
                                   r".* free there$")
        progress = [l for l in lines[1:] if re.match(r"^\[lpurt\] gen-model: +\d+% \(", l)]
        self.assertEqual(len(progress), len(lines) - 1, res.stderr)
        self.assertTrue(2 <= len(progress) <= 12, res.stderr)
        self.assertIn("100% (100.0 MB of 100.0 MB)", progress[-1])
        os.remove(out)
        help_text = subprocess.run([LPURT, "gen-model", "--help"], capture_output=True, text=True, check=True).stdout
        for preset, size in (("tiny", "1.02M parameters, 1.0 MB"), ("llama2-70b", "69B parameters, 69.0 GB")):
            self.assertRegex(help_text, rf"{preset} +{re.escape(size)}")


def main():
    global LPURT, WORK
    LPURT, WORK = sys.argv[1], sys.argv[2]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    unittest.main(argv=[sys.argv[0], "-v"])


if __name__ == "__main__":
    main()
