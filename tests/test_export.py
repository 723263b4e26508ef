"""Export: a checkpoint becomes a bundle whose manifest alone is enough to run it, checked against PyTorch."""

import json
import shutil

import numpy as np
import pytest

from conftest import needs_sim, run_module

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
pytestmark = needs_sim


@pytest.fixture(scope="module")
def checkpoint(trained_smoke_model):
    return trained_smoke_model


@pytest.fixture(scope="module")
def bundle(smoke_bundle):
    return smoke_bundle


def test_bundle_has_the_contract(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    parity = manifest["metrics"]["parity_fp32"]
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["identical_tokens"] == 1.0 and parity["frames"] == 30
    names = [i["name"] for i in manifest["graphs"]["decoder_action"]["inputs"]]
    assert names[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert names[3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    outputs = manifest["graphs"]["decoder_action"]["outputs"]
    assert outputs[0]["name"] == "logits" and outputs[0]["shape"][-1] == 256  # action-only output layer
    assert manifest["graphs"]["decoder_text"]["outputs"][0]["shape"][-1] == manifest["decoder"]["vocab_size"]
    assert not list(bundle.parent.glob(".*tmp*"))


# A reader that knows only manifest.json, numpy and onnxruntime (no vla-edge code): preprocess, prompt,
# prefill, masked greedy decode with the KV cache, de-tokenize.
STANDALONE = r'''
import json, sys
import numpy as np, onnxruntime as ort
root = sys.argv[1]
m = json.load(open(f"{root}/manifest.json"))
frame = np.load(sys.argv[2]); instruction = sys.argv[3]
path = lambda key: f"{root}/" + m["files"][key]["path"]
vision = ort.InferenceSession(path(m["graphs"]["vision"]["file"]), providers=["CPUExecutionProvider"])
decoder = ort.InferenceSession(path(m["graphs"]["decoder_action"]["file"]), providers=["CPUExecutionProvider"])
table = np.load(path(m["embedding"]["file"]))
img = m["image"]
assert frame.shape == (img["height"], img["width"], 3) and img["channel_order"] == "RGB"
x = frame.transpose(2, 0, 1)[None].astype(np.float32) * img["scale"]
x = (x - np.array(img["mean"], np.float32).reshape(1, 3, 1, 1)) / np.array(img["std"], np.float32).reshape(1, 3, 1, 1)
image = vision.run(None, {"pixel_values": x})[0]
prompt = m["prompt"]["prompts"][instruction]
emb = np.concatenate([table[prompt][None], image], axis=1)
d = m["decoder"]; L = emb.shape[1]
feeds = {"inputs_embeds": emb, "attention_mask": np.ones((1, L), np.int64), "position_ids": np.arange(L)[None]}
for name in d["past_names"]:
    feeds[name] = np.zeros((1, d["kv_heads"], 0, d["head_size"]), np.float32)
a = m["action"]; ids = a["token_ids"]; tokens = []
for step in range(len(a["names"])):
    out = decoder.run(None, feeds)
    k = int(np.argmax(out[0][0, -1])); tokens.append(ids[k])
    L += 1
    feeds = {"inputs_embeds": table[[ids[k]]][None], "attention_mask": np.ones((1, L), np.int64),
             "position_ids": np.array([[L - 1]])}
    feeds.update(dict(zip(d["past_names"], out[1:])))
bins = [ids.index(t) for t in tokens]
values = [lo + (-1 + (b + 0.5) * 2 / a["n_bins"] + 1) / 2 * (hi - lo) for b, lo, hi in zip(bins, a["low"], a["high"])]
print(json.dumps({"tokens": tokens, "values": values}))
'''


def test_manifest_alone_reproduces_the_runtime(bundle, tmp_path):
    import subprocess
    import sys

    from runtime.onnx_engine import OnnxPolicy
    from runtime.policy import Observation

    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    policy = OnnxPolicy.load(bundle)
    rng = np.random.default_rng(3)
    for instruction in ("open the drawer", "reach to the goal"):
        frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        np.save(tmp_path / "frame.npy", frame)
        proc = subprocess.run([sys.executable, "-I", str(script), str(bundle), str(tmp_path / "frame.npy"), instruction],
                              capture_output=True, text=True, cwd=tmp_path)  # -I: no project on the path
        assert proc.returncode == 0, proc.stderr
        theirs = json.loads(proc.stdout)
        ours = policy.act(Observation(image=frame, instruction=instruction))
        assert theirs["tokens"] == ours.tokens.tolist()
        np.testing.assert_allclose(theirs["values"], ours.values, atol=1e-5)


def test_verify_passes_then_catches_a_modified_graph(bundle, tmp_path):
    proc = run_module("export", "verify", str(bundle), "--parity-frames", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "vision.onnx").read_bytes())
    data[-10] ^= 0x01
    (copy / "vision.onnx").write_bytes(bytes(data))
    proc = run_module("export", "verify", str(copy))
    assert proc.returncode == 2 and "sha256" in proc.stderr and proc.stderr.count("\n") == 1


def test_missing_manifest_field_is_refused(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["action"]["token_ids"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_module("export", "verify", str(copy))
    assert proc.returncode == 2 and "token_ids" in proc.stderr and proc.stderr.count("\n") == 1


def test_existing_output_and_unknown_architecture_are_refused(bundle, checkpoint, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()}
    proc = run_module("export", str(checkpoint), "--out", str(bundle))
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()} == before
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    proc = run_module("export", str(other), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "not a vla-edge VLA checkpoint" in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp*"))


def test_bundle_from_a_newer_manifest_version_is_refused(bundle, tmp_path):
    from runtime.bundle import Bundle, BundleError

    copy = tmp_path / "newer"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="version"):
        Bundle.load(copy)
    proc = run_module("runtime", "run", "--bundle", str(copy), "--sim", "reach", "--seeds", "1")
    assert proc.returncode == 2 and "version" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_frame_of_another_size_is_resized_as_in_training(bundle):
    import cv2

    from runtime.onnx_engine import OnnxPolicy
    from runtime.policy import Observation

    policy = OnnxPolicy.load(bundle)
    big = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # not even square
    small = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA)
    a = policy.act(Observation(image=big, instruction="open the drawer"))
    b = policy.act(Observation(image=small, instruction="open the drawer"))
    assert np.array_equal(a.tokens, b.tokens)


def test_unknown_instruction_and_bad_frame_are_refused(bundle):
    from runtime.errors import UserError
    from runtime.onnx_engine import OnnxPolicy
    from runtime.policy import Observation

    policy = OnnxPolicy.load(bundle)
    with pytest.raises(UserError, match="unknown instruction"):
        policy.act(Observation(image=np.zeros((32, 32, 3), np.uint8), instruction="make coffee"))
    with pytest.raises(ValueError, match="uint8"):
        Observation(image=np.zeros((32, 32, 3), np.float32), instruction="open the drawer")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_quantized_bundles_are_compared_with_fp32(checkpoint, tmp_path, precision):
    out = tmp_path / precision
    proc = run_module("export", str(checkpoint), "--out", str(out), "--precision", precision, "--parity-frames", "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    versus = manifest["metrics"][f"{precision}_vs_fp32"]
    assert manifest["precision"] == precision and versus["frames"] == 20
    assert 0.0 <= versus["token_agreement"] <= 1.0 and versus["max_abs_logit_diff"] > 0  # really lower precision
    proc = run_module("export", "verify", str(out), "--parity-frames", "10", "--min-agreement", "0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_module("export", "verify", str(out), "--parity-frames", "10", "--min-agreement", "1.01")  # unreachable
    assert proc.returncode == 2 and "--min-agreement" in proc.stderr and "pass --dataset" in proc.stderr, proc.stderr


def test_closed_loop_success_of_the_precision_goes_into_the_manifest(checkpoint, tiny_dataset, tmp_path):
    """--closed-loop-seeds runs the finished int8 bundle in the simulator (the dataset's tasks, unseen seeds) and
    records what it scored: the same per-task figures as `distill evaluate` gives for that bundle afterwards."""
    from distill.dataset import Dataset

    out = tmp_path / "int8"
    proc = run_module("export", str(checkpoint), "--out", str(out), "--precision", "int8", "--parity-frames", "10",
                      "--dataset", str(tiny_dataset), "--closed-loop-seeds", "2", "--eval-workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "closed loop (2 unseen seeds per task)" in proc.stdout
    loop = json.loads((out / "manifest.json").read_text())["metrics"]["closed_loop"]
    tasks = sorted(Dataset.open(tiny_dataset).tasks)
    assert sorted(t for t in loop["tasks"] if t != "overall") == tasks
    assert loop["tasks"]["overall"]["episodes"] == 2 * len(tasks) and loop["config"]["seed_start"] >= 100_000
    proc = run_module("export", "verify", str(out), "--parity-frames", "5", "--min-agreement", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]  # the manifest rewrite left every file's sha256 valid
    report = tmp_path / "eval.json"
    proc = run_module("distill", "evaluate", "--policy", str(out), "--tasks", ",".join(tasks), "--seeds", "2",
                      "--out", str(report), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads(report.read_text())["tasks"]
    assert {t: again[t]["successes"] for t in tasks} == {t: loop["tasks"][t]["successes"] for t in tasks}
    assert {t: again[t]["mean_length"] for t in tasks} == {t: loop["tasks"][t]["mean_length"] for t in tasks}
    proc = run_module("export", str(checkpoint), "--out", str(tmp_path / "bad"), "--closed-loop-seeds", "-1")
    assert proc.returncode == 2 and "--closed-loop-seeds" in proc.stderr and not (tmp_path / "bad").exists()


def test_static_int8_is_calibrated_on_training_frames(checkpoint, tiny_dataset, tmp_path):
    import onnx

    out = tmp_path / "static"
    proc = run_module("export", str(checkpoint), "--out", str(out), "--precision", "int8-static", "--parity-frames", "20")
    assert proc.returncode == 2 and "--dataset" in proc.stderr and not out.exists()
    proc = run_module("export", str(checkpoint), "--out", str(out), "--precision", "int8-static", "--parity-frames",
                      "20", "--dataset", str(tiny_dataset))
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["calibration_frames"] > 0
    assert manifest["metrics"]["int8-static_vs_fp32"]["token_agreement"] >= 0.5
    decoder = onnx.load(str(out / manifest["files"][manifest["graphs"]["decoder_action"]["file"]]["path"]))
    nodes = decoder.graph.node
    weights = {i.name for i in decoder.graph.initializer}
    dq_of_weight = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    dq_out = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    quantized = [n for n in nodes if n.op_type == "MatMul" and any(i in dq_out for i in n.input)]
    assert quantized and all(any(i in dq_of_weight for i in n.input) for n in quantized)
    # Only the linear layers are quantized: attention's activation-by-activation MatMuls stay in float.
    assert any(n.op_type == "MatMul" and not any(i in dq_out for i in n.input) for n in nodes)


def test_runtime_runs_the_bundle_closed_loop_in_the_simulator(bundle, tmp_path):
    log = tmp_path / "episode.jsonl"
    out = tmp_path / "not" / "yet" / "there.json"  # as `--out runs/main_job.json` on a fresh clone
    proc = run_module("runtime", "run", "--bundle", str(bundle), "--sim", "reach", "--seeds", "1", "--max-steps", "6",
                      "--rate", "50", "--log", str(log), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["episodes"][0]["task"] == "reach-v3"
    assert "reach-v3" in proc.stdout and "p99 ms" in proc.stdout and "act" in proc.stdout  # the one-call graph
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert 1 <= len(records) <= 6 and all(r["sent_action"] is None or len(r["sent_action"]) == 5 for r in records)
    proc = run_module("runtime", "run", "--bundle", str(bundle), "--camera", "0", "--instruction", "make coffee",
                      "--port", str(tmp_path / "no-such-port"))
    assert proc.returncode == 2 and "unknown instruction" in proc.stderr  # refused before any hardware opens


def test_act_graph_decodes_like_the_token_loop_and_fails_safe(bundle):
    from runtime.bundle import Bundle
    from runtime.errors import UserError
    from runtime.onnx_engine import NonFiniteLogits, OnnxVla

    b = Bundle.load(bundle)
    act, loop, bound = OnnxVla(b), OnnxVla(b, decode="loop"), OnnxVla(b, decode="loop", io_binding=True)
    vocab = OnnxVla(b, head="vocabulary")  # the full-vocabulary decoder, masked: the head's saving is measured on it
    assert act.decode_mode == "act" and loop.decode_mode == "loop" and act.providers == ["CPUExecutionProvider"]
    assert vocab.decode_mode == "loop" and vocab.decoder.get_outputs()[0].shape[-1] == b.manifest["decoder"]["vocab_size"]
    with pytest.raises(UserError, match="decode='loop'"):
        OnnxVla(b, decode="act", head="vocabulary")
    rng = np.random.default_rng(11)
    for k in range(12):
        frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        instruction = list(act.prompts)[k % len(act.prompts)]
        tokens, logits = act.decode_actions(frame, instruction)
        ref_tokens, ref_logits = loop.decode_actions(frame, instruction)
        assert np.array_equal(tokens, ref_tokens) and set(tokens.tolist()) <= set(act.action_ids.tolist())
        np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
        for other in (bound, vocab):
            other_tokens, other_logits = other.decode_actions(frame, instruction)
            assert np.array_equal(other_tokens, ref_tokens)
            np.testing.assert_allclose(other_logits, ref_logits, atol=1e-5)
    nan_pixels = np.full((1, 3, 32, 32), np.nan, np.float32)
    for engine in (act, loop, vocab):
        with pytest.raises(NonFiniteLogits):
            engine._decode(nan_pixels, engine.prompt_ids("open the drawer"))


def test_cached_prompt_kv_gives_the_same_tokens_as_a_full_prefill(bundle):
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla

    engine = OnnxVla(Bundle.load(bundle))
    rng = np.random.default_rng(5)
    for instruction in ("open the drawer", "push the puck to the goal"):
        prompt = engine.prompt_ids(instruction)
        for _ in range(3):
            pixels = engine.preprocess(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            cached, cached_logits, _ = engine._decode(pixels, prompt, use_prompt_cache=True)  # act graph
            looped, looped_logits, _ = engine._decode_loop(pixels, prompt, use_prompt_cache=True)
            full, full_logits, _ = engine._decode(pixels, prompt, use_prompt_cache=False)  # recompute all
            assert np.array_equal(looped, full)
            np.testing.assert_allclose(looped_logits, full_logits, atol=1e-5)
            assert np.array_equal(cached, full)
            np.testing.assert_allclose(cached_logits, full_logits, atol=1e-5)
    assert len(engine._prompt_kv) == 2  # one cache per instruction
