"""Pick the engine that runs a bundle: ONNX Runtime (everywhere) or TensorRT (NVIDIA GPUs, engines built
on that machine with `python -m export tensorrt`). For command lines:

    add_engine_argument(parser)                             # --engine onnx|tensorrt
    policy = load_policy(args.bundle, args.engine, threads=args.threads)
    engine = load_engine(Bundle.load("bundles/student-fp32"), "tensorrt")   # TrtVla
"""

from __future__ import annotations

import argparse
import os

from runtime.bundle import Bundle
from runtime.errors import UserError

ENGINES = ("onnx", "tensorrt")


def load_engine(bundle: Bundle | str | os.PathLike, kind: str = "onnx", threads: int = 1, decode: str = "auto"):
    """An `OnnxVla` or `TrtVla` for the bundle (a loaded Bundle or its folder); `decode` picks the ONNX
    Runtime decode mode (auto, act, loop; see OnnxVla)."""
    if kind not in ENGINES:
        raise UserError(f"unknown engine '{kind}': choose {' or '.join(ENGINES)}")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    if kind == "tensorrt":
        from runtime.tensorrt_engine import TrtVla

        return TrtVla(bundle)
    from runtime.onnx_engine import OnnxVla

    return OnnxVla(bundle, threads=threads, decode=decode)


def load_policy(bundle: Bundle | str | os.PathLike, kind: str = "onnx", threads: int = 1, decode: str = "auto"):
    """The bundle behind the `Policy` protocol on the chosen engine (policy.name is the engine's)."""
    engine = load_engine(bundle, kind, threads, decode)
    if kind == "tensorrt":
        from runtime.tensorrt_engine import TensorRTPolicy

        return TensorRTPolicy(engine)
    from runtime.onnx_engine import OnnxPolicy

    return OnnxPolicy(engine)


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default="onnx",
                        help="onnx: ONNX Runtime, any machine; tensorrt: the bundle's TensorRT engines, built on this "
                             "GPU with `python -m export tensorrt BUNDLE` (default: %(default)s)")
