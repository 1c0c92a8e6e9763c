#!/usr/bin/env python3
"""A real SentencePiece tokenizer end to end. spm_train (Debian's sentencepiece) trains tokenizers on a
corpus this test writes; gen-model embeds one in a tiny model; `run --prompt-text` on 1 chip and on
several chips over 2 MPI ranks must encode the prompt exactly as spm_encode does (after BOS), write
/text equal to spm_decode of /tokens, print it, and give bit-identical outputs on every layout. Then the
error cases: no tokenizer, a vocabulary larger than the model's, corrupt tokenizer bytes (a file, a
dataset, a flipped bit) all end with one clear error, never a crash.
Usage: test_tokenizer.py LPURT WORKDIR SPM_TRAIN SPM_ENCODE SPM_DECODE MPIEXEC [MPIEXEC_FLAGS...]"""
import json
import os
import random
import shutil
import subprocess
import sys

import h5py
import numpy as np

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
    return condition


def main():
    lpurt, work, spm_train, spm_encode, spm_decode, mpiexec, flags = (*sys.argv[1:7], sys.argv[7:])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)

    def run(*args, ranks=None):
        command = [lpurt, *args] if ranks is None else [mpiexec, "-n", str(ranks), *flags, lpurt, *args]
        return subprocess.run(command, capture_output=True, text=True)

    def expect_error(result, code, needles, what):
        ok = result.returncode == code and all(n in result.stderr for n in needles)
        ok = ok and "Traceback" not in result.stderr and "terminate called" not in result.stderr
        check(ok, f"{what}: expected exit {code} naming {needles}, got {result.returncode}: {result.stderr.strip()}")

    # Made-up words, so that the test owns its corpus; enough of them for a 1,024-piece BPE vocabulary.
    rng = random.Random(7)
    syllables = ["ka", "to", "ri", "mu", "se", "lo", "pa", "ne", "vi", "da", "gu", "ho", "zi", "be", "fa", "ju",
                 "qo", "wy", "xe", "ch", "sh", "th", "an", "en", "on"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    with open("corpus.txt", "w") as f:
        for _ in range(4000):
            f.write(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "\n")
    for name, vocab, kind in [("v1024", 1024, "bpe"), ("v300", 300, "unigram"), ("v1100", 1100, "bpe")]:
        subprocess.run([spm_train, "--input=corpus.txt", f"--model_prefix={name}", f"--vocab_size={vocab}",
                        f"--model_type={kind}", "--minloglevel=2"], check=True, capture_output=True)

    def spm_ids(model, text):
        out = subprocess.run([spm_encode, f"--model={model}", "--output_format=id"], input=text + "\n",
                             capture_output=True, text=True, check=True).stdout
        return [1] + [int(x) for x in out.split()]  # spm_train's BOS is 1, and lpurt puts it first

    def spm_text(model, ids, vocab):
        known = [int(i) for i in ids if i < vocab]  # ids past the tokenizer's vocabulary decode to nothing
        return subprocess.run([spm_decode, f"--model={model}", "--input_format=id"],
                              input=" ".join(map(str, known)) + "\n", capture_output=True, text=True,
                              check=True).stdout.rstrip("\n")

    subprocess.run([lpurt, "gen-model", "--preset", "tiny", "--seed", "3", "--out", "plain.h5"], check=True,
                   capture_output=True)
    made = run("gen-model", "--preset", "tiny", "--seed", "3", "--out", "tok.h5", "--tokenizer", "v1024.model")
    check(made.returncode == 0, f"gen-model --tokenizer: {made.stderr.strip()}")
    checked = run("check-model", "tok.h5")
    check("SentencePiece tokenizer of 1024 pieces" in checked.stdout, f"check-model: {checked.stdout.strip()}")
    with h5py.File("tok.h5", "r") as f:
        stored = f["tokenizer/sentencepiece"]
        check(stored.dtype == np.uint8 and stored[:].tobytes() == open("v1024.model", "rb").read(),
              "/tokenizer/sentencepiece is not the tokenizer.model's bytes as uint8")

    prompt = "kato rimuse dafa vilo guho zibe"
    expected_prompt = spm_ids("v1024.model", prompt)
    reference = None
    for ranks, layout in [(None, ["--chips", "1"]), (2, ["--chips", "4", "--tp", "2", "--pp", "2"]),
                          (2, ["--chips", "3", "--tp", "1", "--pp", "3"])]:
        name = f"r{ranks or 1}_{'_'.join(layout[1::2])}"
        r = run("run", "--model", "tok.h5", *layout, "--prompt-text", prompt, "--tokens", "12", "--out", name + ".h5",
                ranks=ranks)
        if not check(r.returncode == 0, f"{name}: {r.stderr.strip()}"):
            continue
        with h5py.File(name + ".h5", "r") as f:
            got = {"prompt": f["prompt"][:].tolist(), "tokens": f["tokens"][:], "logits": f["logits"][:].tobytes(),
                   "text": f["text"][()].decode("utf-8")}
            check(f["text"].shape == () and h5py.check_string_dtype(f["text"].dtype).encoding == "utf-8",
                  f"{name}: /text is not a scalar UTF-8 string")
        check(got["prompt"] == expected_prompt, f"{name}: prompt {got['prompt']}, spm_encode gives {expected_prompt}")
        check(got["text"] == spm_text("v1024.model", got["tokens"], 1024),
              f"{name}: /text {got['text']!r} is not spm_decode of /tokens {got['tokens'].tolist()}")
        check(got["text"].strip() != "", f"{name}: the generated text is empty")
        check(f"text      {got['text']}\n" in r.stdout, f"{name}: the text is not in the output:\n{r.stdout}")
        if reference is None:
            reference = got
        else:
            for key in ["prompt", "logits", "text"]:
                check(got[key] == reference[key], f"{name}: {key} differs from the 1-chip run")
            check(np.array_equal(got["tokens"], reference["tokens"]), f"{name}: tokens differ from the 1-chip run")

    # --json carries the text; --tokenizer overrides the embedded one (ids past its 300 pieces decode to nothing).
    r = run("run", "--model", "tok.h5", "--prompt-text", prompt, "--tokens", "12", "--json")
    if check(r.returncode == 0, f"--json: {r.stderr.strip()}") and reference:
        check(json.loads(r.stdout).get("text") == reference["text"], f"--json text: {r.stdout.strip()}")
    r = run("run", "--model", "tok.h5", "--tokenizer", "v300.model", "--prompt-text", prompt, "--tokens", "12",
            "--out", "v300.h5")
    if check(r.returncode == 0, f"--tokenizer v300.model: {r.stderr.strip()}"):
        with h5py.File("v300.h5", "r") as f:
            check(f["prompt"][:].tolist() == spm_ids("v300.model", prompt), "--tokenizer did not encode the prompt")
            tokens, text = f["tokens"][:], f["text"][()].decode("utf-8")
            check(text == spm_text("v300.model", tokens, 300), f"v300: /text {text!r} is not spm_decode of {tokens}")

    # A batch: every sequence gets the prompt, and its text, as the single run.
    r = run("run", "--model", "tok.h5", "--chips", "2", "--batch", "3", "--prompt-text", prompt, "--tokens", "12",
            "--out", "batch.h5", "--json", ranks=2)
    if check(r.returncode == 0, f"batch: {r.stderr.strip()}") and reference:
        with h5py.File("batch.h5", "r") as f:
            texts = [t.decode("utf-8") for t in f["text"][:]]
            check(f["prompt"][:].tolist() == [reference["prompt"]] * 3, "batch: not every sequence got the prompt")
        check(texts == [reference["text"]] * 3, f"batch: /text {texts}")
        check(json.loads(r.stdout).get("text") == [reference["text"]] * 3, "batch: --json text is not a list of 3")

    # Token ids with a tokenizer: decoded too. Without one: exactly as before (no /text, no "text").
    r = run("run", "--model", "tok.h5", "--prompt", "5,6,7", "--tokens", "4", "--out", "ids.h5")
    if check(r.returncode == 0, f"--prompt with a tokenizer: {r.stderr.strip()}"):
        with h5py.File("ids.h5", "r") as f:
            check(f["text"][()].decode("utf-8") == spm_text("v1024.model", f["tokens"][:], 1024), "ids: /text")
    r = run("run", "--model", "plain.h5", "--prompt", "5,6,7", "--tokens", "4", "--out", "plain_r.h5", "--json")
    if check(r.returncode == 0, f"no tokenizer: {r.stderr.strip()}"):
        check("text" not in json.loads(r.stdout), "no tokenizer: --json has a text")
        with h5py.File("plain_r.h5", "r") as f:
            check("text" not in f, "no tokenizer: the result has /text")
    # Timing-only: the prompt is encoded for its length; no tokens, so no text.
    subprocess.run([lpurt, "gen-model", "--preset", "tiny", "--config-only", "--out", "config.h5"], check=True,
                   capture_output=True)
    r = run("run", "--model", "config.h5", "--timing-only", "--tokenizer", "v1024.model", "--prompt-text", prompt,
            "--json")
    if check(r.returncode == 0, f"timing-only: {r.stderr.strip()}"):
        summary = json.loads(r.stdout)
        check(summary["prompt_tokens"] == len(expected_prompt) and "text" not in summary, f"timing-only: {summary}")

    # Errors: each one line naming what is wrong, the same on 2 ranks.
    for ranks in [None, 2]:
        expect_error(run("run", "--model", "plain.h5", "--prompt-text", prompt, ranks=ranks), 2,
                     ["--prompt-text needs a tokenizer", "plain.h5 has none", "--tokenizer"], f"no tokenizer ({ranks})")
    expect_error(run("run", "--prompt-text", prompt), 2, ["the built-in default model has none"], "default model")
    expect_error(run("run", "--model", "tok.h5", "--tokenizer", "v1100.model", "--prompt-text", prompt), 3,
                 ["v1100.model", "1100 pieces", "tok.h5 has vocab_size 1024"], "too large a vocabulary")
    expect_error(run("gen-model", "--preset", "tiny", "--out", "big.h5", "--tokenizer", "v1100.model"), 3,
                 ["1100 pieces", "vocab_size 1024"], "gen-model, too large a vocabulary")
    check(not os.path.exists("big.h5"), "gen-model left a file after refusing the tokenizer")
    expect_error(run("run", "--model", "tok.h5", "--prompt-text", prompt, "--prompt", "1,2"), 2, ["excludes"],
                 "--prompt-text with --prompt")
    expect_error(run("run", "--model", "tok.h5", "--prompt-text", prompt, "--prompt-len", "4"), 2, ["excludes"],
                 "--prompt-text with --prompt-len")
    with open("junk.model", "wb") as f:
        f.write(random.Random(1).randbytes(5000))
    with open("v1024.model", "rb") as f:
        good = f.read()
    with open("cut.model", "wb") as f:
        f.write(good[: len(good) // 3])
    for bad in ["junk.model", "cut.model", "plain.h5"]:
        expect_error(run("run", "--model", "tok.h5", "--tokenizer", bad, "--prompt-text", prompt, ranks=2), 3,
                     [f"{bad}: not a SentencePiece model"], f"--tokenizer {bad}")
    # Embedded garbage: refused by check-model (the child that validates a model before a run opens it).
    shutil.copy("plain.h5", "garbage.h5")
    with h5py.File("garbage.h5", "a") as f:
        f.create_dataset("tokenizer/sentencepiece", data=np.frombuffer(good[::-1], dtype=np.uint8))
    expect_error(run("run", "--model", "garbage.h5", "--prompt-text", prompt), 3,
                 ["garbage.h5:/tokenizer/sentencepiece: not a SentencePiece model"], "embedded garbage")
    expect_error(run("check-model", "garbage.h5"), 3, ["not a SentencePiece model"], "check-model, embedded garbage")
    # A flipped bit in the stored bytes fails the dataset's checksum.
    with open("tok.h5", "rb") as f:
        data = bytearray(f.read())
    at = data.find(good[len(good) // 2: len(good) // 2 + 64])
    if check(at >= 0, "the tokenizer's bytes are not stored contiguously in tok.h5"):
        data[at + 7] ^= 0x04
        with open("flipped.h5", "wb") as f:
            f.write(data)
        expect_error(run("run", "--model", "flipped.h5", "--prompt-text", prompt), 3,
                     ["flipped.h5: dataset /tokenizer/sentencepiece: cannot read it: the file is corrupt"], "bit flip")

    # lpurt import embeds a checkpoint's tokenizer.model, checked before anything is written.
    here = os.path.dirname(os.path.abspath(__file__))
    maker = os.path.join(here, "..", "oracle", "make_hf_checkpoint.py")
    subprocess.run([sys.executable, maker, "hf", "--family", "qwen3", "--vocab", "1024", "--seed", "5"], check=True,
                   capture_output=True)
    shutil.copy("v1024.model", "hf/tokenizer.model")
    r = run("import", "hf", "--out", "hf.h5")
    if check(r.returncode == 0, f"import with tokenizer.model: {r.stderr.strip()}"):
        with h5py.File("hf.h5", "r") as f:
            check(f["tokenizer/sentencepiece"][:].tobytes() == open("v1024.model", "rb").read(),
                  "import: /tokenizer/sentencepiece is not the checkpoint's tokenizer.model")
        r = run("run", "--model", "hf.h5", "--prompt-text", prompt, "--tokens", "4", "--out", "hf_run.h5")
        if check(r.returncode == 0, f"run of the imported checkpoint: {r.stderr.strip()}"):
            with h5py.File("hf_run.h5", "r") as f:
                check(f["prompt"][:].tolist() == expected_prompt, "imported tokenizer: the prompt differs from spm_encode")
    shutil.copy("v1100.model", "hf/tokenizer.model")
    expect_error(run("import", "hf", "--out", "hf_big.h5"), 3, ["1100", "1024"], "import, tokenizer too large")
    check(not os.path.exists("hf_big.h5"), "import with a tokenizer too large left an output file")

    for f in failures:
        print("FAIL", f)
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
