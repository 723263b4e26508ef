"""Shared fixtures. Environment first: these must be set before torch or MuJoCo is imported."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HAVE_SIM = importlib.util.find_spec("metaworld") is not None and importlib.util.find_spec("mujoco") is not None

needs_sim = pytest.mark.skipif(not HAVE_SIM, reason="Meta-World is not installed: pip install '.[train]'")

# A tiny recording shared by the dataset and evaluator tests: 2 tasks x 2 episodes at 32 px.
TINY_TASKS = "drawer-open,reach"
TINY_EPISODES = 2
TINY_IMAGE = 32


def run_module(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m <args>` as a user would, capturing output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A real dataset recorded through the command line (2 tasks x 2 expert episodes, 32x32 frames)."""
    if not HAVE_SIM:
        pytest.skip("Meta-World is not installed")
    out = tmp_path_factory.mktemp("data") / "tiny"
    proc = run_module(
        "distill", "record", "--out", str(out), "--tasks", TINY_TASKS, "--episodes", str(TINY_EPISODES),
        "--image-size", str(TINY_IMAGE), "--post-success-steps", "3", "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def trained_smoke_model(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny VLA trained a little longer than --smoke on the tiny dataset, so that it has opinions:
    the teacher of the distillation tests and the checkpoint of the export tests."""
    pytest.importorskip("torch")
    from distill.train_teacher import smoke_config, train_teacher

    out = tmp_path_factory.mktemp("model") / "smoke80"
    config = smoke_config(str(tiny_dataset), str(out))
    config.steps = 80
    train_teacher(config, progress=False)
    return out


@pytest.fixture(scope="session")
def smoke_bundle(trained_smoke_model, tiny_dataset, tmp_path_factory) -> Path:
    """The smoke model exported to an fp32 bundle (32 px frames, corner4): for every test that needs a
    real ONNX bundle (export, runtime, cloud path, serial closed loop). Treat it as read-only."""
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("bundles") / "fp32"
    proc = run_module("export", str(trained_smoke_model), "--out", str(out), "--dataset", str(tiny_dataset),
                      "--parity-frames", "30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
