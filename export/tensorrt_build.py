"""TensorRT engines for a bundle: `python -m export tensorrt BUNDLE`, run on the GPU machine that will use them.

Builds `tensorrt/vision.engine` and `tensorrt/decoder_action.engine` from the bundle's ONNX graphs with
TensorRT's Python API and records them in manifest.json (see export/BUNDLE.md, "TensorRT engines"):

- batch 1; the vision engine has one static profile, the decoder two optimization profiles: `prefill`
  (sequence 1..max_length, past 0..max_length-1, tuned for past 0 and prompt + image tokens) and `decode`
  (sequence 1, past 1..max_length-1). `max_length` (default: longest prompt + image tokens + action
  tokens) is also the length of the static KV buffers the runtime allocates once.
- precision fp32 (TF32 off), fp16, or int8 by explicit quantization: the ONNX graphs get symmetric int8
  QuantizeLinear/DequantizeLinear pairs on their weight MatMuls, with activation scales calibrated on
  dataset frames run through the fp32 graphs (onnxruntime, CPU), and TensorRT runs those layers in int8
  and the rest in fp16. (TensorRT's own calibrators, implicit quantization, are deprecated in TensorRT 10.)
- engines are specific to the GPU model, its compute capability and the TensorRT version: the manifest
  records all three and the runtime refuses engines built elsewhere.

The bundle is rewritten atomically: a staged copy (hard links for the unchanged files) gets the engines
and the new manifest, is loaded and verified, then renamed into place. Nothing changes on failure.

    python -m export tensorrt bundles/student-fp32 --precision fp16
    python -m export tensorrt bundles/student-fp32 --precision int8 --calibration data/demos
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.atomic_io import replace_folder, sha256_file
from runtime.bundle import MANIFEST, Bundle
from runtime.errors import UserError
from runtime.nvidia import CudaRuntime, engine_target, require_tensorrt, trt_logger

TRT_PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_DIR = "tensorrt"
ENGINE_GRAPHS = ("vision", "decoder_action")  # the robot runs action mode only
# Compute capabilities from which NVIDIA GPUs have fast fp16 / int8, for TensorRT releases that dropped
# Builder.platform_has_fast_fp16/int8.
_FAST_FROM = {"fp16": (5, 3), "int8": (6, 1)}


@dataclass
class TensorRTConfig:
    bundle: str
    precision: str = "fp16"
    max_length: int | None = None  # KV buffer and profile maximum; default: what the prompts need
    workspace_mb: int = 1024
    calibration: str | None = None  # dataset folder (int8)
    calibration_frames: int = 64

    def check(self, manifest: dict) -> "TensorRTConfig":
        if self.precision not in TRT_PRECISIONS:
            raise UserError(f"--precision {self.precision}: TensorRT engines are fp32, fp16 or int8")
        if manifest["precision"] not in ("fp32", "fp16"):
            raise UserError(f"{self.bundle} holds {manifest['precision']} graphs, which TensorRT cannot parse "
                            f"(onnxruntime's quantization operators): export an fp32 bundle (`python -m export "
                            f"CHECKPOINT --out B --precision fp32`) and build engines from it; --precision int8 "
                            f"here quantizes for TensorRT itself")
        if self.precision == "int8" and not self.calibration:
            raise UserError("--precision int8 calibrates activation scales on real frames: pass --calibration "
                            "DATASET (the recording the model was trained on)")
        if self.precision == "int8" and manifest["precision"] != "fp32":
            raise UserError("--precision int8 starts from fp32 graphs: build it from an fp32 bundle")
        if self.workspace_mb < 16:
            raise UserError(f"--workspace-mb {self.workspace_mb} is too small: give TensorRT at least 16 MB")
        return self


def needed_length(manifest: dict) -> int:
    """KV positions one action needs at most: longest prompt + image tokens + action tokens."""
    prompts = manifest["prompt"]["prompts"].values()
    return max(map(len, prompts)) + manifest["prompt"]["image_tokens"] + len(manifest["action"]["names"])


def resolve_max_length(manifest: dict, requested: int | None) -> int:
    need, limit = needed_length(manifest), manifest["decoder"]["max_positions"]
    length = requested or need
    if length < need:
        raise UserError(f"--max-length {length} is too short: the longest prompt, the image tokens and the action "
                        f"tokens need {need} positions")
    if length > limit:
        raise UserError(f"--max-length {length} exceeds the model's {limit} positions (decoder.max_positions)")
    return length


def _profile(name: str, shapes: dict[str, tuple[list, list, list]]) -> dict:
    return {"name": name, "shapes": {k: {"min": lo, "opt": opt, "max": hi} for k, (lo, opt, hi) in shapes.items()}}


def plan_profiles(manifest: dict, max_length: int) -> dict[str, list[dict]]:
    """Optimization profiles per engine (batch 1): min/opt/max shape of every input."""
    d, image = manifest["decoder"], manifest["image"]
    hidden, kv, head = d["hidden_size"], d["kv_heads"], d["head_size"]
    typical = int(np.median([len(p) for p in manifest["prompt"]["prompts"].values()])) + manifest["prompt"]["image_tokens"]
    mid = min(typical + len(manifest["action"]["names"]) // 2, max_length - 1)
    past_names = [f"past_key_values.{i}.{k}" for i in range(d["layers"]) for k in ("key", "value")]

    def decoder(seq: tuple, past: tuple, total: tuple) -> dict:
        shapes = {"inputs_embeds": tuple([1, s, hidden] for s in seq), "attention_mask": tuple([1, t] for t in total),
                  "position_ids": tuple([1, s] for s in seq)}
        shapes.update({name: tuple([1, kv, p, head] for p in past) for name in past_names})
        return shapes

    pixels = [1, 3, image["height"], image["width"]]
    return {
        "vision": [_profile("image", {"pixel_values": (pixels, pixels, pixels)})],
        "decoder_action": [
            _profile("prefill", decoder(seq=(1, typical, max_length), past=(0, 0, max_length - 1),
                                        total=(1, typical, max_length))),
            _profile("decode", decoder(seq=(1, 1, 1), past=(1, mid, max_length - 1), total=(2, mid + 1, max_length))),
        ],
    }


def dataset_frames(dataset: str, height: int, width: int, count: int) -> tuple[np.ndarray, list[str]]:
    """(count, H, W, 3) uint8 frames spread evenly over all episodes of a dataset, with their instructions."""
    import cv2

    from distill.dataset import Dataset  # numpy only: no torch

    ds = Dataset.open(dataset)
    per_episode = max(1, -(-count // max(len(ds.episodes), 1)))
    frames, instructions = [], []
    for info in ds.episodes:
        ep = ds.load_episode(info.index)
        for t in np.linspace(0, len(ep) - 1, per_episode).astype(int):
            frames.append(cv2.resize(ep.frames[t], (width, height), interpolation=cv2.INTER_AREA))
            instructions.append(info.instruction)
    if not frames:
        raise UserError(f"dataset {dataset} has no frames to calibrate on")
    return np.stack(frames[:count]), instructions[:count]


def int8_graphs(bundle: Bundle, config: TensorRTConfig, workdir: Path) -> tuple[dict[str, Path], dict]:
    """QDQ copies of the graphs (symmetric int8 weight MatMuls, calibrated) for TensorRT's explicit quantization."""
    import logging
    import warnings

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from export.quantize import calibration_feeds, weight_matmul_nodes
    from runtime.onnx_engine import OnnxVla

    image = bundle.manifest["image"]
    frames, instructions = dataset_frames(config.calibration, image["height"], image["width"], config.calibration_frames)
    feeds = calibration_feeds(OnnxVla(bundle), frames, instructions)

    class Reader(CalibrationDataReader):
        def __init__(self, items: list[dict]) -> None:
            self.items = iter(items)

        def get_next(self):
            return next(self.items, None)

    paths = {}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
    try:
        for name in ENGINE_GRAPHS:
            source = bundle.path(bundle.manifest["graphs"][name]["file"])
            paths[name] = workdir / f"{name}.qdq.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(source), str(paths[name]), Reader(feeds["vision" if name == "vision" else "decoder"]),
                                quant_format=QuantFormat.QDQ, per_channel=False, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                                nodes_to_quantize=weight_matmul_nodes(source),
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    finally:
        root.setLevel(level)
    info = {"method": "explicit (QDQ): symmetric int8, per-tensor, weight MatMuls; the rest fp16",
            "calibration_frames": len(frames), "calibration_dataset": str(config.calibration)}
    return paths, info


def _fast(builder, kind: str, compute_capability: str) -> bool:
    flag = getattr(builder, f"platform_has_fast_{kind}", None)
    if flag is not None:
        return bool(flag)
    major, minor = map(int, compute_capability.split("."))
    return (major, minor) >= _FAST_FROM[kind]


def build_engine(trt, builder, logger, onnx_path: Path, profiles: list[dict], precision: str, workspace_mb: int) -> bytes:
    """Parse one ONNX graph and build a serialized engine with the given profiles."""
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(trt.__version__.split(".")[0]) < 10:  # implicit in TensorRT 10
        flags = 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise UserError(f"TensorRT cannot parse {onnx_path.name}: {errors}; `python -m export trt-check` lists the "
                        f"operators and opset TensorRT needs")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: parity with ONNX Runtime
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ in the graph decides which layers are int8
    for spec in profiles:
        profile = builder.create_optimization_profile()
        for name, shape in spec["shapes"].items():
            profile.set_shape(name, shape["min"], shape["opt"], shape["max"])
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above): try a larger "
                        f"--workspace-mb, or --precision fp32")
    return bytes(serialized)


def _stage(root: Path) -> tuple[Path, Bundle]:
    """A copy of the bundle beside it (hard links where the file system allows) with the manifest minus
    any engines, loaded and verified: old engines, even damaged ones, never block a rebuild."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        manifest.pop("tensorrt", None)
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("tensorrt_")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        Bundle.load(root)  # says what is wrong with the bundle
        raise
    tmp = root.parent / f".{root.name}.trt-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(root, tmp, copy_function=link, ignore=lambda folder, names: [
        n for n in names if Path(folder) == root and n in (ENGINE_DIR, MANIFEST)])
    try:
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return tmp, Bundle.load(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_graphs(bundle: Bundle) -> None:
    from export.trt_check import check_bundle, format_table, unsupported

    bad = [f for f in unsupported(check_bundle(bundle.root)) if f.graph in ENGINE_GRAPHS]
    if bad:
        raise UserError(f"{bundle.root}: TensorRT cannot parse these graphs:\n{format_table(bad)}")


def build_tensorrt(config: TensorRTConfig, trt=None, cuda=None, progress=print) -> dict:
    """Build, record and verify the engines; returns the manifest's new `tensorrt` section."""
    trt = trt or require_tensorrt()  # first: without TensorRT nothing is touched
    root = Path(config.bundle)
    if not (root / MANIFEST).is_file():
        Bundle.load(root)  # the usual message for a missing folder or manifest
    tmp, bundle = _stage(root)
    try:
        section = _build_into(tmp, bundle, config, trt, cuda, progress)
        Bundle.load(tmp)  # sha256 of every file, the tensorrt section's own checks
        replace_folder(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return section


def _build_into(tmp: Path, bundle: Bundle, config: TensorRTConfig, trt, cuda, progress) -> dict:
    """Check, build the engines into the staged bundle `tmp`, and write its manifest."""
    manifest = json.loads(json.dumps(bundle.manifest))
    config.check(manifest)
    _check_graphs(bundle)
    max_length = resolve_max_length(manifest, config.max_length)
    profiles = plan_profiles(manifest, max_length)
    cuda = cuda or CudaRuntime.load()
    here = engine_target(trt, cuda)
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    for kind in ("fp16", "int8"):
        if config.precision == kind and not _fast(builder, kind, here["compute_capability"]):
            raise UserError(f"{here['gpu']} (compute capability {here['compute_capability']}) has no fast {kind}: "
                            f"build with --precision fp32" + (" or fp16" if kind == "int8" else ""))
    sources = {name: bundle.path(manifest["graphs"][name]["file"]) for name in ENGINE_GRAPHS}
    engines, quantization = {}, None
    with tempfile.TemporaryDirectory() as work:
        if config.precision == "int8":
            progress(f"calibrating int8 scales on {config.calibration} ...")
            sources, quantization = int8_graphs(bundle, config, Path(work))
        (tmp / ENGINE_DIR).mkdir()
        for name in ENGINE_GRAPHS:
            start = time.perf_counter()
            data = build_engine(trt, builder, logger, sources[name], profiles[name], config.precision,
                                config.workspace_mb)
            path = tmp / ENGINE_DIR / f"{name}.engine"
            path.write_bytes(data)
            engines[name] = {"file": f"tensorrt_{name}", "onnx": manifest["graphs"][name]["file"],
                             "profiles": profiles[name]}
            manifest["files"][f"tensorrt_{name}"] = {"path": f"{ENGINE_DIR}/{name}.engine", "sha256": sha256_file(path),
                                                    "bytes": path.stat().st_size}
            progress(f"  {ENGINE_DIR}/{name}.engine: {len(data) / 1e6:.2f} MB in {time.perf_counter() - start:.1f} s")
    d = manifest["decoder"]
    manifest["tensorrt"] = section = {
        **here,
        "portable": False,
        "note": "engines run only on this GPU model and compute capability with this TensorRT version; "
                "elsewhere rebuild them with `python -m export tensorrt BUNDLE` (the ONNX graphs are portable)",
        "precision": config.precision,
        "max_length": max_length,
        "batch": 1,
        "kv_buffer": {"shape": [1, d["kv_heads"], max_length, d["head_size"]], "dtype": d.get("kv_dtype", "float32"),
                      "per_tensor": 2, "scheme": "two static buffers per past/present tensor, swapped each step"},
        "workspace_mb": config.workspace_mb,
        "quantization": quantization,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engines": engines,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return section
