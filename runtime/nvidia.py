"""NVIDIA's stack, reached lazily: TensorRT's Python bindings and the CUDA runtime library (libcudart).

Nothing here is imported by the ONNX Runtime path; a machine without a GPU never loads it.

Device memory: `CudaRuntime` binds the six CUDA runtime calls the TensorRT engine needs (malloc, free,
asynchronous copies, a stream, device properties) with `ctypes` from `libcudart.so`, which every TensorRT
installation already has (JetPack's CUDA in /usr/local/cuda, or the `nvidia-cuda-runtime-cu12` wheel
TensorRT's pip package pulls in). So the TensorRT path adds no package beyond TensorRT itself (no
cuda-python, PyCUDA or polygraphy).

    trt = require_tensorrt()                 # UserError with the way to install it when missing
    cuda = CudaRuntime.load()
    cuda.device()                            # {"name": "Orin", "compute_capability": "8.7"}
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import numpy as np

from runtime.errors import UserError

INSTALL_TENSORRT = (
    "on a Jetson TensorRT comes with JetPack (`sudo apt install nvidia-jetpack`; its Python bindings live in the "
    "system Python 3.10, so create the virtual environment with --system-site-packages); on an x86 machine with "
    "an NVIDIA GPU, `pip install tensorrt` (its wheels come from NVIDIA's index, pypi.nvidia.com). The ONNX "
    "Runtime path needs nothing more: run the bundle with the onnx engine (the default)"
)

# cudaMemcpyKind and cudaDeviceAttr values (cuda_runtime_api.h / driver_types.h).
_H2D, _D2H, _D2D = 1, 2, 3
_CC_MAJOR, _CC_MINOR = 75, 76


def require_tensorrt():
    """The `tensorrt` module, or a UserError saying how to get it."""
    try:
        import tensorrt
    except (ImportError, OSError) as err:  # OSError: bindings present, libnvinfer missing
        raise UserError(f"TensorRT is not available here ({err}): {INSTALL_TENSORRT}") from None
    return tensorrt


class CudaError(UserError):
    """A CUDA runtime call failed (no GPU, driver mismatch, out of memory)."""


def _candidates() -> list[str]:
    names = [os.environ.get("VLA_EDGE_CUDART", ""), "libcudart.so", "libcudart.so.12", "libcudart.so.11.0",
             ctypes.util.find_library("cudart") or "", "/usr/local/cuda/lib64/libcudart.so"]
    try:  # the wheel TensorRT's pip package depends on: nvidia/cuda_runtime/lib/libcudart.so.12
        import nvidia.cuda_runtime as wheel

        names += sorted(str(p) for folder in wheel.__path__ for p in Path(folder, "lib").glob("libcudart.so*"))
    except ImportError:
        pass
    return [n for n in names if n]


class CudaRuntime:
    """The few CUDA runtime calls the TensorRT engine needs, over ctypes. Pointers and streams are ints."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]

    @classmethod
    def load(cls) -> "CudaRuntime":
        errors = []
        for name in _candidates():
            try:
                return cls(ctypes.CDLL(name))
            except OSError as err:
                errors.append(str(err))
        raise CudaError(f"cannot load the CUDA runtime library libcudart ({'; '.join(errors[-2:])}): it comes with "
                        f"JetPack and with TensorRT's pip package; set VLA_EDGE_CUDART to its path if it is elsewhere")

    def _check(self, status: int, call: str) -> None:
        if status != 0:
            text = self.lib.cudaGetErrorString(status).decode(errors="replace")
            raise CudaError(f"CUDA {call} failed: {text} (error {status}); check `nvidia-smi` (or `tegrastats` on "
                            f"a Jetson) and that no other process holds the GPU memory")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self._check(self.lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def stream(self) -> int:
        handle = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return int(handle.value or 0)

    def upload(self, ptr: int, array: np.ndarray, stream: int) -> np.ndarray:
        """Queue host -> device; returns the contiguous host array, which must live until `synchronize`."""
        array = np.ascontiguousarray(array)
        self._check(self.lib.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, _H2D, stream), "cudaMemcpyAsync")
        return array

    def download(self, array: np.ndarray, ptr: int, stream: int) -> None:
        """Queue device -> host into the contiguous `array`; valid after `synchronize`."""
        self._check(self.lib.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, _D2H, stream), "cudaMemcpyAsync")

    def synchronize(self, stream: int) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def device(self) -> dict:
        """The current GPU: {"name", "compute_capability"} ("8.7" for Orin, "9.0" for H100)."""
        index, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.cudaGetDevice(ctypes.byref(index)), "cudaGetDevice")
        self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, index), "cudaDeviceGetAttribute")
        self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, index), "cudaDeviceGetAttribute")
        props = ctypes.create_string_buffer(8192)  # cudaDeviceProp starts with char name[256]; 8 KiB covers any layout
        call = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        self._check(call(props, index), "cudaGetDeviceProperties")
        name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
        return {"name": name, "compute_capability": f"{major.value}.{minor.value}"}


_LOGGERS: dict[int, object] = {}


def trt_logger(trt):
    """One TensorRT logger per process (TensorRT warns when builder and runtime get different ones)."""
    return _LOGGERS.setdefault(id(trt), trt.Logger(trt.Logger.WARNING))


def engine_target(trt, cuda) -> dict:
    """What a TensorRT engine is tied to on this machine: TensorRT version, GPU name, compute capability."""
    device = cuda.device()
    return {"tensorrt": trt.__version__, "gpu": device["name"], "compute_capability": device["compute_capability"]}
