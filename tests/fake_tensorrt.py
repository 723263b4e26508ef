"""A stand-in for TensorRT and the CUDA runtime, for machines without a GPU: just enough of both for
export/tensorrt_build.py and runtime/tensorrt_engine.py to run end to end.

"Device memory" is numpy byte arrays behind integer addresses (every access is bounds-checked); an
"engine" is the ONNX graph itself behind a JSON header of its profiles, run with onnxruntime. The fake
refuses what real TensorRT refuses where it is cheap to tell: input shapes outside the active optimization
profile, operators the parser's support matrix lacks, tensors read or written outside their allocation.
It says nothing about TensorRT's numerics or speed; the tests marked for real TensorRT do.

    cuda, trt = FakeCuda(), fake_tensorrt(cuda)
    build_tensorrt(config, trt=trt, cuda=cuda); TrtVla(bundle, trt=trt, cuda=cuda)
"""

from __future__ import annotations

import json
import types

import numpy as np

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32}


class FakeCuda:
    """runtime.nvidia.CudaRuntime over host memory."""

    def __init__(self, gpu: str = "Fake GPU", compute_capability: str = "8.7") -> None:
        self.blocks: dict[int, np.ndarray] = {}
        self.next = 1 << 20
        self.gpu, self.cc = gpu, compute_capability

    def malloc(self, nbytes: int) -> int:
        ptr, self.next = self.next, self.next + ((max(nbytes, 1) >> 20) + 1 << 20)
        self.blocks[ptr] = np.zeros(max(nbytes, 1), np.uint8)
        return ptr

    def free(self, ptr: int) -> None:
        del self.blocks[ptr]

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, block in self.blocks.items():
            if base <= ptr < base + len(block):
                if ptr + nbytes > base + len(block):
                    raise IndexError(f"{nbytes} bytes at {ptr - base} overrun a {len(block)}-byte allocation")
                return block[ptr - base: ptr - base + nbytes]
        raise IndexError(f"address {ptr} is not allocated")

    def stream(self) -> int:
        return 7

    def upload(self, ptr: int, array: np.ndarray, stream: int) -> np.ndarray:
        array = np.ascontiguousarray(array)
        self.view(ptr, array.nbytes)[:] = array.reshape(-1).view(np.uint8)
        return array

    def download(self, array: np.ndarray, ptr: int, stream: int) -> None:
        array.reshape(-1).view(np.uint8)[:] = self.view(ptr, array.nbytes)

    def synchronize(self, stream: int) -> None:
        pass

    def device(self) -> dict:
        return {"name": self.gpu, "compute_capability": self.cc}


def fake_tensorrt(cuda: FakeCuda, version: str = "10.3.0"):
    """A module-like namespace with the slice of TensorRT's Python API the project uses."""
    import onnx
    import onnxruntime as ort

    from export import trt_ops

    trt = types.SimpleNamespace(__version__=version, built=[])

    class Logger:
        WARNING = 2

        def __init__(self, severity=2) -> None:
            self.severity = severity

    class Parser:
        def __init__(self, network, logger) -> None:
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            self.errors = [f"no importer for {n.op_type}" for n in model.graph.node
                           if n.op_type not in trt_ops.SUPPORTED or n.domain not in ("", "ai.onnx")]
            self.network["onnx"] = model.SerializeToString()
            return not self.errors

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class Config:
        def __init__(self) -> None:
            self.flags, self.profiles, self.pool = set(), [], {}

        def set_memory_pool_limit(self, pool, size) -> None:
            self.pool[pool] = size

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag) -> None:
            self.flags.discard(flag)

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        platform_has_fast_fp16 = platform_has_fast_int8 = True

        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags=0) -> dict:
            return {}

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self):
            profile = {}
            return types.SimpleNamespace(shapes=profile, set_shape=lambda name, lo, opt, hi: profile.update(
                {name: (list(lo), list(opt), list(hi))}))

        def build_serialized_network(self, network, config) -> bytes:
            header = {"profiles": [p.shapes for p in config.profiles], "flags": sorted(config.flags)}
            trt.built.append(header)
            return json.dumps(header).encode() + b"\0" + network["onnx"]

    class Engine:
        def __init__(self, data: bytes) -> None:
            header, _, graph = data.partition(b"\0")
            self.profiles = json.loads(header)["profiles"]
            self.session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
            self.io = {v.name: (trt.TensorIOMode.INPUT, _ORT_TYPES[v.type]) for v in self.session.get_inputs()}
            self.io.update({v.name: (trt.TensorIOMode.OUTPUT, _ORT_TYPES[v.type]) for v in self.session.get_outputs()})
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return list(self.io)[i]

        def get_tensor_mode(self, name: str):
            return self.io[name][0]

        def get_tensor_dtype(self, name: str):
            return self.io[name][1]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.profile, self.shapes, self.addresses = engine, 0, {}, {}

        def set_optimization_profile_async(self, index: int, stream: int) -> bool:
            self.profile = index
            return True

        def set_input_shape(self, name: str, shape) -> bool:
            lo, _, hi = self.engine.profiles[self.profile][name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)) or len(shape) != len(lo):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addresses[name] = ptr

        def execute_async_v3(self, stream: int) -> bool:
            feeds = {}
            for name, (mode, dtype) in self.engine.io.items():
                if mode == trt.TensorIOMode.INPUT:
                    shape = self.shapes[name]
                    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    feeds[name] = cuda.view(self.addresses[name], nbytes).view(dtype).reshape(shape).copy()
            outputs = self.engine.session.run(None, feeds)
            for out, value in zip(self.engine.session.get_outputs(), outputs):
                cuda.upload(self.addresses[out.name], value, stream)
            return True

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            try:
                return Engine(bytes(data))
            except Exception:  # noqa: BLE001 - TensorRT returns None for a damaged or foreign engine
                return None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()  # TensorRT 10: explicit batch only
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8", TF32="tf32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = lambda dtype: dtype
    return trt
