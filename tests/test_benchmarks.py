"""The latency, quality and scaling benchmarks and their report: `python -m benchmarks all --quick` on the
smoke model (as student and as teacher) writes every table, CSV and plot with finite figures. No timing
assertions: these machines are too noisy for them."""

import csv
import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
from conftest import needs_sim, run_module

HAVE_GENAI = importlib.util.find_spec("onnxruntime_genai") is not None
PROFILES = ("lan", "wifi", "lte", "cloud")
README = """# somewhere

<!-- benchmarks:headline -->
old table
<!-- /benchmarks:headline -->

the rest stays
"""


@pytest.fixture(scope="module")
def quick_run(trained_smoke_model, smoke_bundle, tiny_dataset, tmp_path_factory):
    """One `all --quick` run; its student-fp32 bundle is the session's smoke bundle, copied in (so the run
    also shows that a bundle already there, of the same weights, is used as it is)."""
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("bench")
    bundles, out, readme = root / "bundles", root / "results", root / "README.md"
    bundles.mkdir()
    shutil.copytree(smoke_bundle, bundles / "student-fp32")
    readme.write_text(README)
    model = str(trained_smoke_model)
    proc = run_module("benchmarks", "all", "--quick", "--student", model, "--teacher", model, "--bundles-dir",
                      str(bundles), "--dataset", str(tiny_dataset), "--tasks", "drawer-open", "--out", str(out),
                      "--readme", str(readme), "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"proc": proc, "out": out, "bundles": bundles, "readme": readme}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@needs_sim
def test_latency_has_finite_figures_for_every_path(quick_run):
    result = json.loads((quick_run["out"] / "latency.json").read_text())
    rows = {p["key"]: p for p in result["paths"]}
    expected = {"student-fp32", "student-fp16", "student-int8", "student-generate", "teacher-fp32",
                *(f"teacher-cloud-{p}" for p in PROFILES)} | ({"student-genai", "student-genai-rewind"} if HAVE_GENAI else set())
    assert expected <= {k for k, p in rows.items() if p["available"]}
    assert not rows["student-tensorrt"]["available"] and "not available on this machine" in rows["student-tensorrt"]["note"]
    for key in expected:
        row = rows[key]
        assert row["frames"] == 3, key
        for stats in (row["end_to_end"], row["inference"]):
            assert _finite(stats["p50_ms"]) and _finite(stats["p99_ms"]) and stats["p50_ms"] <= stats["p99_ms"], key
        assert _finite(row["rate_hz_p50"]) and _finite(row["rate_hz_p99"]), key
        assert _finite(row["stages"]["serial"]["p50_ms"]) and row["serial_lost"] == 0, key
        assert row["parameters"] > 0 and row["flops_per_action"] > 0, key
        if row["where"] == "edge":
            assert row["measured_over_floor"] > 0, key
    cloud = rows["teacher-cloud-lan"]["stages"]
    assert {"network", "server", "encode", "preprocess"} <= set(cloud)
    assert result["compute_floor"]["gflops"] > 0 and result["threads"]["onnxruntime_intra_op"] == 1
    ratios = {r["ratio"]: r for r in result["ratios"]}
    for profile in PROFILES:
        ratio = ratios[f"edge student int8 vs cloud teacher ({profile})"]
        assert _finite(ratio["p50_ratio"]) and _finite(ratio["p99_ratio"])
    assert _finite(ratios["runtime (student fp32) vs generate()"]["p50_ratio"])
    if HAVE_GENAI:
        assert any(name.startswith("runtime (student fp32) vs onnxruntime-genai") for name in ratios)
    assert result["command"].startswith("python -m benchmarks latency") and "--quick" in result["command"]
    assert result["suite_command"].startswith("python -m benchmarks all --quick")


@needs_sim
def test_bundles_are_made_and_reused(quick_run):
    from runtime.bundle import Bundle

    made = {p: Bundle.load(quick_run["bundles"] / f"student-{p}").manifest for p in ("fp32", "fp16", "int8")}
    assert [made[p]["precision"] for p in ("fp32", "fp16", "int8")] == ["fp32", "fp16", "int8"]
    assert "derived_from" in made["int8"]["metrics"] and "int8_vs_fp32" in made["int8"]["metrics"]
    teacher = Bundle.load(quick_run["bundles"] / "teacher-fp32").manifest
    assert teacher["model"]["source_sha256"] == made["fp32"]["model"]["source_sha256"]
    assert "student-fp32: ready" not in quick_run["proc"].stdout  # the copied-in bundle was used as it was


@needs_sim
def test_quality_and_scaling_tables(quick_run):
    quality = json.loads((quick_run["out"] / "quality.json").read_text())
    names = {"teacher fp32", "student fp32", "student fp16", "student int8", *(f"teacher cloud ({p})" for p in PROFILES)}
    assert set(quality["success"]) == names
    for name, row in quality["success"].items():
        assert row["overall"]["episodes"] == 1 and 0 <= row["overall"]["success_rate"] <= 1, name
    assert set(quality["agreement"]) == {"student fp32", "student fp16", "student int8"}
    assert quality["agreement"]["student fp32"]["token_agreement"] == 1.0
    for name, row in quality["questions"].items():
        assert row["questions"] > 0 and 0 <= row["accuracy"] <= 1, name
    scaling = json.loads((quick_run["out"] / "scaling.json").read_text())
    assert {p["axis"] for p in scaling["points"]} == {"image tokens", "instruction length", "width", "depth"}
    for point in scaling["points"]:
        assert _finite(point["total_p50_ms"]) and point["floor_ms"] > 0 and point["parameters"] > 0, point
    by_axis = {(p["axis"], p["value"]): p for p in scaling["points"]}
    assert by_axis[("depth", 2)]["parameters"] > by_axis[("depth", 1)]["parameters"]
    assert by_axis[("image tokens", 9)]["flops_per_action"] > by_axis[("image tokens", 4)]["flops_per_action"]


@needs_sim
def test_csv_png_and_report_are_written(quick_run):
    import matplotlib.image

    out = quick_run["out"]
    for name in ("latency", "latency_stages", "latency_ratios", "quality_success", "quality_agreement",
                 "quality_questions", "scaling"):
        with open(out / f"{name}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows, name
    with open(out / "latency.csv", newline="") as handle:
        latency_rows = {r["key"]: r for r in csv.DictReader(handle)}
    assert float(latency_rows["student-int8"]["e2e_p99_ms"]) > 0
    for name in ("latency", "quality", "scaling"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and np.isfinite(image).all()
    assert not list(out.glob(".*tmp*")), "temporary files were left behind"
    report = (out / "report.md").read_text()
    for text in ("## Machine", "## Latency: CPU", "### Ratios", "## Quality", "## Scaling", "## Anchors",
                 "Jetson AGX Orin", "Command: `python -m benchmarks latency", "Command: `python -m benchmarks quality",
                 "Command: `python -m benchmarks scaling", "![latency](latency.png)", "not available on this machine"):
        assert text in report, text
    readme = quick_run["readme"].read_text()
    assert "old table" not in readme and "| student int8 (onnxruntime) |" in readme and readme.endswith("the rest stays\n")


@needs_sim
def test_report_command_rebuilds_from_results(quick_run, tmp_path):
    shutil.copytree(quick_run["out"], tmp_path / "copy")
    (tmp_path / "copy" / "report.md").unlink()
    from benchmarks.report import write_report

    assert "## Anchors" in write_report(tmp_path / "copy").read_text()


def test_missing_model_folder_names_the_command(tmp_path):
    from benchmarks.latency import LatencyConfig
    from benchmarks.quality import QualityConfig
    from benchmarks.scaling import ScalingConfig
    from runtime.errors import UserError

    with pytest.raises(UserError, match="python -m distill student"):
        LatencyConfig(student=str(tmp_path / "nope"), teacher=str(tmp_path)).check()
    with pytest.raises(UserError, match="python -m distill train-teacher"):
        ScalingConfig(teacher=str(tmp_path / "nope")).check()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="not a vla-edge model folder"):
        QualityConfig(student=str(tmp_path), teacher=str(tmp_path)).check()


def test_report_without_results_says_what_to_run(tmp_path):
    proc = run_module("benchmarks", "report", "--out", str(tmp_path / "none"))
    assert proc.returncode == 2 and "python -m benchmarks all" in proc.stderr


def test_every_command_has_help_with_an_example(capsys):
    from benchmarks.__main__ import cli

    for command in ("latency", "quality", "scaling", "all", "report"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "Example: python -m benchmarks " + command in text, command


def test_cuda_is_refused_where_there_is_none():
    pytest.importorskip("torch")
    import torch

    from benchmarks.common import device_info
    from runtime.errors import UserError

    if torch.cuda.is_available():
        assert device_info("cuda")["kind"] == "cuda"
    else:
        with pytest.raises(UserError, match="--device cpu"):
            device_info("cuda")


def test_percentiles_and_atomic_writers(tmp_path):
    from benchmarks.common import atomic_png, percentiles, write_csv_atomic

    stats = percentiles([0.001, 0.002, float("nan"), 0.004])
    assert stats["n"] == 3 and stats["max_ms"] == pytest.approx(4.0) and stats["p50_ms"] == pytest.approx(2.0)
    path = write_csv_atomic(tmp_path / "t.csv", [{"a": 1, "b": None}, {"a": 2, "c": 3}])
    assert path.read_text().splitlines() == ["a,b,c", "1,,", "2,,3"]
    with pytest.raises(RuntimeError, match="not a PNG"), atomic_png(tmp_path / "x.png") as tmp:
        (tmp_path / tmp).write_bytes(b"not a png")
    assert list(tmp_path.iterdir()) == [tmp_path / "t.csv"]


def test_atomic_writes_get_the_modes_open_would_give(tmp_path):
    """mkstemp makes 0600 files; results others read (CSV, report) get 0666 less the umask, and a
    rewrite keeps the mode the file already had."""
    import os

    from runtime.atomic_io import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "new.json", {"a": 1})
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.json").write_text("{}")
        (tmp_path / "kept.json").chmod(0o640)
        write_json_atomic(tmp_path / "kept.json", {"a": 2})
        assert (tmp_path / "kept.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_compute_floor_measures_one_thread_rates():
    from benchmarks.compute_floor import measure_matmul_rates

    floor = measure_matmul_rates([(8, 32, 64), (1, 32, 64)], quick=True)
    assert floor["gflops"] > 0 and floor["threads"] == 1 and len(floor["shapes"]) == 2
    assert "numpy_gflops" in floor["shapes"][0] and "onnxruntime_gflops" in floor["shapes"][0]


def test_a_bundle_of_other_weights_is_stale(smoke_bundle, trained_smoke_model, tmp_path):
    from benchmarks.bundles import bundle_status

    assert bundle_status(smoke_bundle, trained_smoke_model, "fp32") is None
    assert bundle_status(smoke_bundle, trained_smoke_model, "int8").startswith("precision fp32")
    other = tmp_path / "other"
    shutil.copytree(trained_smoke_model, other)
    with open(other / "model.safetensors", "ab") as handle:
        handle.write(b"\0")
    assert "other weights" in bundle_status(smoke_bundle, other, "fp32")
    assert bundle_status(tmp_path / "missing", other, "fp32") == "missing"


def test_random_frames_follow_the_camera_rig_of_the_models():
    from types import SimpleNamespace

    from benchmarks.latency import benchmark_frames, rig_views
    from runtime.errors import UserError

    one, rig = SimpleNamespace(views=1), SimpleNamespace(views=2)
    assert rig_views(one, one) == 1
    assert rig_views(rig, one) == 2  # a one-view model resizes any frame; the rig model needs its own
    with pytest.raises(UserError, match="different camera rigs"):
        rig_views(rig, SimpleNamespace(views=3))
    frames, instructions, source = benchmark_frames(5, None, 32, seed=1, views=2)
    assert frames.shape == (5, 32, 64, 3) and frames.dtype == np.uint8 and len(instructions) == 5
    assert "2 views" in source
    again, _, _ = benchmark_frames(5, None, 32, seed=1, views=2)
    assert np.array_equal(frames, again)  # seeded
