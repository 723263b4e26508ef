"""`python -m export`: checkpoint to bundle.

Examples:

    python -m export doctor
"""

from __future__ import annotations

import importlib
import sys

from runtime.cli import CommandLine

# Packages the export path uses, and what each is for; TensorRT is optional (NVIDIA machines only).
TOOLCHAIN = (
    ("torch", "PyTorch reference model", "pip install torch==2.13.0"),
    ("transformers", "model building blocks", "pip install '.[train]'"),
    ("onnxruntime", "ONNX sessions and quantization", "pip install ."),
    ("onnx", "ONNX graphs", "pip install onnx"),
    ("tensorrt", "TensorRT engines (optional)", "comes with JetPack on a Jetson; NVIDIA's index elsewhere"),
)


def cmd_doctor(args) -> int:
    for module, purpose, how in TOOLCHAIN:
        try:
            version = getattr(importlib.import_module(module), "__version__", "?")
            print(f"  ok       {module:14s} {version:12s} {purpose}")
        except ImportError:
            print(f"  missing  {module:14s} {'':12s} {purpose}: {how}")
    try:
        import onnxruntime

        print(f"onnxruntime execution providers: {', '.join(onnxruntime.get_available_providers())}")
    except ImportError:
        pass
    return 0


cli = CommandLine("python -m export",
                  "Export a student checkpoint to a verified bundle (the exporter arrives with the export issue).", __doc__)
cli.command("doctor", "say which parts of the export toolchain this machine has", "python -m export doctor", cmd_doctor,
            description="Check for torch, transformers, onnx, onnxruntime (and its execution providers) and TensorRT.")

if __name__ == "__main__":
    sys.exit(cli.run())
