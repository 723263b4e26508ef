"""The demonstration dataset: format, statistics, terminate labels, resume, and damaged input."""

import json
import shutil

import numpy as np
import pytest

from conftest import TINY_EPISODES, TINY_IMAGE, needs_sim, run_module
from distill.dataset import ACTION_NAMES, ActionStats, Dataset, DatasetError

pytestmark = needs_sim


def test_tiny_dataset_layout(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    ds.verify()
    assert len(ds) == 2 * TINY_EPISODES
    assert ds.image["height"] == TINY_IMAGE and ds.image["channel_order"] == "RGB"
    assert ds.action_names == ACTION_NAMES
    assert set(ds.tasks) == {"drawer-open-v3", "reach-v3"}
    for ep in ds.iter_episodes():
        assert ep.frames.shape == (ep.info.length, TINY_IMAGE, TINY_IMAGE, 3)
        assert ep.info.success and ep.info.instruction == ds.tasks[ep.info.task]
        terminate = ep.actions[:, ACTION_NAMES.index("terminate")]
        s = ep.info.success_step
        assert np.all(terminate[:s] == 0) and np.all(terminate[s:] == 1)
        assert ep.info.length == s + 3  # post-success steps
        assert ep.success[s - 1] and not ep.success[: s - 1].any()
        # Proprioception is the first four entries of the simulator observation.
        np.testing.assert_allclose(ep.state, ep.sim_obs[:, :4], atol=1e-6)


def test_manifest_statistics_are_percentiles_of_the_actions(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    actions = ds.all_actions()
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    p01 = np.asarray(manifest["action"]["p01"])
    p99 = np.asarray(manifest["action"]["p99"])
    np.testing.assert_allclose(p01[:4], np.percentile(actions[:, :4], 1, axis=0), atol=1e-5)
    np.testing.assert_allclose(p99[:4], np.percentile(actions[:, :4], 99, axis=0), atol=1e-5)
    assert (p01[4], p99[4]) == (0.0, 1.0)  # terminate is a flag


def test_episode_chunks_hold_no_pickled_objects(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    with np.load(tiny_dataset / ds.episodes[0].file, allow_pickle=False) as chunk:
        assert all(chunk[k].dtype != object for k in chunk.files)


def test_constant_dimension_gets_a_nonempty_range():
    actions = np.zeros((50, 5), np.float32)
    actions[:, 0] = np.linspace(-1, 1, 50)
    stats = ActionStats.from_actions(actions)
    assert np.all(stats.p99 > stats.p01)


def test_resume_records_only_missing_episodes(tiny_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "episodes").iterdir()}
    proc = run_module("distill", "record", "--out", str(copy), "--tasks", "drawer-open,reach", "--episodes", "3",
                      "--image-size", str(TINY_IMAGE), "--post-success-steps", "3", "--resume", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    ds = Dataset.open(copy)
    assert len(ds) == 6
    assert sorted(ep.seed for ep in ds.episodes if ep.task == "reach-v3") == [0, 1, 2]
    for name, mtime in before.items():  # earlier chunks were not rewritten
        assert (copy / "episodes" / name).stat().st_mtime_ns == mtime
    assert not list(copy.rglob("*.tmp"))


def test_two_workers_record_the_same_dataset_file_for_file(tiny_dataset, tmp_path):
    out = tmp_path / "parallel"
    proc = run_module("distill", "record", "--out", str(out), "--tasks", "drawer-open,reach", "--episodes",
                      str(TINY_EPISODES), "--image-size", str(TINY_IMAGE), "--post-success-steps", "3",
                      "--workers", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    serial = json.loads((tiny_dataset / "manifest.json").read_text())
    parallel = json.loads((out / "manifest.json").read_text())
    assert parallel == serial  # same episodes in the same order, same sha256 per chunk, same statistics
    assert sorted(p.name for p in (out / "episodes").iterdir()) == sorted(
        p.name for p in (tiny_dataset / "episodes").iterdir())


def test_a_failing_worker_answers_with_the_error_and_stops(tmp_path):
    from distill.record_workers import _parse_answer, serve
    from runtime.errors import UserError

    answers: list[str] = []
    spec = {"out": str(tmp_path), "layout": {"image_size": 32, "camera": "corner4", "max_steps": 5,
                                             "post_success_steps": 0, "supersample": 1}}
    serve(spec, ['{"task": "no-such-task", "seed": 0, "index": 0}\n', '{"task": "reach", "seed": 0, "index": 1}\n'],
          answers.append)
    assert len(answers) == 1  # it stopped at the first failure
    with pytest.raises(UserError, match="a recording worker failed: no-such-task seed 0"):
        _parse_answer(answers[0], None)
    assert not list(tmp_path.rglob("*.npz"))


def test_refuses_to_overwrite_or_mix_layouts(tiny_dataset, tmp_path):
    proc = run_module("distill", "record", "--out", str(tiny_dataset), "--tasks", "reach", "--episodes", "1",
                      "--no-progress")
    assert proc.returncode == 2 and "already holds a dataset" in proc.stderr
    proc = run_module("distill", "record", "--out", str(tiny_dataset), "--tasks", "reach", "--episodes", "1",
                      "--image-size", "64", "--resume", "--no-progress")
    assert proc.returncode == 2 and "same --image-size" in proc.stderr
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    proc = run_module("distill", "record", "--out", str(other), "--tasks", "reach", "--episodes", "1", "--no-progress")
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]


def test_truncated_episode_is_a_clear_error(tiny_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    chunk = copy / "episodes" / "000001.npz"
    chunk.write_bytes(chunk.read_bytes()[:200])
    with pytest.raises(DatasetError, match="truncated"):
        Dataset.open(copy)
    proc = run_module("distill", "inspect", str(copy))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "000001.npz" in proc.stderr and "--resume" in proc.stderr


def test_same_size_corruption_is_caught_by_verify(tiny_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    chunk = copy / "episodes" / "000000.npz"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    Dataset.open(copy)  # sizes still match
    with pytest.raises(DatasetError, match="sha256"):
        Dataset.open(copy).verify()


@pytest.mark.parametrize("damage", ["no_manifest", "bad_json", "wrong_format", "missing_chunk"])
def test_folder_that_is_not_a_dataset(tiny_dataset, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    manifest = copy / "manifest.json"
    if damage == "no_manifest":
        manifest.unlink()
    elif damage == "bad_json":
        manifest.write_text(manifest.read_text()[:100])
    elif damage == "wrong_format":
        manifest.write_text(json.dumps({"format": "something-else"}))
    else:
        (copy / "episodes" / "000000.npz").unlink()
    proc = run_module("distill", "inspect", str(copy))
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
