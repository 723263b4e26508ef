"""The reference teacher's pieces: tokenizer, scene questions, training (smoke), checkpoints,
masked decoding, the PyTorch reference policy, and damaged model folders."""

import json
import shutil

import numpy as np
import pytest

from conftest import needs_sim, run_module
from runtime.errors import UserError

torch = pytest.importorskip("torch")
pytestmark = needs_sim


@pytest.fixture(scope="module")
def smoke_teacher(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "smoke"
    proc = run_module("distill", "train-teacher", "--dataset", str(tiny_dataset), "--out", str(out), "--smoke",
                      "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


def test_text_tokenizer_reserves_unused_ids_for_actions():
    from distill.text_tokenizer import build_corpus, build_text_tokenizer

    tok, table = build_text_tokenizer()
    used = {i for text in build_corpus() for i in tok.encode(text).ids}
    assert len(table.ids) == 256 and not used & set(table.ids)
    assert {0, 1, 2}.isdisjoint(table.ids)  # special tokens are never action ids
    again, table2 = build_text_tokenizer()
    assert table2.ids == table.ids and again.to_str() == tok.to_str()  # deterministic


def test_scene_questions_follow_the_simulator_state(tiny_dataset):
    from distill.dataset import Dataset
    from distill.vqa import answer

    ds = Dataset.open(tiny_dataset)
    ep = next(ds.load_episode(e.index) for e in ds.episodes if e.task == "drawer-open-v3")
    s = ep.info.success_step
    assert answer("success", "drawer-open-v3", ep.sim_obs, 0, s)[1] == "no"
    assert answer("success", "drawer-open-v3", ep.sim_obs, s, s)[1] == "yes"
    assert answer("open_closed", "drawer-open-v3", ep.sim_obs, 1, s) == ("is the drawer open or closed?", "closed")
    assert answer("open_closed", "drawer-open-v3", ep.sim_obs, s, s)[1] == "open"
    assert answer("subject", "drawer-open-v3", ep.sim_obs, 0, s)[1] == "the drawer"
    assert answer("open_closed", "reach-v3", ep.sim_obs, 0, s) is None  # not a question for that task


def tiny_training_data(tiny_dataset, **options):
    """(dataset, action tokenizer, CoTrainingData of every episode at 32 px) for the tiny recording."""
    from distill.dataset import Dataset
    from distill.teacher_data import CoTrainingData
    from distill.text_tokenizer import build_text_tokenizer
    from runtime.action_tokenizer import ActionTokenizer

    ds = Dataset.open(tiny_dataset)
    text_tok, table = build_text_tokenizer()
    stats = ds.action_stats
    action_tok = ActionTokenizer.from_statistics(stats.names, low=stats.p01, high=stats.p99, table=table)
    data = CoTrainingData.build(ds, text_tok, action_tok, [e.index for e in ds.episodes], 32, **options)
    return ds, action_tok, data


def test_terminate_delay_moves_the_stop_label_and_nothing_else(tiny_dataset):
    from distill.dataset import TERMINATE_INDEX

    ds, action_tok, plain = tiny_training_data(tiny_dataset)
    delayed = tiny_training_data(tiny_dataset, terminate_delay=2)[2]
    stop = action_tok.encode(np.eye(1, 5, TERMINATE_INDEX, dtype=np.float32))[0, TERMINATE_INDEX]
    for rows in delayed.episode_rows:
        s = ds.episodes[rows.episode].success_step  # the tiny dataset records 3 frames after success
        assert s is not None and rows.frame_end - rows.frame_start == s + 3
        stops = (delayed.action_targets[rows.frame_start:rows.frame_end, TERMINATE_INDEX] == stop).numpy()
        assert stops.tolist() == [False] * (s + 2) + [True]
        was = (plain.action_targets[rows.frame_start:rows.frame_end, TERMINATE_INDEX] == stop).numpy()
        assert was.tolist() == [False] * s + [True] * 3
    same = [d for d in range(5) if d != TERMINATE_INDEX]
    assert torch.equal(plain.action_targets[:, same], delayed.action_targets[:, same])
    assert torch.equal(plain.qa_answer, delayed.qa_answer)  # "has the task succeeded?" keeps the true answer


def test_question_stride_keeps_every_kth_frames_questions(tiny_dataset):
    every = tiny_training_data(tiny_dataset)[2]
    strided = tiny_training_data(tiny_dataset, question_every=3)[2]
    assert torch.equal(every.action_targets, strided.action_targets)  # the robot frames are all kept
    for full, part in zip(every.episode_rows, strided.episode_rows):
        local = strided.qa_frame[part.qa_start:part.qa_end] - part.frame_start
        assert len(local) and bool((local % 3 == 0).all())
        keep = [i for i in range(full.qa_start, full.qa_end) if (every.qa_frame[i] - full.frame_start) % 3 == 0]
        assert torch.equal(strided.qa_answer[part.qa_start:part.qa_end], every.qa_answer[keep])
        assert strided.qa_kind[part.qa_start:part.qa_end] == [every.qa_kind[i] for i in keep]
    assert 0 < len(strided.qa_frame) < len(every.qa_frame) / 2


def test_sampling_can_weight_the_tail_of_the_frames(tiny_dataset):
    data = tiny_training_data(tiny_dataset)[2]
    tail_from = data.episode_rows[-1].frame_start  # stands for a round's frames after the demonstrations
    share = (len(data) - tail_from) / len(data)

    def tail_share(ratio: float) -> float:
        rng = np.random.default_rng(0)
        rows = torch.cat([data.sample(rng, 64, 1.0, 0, tail_from, ratio)["robot_rows"] for _ in range(20)])
        return float((rows >= tail_from).float().mean())

    assert tail_share(1.0) == 1.0
    assert abs(tail_share(0.0) - share) < 0.08  # uniform
    assert abs(tail_share(0.5) - (0.5 + 0.5 * share)) < 0.08


def test_student_reads_the_teachers_stop_label_delay(smoke_teacher, tmp_path):
    from distill.train_teacher import trained_terminate_delay

    assert trained_terminate_delay(smoke_teacher) == 0  # trained without --terminate-delay
    record = json.loads((smoke_teacher / "training.json").read_text())
    record["config"]["terminate_delay"] = 5
    (tmp_path / "training.json").write_text(json.dumps(record))
    assert trained_terminate_delay(tmp_path) == 5
    assert trained_terminate_delay(tmp_path / "missing") == 0  # a Hugging Face teacher: no training.json
    for damaged in ("{not json", "[5]", '{"config": {"terminate_delay": -1}}', '{"config": {"terminate_delay": "5"}}'):
        (tmp_path / "training.json").write_text(damaged)
        with pytest.raises(UserError, match="training.json is damaged"):
            trained_terminate_delay(tmp_path)


def test_smoke_training_lowers_the_loss_and_writes_a_complete_folder(smoke_teacher):
    report = json.loads((smoke_teacher / "training.json").read_text())
    losses = [entry["loss"] for entry in report["loss_log"] if "loss" in entry]
    assert losses[-1] < losses[0] - 0.5, losses
    for name in ("config.json", "model.safetensors", "tokenizer.json", "action_tokenizer.json", "training.json"):
        assert (smoke_teacher / name).is_file(), name
    assert report["seed"] == 0 and report["command"][:3] == ["python", "-m", "distill"]


def test_checkpoint_round_trips_with_identical_logits(smoke_teacher, tmp_path):
    from distill.model import VlaModel

    from transformers import AutoModel

    model = VlaModel.from_pretrained(smoke_teacher).eval()
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path).eval()  # a plain from_pretrained call
    assert type(again) is VlaModel
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    prompt = torch.randint(3, 100, (2, 6))
    inputs = torch.randint(3, 100, (2, 4))
    with torch.no_grad():
        a = model(pixels, prompt, torch.ones_like(prompt), inputs)
        b = again(pixels, prompt, torch.ones_like(prompt), inputs)
    assert torch.equal(a, b)


def test_resumed_training_equals_uninterrupted_training(tiny_dataset, tmp_path):
    from distill.model import VlaModel
    from distill.train_teacher import smoke_config, train_teacher

    straight = smoke_config(str(tiny_dataset), str(tmp_path / "straight"))
    straight.steps = 20
    train_teacher(straight, progress=False)
    first = smoke_config(str(tiny_dataset), str(tmp_path / "resumed"))
    first.steps, first.stop_at = 20, 10  # interrupted half way
    train_teacher(first, progress=False)
    second = smoke_config(str(tiny_dataset), str(tmp_path / "resumed"))
    second.steps = 20
    train_teacher(second, progress=False)
    a = VlaModel.from_pretrained(tmp_path / "straight").state_dict()
    b = VlaModel.from_pretrained(tmp_path / "resumed").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_dagger_round_records_teacher_rollouts_labelled_by_the_expert(tiny_dataset, tmp_path):
    from distill.dataset import Dataset
    from distill.expert import ScriptedExpert
    from distill.train_teacher import smoke_config, train_teacher
    from runtime.policy import Observation

    config = smoke_config(str(tiny_dataset), str(tmp_path / "dagger"))
    config.steps, config.rounds, config.round_steps, config.round_episodes = 10, 1, 6, 1
    report = train_teacher(config, progress=False)
    assert report["steps"] == 16 and [r["round"] for r in report["rounds"]] == [1]
    round_ds = Dataset.open(tmp_path / "dagger" / "rounds" / "round_1")
    assert round_ds.manifest["recording"]["policy"] == "teacher-round-1-labelled-by-expert"
    assert sorted(e.seed for e in round_ds.episodes) == [301_000, 301_000]  # one per task, the round's seeds
    assert sum(r["episodes"] for r in report["rounds"][0]["rollouts_before_training"].values()) == 2
    for ep in round_ds.episodes:
        chunk = round_ds.load_episode(ep.index)
        expert = ScriptedExpert(ep.task)
        for t in range(0, ep.length, 7):  # every label is what the expert would do in the visited state
            want = expert.act(Observation(image=chunk.frames[t], instruction=ep.instruction, sim_state=chunk.sim_obs[t]))
            np.testing.assert_allclose(chunk.actions[t, :4], want.values[:4], atol=1e-5)
    # Running the same command again finds everything done: nothing re-recorded, no step trained.
    again = train_teacher(config, progress=False)
    assert again["steps"] == 16 and len(Dataset.open(tmp_path / "dagger" / "rounds" / "round_1").episodes) == 2


def test_masked_decoding_never_emits_a_text_token(smoke_teacher):
    from distill.decoding import allowed_mask, greedy_decode
    from distill.model import VlaModel

    model = VlaModel.from_pretrained(smoke_teacher).eval()
    text_id = 5
    assert text_id not in model.config.action_ids
    with torch.no_grad():  # make a text token the unmasked argmax everywhere
        model.language_model.lm_head.weight[text_id] = 0
        model.language_model.lm_head.weight[text_id, 0] = 1e4
        model.language_model.model.norm.weight.fill_(1.0)
    pixels = torch.randn(3, 3, 32, 32)
    prompt = torch.randint(3, 100, (3, 5))
    ones = torch.ones_like(prompt)
    vocab = model.config.text_config.vocab_size
    free = greedy_decode(model, pixels, prompt, ones, 5, allowed_mask(vocab))
    assert (free == text_id).float().mean() > 0.5  # unmasked, the text token wins
    masked = greedy_decode(model, pixels, prompt, ones, 5, allowed_mask(vocab, allowed=model.action_ids))
    assert set(masked.flatten().tolist()) <= set(model.config.action_ids)


def test_reference_policy_greedy_loop_matches_generate(smoke_teacher):
    from distill.reference_policy import TorchVlaPolicy
    from runtime.policy import Observation

    loop = TorchVlaPolicy.load(smoke_teacher)
    gen = TorchVlaPolicy.load(smoke_teacher, use_generate=True)
    rng = np.random.default_rng(0)
    for _ in range(4):
        obs = Observation(image=rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), instruction="open the drawer")
        a, b = loop.act(obs), gen.act(obs)
        assert np.array_equal(a.tokens, b.tokens)
        assert a.values.shape == (5,) and set(a.tokens.tolist()) <= set(loop.model.config.action_ids)


@pytest.mark.parametrize("damage", ["missing_weights", "corrupt_weights", "foreign_action_tokenizer", "bad_config"])
def test_damaged_model_folder_is_a_clear_error(smoke_teacher, tmp_path, damage):
    from runtime.action_tokenizer import ActionIdTable, ActionTokenizer

    folder = tmp_path / "teacher"
    shutil.copytree(smoke_teacher, folder, ignore=shutil.ignore_patterns("checkpoint"))
    if damage == "missing_weights":
        (folder / "model.safetensors").unlink()
    elif damage == "corrupt_weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "foreign_action_tokenizer":
        tok = ActionTokenizer.load(folder / "action_tokenizer.json")
        other = ActionIdTable.last(tok.table.vocab_size)
        ActionTokenizer.from_statistics(tok.names, tok.low, tok.high, other, tok.units).save(folder / "action_tokenizer.json")
    else:
        (folder / "config.json").write_text("{not json")
    proc = run_module("distill", "evaluate", "--policy", str(folder), "--tasks", "reach", "--seeds", "1",
                      "--out", str(tmp_path / "eval.json"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "eval.json").exists()


def test_analytic_flops_match_torch_flop_counter(smoke_teacher):
    from torch.utils.flop_counter import FlopCounterMode

    from distill.decoding import allowed_mask, greedy_decode
    from distill.flops import flops_per_action
    from distill.model import VlaModel

    model = VlaModel.from_pretrained(smoke_teacher).eval()
    prompt = torch.randint(3, 100, (1, 7))
    pixels = torch.randn(1, 3, 32, 32)
    mask = allowed_mask(model.config.text_config.vocab_size, allowed=model.action_ids)
    with FlopCounterMode(display=False) as counter:
        greedy_decode(model, pixels, prompt, torch.ones_like(prompt), 5, mask)
    measured = counter.get_total_flops()
    analytic = flops_per_action(model.config, prompt_tokens=7).total
    assert abs(analytic - measured) / measured < 0.05, (analytic, measured)


def test_model_card_reports_training_and_closed_loop(smoke_teacher, tmp_path):
    folder = tmp_path / "teacher"
    shutil.copytree(smoke_teacher, folder, ignore=shutil.ignore_patterns("checkpoint"))
    report = tmp_path / "eval.json"
    proc = run_module("distill", "evaluate", "--policy", str(folder), "--tasks", "reach", "--seeds", "1",
                      "--max-steps", "3", "--image-size", "32", "--out", str(report), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = run_module("distill", "card", str(folder), "--eval", str(report))
    assert proc.returncode == 0, proc.stderr
    card = (folder / "README.md").read_text()
    training = json.loads((folder / "training.json").read_text())
    assert " ".join(training["command"]) in card
    assert "| reach-v3 | 0/1 |" in card and f"{training['parameters'] / 1e6:.2f}M parameters" in card
    assert (folder / "eval_closed_loop.json").is_file()
