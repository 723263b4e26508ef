"""What the latency, quality and scaling benchmarks share: percentile summaries, atomic CSV and PNG
writers, the device a run is on, model-folder checks and the command line that reproduces a run.

    summary = percentiles([0.012, 0.013, 0.020])     # {"p50_ms": 13.0, "p95_ms": ..., "p99_ms": ..., "max_ms": 20.0}
    write_csv_atomic("benchmarks/results/latency.csv", rows)             # list of dicts, one header
    with atomic_png("benchmarks/results/latency.png") as path: figure.savefig(path)
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.atomic_io import atomic_open
from runtime.errors import UserError

DEFAULT_OUT = "benchmarks/results"
DEFAULT_BUNDLES = "runs/bundles"
DEVICES = ("cpu", "cuda")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def single_thread() -> None:
    """One CPU thread for torch (onnxruntime sessions are opened with one intra-op thread each)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran: intra-op is what matters
        pass


def percentiles(seconds) -> dict:
    """p50, p95, p99, max and count of durations in seconds, in milliseconds; NaNs (lost samples) left out."""
    ms = np.asarray(list(seconds), np.float64) * 1e3
    ms = ms[np.isfinite(ms)]
    if ms.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "n": 0}
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "n": int(ms.size)}


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value, digits: int = 2, suffix: str = "") -> str:
    """A table cell: the number with `digits` decimals, or '-' when there is none."""
    if not finite(value):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def fmt_count(value) -> str:
    """Large counts as 6.44M / 1.23G; '-' when there is none."""
    if not finite(value):
        return "-"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def write_csv_atomic(path: str | os.PathLike, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows of dicts as a CSV file with one header line, written to a temporary name and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    with atomic_open(path, "w") as handle:
        handle.write(buffer.getvalue())
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return path


@contextlib.contextmanager
def atomic_png(path: str | os.PathLike) -> Iterator[str]:
    """A temporary .png path beside `path` to save a figure to; renamed onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        yield str(tmp)
        with open(tmp, "rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                raise RuntimeError(f"{tmp} is not a PNG file")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_model_folder(path: str, role: str) -> Path:
    """A vla-edge model folder, or a UserError that names the command that makes one."""
    folder = Path(path)
    makers = {"teacher": "python -m distill train-teacher --dataset data/demos_3v --out models/teacher",
              "student": "python -m distill student --teacher models/teacher --dataset data/demos_3v --out models/student"}
    make = makers.get(role, makers["teacher"])
    if not folder.is_dir():
        raise UserError(f"--{role} {path} does not exist: make it with `{make}`")
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json", "action_tokenizer.json")
               if not (folder / f).is_file()]
    if missing:
        raise UserError(f"--{role} {path} is not a vla-edge model folder (no {', '.join(missing)}): pass the folder "
                        f"written by `{make}`")
    return folder


def device_info(device: str) -> dict:
    """What the benchmark runs on: {"kind": "cpu"|"cuda", "name": ..., "label": ...}; a UserError when
    --device cuda is asked for on a machine without a usable GPU."""
    from benchmarks.machine import cpu_model

    if device not in DEVICES:
        raise UserError(f"--device {device}: choose {' or '.join(DEVICES)}")
    if device == "cpu":
        name = cpu_model()
        return {"kind": "cpu", "name": name, "label": f"CPU: {name}, 1 thread"}
    try:
        import torch

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if not available:
        raise UserError("--device cuda needs an NVIDIA GPU with a CUDA build of torch and onnxruntime-gpu; this "
                        "machine has none: run with --device cpu")
    name = torch.cuda.get_device_name(0)
    return {"kind": "cuda", "name": name, "label": f"GPU: {name} (CUDA)"}


def result_suffix(device: str) -> str:
    """File-name suffix of a run's results: CPU and GPU results never share a file (or a ratio)."""
    return "" if device == "cpu" else f"-{device}"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
