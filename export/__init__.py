"""vla-edge export: student checkpoint -> quantized ONNX (and TensorRT) bundle with parity checks.

Commands: `python -m export --help`.
"""

__version__ = "0.1.0"
