"""The closed-loop evaluator: any Policy, unseen seeds, the JSON report and the printed table."""

import json

import numpy as np
import pytest

from conftest import TINY_IMAGE, needs_sim, run_module
from distill.dataset import Dataset
from distill.evaluate import EvalConfig, check_unseen, evaluate, format_table
from runtime.errors import UserError
from runtime.policy import Action, Observation, Policy

pytestmark = needs_sim


class Quitter:
    """Asks to terminate at once: never succeeds."""

    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1

    def act(self, observation: Observation) -> Action:
        assert observation.image.shape == (TINY_IMAGE, TINY_IMAGE, 3)
        return Action(values=np.array([0, 0, 0, 0, 1], np.float32))


class Idle:
    """Holds still until the step limit."""

    def reset(self):
        pass

    def act(self, observation):
        return Action(values=np.zeros(5, np.float32))


class FourDims:
    def reset(self):
        pass

    def act(self, observation):
        return Action(values=np.zeros(4, np.float32))


def _config(**kw):
    base = dict(tasks="drawer-open", seeds_per_task=2, image_size=TINY_IMAGE, max_steps=30)
    base.update(kw)
    return EvalConfig(**base)


def test_protocol_is_structural():
    assert isinstance(Quitter(), Policy) and isinstance(Idle(), Policy)


def test_terminate_and_step_limit_end_episodes():
    quitter = Quitter()
    report = evaluate(lambda task: quitter, _config(), "quitter", progress=False)
    assert report["tasks"]["drawer-open-v3"]["success_rate"] == 0.0
    assert {e["ended_by"] for e in report["episodes"]} == {"terminate"}
    assert {e["length"] for e in report["episodes"]} == {2}  # 3 terminates in a row: 2 steps executed
    assert quitter.resets == 2  # reset once per episode
    report = evaluate(lambda task: Idle(), _config(), "idle", progress=False)
    assert {(e["ended_by"], e["length"]) for e in report["episodes"]} == {("max_steps", 30)}


def test_expert_report_and_table():
    from distill.expert import ScriptedExpert

    report = evaluate(ScriptedExpert, _config(tasks="drawer-open,reach", max_steps=200), "expert", progress=False)
    assert report["tasks"]["overall"]["episodes"] == 4
    assert report["tasks"]["overall"]["success_rate"] == 1.0
    assert [e["seed"] for e in report["episodes"]] == [100_000, 100_001] * 2
    table = format_table(report)
    assert "drawer-open-v3" in table and "overall" in table and "4/4" in table


class Flicker:
    """Asks to terminate on every other step: never three in a row."""

    def __init__(self):
        self.t = 0

    def reset(self):
        self.t = 0

    def act(self, observation):
        self.t += 1
        return Action(values=np.array([0, 0, 0, 0, self.t % 2], np.float32))


def test_a_stray_terminate_token_does_not_end_the_episode():
    report = evaluate(lambda task: Flicker(), _config(), "flicker", progress=False)
    assert {(e["ended_by"], e["length"]) for e in report["episodes"]} == {("max_steps", 30)}
    report = evaluate(lambda task: Flicker(), _config(terminate_after=1), "flicker", progress=False)
    assert {(e["ended_by"], e["length"]) for e in report["episodes"]} == {("terminate", 0)}


def test_wrong_action_size_is_refused():
    with pytest.raises(UserError, match="5 values"):
        evaluate(lambda task: FourDims(), _config(), "four", progress=False)


def test_seen_seeds_are_refused(tiny_dataset):
    with pytest.raises(UserError, match="recorded in"):
        check_unseen(_config(seed_start=0), Dataset.open(tiny_dataset))
    check_unseen(_config(), Dataset.open(tiny_dataset))  # default seeds are unseen


def test_record_then_evaluate_from_the_command_line(tiny_dataset, tmp_path):
    out = tmp_path / "eval.json"
    proc = run_module("distill", "evaluate", "--policy", "expert", "--tasks", "drawer-open,reach", "--seeds", "3",
                      "--dataset", str(tiny_dataset), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["config"]["image_size"] == TINY_IMAGE  # taken from the dataset
    assert set(report["tasks"]) == {"drawer-open-v3", "reach-v3", "overall"}
    for row in report["tasks"].values():
        assert {"success_rate", "mean_length", "wall_s"} <= set(row)
    assert "overall" in proc.stdout and "report:" in proc.stdout


def test_unknown_task_writes_nothing(tmp_path):
    out = tmp_path / "new"
    for args in (["record", "--out", str(out), "--tasks", "drawer-opn"],
                 ["evaluate", "--tasks", "fly", "--out", str(out / "eval.json")]):
        proc = run_module("distill", *args)
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: unknown task") and proc.stderr.count("\n") == 1
        assert "python -m distill tasks" in proc.stderr
        assert not out.exists()


def test_unknown_policy_is_a_clear_error(tmp_path):
    proc = run_module("distill", "evaluate", "--policy", "gpt", "--tasks", "reach", "--out", str(tmp_path / "e.json"))
    assert proc.returncode == 2 and "unknown policy 'gpt'" in proc.stderr


def test_workers_give_the_same_episodes_as_one_process(tmp_path):
    from distill.evaluate import evaluate_in_workers
    from distill.expert import ScriptedExpert

    config = _config(tasks="drawer-open,reach,push", max_steps=120)
    single = evaluate(ScriptedExpert, config, "expert", progress=False)
    spread = evaluate_in_workers("expert", _config(tasks="drawer-open,reach,push", max_steps=120), 2, progress=False)
    key = lambda e: (e["task"], e["seed"], e["success"], e["length"], e["ended_by"])  # noqa: E731
    assert [key(e) for e in spread["episodes"]] == [key(e) for e in single["episodes"]]
    assert spread["tasks"]["overall"]["successes"] == single["tasks"]["overall"]["successes"]
    assert spread["workers"] == 2


def test_a_model_is_evaluated_on_the_frames_it_was_trained_on(trained_smoke_model, tmp_path):
    """Without --dataset, the image size and camera come from the model's config, not the defaults."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained_smoke_model, model, ignore=shutil.ignore_patterns("checkpoint"))
    config = json.loads((model / "config.json").read_text())
    assert config["camera"] == "corner4"  # recorded from the training dataset
    config["camera"] = "corner3"
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "eval.json"
    proc = run_module("distill", "evaluate", "--policy", str(model), "--tasks", "reach", "--seeds", "1",
                      "--max-steps", "3", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["config"]["camera"] == "corner3" and report["config"]["image_size"] == TINY_IMAGE
