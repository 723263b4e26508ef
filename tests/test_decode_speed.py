"""The decode-speed benchmark and its onnxruntime-genai baseline: correctness only, no timing assertions."""

import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import run_module

HAVE_GENAI = importlib.util.find_spec("onnxruntime_genai") is not None
GENAI_MISSING = "onnxruntime-genai is not installed: pip install onnxruntime-genai==0.18.0"


@pytest.fixture(scope="module")
def genai_folder(trained_smoke_model, tmp_path_factory):
    """The smoke model as an onnxruntime-genai folder (export/genai.py)."""
    pytest.importorskip("onnxruntime_genai", reason=GENAI_MISSING)
    from export.genai import export_genai

    return export_genai(trained_smoke_model, tmp_path_factory.mktemp("genai") / "smoke")


def test_genai_folder_decodes_like_the_runtime(genai_folder, smoke_bundle):
    from benchmarks.genai_vla import GenaiVla
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla

    config = json.loads((genai_folder / "genai_config.json").read_text())
    assert config["model"]["decoder"]["session_options"]["intra_op_num_threads"] == 1
    assert config["model"]["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    bundle = Bundle.load(smoke_bundle)
    runtime = OnnxVla(bundle)
    engines = [GenaiVla(genai_folder, bundle), GenaiVla(genai_folder, bundle, reuse_prompt=True)]
    size = bundle.manifest["image"]["height"]
    rng = np.random.default_rng(3)
    instructions = sorted(bundle.manifest["prompt"]["prompts"])[:2]
    firsts = set()
    for k in range(6):  # two instructions in turn: the rewinding engine switches generators
        frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        expected, _ = runtime.decode_actions(frame, instructions[k % 2])
        firsts.add(int(expected[0]))
        for engine in engines:
            tokens, _ = engine.decode_actions(frame, instructions[k % 2])
            assert np.array_equal(tokens, expected), (engine.reuse_prompt, k)
    assert len(firsts) > 1, "the frames should not all decode alike, or the image input would go untested"


def test_decode_speed_benchmark_checks_every_path(trained_smoke_model, smoke_bundle, tmp_path, request):
    out = tmp_path / "decode_speed.json"
    args = ["benchmarks", "decode-speed", "--model", str(trained_smoke_model), "--bundle", str(smoke_bundle),
            "--frames", "3", "--warmup", "1", "--out", str(out)]
    if HAVE_GENAI:
        args += ["--genai", str(request.getfixturevalue("genai_folder"))]
        expected = {"generate", "torch", "genai", "genai-rewind"}
    else:
        args += ["--paths", "generate,torch,onnx,onnx-loop,onnx-vocab"]
        expected = {"generate", "torch"}
    expected |= {f"{kind}:{smoke_bundle.name}" for kind in ("onnx", "onnx-loop", "onnx-vocab")}
    proc = run_module(*args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| path |" in proc.stdout and "command: python -m benchmarks decode-speed" in proc.stdout
    result = json.loads(out.read_text())
    assert set(result["paths"]) == expected
    assert result["frames"] == 3 and result["wrong_paths"] == []
    for name, row in result["paths"].items():
        assert row["agreement"] == 1.0, name
        assert len(row["times_ms"]) == 3 and row["median_ms"] > 0
    assert "vs_generate" in result["paths"]["torch"]


def test_decode_speed_refuses_bad_configurations(tmp_path):
    from benchmarks.decode_speed import DecodeSpeedConfig
    from runtime.errors import UserError

    with pytest.raises(UserError, match="no config.json"):
        DecodeSpeedConfig(model=str(tmp_path)).check()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="--bundle"):
        DecodeSpeedConfig(model=str(tmp_path)).check()
    with pytest.raises(UserError, match="reference"):
        DecodeSpeedConfig(model=str(tmp_path), paths=("generate",)).check()


def test_speedup_pairs_frames():
    from benchmarks.latency_stats import speedup

    base = np.array([10.0, 20.0, 30.0, 40.0])
    result = speedup(base, base / 4, np.random.default_rng(0), reps=200)
    assert result["median_ratio"] == pytest.approx(4.0)
    assert result["paired_median"] == pytest.approx(4.0) and result["paired_ci95"] == pytest.approx([4.0, 4.0])


def test_decode_speed_help_has_an_example():
    proc = run_module("benchmarks", "decode-speed", "--help")
    assert proc.returncode == 0 and "Example:" in proc.stdout and "--frames" in proc.stdout
