#!/usr/bin/python3
"""`lpurt import` and `lpurt gen-model --hf-config` from the command line, on Hugging Face checkpoints
written here with NumPy (safetensors written by hand: 8-byte header length, JSON header, data).

- A sharded bfloat16 Qwen3 checkpoint with tied embeddings and a float16 Llama 3 one (llama3 rope
  scaling) import; every dataset of the result equals NumPy's conversion (float32, rotate-half q/k rows
  to interleaved pairs, per-row int8 with np.rint's round half to even); the model then runs.
- gen-model --hf-config writes the same root attributes as the import of the same config.json.
- Bad checkpoints and refused configurations give one error line, exit code 3, and no output file.

Usage: /usr/bin/python3 tests/io/test_import.py PATH/TO/lpurt WORKDIR
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import unittest

import h5py
import numpy as np

LPURT = WORK = None


def lpurt(*args, check=True):
    res = subprocess.run([LPURT, *args], capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"lpurt {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res


def to_bf16(x):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype name, array of the stored bits/values)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        dtype, array = tensors[name]
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def make_checkpoint(folder, config, dtype, n_shards, seed):
    """Random weights in transformers' names and shapes; returns name -> float32 values as stored."""
    rng = np.random.default_rng(seed)
    D, F, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    H, KV, V = config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"]
    hd = config.get("head_dim", D // H)
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (V, D)
    for l in range(L):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                       p + "self_attn.q_proj.weight": (H * hd, D), p + "self_attn.k_proj.weight": (KV * hd, D),
                       p + "self_attn.v_proj.weight": (KV * hd, D), p + "self_attn.o_proj.weight": (D, H * hd),
                       p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
                       p + "mlp.down_proj.weight": (D, F)})
        if config["model_type"] == "qwen3":
            shapes.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    values, stored = {}, {}
    for name, shape in shapes.items():
        x = (rng.standard_normal(shape) * (0.05 if len(shape) == 2 else 1.0)).astype(np.float32)
        if len(shape) == 1:
            x += 1.0
        if dtype == "BF16":
            bits = to_bf16(x)
            stored[name] = ("BF16", bits)
            values[name] = (bits.astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            h = x.astype(np.float16)
            stored[name] = ("F16", h)
            values[name] = h.astype(np.float32)
        else:
            stored[name] = ("F32", x)
            values[name] = x
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = sorted(stored)
    if n_shards == 0:
        write_safetensors(os.path.join(folder, "model.safetensors"), stored)
        return values
    weight_map = {}
    for s in range(n_shards):
        file = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = names[s * len(names) // n_shards:(s + 1) * len(names) // n_shards]
        write_safetensors(os.path.join(folder, file), {n: stored[n] for n in part})
        weight_map.update({n: file for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    return values


def interleave(rows, hd):
    """SPEC's row order of q/k rows (and biases, gains) from Hugging Face's rotate-half order."""
    out = np.empty_like(rows)
    for r in range(rows.shape[0]):
        head, i = divmod(r, hd)
        out[head * hd + (2 * i if i < hd // 2 else 2 * (i - hd // 2) + 1)] = rows[r]
    return out


def quantize_rows(w):
    amax = np.max(np.abs(w), axis=1)
    scale = np.where(amax == 0, np.float32(1), amax / np.float32(127)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


HF = {"attn_norm": "input_layernorm.weight", "ffn_norm": "post_attention_layernorm.weight",
      "wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
      "wo": "self_attn.o_proj.weight", "w_gate": "mlp.gate_proj.weight", "w_up": "mlp.up_proj.weight",
      "w_down": "mlp.down_proj.weight", "q_norm": "self_attn.q_norm.weight", "k_norm": "self_attn.k_norm.weight"}


class Import(unittest.TestCase):
    def check_file(self, path, config, values):
        hd = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
        expected = {"/embedding": values["model.embed_tokens.weight"], "/final_norm": values["model.norm.weight"]}
        if "lm_head.weight" in values:
            expected["/lm_head"] = values["lm_head.weight"]
        for l in range(config["num_hidden_layers"]):
            for ours, theirs in HF.items():
                name = f"model.layers.{l}.{theirs}"
                if name in values:
                    v = values[name]
                    expected[f"/layers/{l}/{ours}"] = interleave(v, hd) if ours in ("wq", "wk", "q_norm", "k_norm") else v
        with h5py.File(path, "r") as f:
            self.assertEqual(f.attrs["format_version"], 2)
            self.assertEqual(f.attrs["architecture"], config["model_type"])
            self.assertEqual(f.attrs["tie_word_embeddings"], int(config.get("tie_word_embeddings", False)))
            self.assertNotIn("lm_head", f) if config.get("tie_word_embeddings") else self.assertIn("lm_head", f)
            for dataset, v in expected.items():
                if v.ndim == 1:
                    np.testing.assert_array_equal(f[dataset][...], v, err_msg=dataset)
                    continue
                q, scale = quantize_rows(v)
                np.testing.assert_array_equal(f[dataset + "/weight"][...], q, err_msg=dataset)
                np.testing.assert_array_equal(f[dataset + "/scale"][...], scale, err_msg=dataset)
        return len(expected)

    def test_bf16_sharded_qwen3_with_tied_embeddings_imports_exactly_and_runs(self):
        config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 256, "hidden_size": 64,
                  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
                  "rope_theta": 1000000.0, "tie_word_embeddings": True, "hidden_act": "silu",
                  "attention_bias": False, "use_sliding_window": False, "sliding_window": None,
                  "max_window_layers": 28, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
                  "bos_token_id": 151643, "eos_token_id": 151645, "use_cache": True, "rope_scaling": None}
        folder = os.path.join(WORK, "qwen3")
        values = make_checkpoint(folder, config, "BF16", 3, seed=1)
        out = os.path.join(WORK, "qwen3.h5")
        res = lpurt("import", folder, "--out", out, "--force")
        self.assertRegex(res.stdout, r"^imported .*qwen3.h5: qwen3, \d+ parameters")
        self.assertIn("3 file(s) (bf16)", res.stderr)
        self.assertEqual(self.check_file(out, config, values), 2 + 2 * 11)
        run = json.loads(lpurt("run", "--model", out, "--chips", "2", "--prompt-len", "4", "--tokens", "3",
                               "--json").stdout)
        self.assertEqual(run["tokens"], 3)

    def test_f16_llama3_with_rope_scaling_imports_exactly(self):
        config = {"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
                  "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
                  "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                  "tie_word_embeddings": False, "mlp_bias": False, "attention_bias": False, "pretraining_tp": 1}
        folder = os.path.join(WORK, "llama3")
        values = make_checkpoint(folder, config, "F16", 0, seed=2)
        out = os.path.join(WORK, "llama3.h5")
        lpurt("import", folder, "--out", out, "--force")
        self.check_file(out, config, values)
        with h5py.File(out, "r") as f:
            self.assertEqual(f.attrs["rope_scaling_type"], "llama3")
            self.assertEqual(f.attrs["rope_scaling_factor"], 8.0)
            self.assertEqual(f.attrs["rope_original_max_position"], 64)
        # gen-model --hf-config: the same configuration with synthetic weights.
        synthetic = os.path.join(WORK, "llama3-synthetic.h5")
        res = lpurt("gen-model", "--hf-config", os.path.join(folder, "config.json"), "--out", synthetic, "--force")
        self.assertIn("(llama), ", res.stdout)
        with h5py.File(out, "r") as a, h5py.File(synthetic, "r") as b:
            self.assertEqual({k: a.attrs[k] for k in a.attrs}, {k: b.attrs[k] for k in b.attrs})
            self.assertEqual(sorted(a.keys()), sorted(b.keys()))
        config_only = os.path.join(WORK, "llama3-config.h5")
        lpurt("gen-model", "--hf-config", os.path.join(folder, "config.json"), "--out", config_only, "--config-only",
              "--force")
        with h5py.File(config_only, "r") as f:
            self.assertEqual(list(f.keys()), [])
            self.assertEqual(f.attrs["n_kv_heads"], 2)

    def assert_refused(self, args, text, out):
        res = lpurt(*args, check=False)
        lines = res.stderr.strip().splitlines()
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertTrue(lines and lines[-1].startswith("[rank 0/1] error: "), res.stderr)
        self.assertIn(text, lines[-1])
        self.assertFalse(os.path.exists(out), "a refused command left its output")
        self.assertEqual([n for n in os.listdir(os.path.dirname(out)) if ".tmp." in n], [])

    def test_bad_checkpoints_and_configs_are_refused_with_no_output(self):
        config = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
                  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
                  "max_position_embeddings": 64, "rms_norm_eps": 1e-5}
        base = os.path.join(WORK, "bad-base")
        make_checkpoint(base, config, "F32", 0, seed=3)
        out_dir = os.path.join(WORK, "bad-out")
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "m.h5")

        def variant(name):
            folder = os.path.join(WORK, name)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(base, folder)
            return folder

        folder = variant("bad-nan")
        st = os.path.join(folder, "model.safetensors")
        with open(st, "r+b") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            begin = header["model.layers.0.mlp.up_proj.weight"]["data_offsets"][0]
            f.seek(8 + n + begin + 4 * (2 * 32 + 7))
            f.write(struct.pack("<f", float("nan")))
        self.assert_refused(["import", folder, "--out", out],
                            "model.safetensors: tensor model.layers.0.mlp.up_proj.weight[2, 7] is nan", out)

        folder = variant("bad-truncated")
        st = os.path.join(folder, "model.safetensors")
        os.truncate(st, os.path.getsize(st) - 1)
        self.assert_refused(["import", folder, "--out", out], "model.safetensors: truncated", out)

        for field, value, text in (("sliding_window", 16, '"sliding_window" is not a field lpurt knows'),
                                   ("rope_scaling", {"type": "dynamic", "factor": 2.0}, '"rope_scaling.type" is "dynamic"'),
                                   ("hidden_act", "gelu_pytorch_tanh", '"hidden_act" is "gelu_pytorch_tanh"'),
                                   ("model_type", "phi3", '"model_type" is "phi3"')):
            folder = variant("bad-config")
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump({**config, field: value}, f)
            self.assert_refused(["import", folder, "--out", out], text, out)
            self.assert_refused(["gen-model", "--hf-config", os.path.join(folder, "config.json"), "--out", out], text,
                                out)
        self.assert_refused(["import", os.path.join(WORK, "no-such-folder"), "--out", out], "not a directory", out)

    def test_gen_model_needs_one_shape(self):
        res = lpurt("gen-model", "--out", os.path.join(WORK, "x.h5"), check=False)
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn("--preset NAME or --hf-config config.json", res.stderr)
        res = lpurt("gen-model", "--preset", "tiny", "--hf-config", "config.json", "--out", os.path.join(WORK, "x.h5"),
                    check=False)
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn("excludes", res.stderr)


def main():
    global LPURT, WORK
    LPURT, WORK = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    unittest.main(argv=[sys.argv[0], "-v"])


if __name__ == "__main__":
    main()
