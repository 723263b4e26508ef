"""Distillation: the student moves toward the teacher (by numbers), and bad pairings are refused."""

import json
import shutil

import pytest

from conftest import needs_sim, run_module

torch = pytest.importorskip("torch")
pytestmark = needs_sim


@pytest.fixture(scope="module")
def teacher(trained_smoke_model):
    return trained_smoke_model


def _kl_and_agreement(student, labeler, data, labels):
    from distill.distill_loss import kl_to_teacher
    from distill.student import token_agreement

    student.eval()
    rows = torch.arange(len(data))
    batch = data.batch(rows, data.frame_prompt[rows], data.action_targets[rows])
    with torch.no_grad():
        logits = student(student.preprocess(batch["frames"]), batch["prompt_ids"], batch["prompt_mask"],
                         batch["target_inputs"])
    kl = float(kl_to_teacher(logits[..., student.action_ids], labels.action_logits[rows], 2.0))
    return kl, token_agreement(student, labeler, data, data, max_frames=len(data))


def test_distillation_lowers_kl_and_raises_agreement(teacher, tiny_dataset, tmp_path):
    from distill.dataset import Dataset
    from distill.distill_loss import DistillWeights, distill_loss
    from distill.model import VlaModel
    from distill.reference_policy import load_vla_folder
    from distill.student import SMOKE_STUDENT_SIZES, student_model_config
    from distill.teacher_data import CoTrainingData
    from distill.teacher_labels import VlaTeacher, label_dataset
    from distill.train_teacher import make_optimizer, smoke_config
    from distill.training import LoopSettings, run_loop

    teacher_model, text_tok, action_tok = load_vla_folder(teacher)
    ds = Dataset.open(tiny_dataset)
    data = CoTrainingData.build(ds, text_tok, action_tok, [e.index for e in ds.episodes], 32)
    labeler = VlaTeacher(teacher_model, teacher)
    labels = label_dataset(labeler, data, tmp_path / "labels", progress=False)
    torch.manual_seed(0)
    student = VlaModel(student_model_config(teacher_model.config, SMOKE_STUDENT_SIZES))
    kl_before, agree_before = _kl_and_agreement(student, labeler, data, labels)
    optimizer = make_optimizer(student, smoke_config("", ""))
    state = {"step": 0, "train_seconds": 0.0, "log": []}
    run_loop(student, optimizer, state, LoopSettings(steps=150, seed=0, lr=3e-3, warmup_steps=5),
             sample=lambda rng: data.sample(rng, 16, 0.66, 0),
             loss_fn=lambda m, b: distill_loss(m, b, labels, DistillWeights(), torch.device("cpu")),
             save=lambda st: None, progress=False)
    kl_after, agree_after = _kl_and_agreement(student, labeler, data, labels)
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)
    assert agree_after > agree_before + 0.1, (agree_before, agree_after)


def test_student_command_writes_metrics(teacher, tiny_dataset, tmp_path):
    out = tmp_path / "student"
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset), "--out", str(out),
                      "--smoke", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("token_agreement_heldout", "parameter_ratio", "flops_ratio", "train_seconds", "phases", "heldout"):
        assert key in metrics
    assert [p["phase"] for p in metrics["phases"]] == [0, 1]
    assert metrics["phases"][1]["frames"] > metrics["phases"][0]["frames"]  # the round added on-policy frames
    round_ds = json.loads((out / "rounds" / "round_1" / "manifest.json").read_text())
    assert round_ds["recording"]["policy"].startswith("student-round-1")
    assert set(metrics["student"]["closed_loop"]) == set(metrics["teacher"]["closed_loop"])


def test_expert_labelled_round_evaluated_last_in_workers(teacher, tiny_dataset, tmp_path):
    """--round-labeller expert writes the round's actions from the scripted expert; --eval-phases last skips the
    closed loop of the offline phase; --eval-workers 2 runs the final one in two processes (both tasks' seeds)."""
    from distill.dataset import Dataset

    out = tmp_path / "student"
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset), "--out", str(out),
                      "--smoke", "--no-progress", "--round-labeller", "expert", "--eval-phases", "last",
                      "--eval-workers", "2", "--round-seed-start", "210000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["round_labeller"] == "expert"
    assert metrics["phases"][0]["closed_loop"] is None
    final = metrics["phases"][1]["closed_loop"]
    tasks = sorted(Dataset.open(tiny_dataset).tasks)
    assert sorted(k for k in final if k != "overall") == tasks
    assert final["overall"]["episodes"] == len(tasks) * metrics["config"]["eval_seeds"]
    assert metrics["student"]["closed_loop"] == final
    round_ds = Dataset.open(out / "rounds" / "round_1")
    assert round_ds.manifest["recording"]["policy"] == "student-round-1-labelled-by-expert"
    assert sorted({ep["seed"] for ep in round_ds.manifest["episodes"]}) == [211000]  # round 1: start + 1000


def test_bad_round_settings_are_refused_before_anything_is_written(teacher, tiny_dataset, tmp_path):
    out = tmp_path / "student"
    for flags, words in ((["--eval-workers", "0"], "--eval-workers"), (["--round-labeller", "oracle"], "oracle"),
                         (["--round-seed-start", "-1"], "--round-seed-start")):
        proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset),
                          "--out", str(out), "--smoke", "--no-progress", *flags)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-2000:]
        assert not out.exists()


def test_label_cache_from_another_teacher_is_refused(teacher, tiny_dataset, tmp_path):
    from safetensors.torch import load_file, save_file

    labels = tmp_path / "labels"
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset), "--out",
                      str(tmp_path / "a"), "--labels", str(labels), "--smoke", "--rounds", "0", "--eval-seeds", "1",
                      "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = tmp_path / "other_teacher"
    shutil.copytree(teacher, other, ignore=shutil.ignore_patterns("checkpoint"))
    weights = load_file(str(other / "model.safetensors"))
    weights = {k: v + 0.01 for k, v in weights.items()}
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    before = {p.name: p.read_bytes() for p in labels.iterdir()}
    proc = run_module("distill", "student", "--teacher", str(other), "--dataset", str(tiny_dataset), "--out",
                      str(tmp_path / "b"), "--labels", str(labels), "--smoke", "--no-progress")
    assert proc.returncode == 2 and "another teacher" in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1
    assert {p.name: p.read_bytes() for p in labels.iterdir()} == before  # nothing overwritten


def test_student_with_other_action_ids_is_refused(teacher, tiny_dataset, tmp_path):
    out = tmp_path / "student"
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset), "--out", str(out),
                      "--smoke", "--rounds", "0", "--eval-seeds", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config_path = out / "checkpoint" / "config.json"
    config = json.loads(config_path.read_text())
    config["action_ids"] = list(range(len(config["action_ids"])))  # another table
    config_path.write_text(json.dumps(config))
    weights_before = (out / "checkpoint" / "model.safetensors").read_bytes()
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset), "--out", str(out),
                      "--smoke", "--steps", "40", "--rounds", "0", "--no-progress")
    assert proc.returncode == 2 and "action-id table" in proc.stderr, proc.stderr[-2000:]
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == weights_before
    # the same student as a warm start of a new run is refused before anything is written
    fresh = tmp_path / "fresh"
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset), "--out",
                      str(fresh), "--init-from", str(out / "checkpoint"), "--smoke", "--rounds", "0", "--no-progress")
    assert proc.returncode == 2 and "--init-from" in proc.stderr and "action-id table" in proc.stderr, proc.stderr
    assert not fresh.exists()


def test_empty_dataset_is_refused(teacher, tiny_dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    manifest["episodes"], manifest["num_frames"] = [], 0
    (empty / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "student"
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(empty), "--out", str(out),
                      "--smoke", "--no-progress")
    assert proc.returncode == 2 and "empty" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_init_from_continues_a_student(teacher, tiny_dataset, tmp_path):
    """--init-from starts a new run from a student's weights and sizes: its first losses are the trained ones."""
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--teacher", str(teacher), "--dataset", str(tiny_dataset), "--labels", str(tmp_path / "labels"),
              "--smoke", "--rounds", "0", "--eval-seeds", "1", "--no-progress"]
    proc = run_module("distill", "student", *common, "--out", str(first), "--sizes", "text_width=24")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_module("distill", "student", *common, "--out", str(second), "--init-from", str(first), "--steps", "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, second))
    assert a["config"]["sizes"]["text_width"] == b["config"]["sizes"]["text_width"] == 24
    assert b["config"]["init_from"] == str(first)
    assert b["loss_log"][0]["loss"] < a["loss_log"][0]["loss"] - 0.2, (a["loss_log"][0], b["loss_log"][0])


def test_merge_init_blends_a_finished_run_with_its_start(teacher, tiny_dataset, tmp_path):
    """--merge-init 0.5 rerun on a finished --init-from run: no more training, the written weights are the
    midpoint of the start's and the checkpoint's, evaluated as such; the trained run's closed loop is kept."""
    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--teacher", str(teacher), "--dataset", str(tiny_dataset), "--labels", str(tmp_path / "labels"),
              "--smoke", "--rounds", "0", "--eval-seeds", "1", "--no-progress"]
    assert run_module("distill", "student", *common, "--out", str(first)).returncode == 0
    again = [*common, "--out", str(second), "--init-from", str(first), "--steps", "10"]
    assert run_module("distill", "student", *again).returncode == 0
    trained = json.loads((second / "metrics.json").read_text())
    proc = run_module("distill", "student", *again, "--merge-init", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads((second / "metrics.json").read_text())
    assert merged["steps"] == trained["steps"] == 10  # nothing trained again
    start, end = load_file(str(first / "model.safetensors")), load_file(str(second / "checkpoint" / "model.safetensors"))
    written = load_file(str(second / "model.safetensors"))
    moved = [k for k in written if not torch.equal(start[k], end[k])]
    assert moved and merged["merge"]["tensors"] == len(written)
    for k in written:
        torch.testing.assert_close(written[k], (start[k] + end[k]) / 2)
    assert merged["merge"]["closed_loop_trained"] == trained["student"]["closed_loop"]
    assert merged["student"]["closed_loop"] == merged["merge"]["closed_loop"]
    assert merged["merge"]["closed_loop"]["overall"]["episodes"] == trained["student"]["closed_loop"]["overall"]["episodes"]
    assert not (second / "merged.tmp").exists()
    for flags, words in ((["--merge-init", "0.5"], "pass --init-from"), (["--merge-init", "1.5"], "(0, 1]")):
        out = tmp_path / "refused"
        proc = run_module("distill", "student", *common, "--out", str(out), *flags)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-2000:]
        assert not out.exists()


def test_sizes_option_changes_only_known_fields():
    from distill.student import STUDENT_SIZES, parse_sizes
    from runtime.errors import UserError

    sizes = parse_sizes("vision_width=96, text-width=112")
    assert (sizes.vision_width, sizes.text_width, sizes.text_layers) == (96, 112, STUDENT_SIZES.text_layers)
    for bad, message in (("vision_depth=3", "is not <field>=<integer>"), ("views=2", "is not <field>=<integer>"),
                         ("text_width=ten", "is not <field>=<integer>"), ("vision_width=95", "multiples of")):
        with pytest.raises(UserError, match=message):
            parse_sizes(bad)


def test_init_from_a_folder_that_is_not_a_student_is_refused(teacher, tiny_dataset, tmp_path):
    out = tmp_path / "student"
    proc = run_module("distill", "student", "--teacher", str(teacher), "--dataset", str(tiny_dataset), "--out", str(out),
                      "--smoke", "--no-progress", "--init-from", str(tiny_dataset))
    assert proc.returncode == 2 and "no readable vla-edge config.json" in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1
    assert not out.exists()  # nothing written
