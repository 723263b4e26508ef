"""TensorRT: the graph check, engine building into the bundle, the manifest's tensorrt section, the engine.

Where TensorRT is absent (this project's machines) the build and the runtime engine run against
tests/fake_tensorrt.py (host memory, onnxruntime underneath), which checks the plumbing: profiles, KV
buffer swapping, manifest, atomic rewrite, refusals. The tests at the end build real engines and compare
them with ONNX Runtime; they are skipped, visibly, without TensorRT and a GPU.
"""

import hashlib
import importlib.util
import json
import shutil

import numpy as np
import pytest

from conftest import needs_sim, run_module
from fake_tensorrt import FakeCuda, fake_tensorrt

onnx = pytest.importorskip("onnx")
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed (NVIDIA GPU machines only)")


def _graph(path, nodes, inputs, outputs, initializers=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the static check (no bundle needed) ---------------------------------------------------------
def test_check_names_an_unsupported_op(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4])
    w = helper.make_tensor("w", TensorProto.UINT8, [4, 3], list(range(12)))
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3])
    path = _graph(tmp_path / "int.onnx", [helper.make_node("MatMulInteger", ["x", "w"], ["y"])], [x], [y], [w])
    proc = run_module("export", "trt-check", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MatMulInteger" in proc.stdout and "UNSUPPORTED" in proc.stdout and "MatMulInteger" in proc.stderr


def test_check_refuses_asymmetric_quantization_and_foreign_domains(tmp_path):
    from onnx import TensorProto, helper

    from export.trt_check import check_file, unsupported

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.UINT8, [], [128])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("FusedMatMul", ["d", "d"], ["y"], domain="com.microsoft")]
    findings = check_file(_graph(tmp_path / "q.onnx", nodes, [x], [y], [scale, zero]))
    bad = {f.item: f.detail for f in unsupported(findings)}
    assert "uint8" in bad["QuantizeLinear"] and "uint8" in bad["DequantizeLinear"]
    assert "plugin" in bad["com.microsoft.FusedMatMul"]
    assert any(f.item == "input x" and "symbolic batch" in f.detail for f in findings)


@needs_sim
def test_check_passes_on_the_smoke_bundle(smoke_bundle):
    proc = run_module("export", "trt-check", str(smoke_bundle))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for graph in ("vision", "decoder_action", "decoder_text"):
        assert graph in proc.stdout
    assert "int64" in proc.stdout and "TensorRT can parse every graph" in proc.stdout


def test_help_has_examples():
    for command in ("trt-check", "tensorrt"):
        proc = run_module("export", command, "--help")
        assert proc.returncode == 0 and "Example: python -m export " + command in " ".join(proc.stdout.split())


# -- without TensorRT ------------------------------------------------------------------------------
@needs_sim
@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown where TensorRT is missing")
def test_tensorrt_missing_is_one_clear_line_and_touches_nothing(smoke_bundle, tmp_path):
    bundle = shutil.copytree(smoke_bundle, tmp_path / "b")
    before = _snapshot(bundle)
    proc = run_module("export", "tensorrt", str(bundle), "--precision", "fp16")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in ("TensorRT is not available", "JetPack", "pip install tensorrt", "ONNX Runtime path needs nothing"):
        assert needle in proc.stderr
    assert _snapshot(bundle) == before and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_cudart_missing_says_how_to_point_at_it(monkeypatch):
    from runtime import nvidia

    monkeypatch.setattr(nvidia, "_candidates", lambda: ["/nonexistent/libcudart.so"])
    with pytest.raises(nvidia.CudaError, match="VLA_EDGE_CUDART"):
        nvidia.CudaRuntime.load()


# -- building and running against the fake --------------------------------------------------------
@pytest.fixture
def fake():
    cuda = FakeCuda()
    return cuda, fake_tensorrt(cuda)


@pytest.fixture
def built(smoke_bundle, tmp_path, fake):
    """A copy of the smoke bundle with fake fp16 engines."""
    from export.tensorrt_build import TensorRTConfig, build_tensorrt

    bundle = shutil.copytree(smoke_bundle, tmp_path / "b")
    cuda, trt = fake
    build_tensorrt(TensorRTConfig(bundle=str(bundle), precision="fp16"), trt=trt, cuda=cuda, progress=lambda s: None)
    return bundle


@needs_sim
def test_build_records_engines_and_profiles(built, smoke_bundle, fake):
    from export.tensorrt_build import needed_length
    from runtime.bundle import Bundle

    _, trt = fake
    manifest = Bundle.load(built).manifest  # sha256 of the engines and the tensorrt section are checked
    section = manifest["tensorrt"]
    assert section["gpu"] == "Fake GPU" and section["compute_capability"] == "8.7" and section["tensorrt"] == "10.3.0"
    assert section["precision"] == "fp16" and not section["portable"]
    assert section["max_length"] == needed_length(manifest)
    assert section["kv_buffer"]["shape"] == [1, manifest["decoder"]["kv_heads"], section["max_length"],
                                             manifest["decoder"]["head_size"]]
    prefill, decode = section["engines"]["decoder_action"]["profiles"]
    assert prefill["name"] == "prefill" and prefill["shapes"]["past_key_values.0.key"]["opt"][2] == 0
    assert decode["shapes"]["inputs_embeds"]["max"][1] == 1
    assert manifest["files"]["tensorrt_decoder_action"]["path"] == "tensorrt/decoder_action.engine"
    assert [sorted(h["flags"]) for h in trt.built] == [["fp16"], ["fp16"]]
    original, rebuilt = _snapshot(smoke_bundle), _snapshot(built)
    assert all(rebuilt[k] == v for k, v in original.items() if k != "manifest.json")
    assert set(rebuilt) - set(original) == {"tensorrt/vision.engine", "tensorrt/decoder_action.engine"}
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]


@needs_sim
def test_fake_engine_decodes_like_onnx_runtime(built, fake, tiny_dataset):
    from distill.dataset import Dataset
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla
    from runtime.tensorrt_engine import TrtVla

    cuda, trt = fake
    bundle = Bundle.load(built)
    engine, reference = TrtVla(bundle, trt=trt, cuda=cuda), OnnxVla(bundle)
    ds = Dataset.open(tiny_dataset)
    for info in ds.episodes:
        ep = ds.load_episode(info.index)
        for t in (0, len(ep) // 2):
            tokens, logits = engine.decode_actions(ep.frames[t], info.instruction)
            ref_tokens, ref_logits = reference.decode_actions(ep.frames[t], info.instruction)
            assert np.array_equal(tokens, ref_tokens) and np.abs(logits - ref_logits).max() < 1e-4
    engine.close()
    assert not cuda.blocks


@needs_sim
def test_tampered_engine_is_refused_and_a_rebuild_repairs_it(built, fake):
    from export.tensorrt_build import TensorRTConfig, build_tensorrt
    from runtime.bundle import Bundle, BundleError

    path = built / "tensorrt" / "vision.engine"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(built)
    cuda, trt = fake
    build_tensorrt(TensorRTConfig(bundle=str(built), precision="fp32"), trt=trt, cuda=cuda, progress=lambda s: None)
    assert Bundle.load(built).manifest["tensorrt"]["precision"] == "fp32"


@needs_sim
def test_engine_for_another_gpu_or_tensorrt_is_refused(built):
    from runtime.bundle import Bundle, BundleError
    from runtime.tensorrt_engine import TrtVla

    bundle = Bundle.load(built)
    other = FakeCuda(gpu="NVIDIA H100", compute_capability="9.0")
    with pytest.raises(BundleError, match=r"built for Fake GPU \(compute capability 8.7\).*this machine has NVIDIA "
                                        r"H100 \(9.0\).*rebuild them here"):
        TrtVla(bundle, trt=fake_tensorrt(other), cuda=other)
    cuda = FakeCuda()
    with pytest.raises(BundleError, match="with TensorRT 10.3.0.*with TensorRT 10.7.0"):
        TrtVla(bundle, trt=fake_tensorrt(cuda, version="10.7.0"), cuda=cuda)


@needs_sim
def test_damaged_tensorrt_section_is_refused(built):
    from runtime.atomic_io import sha256_file
    from runtime.bundle import Bundle, BundleError

    manifest = json.loads((built / "manifest.json").read_text())
    del manifest["tensorrt"]["max_length"]
    (built / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="tensorrt section lacks max_length.*python -m export tensorrt"):
        Bundle.load(built)
    assert sha256_file(built / "tensorrt" / "vision.engine") == manifest["files"]["tensorrt_vision"]["sha256"]


@needs_sim
def test_engine_selection(smoke_bundle):
    from runtime.bundle import BundleError
    from runtime.engines import load_engine, load_policy
    from runtime.errors import UserError

    assert type(load_engine(smoke_bundle, "onnx")).__name__ == "OnnxVla"
    assert load_policy(smoke_bundle).name == "onnx"
    with pytest.raises(BundleError, match="no TensorRT engines.*python -m export tensorrt"):
        load_engine(smoke_bundle, "tensorrt")
    with pytest.raises(UserError, match="choose onnx or tensorrt"):
        load_engine(smoke_bundle, "tvm")


@needs_sim
def test_refusals_before_building(smoke_bundle, tmp_path, fake):
    from export.tensorrt_build import TensorRTConfig, build_tensorrt
    from runtime.errors import UserError

    cuda, trt = fake
    bundle = shutil.copytree(smoke_bundle, tmp_path / "b")
    before = _snapshot(bundle)
    for config, needle in [(TensorRTConfig(str(bundle), precision="int8"), "--calibration"),
                           (TensorRTConfig(str(bundle), max_length=4), "too short"),
                           (TensorRTConfig(str(bundle), max_length=10**6), "exceeds")]:
        with pytest.raises(UserError, match=needle):
            build_tensorrt(config, trt=trt, cuda=cuda, progress=lambda s: None)
    assert _snapshot(bundle) == before and trt.built == [] and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@needs_sim
def test_int8_builds_from_symmetric_qdq_graphs(smoke_bundle, tiny_dataset, tmp_path, fake):
    from export.tensorrt_build import TensorRTConfig, build_tensorrt
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla
    from runtime.tensorrt_engine import TrtVla

    cuda, trt = fake
    bundle = shutil.copytree(smoke_bundle, tmp_path / "b")
    section = build_tensorrt(TensorRTConfig(str(bundle), precision="int8", calibration=str(tiny_dataset),
                                            calibration_frames=16), trt=trt, cuda=cuda, progress=lambda s: None)
    assert section["quantization"]["calibration_frames"] == 16 and "symmetric int8" in section["quantization"]["method"]
    assert [sorted(h["flags"]) for h in trt.built] == [["fp16", "int8"], ["fp16", "int8"]]
    loaded = Bundle.load(bundle)
    engine, reference = TrtVla(loaded, trt=trt, cuda=cuda), OnnxVla(loaded)
    frame = np.full((32, 32, 3), 120, np.uint8)
    instruction = next(iter(loaded.manifest["prompt"]["prompts"]))
    tokens, _ = engine.decode_actions(frame, instruction)
    assert tokens.shape == reference.decode_actions(frame, instruction)[0].shape


# -- real TensorRT (NVIDIA GPU machines) -----------------------------------------------------------
@needs_sim
@needs_tensorrt
@pytest.mark.parametrize("precision, min_agreement", [("fp32", 1.0), ("fp16", 0.8)])
def test_tensorrt_engines_match_onnx_runtime(smoke_bundle, tiny_dataset, tmp_path, precision, min_agreement):
    from distill.dataset import Dataset
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla
    from runtime.tensorrt_engine import TrtVla

    bundle = shutil.copytree(smoke_bundle, tmp_path / "b")
    proc = run_module("export", "tensorrt", str(bundle), "--precision", precision, "--workspace-mb", "256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = Bundle.load(bundle)
    engine, reference = TrtVla(loaded), OnnxVla(loaded)
    ds = Dataset.open(tiny_dataset)
    same, worst = [], 0.0
    for info in ds.episodes:
        ep = ds.load_episode(info.index)
        for t in range(0, len(ep), 10):
            tokens, logits = engine.decode_actions(ep.frames[t], info.instruction)
            ref_tokens, ref_logits = reference.decode_actions(ep.frames[t], info.instruction)
            same.append(np.array_equal(tokens, ref_tokens))
            worst = max(worst, float(np.abs(logits - ref_logits).max()))
    assert np.mean(same) >= min_agreement, (np.mean(same), worst)
    if precision == "fp32":
        assert worst < 1e-3
