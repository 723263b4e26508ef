"""Describe the machine a benchmark ran on: CPU model, cores, threads, library versions.

    python -m benchmarks machine
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
from pathlib import Path

LIBRARIES = ("numpy", "onnxruntime", "onnxruntime_genai", "cv2", "torch", "transformers", "mujoco", "metaworld",
             "websockets", "msgpack", "serial")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _distribution_version(name: str) -> str:
    """The installed distribution's version for a module without `__version__` (metaworld), else '?'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def describe() -> dict:
    """A JSON-ready description of this machine and the libraries a benchmark uses."""
    versions = {}
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            versions[name] = None
            continue
        versions[name] = getattr(module, "__version__", None) or _distribution_version(name)
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "libraries": versions,
    }
