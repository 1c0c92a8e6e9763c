#!/usr/bin/python3
"""Compare an lpurt result file with an oracle file (both: /tokens, /prompt, /logits).

Usage:
  compare.py RESULT.h5 ORACLE.h5

Checks, in order:
  * /prompt equal (shape and values);
  * /tokens and /logits shapes equal, /logits is [K, V] with K = len(/tokens);
  * for every step k: max_j |a[k,j] - b[k,j]| <= 1e-3 * max_j |b[k,j]|
    (a = RESULT, b = ORACLE; non-finite values always fail);
  * for every step k: tokens equal.
Prints one line per failure and a final summary line.
Exit status: 0 all checks pass, 1 mismatch, 2 unreadable input.

Why a tolerance and not bit equality: the C++ program and this NumPy oracle
both compute in float32 but may add in a different order (BLAS dot products,
pairwise sums in numpy, fused multiply-add). That changes results by a few ulp,
which is harmless by itself, but then quantize() can round one activation to
the neighbouring int8 value, a change of one quantization step (max|v|/127) in
one input of the next matmul. That moves logits by a small fraction of their
range, far below 1e-3 of the largest logit on typical models, while any real
bug (wrong layout, wrong head mapping, wrong RoPE pair, missing scale) moves
them by O(1) of it.
"""

import sys

import h5py
import numpy as np

REL_TOL = 1e-3


def load(path):
    """Read (prompt, tokens, logits) or raise with a message naming the file."""
    try:
        with h5py.File(path, "r") as f:
            out = []
            for name in ("prompt", "tokens", "logits"):
                if name not in f:
                    raise KeyError("dataset /%s missing" % name)
                out.append(np.asarray(f[name][...]))
            return tuple(out)
    except Exception as e:  # noqa: BLE001 -- any read problem is "unreadable input"
        raise IOError("%s: cannot read result (%s)" % (path, e))


def compare(a_path, b_path):
    """Return a list of failure lines (empty means pass) and the number of steps checked."""
    a_prompt, a_tokens, a_logits = load(a_path)
    b_prompt, b_tokens, b_logits = load(b_path)
    failures = []

    if a_prompt.shape != b_prompt.shape or not np.array_equal(a_prompt, b_prompt):
        failures.append("prompt differs: result %s, oracle %s" % (a_prompt.tolist(), b_prompt.tolist()))
    # Shape problems make a per-step comparison meaningless: report and stop.
    shape_failures = []
    for name, arr in (("result", a_logits), ("oracle", b_logits)):
        tokens = a_tokens if name == "result" else b_tokens
        if arr.ndim != 2 or tokens.ndim != 1 or arr.shape[0] != tokens.shape[0]:
            shape_failures.append("%s: /logits shape %s does not match /tokens shape %s"
                                  % (name, arr.shape, tokens.shape))
    if a_tokens.shape != b_tokens.shape:
        shape_failures.append("tokens shape differs: result %s, oracle %s" % (a_tokens.shape, b_tokens.shape))
    if a_logits.shape != b_logits.shape:
        shape_failures.append("logits shape differs: result %s, oracle %s" % (a_logits.shape, b_logits.shape))
    if shape_failures:
        return failures + shape_failures, 0

    a = a_logits.astype(np.float64)
    b = b_logits.astype(np.float64)
    n_steps = b.shape[0]
    for k in range(n_steps):
        if not np.all(np.isfinite(a[k])) or not np.all(np.isfinite(b[k])):
            bad = int(np.flatnonzero(~(np.isfinite(a[k]) & np.isfinite(b[k])))[0])
            failures.append("step %d: non-finite logit at index %d: result %r, oracle %r"
                            % (k, bad, a_logits[k, bad], b_logits[k, bad]))
            continue
        diff = np.abs(a[k] - b[k])
        worst = int(np.argmax(diff))
        limit = REL_TOL * float(np.max(np.abs(b[k])))
        if diff[worst] > limit:
            failures.append("step %d: logit[%d] result %.9g oracle %.9g |diff| %.3g > %.3g (1e-3 * max|oracle|)"
                            % (k, worst, a_logits[k, worst], b_logits[k, worst], diff[worst], limit))
        if a_tokens[k] != b_tokens[k]:
            # Say how close the two candidates were in the oracle, to tell a
            # near-tie apart from a real divergence.
            ta, tb = int(a_tokens[k]), int(b_tokens[k])
            gap = ""
            if 0 <= ta < b.shape[1] and 0 <= tb < b.shape[1]:
                gap = " (oracle logits: [%d] %.9g, [%d] %.9g)" % (ta, b_logits[k, ta], tb, b_logits[k, tb])
            failures.append("step %d: token result %d oracle %d%s" % (k, ta, tb, gap))
    return failures, n_steps


def main(argv):
    if len(argv) != 2:
        print("usage: compare.py RESULT.h5 ORACLE.h5", file=sys.stderr)
        return 2
    try:
        failures, n_steps = compare(argv[0], argv[1])
    except IOError as e:
        print("compare: %s" % e, file=sys.stderr)
        return 2
    for line in failures:
        print(line)
    if failures:
        print("FAIL: %d mismatch(es) over %d step(s): %s vs %s" % (len(failures), n_steps, argv[0], argv[1]))
        return 1
    print("PASS: %d step(s), logits within %g of max|oracle|, tokens equal: %s vs %s"
          % (n_steps, REL_TOL, argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
