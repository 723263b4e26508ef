"""Train the reference teacher: RT-2-style co-fine-tuning of a SigLIP + Llama VLA on robot frames
(image + instruction -> 5 action ids) mixed with scene questions (image + question -> answer).

    python -m distill train-teacher --dataset data/demos --out models/teacher --steps 20000
    python -m distill train-teacher --dataset data/demos --out runs/smoke --smoke

Resumable: a checkpoint is written to <out>/checkpoint every --checkpoint-every steps; running the same
command again continues from it. Deterministic given --seed: the batch at step k depends only on
(seed, k), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.dagger import TEACHER_ROUND_SEED_START, record_round, round_sources, rollout_success
from distill.dataset import Dataset
from distill.decoding import allowed_mask, greedy_decode
from distill.flops import flops_per_action
from distill.model import SMOKE_SIZES, TEACHER_SIZES, ModelSizes, VlaModel, config_for_tokenizer, count_parameters
from distill.prompts import EOS
from distill.training import LoopSettings, resolve_precision, run_loop
from distill.teacher_data import IGNORE, TARGET_LEN, CoTrainingData
from distill.text_tokenizer import build_text_tokenizer, save_text_tokenizer
from runtime.action_tokenizer import ActionTokenizer
from runtime.atomic_io import write_json_atomic
from runtime.errors import UserError

ACTION_TOKENIZER_FILE = "action_tokenizer.json"
TRAINING_FILE = "training.json"
CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainConfig:
    dataset: str
    out: str
    steps: int = 20_000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 300
    robot_ratio: float = 0.66  # RT-2 used 50-66% robot data
    terminate_delay: int = 0  # post-success frames relabelled terminate = 0 (teacher_data.delay_terminate)
    shift: int = 4  # random-shift augmentation, pixels
    seed: int = 0
    heldout_fraction: float = 0.1
    checkpoint_every: int = 250
    eval_every: int = 2000
    log_every: int = 50
    stop_at: int | None = None  # stop (with a checkpoint) at this step; the schedule still runs to `steps`
    threads: int = 1
    device: str = "auto"
    precision: str = "auto"  # "bf16" (autocast, where the hardware has it), "fp32", or "auto"
    sizes: ModelSizes = field(default_factory=lambda: TEACHER_SIZES)
    rounds: int = 0  # DAgger rounds after --steps: the teacher drives, the scripted expert labels
    round_steps: int = 3000  # training steps after each round's episodes join the data
    round_episodes: int = 20  # teacher episodes per task per round
    round_lr: float = 1e-4  # peak learning rate of each round (own warm-up and cosine decay)
    init_from: str | None = None  # start from this model folder's weights (a new run only)

    @property
    def total_steps(self) -> int:
        return self.steps + self.rounds * self.round_steps

    def check(self) -> "TrainConfig":
        if self.steps < 1 or self.batch_size < 1:
            raise UserError("--steps and --batch-size must be at least 1")
        if self.rounds < 0 or (self.rounds and (self.round_steps < 1 or self.round_episodes < 1)):
            raise UserError("--rounds must be >= 0, and each round needs --round-steps and --round-episodes >= 1")
        if not 0.0 <= self.robot_ratio <= 1.0:
            raise UserError(f"--robot-ratio must be in [0, 1], got {self.robot_ratio}")
        if self.terminate_delay < 0:
            raise UserError(f"--terminate-delay must be >= 0, got {self.terminate_delay}")
        if not 0.0 <= self.heldout_fraction < 0.5:
            raise UserError(f"--heldout-fraction must be in [0, 0.5), got {self.heldout_fraction}")
        try:
            self.sizes.check()
        except ValueError as err:
            raise UserError(f"model sizes: {err}") from None
        return self


def smoke_config(dataset: str, out: str) -> TrainConfig:
    """A few steps of a tiny model: for tests, under a minute on one core."""
    return TrainConfig(dataset=dataset, out=out, steps=40, batch_size=8, lr=2e-3, warmup_steps=5, shift=1,
                       checkpoint_every=20, eval_every=10_000, log_every=10, sizes=SMOKE_SIZES)


def split_episodes(dataset: Dataset, fraction: float) -> tuple[list[int], list[int]]:
    """(train, held-out) episode indices: the highest seeds of each task are held out."""
    train, heldout = [], []
    for task in sorted(dataset.tasks):
        eps = sorted((e for e in dataset.episodes if e.task == task), key=lambda e: e.seed)
        n_held = math.ceil(len(eps) * fraction) if len(eps) > 1 and fraction > 0 else 0
        train += [e.index for e in eps[: len(eps) - n_held]]
        heldout += [e.index for e in eps[len(eps) - n_held:]]
    return train, heldout


def mean_action_prompt(data: CoTrainingData) -> int:
    """Mean length of the action prompts, in tokens (<bos> included), rounded."""
    return round(float(np.mean([len(data.prompts[i]) for i in data.frame_prompt.unique().tolist()])))


def dataset_views(dataset: Dataset) -> int:
    """How many square camera views sit side by side in the dataset's frames."""
    height, width = int(dataset.image["height"]), int(dataset.image["width"])
    if width % height:
        raise UserError(f"{dataset.root} holds {height}x{width} frames: a frame must be whole square views side by "
                        "side (record with --camera CAM or CAM1+CAM2)")
    return width // height


def warm_start(model: VlaModel, source: Path) -> None:
    """Start from the weights of another model folder (or checkpoint) of the same sizes.

    Only parameters the source cannot have are left as initialised: the per-camera view embedding when the
    source saw one view, and the rows of views the source did not have (a rig grown by appending cameras:
    'workspace+gripperPOV' -> 'workspace+gripperPOV+side' keeps the first two). Any other difference
    (widths, layers, vocabulary) is refused.
    """
    from safetensors.torch import load_file

    weights_file = source / "model.safetensors"
    if not weights_file.is_file():
        raise UserError(f"--init-from {source}: no model.safetensors there (pass a teacher folder or its checkpoint)")
    try:
        weights = load_file(str(weights_file))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"--init-from {weights_file} cannot be read ({err}): the file is corrupt") from None
    own = model.state_dict()
    source_views, own_views = weights.get("view_embedding"), own.get("view_embedding")  # (V_source, D), (V, D)
    if source_views is not None and own_views is not None and source_views.shape[0] < own_views.shape[0] \
            and source_views.shape[1:] == own_views.shape[1:]:
        grown = own_views.clone()
        grown[: source_views.shape[0]] = source_views
        weights["view_embedding"] = grown
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in weights.items()
             if k in own and own[k].shape != v.shape]
    unknown = sorted(set(weights) - set(own))
    missing = sorted(k for k in set(own) - set(weights) if k != "view_embedding")
    if wrong or unknown or missing:
        raise UserError(f"--init-from {source} is a model of other sizes: " + "; ".join(
            (wrong + [f"unexpected {k}" for k in unknown] + [f"missing {k}" for k in missing])[:4]))
    model.load_state_dict(weights, strict=False)


def trained_terminate_delay(folder: str | Path) -> int:
    """The --terminate-delay a teacher folder was trained with (its training.json; 0 when the folder has none,
    as a Hugging Face teacher), so that a student's expert targets put the stop label where the teacher
    learned to put it. A training.json that cannot be read is refused: a silent 0 would move the stop label."""
    path = Path(folder) / TRAINING_FILE
    if not path.is_file():
        return 0
    try:
        delay = json.loads(path.read_text()).get("config", {}).get("terminate_delay", 0) or 0
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(f"terminate_delay {delay!r} is not a whole number of frames")
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"{path} is damaged ({err}): restore it from the run that trained the teacher, or "
                        f"delete it if the teacher was trained without --terminate-delay") from None
    return delay


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))


def loss_on_batch(model, batch: dict, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy over the full vocabulary on the target tokens (RT-2), split by sample kind."""
    pixels = model.preprocess(batch["frames"].to(device))
    logits = model(pixels, batch["prompt_ids"].to(device), batch["prompt_mask"].to(device),
                   batch["target_inputs"].to(device))  # (B, 5, vocab)
    labels = batch["labels"].to(device)
    per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                                  reduction="none").view_as(labels)
    valid = (labels != IGNORE).float()
    loss = (per_token * valid).sum() / valid.sum()
    robot = batch["is_robot"].to(device)
    parts = {}
    for name, rows in (("action_loss", robot), ("question_loss", ~robot)):
        if rows.any():
            parts[name] = float((per_token[rows] * valid[rows]).detach().sum() / valid[rows].sum())
    return loss, parts


@torch.no_grad()
def heldout_metrics(model, data: CoTrainingData, action_tok: ActionTokenizer, text_tok, device: torch.device,
                    max_samples: int = 512, batch_size: int = 64) -> dict:
    """Greedy masked decoding on held-out frames: action token accuracy, bin error, question accuracy."""
    model.eval()
    vocab = model.config.text_config.vocab_size
    action_mask = allowed_mask(vocab, allowed=model.action_ids).to(device)
    text_mask = allowed_mask(vocab, banned=model.action_ids).to(device)
    eos = text_tok.token_to_id(EOS)
    gen = np.random.default_rng(1234)
    frames = torch.from_numpy(np.sort(gen.permutation(len(data))[:max_samples]))
    correct = total = 0
    bin_errors = []
    for chunk in frames.split(batch_size):
        batch = data.batch(chunk, data.frame_prompt[chunk], data.action_targets[chunk])
        pixels = model.preprocess(batch["frames"].to(device))
        ids = greedy_decode(model, pixels, batch["prompt_ids"].to(device), batch["prompt_mask"].to(device),
                            TARGET_LEN, action_mask).cpu()
        truth = batch["labels"]
        correct += int((ids == truth).sum())
        total += truth.numel()
        bin_errors.append((action_tok.ids_to_bins(ids.numpy()) - action_tok.ids_to_bins(truth.numpy())).__abs__())
    qa_rows = torch.from_numpy(np.sort(gen.permutation(len(data.qa_frame))[:max_samples]))
    by_kind: dict[str, list[bool]] = {}
    for chunk in qa_rows.split(batch_size):
        batch = data.batch(data.qa_frame[chunk], data.qa_prompt[chunk], data.qa_answer[chunk])
        pixels = model.preprocess(batch["frames"].to(device))
        ids = greedy_decode(model, pixels, batch["prompt_ids"].to(device), batch["prompt_mask"].to(device),
                            TARGET_LEN, text_mask, stop_id=eos).cpu()
        for k, (row, truth) in enumerate(zip(ids.tolist(), batch["labels"].tolist())):
            want = [t for t in truth if t != IGNORE]
            by_kind.setdefault(data.qa_kind[int(chunk[k])], []).append(row[: len(want)] == want)
    model.train()
    all_answers = [ok for oks in by_kind.values() for ok in oks]
    errors = np.concatenate(bin_errors) if bin_errors else np.zeros((0,))
    return {
        "action_token_accuracy": correct / max(total, 1),
        "action_bin_error_mean": float(errors.mean()) if errors.size else None,
        "action_frames": int(len(frames)),
        "question_accuracy": float(np.mean(all_answers)) if all_answers else None,
        "question_accuracy_by_kind": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
        "questions": len(all_answers),
    }


def train_teacher(config: TrainConfig, progress: bool = True, command: list[str] | None = None) -> dict:
    """Train (or resume) and write the teacher folder; returns the metrics written to training.json."""
    config.check()
    torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    dataset = Dataset.open_nonempty(config.dataset)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    text_tok, table = build_text_tokenizer()
    stats = dataset.action_stats
    action_tok = ActionTokenizer.from_statistics(stats.names, low=stats.p01, high=stats.p99, table=table,
                                                 units=dataset.manifest["action"].get("units"))
    train_eps, held_eps = split_episodes(dataset, config.heldout_fraction)
    config.sizes = replace(config.sizes, views=dataset_views(dataset))
    image_size = config.sizes.image_size
    delay = config.terminate_delay
    train_data = CoTrainingData.build(dataset, text_tok, action_tok, train_eps, image_size, progress, delay)
    prompt_tokens = mean_action_prompt(train_data)
    held_data = CoTrainingData.build(dataset, text_tok, action_tok, held_eps or train_eps[:1], image_size, False, delay)

    # The tokenizers are fixed before training: write them now, so every checkpoint is a usable model folder.
    save_text_tokenizer(text_tok, out)
    action_tok.save(out / ACTION_TOKENIZER_FILE)
    tokenizer_files = (out / "tokenizer.json", out / ACTION_TOKENIZER_FILE)
    ckpt = out / CHECKPOINT_DIR
    if (ckpt / "trainer_state.json").is_file():
        model, optimizer, state = load_checkpoint(ckpt, VlaModel, lambda m: make_optimizer(m, config))
        if list(model.config.action_ids) != list(table.ids):
            raise UserError(f"checkpoint {ckpt} was trained with other action ids: delete it to start over")
        if state.get("seed") != config.seed:
            raise UserError(f"checkpoint {ckpt} was trained with seed {state.get('seed')}: pass --seed {state.get('seed')}")
        trained_camera = getattr(model.config, "camera", None)
        if trained_camera is None:  # checkpoints from before the camera was recorded in the config
            model.config.camera = dataset.image["camera"]
        elif trained_camera != dataset.image["camera"]:
            raise UserError(f"checkpoint {ckpt} was trained on '{trained_camera}' frames, {config.dataset} holds "
                            f"'{dataset.image['camera']}' frames: pass a dataset recorded with --camera {trained_camera}")
    else:
        torch.manual_seed(config.seed)
        model = VlaModel(config_for_tokenizer(config.sizes, text_tok, table.ids, len(stats.names),
                                              camera=dataset.image["camera"]))
        if config.init_from:
            warm_start(model, Path(config.init_from))
        optimizer = make_optimizer(model, config)
        state = {"step": 0, "seed": config.seed, "train_seconds": 0.0, "log": []}
    model.to(device).train()

    settings = LoopSettings(steps=config.steps, seed=config.seed, lr=config.lr, warmup_steps=config.warmup_steps,
                            log_every=config.log_every, eval_every=config.eval_every,
                            checkpoint_every=config.checkpoint_every, stop_at=config.stop_at, precision=precision)
    def train_phase(data: CoTrainingData, phase_settings: LoopSettings, desc: str) -> None:
        run_loop(
            model, optimizer, state, phase_settings,
            sample=lambda rng: data.sample(rng, config.batch_size, config.robot_ratio, config.shift),
            loss_fn=lambda m, batch: loss_on_batch(m, batch, device),
            save=lambda st: save_checkpoint(ckpt, model, optimizer, st, extra_files=tokenizer_files),
            evaluate=lambda m: heldout_metrics(m, held_data, action_tok, text_tok, device, max_samples=256),
            desc=desc, progress=progress,
        )

    train_phase(train_data, settings, "train-teacher")
    del train_data  # each round rebuilds the frames with its rollouts: two copies of a large dataset do not fit
    state.setdefault("rounds", [])
    for r in range(len(state["rounds"]) + 1, config.rounds + 1):
        if state["step"] < config.steps + (r - 1) * config.round_steps:
            break  # stopped early (--stop-at): the next run continues from the checkpoint
        # DAgger: the teacher as it is now drives; the scripted expert labels every frame it visits.
        from distill.expert import ScriptedExpert
        from distill.reference_policy import TorchVlaPolicy

        model.cpu().eval()
        record_round(out, r, dataset, TEACHER_ROUND_SEED_START, config.round_episodes,
                     actor=lambda task: TorchVlaPolicy(model, text_tok, action_tok), labeler=ScriptedExpert,
                     policy_name=f"teacher-round-{r}-labelled-by-expert", progress=progress)
        model.to(device).train()
        round_data = None  # the previous round's frames go before this round's are built
        round_data = CoTrainingData.build_from(round_sources(dataset, train_eps, out, r), text_tok, action_tok,
                                               image_size, progress, delay)
        end = config.steps + r * config.round_steps
        train_phase(round_data, replace(settings, steps=end, start=end - config.round_steps, lr=config.round_lr,
                                        warmup_steps=min(100, config.round_steps // 10)), f"train-teacher round {r}")
        if state["step"] < end:
            break
        state["rounds"].append({"round": r, "step": state["step"], "frames": len(round_data),
                                "rollouts_before_training": rollout_success(out, r)})
        save_checkpoint(ckpt, model, optimizer, state, extra_files=tokenizer_files)

    metrics = heldout_metrics(model, held_data, action_tok, text_tok, device)
    report = {
        "command": command or ["python", "-m", "distill", "train-teacher"],
        "seed": config.seed,
        "config": {**asdict(config), "sizes": asdict(config.sizes)},
        "parameters": count_parameters(model),
        "image_tokens": config.sizes.image_tokens,
        "flops_per_action": flops_per_action(model.config, prompt_tokens=prompt_tokens).as_dict(),
        "steps": state["step"],
        "samples_seen": state["step"] * config.batch_size,
        "train_seconds": round(state["train_seconds"], 1),
        "samples_per_second": round(state["step"] * config.batch_size / max(state["train_seconds"], 1e-9), 1),
        "device": str(device),
        "threads": config.threads,
        "precision": precision,
        "dataset": {"path": str(config.dataset), "episodes": len(dataset), "frames": dataset.num_frames,
                    "train_episodes": len(train_eps), "heldout_episodes": len(held_eps)},
        "heldout": metrics,
        "rounds": state["rounds"],
        "loss_log": state["log"],
        "torch": torch.__version__,
    }
    write_model_folder(out, model.cpu(), text_tok, action_tok, report)
    return report


def write_model_folder(out: Path, model, text_tok, action_tok: ActionTokenizer, report: dict,
                       report_name: str = TRAINING_FILE) -> None:
    """Everything a user needs beside the weights: tokenizers, action statistics, how it was made."""
    staging = out / ".staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    model.save_pretrained(staging)
    save_text_tokenizer(text_tok, staging)
    action_tok.save(staging / ACTION_TOKENIZER_FILE)
    write_json_atomic(staging / report_name, report)
    for item in staging.iterdir():
        os.replace(item, out / item.name)
    staging.rmdir()
