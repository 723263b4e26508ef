"""The bundles a benchmark runs, made when missing: `<bundles-dir>/<role>-<precision>` (student-fp32,
student-fp16, student-int8, teacher-fp32) and the student's onnxruntime-genai folder (student-genai).

A bundle already there is used when it loads (every file matches its sha256 in the manifest), has the
precision its name says, and was exported from the model folder's current weights (the manifest's
`model.source_sha256` against `model.safetensors`); otherwise it is made again.

How a missing bundle is made:
- fp32: `export.exporter.export_bundle`, i.e. `python -m export MODEL --out B` (parity-checked against PyTorch);
- fp16 / int8: a copy of the fp32 bundle whose graphs go through `export.quantize.quantize_graph`, the
  function `python -m export --precision` applies to the same fp32 graphs, compared with fp32 on the
  parity frames (`export.exporter.compare_with`) and recorded in the manifest under
  `metrics.<precision>_vs_fp32`; the torch export is not repeated. `full_export=True` runs
  `export_bundle` for every precision instead;
- a bundle of the same weights and precision elsewhere in the folder (a teacher that is also the
  student) is copied rather than exported again.

    paths = ensure_bundles({"student": "models/student", "teacher": "models/teacher"},
                           {"student": ["fp32", "fp16", "int8"], "teacher": ["fp32"]}, "runs/bundles")
    paths["student-int8"]        # Path("runs/bundles/student-int8")
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from runtime.atomic_io import replace_folder, sha256_file
from runtime.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")


def bundle_status(folder: Path, model: Path, precision: str) -> str | None:
    """None when `folder` is a usable `precision` bundle of `model`'s weights, else why not."""
    from runtime.bundle import Bundle, BundleError

    if not folder.exists():
        return "missing"
    try:
        bundle = Bundle.load(folder)
    except BundleError as err:
        return f"not loadable ({err})"
    if bundle.manifest["precision"] != precision:
        return f"precision {bundle.manifest['precision']}, not {precision}"
    if bundle.manifest["model"].get("source_sha256") != sha256_file(model / "model.safetensors"):
        return f"exported from other weights than {model}"
    return None


def ensure_bundles(models: dict[str, str | Path], precisions: dict[str, list[str]], bundles_dir: str | Path,
                   dataset: str | None = None, parity_frames: int = 50, full_export: bool = False,
                   log=print) -> dict[str, Path]:
    """`{"student-fp32": Path, ...}` for every (role, precision) asked, made when missing or stale."""
    out = Path(bundles_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    order = sorted(((role, p) for role, ps in precisions.items() for p in ps), key=lambda rp: rp[1] != "fp32")
    for role, precision in order:  # fp32 first: the others derive from it
        if precision not in PRECISIONS:
            raise UserError(f"precision {precision}: the benchmarks run {', '.join(PRECISIONS)}")
        model = Path(models[role])
        folder = out / f"{role}-{precision}"
        why = bundle_status(folder, model, precision)
        if why is None:
            paths[folder.name] = folder
            continue
        start = time.perf_counter()
        twin = next((p for p in paths.values() if bundle_status(p, model, precision) is None), None)
        if twin is not None:
            log(f"{folder}: {why}; copying {twin} (same weights, same precision)")
            _copy_bundle(twin, folder)
        elif precision == "fp32" or full_export:
            log(f"{folder}: {why}; exporting {model} ({precision})")
            _export(model, folder, precision, dataset, parity_frames)
        else:
            fp32 = out / f"{role}-fp32"
            if bundle_status(fp32, model, "fp32") is not None:
                _export(model, fp32, "fp32", dataset, parity_frames)
            log(f"{folder}: {why}; quantizing {fp32} to {precision}")
            derive_precision(fp32, folder, precision, model, dataset, parity_frames)
        log(f"{folder}: ready in {time.perf_counter() - start:.1f} s")
        paths[folder.name] = folder
    return paths


def _export(model: Path, folder: Path, precision: str, dataset: str | None, parity_frames: int) -> None:
    from export.exporter import ExportConfig, export_bundle

    export_bundle(ExportConfig(checkpoint=str(model), out=str(folder), precision=precision, force=True,
                               dataset=dataset, parity_frames=parity_frames), progress=False)


def _copy_bundle(source: Path, folder: Path) -> None:
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    replace_folder(tmp, folder)


def derive_precision(fp32: Path, folder: Path, precision: str, model_folder: Path, dataset: str | None,
                     parity_frames: int) -> dict:
    """Write `folder`: the fp32 bundle of `model_folder` with every graph quantized to `precision`,
    checked against fp32 on the export's parity frames. Returns the new manifest."""
    from distill.reference_policy import load_vla_folder
    from export.exporter import ExportConfig, compare_with
    from export.exporter import parity_frames as held_out_frames
    from export.quantize import quantize_graph
    from runtime.bundle import MANIFEST, Bundle
    from runtime.onnx_engine import OnnxVla

    source = Bundle.load(fp32)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(fp32, tmp)
    try:
        model = load_vla_folder(model_folder)[0]
        frames, instructions = held_out_frames(ExportConfig(str(model_folder), str(folder), dataset=dataset), model,
                                               parity_frames)
        reference_engine = OnnxVla(source)
        reference = [reference_engine.decode_actions(f, i) for f, i in zip(frames, instructions)]
        manifest = json.loads((tmp / MANIFEST).read_text())
        for key, entry in manifest["files"].items():
            if entry["path"].endswith(".onnx"):
                quantize_graph(tmp / entry["path"], precision)
                path = tmp / entry["path"]
                manifest["files"][key] = {"path": entry["path"], "sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest["precision"] = precision
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        manifest["metrics"][f"{precision}_vs_fp32"] = compare_with(Bundle.load(tmp), frames, instructions, reference)
        manifest["metrics"]["derived_from"] = {"bundle": str(fp32), "how": f"export.quantize.quantize_graph(graph, "
                                                                            f"'{precision}') on the fp32 graphs"}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        Bundle.load(tmp)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def ensure_genai(model: str | Path, bundles_dir: str | Path, log=print) -> Path:
    """`<bundles-dir>/student-genai`: the model as an onnxruntime-genai folder (export/genai.py), made
    again when it is missing or was exported from other weights."""
    from export.genai import SIDECAR, export_genai

    model = Path(model)
    folder = Path(bundles_dir) / "student-genai"
    sidecar = folder / SIDECAR
    if sidecar.is_file():
        try:
            if json.loads(sidecar.read_text()).get("source_sha256") == sha256_file(model / "model.safetensors"):
                return folder
        except (OSError, ValueError):
            pass
    log(f"{folder}: exporting the onnxruntime-genai folder of {model}")
    return export_genai(model, folder, threads=1, force=True)
