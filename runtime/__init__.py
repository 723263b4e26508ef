"""vla-edge on-robot runtime: numpy, onnxruntime, OpenCV, pyserial; never torch.

Commands: `python -m runtime --help`.
"""

__version__ = "0.1.0"
