"""Lower-precision copies of a bundle's graphs:

- int8: onnxruntime dynamic quantization (int8 weights, activations quantized on the fly per tensor);
- int8-static: onnxruntime static quantization in QDQ form (int8 per-channel weights, uint8 activations
  with scales calibrated on dataset frames run through the fp32 bundle; only the weight MatMuls are
  quantized, attention's activation-by-activation MatMuls stay in float);
- fp16: weights and arithmetic in float16, float32 at the graph's inputs and outputs so the runtime
  feeds it exactly as the fp32 graph.

    quantize_graph(Path("decoder_action.onnx"), "int8", exclude=["/decoder/layers.0/..."])
    quantize_graph(Path("vision.onnx"), "int8-static", calibration=feeds["vision"])
"""

from __future__ import annotations

import warnings
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8", "int8-static")


def matmul_nodes(path: Path) -> list[str]:
    """Names of the MatMul/Gemm nodes of a graph: the ones quantization touches (for per-layer sensitivity)."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("MatMul", "Gemm")]


def weight_matmul_nodes(path: Path) -> list[str]:
    """MatMul/Gemm nodes with a constant (initializer) operand: the linear layers, not attention's products."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input)]


class _RecordingSession:
    """Wraps an onnxruntime session and keeps a copy of every feed it runs (calibration inputs)."""

    def __init__(self, session) -> None:
        self.session = session
        self.feeds: list[dict] = []

    def run(self, names, feeds):
        self.feeds.append({k: v.copy() for k, v in feeds.items()})
        return self.session.run(names, feeds)


def calibration_feeds(engine, frames, instructions) -> dict[str, list[dict]]:
    """The exact inputs an fp32 OnnxVla gives its graphs while decoding actions for `frames`: for the
    decoder, prompt prefill, image prefill and every decode step with real KV caches (run in loop mode);
    for vision, the pixels; for the act graph, the pixels with the instruction's KV cache."""
    vision, decoder = _RecordingSession(engine.vision), _RecordingSession(engine.decoder)
    engine.vision, engine.decoder = vision, decoder
    engine._prompt_kv.clear()
    act = []
    try:
        for frame, instruction in zip(frames, instructions):
            pixels, prompt = engine.preprocess(frame), engine.prompt_ids(instruction)
            engine._decode_loop(pixels, prompt)
            act.append({"pixel_values": pixels, **engine.prompt_cache(tuple(prompt))[0]})
    finally:
        engine.vision, engine.decoder = vision.session, decoder.session
    return {"vision": vision.feeds, "decoder": decoder.feeds, "act": act}


def quantize_graph(path: Path, precision: str, exclude: list[str] | None = None,
                   calibration: list[dict] | None = None) -> None:
    """Rewrite the graph at `path` in `precision`; `exclude` names nodes kept in float32 (int8 only);
    `calibration` is the list of input feeds that int8-static derives activation scales from."""
    if precision == "fp32":
        return
    import logging

    tmp = path.with_name(path.stem + f".{precision}.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's quantizer logs advice on the root logger
    try:
        _convert(path, tmp, precision, exclude, calibration)
    finally:
        root.setLevel(level)
    tmp.replace(path)


def _convert(path: Path, tmp: Path, precision: str, exclude: list[str] | None,
             calibration: list[dict] | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if precision == "int8-static":
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

            if not calibration:
                raise ValueError("int8-static needs calibration feeds (export with --dataset)")

            class Feeds(CalibrationDataReader):
                def __init__(self) -> None:
                    self.items = iter(calibration)

                def get_next(self):
                    return next(self.items, None)

            nodes = [n for n in weight_matmul_nodes(path) if n not in set(exclude or [])]
            quantize_static(str(path), str(tmp), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=nodes)
        elif precision == "int8":
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
