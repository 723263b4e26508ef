"""Lower-precision copies of a bundle's graphs: int8 (onnxruntime dynamic quantization: int8 weights,
activations quantized on the fly) and fp16 (weights and arithmetic in float16, float32 at the graph's
inputs and outputs so the runtime feeds it exactly as the fp32 graph).

    quantize_graph(Path("decoder_action.onnx"), "int8", exclude=["/decoder/layers.0/..."])
"""

from __future__ import annotations

import warnings
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")


def matmul_nodes(path: Path) -> list[str]:
    """Names of the MatMul/Gemm nodes of a graph: the ones quantization touches (for per-layer sensitivity)."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("MatMul", "Gemm")]


def quantize_graph(path: Path, precision: str, exclude: list[str] | None = None) -> None:
    """Rewrite the graph at `path` in `precision`; `exclude` names nodes kept in float32 (int8 only)."""
    if precision == "fp32":
        return
    import logging

    tmp = path.with_name(path.stem + f".{precision}.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's quantizer logs advice on the root logger
    try:
        _convert(path, tmp, precision, exclude)
    finally:
        root.setLevel(level)
    tmp.replace(path)


def _convert(path: Path, tmp: Path, precision: str, exclude: list[str] | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=False,
                             op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=exclude or [])
        elif precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
            onnx.save(model, str(tmp))
        else:
            raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
