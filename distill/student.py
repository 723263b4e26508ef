"""Distil a teacher VLA into a small student: offline teacher labels, KL + cross-entropy, then
DAgger-style on-policy rounds (the student drives, the teacher labels what it sees).

    python -m distill student --teacher models/teacher --dataset data/demos --out models/student --rounds 2
    python -m distill student --teacher runs/smoke_teacher --dataset data/tiny --out runs/smoke_student --smoke

Phases: offline distillation for --steps, then for each round: record --round-episodes student
episodes per task, add them to the data, train --round-steps more. The teacher's distributions (the KL
targets) cover every frame, the round's too; the round's action tokens (the cross-entropy targets) are
the teacher's greedy actions, or with --round-labeller expert the scripted expert's, which reads the
simulator state and so corrects the student's drift even where the teacher fails (the hard tasks).
Closed-loop success is measured after every phase (what each round adds; --eval-phases last: after the
final one only) and for the teacher on the same seeds.

    python -m distill student --teacher models/teacher --dataset data/demos_3v --out runs/student_r \
        --init-from models/student --steps 1 --rounds 1 --round-episodes 20 --round-labeller expert \
        --round-ratio 0.5 --lr 1e-4 --eval-phases last --eval-workers 2
Resumable: running the same command again continues from <out>/checkpoint. --merge-init ALPHA writes
init + ALPHA * (trained - init) instead of the trained weights (weight-space ensembling, WiSE-FT: it keeps
what the start did well and most of what the rounds added); on a finished run it only blends and evaluates:

    python -m distill student ... --init-from models/student --merge-init 0.5
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.dataset import Dataset
from distill.distill_loss import DistillWeights, distill_loss
from distill.evaluate import EvalConfig, evaluate, evaluate_in_workers
from distill.flops import flops_per_action
from distill.model import ModelSizes, VlaConfig, VlaModel, config_for_tokenizer, count_parameters
from distill.dagger import STUDENT_ROUND_SEED_START, record_round, round_sources
from distill.reference_policy import TorchVlaPolicy, load_vla_folder
from distill.teacher_data import CoTrainingData
from distill.hf_teacher import HFTeacher, HFTeacherPolicy, is_vla_edge_folder
from distill.teacher_labels import DEFAULT_TOPK, VlaTeacher, label_dataset
from distill.text_tokenizer import build_text_tokenizer
from runtime.action_tokenizer import ActionTokenizer
from distill.train_teacher import (
    ACTION_TOKENIZER_FILE,
    CHECKPOINT_DIR,
    dataset_views,
    heldout_metrics,
    make_optimizer,
    mean_action_prompt,
    pick_device,
    split_episodes,
    trained_terminate_delay,
    warm_start,
    write_model_folder,
)
from distill.training import LoopSettings, resolve_precision, run_loop
from distill.text_tokenizer import TOKENIZER_FILE, save_text_tokenizer
from runtime.errors import UserError

METRICS_FILE = "metrics.json"
ROUND_LABELLERS = ("teacher", "expert")

# The default student: about 9x fewer parameters and 10x fewer FLOPs per action than the teacher,
# at the same 96 px so that the small targets of the hard tasks stay visible.
STUDENT_SIZES = ModelSizes(image_size=96, patch_size=16, vision_width=64, vision_layers=2, vision_heads=2,
                           text_width=128, text_layers=2, text_heads=4, text_kv_heads=4, mlp_ratio=3)
SMOKE_STUDENT_SIZES = ModelSizes(image_size=32, patch_size=16, vision_width=16, vision_layers=1, vision_heads=2,
                                 text_width=16, text_layers=1, text_heads=2, text_kv_heads=2, mlp_ratio=2)


@dataclass
class StudentConfig:
    teacher: str
    dataset: str
    out: str
    sizes: ModelSizes = field(default_factory=lambda: STUDENT_SIZES)
    steps: int = 6000  # offline distillation steps
    rounds: int = 2  # on-policy (DAgger) rounds
    round_steps: int = 1500  # training steps after each round's data is added
    round_episodes: int = 10  # student episodes per task per round
    round_ratio: float = 0.0  # share of robot samples drawn from the rounds' frames (0: uniform over all frames)
    round_labeller: str = "teacher"  # who writes a round's action tokens: "teacher" or the scripted "expert"
    round_seed_start: int = STUDENT_ROUND_SEED_START  # round r drives seeds round_seed_start + 1000 * r onwards
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    robot_ratio: float = 0.66
    shift: int = 4
    question_every: int = 4  # scene questions at every 4th frame: 4x fewer rows for the teacher to label
    weights: DistillWeights = field(default_factory=DistillWeights)
    seed: int = 0
    heldout_fraction: float = 0.1
    eval_seeds: int = 20
    eval_max_steps: int = 200
    eval_phases: str = "all"  # closed loop after "all" phases or only the "last"
    eval_workers: int = 1  # closed-loop evaluation processes (each one torch thread)
    labels: str | None = None  # teacher-label cache (default <out>/labels)
    init_from: str | None = None  # continue from this student folder's weights (a new run only; sizes from it)
    merge_init: float = 1.0  # released weights: init + merge_init * (trained - init) (WiSE-FT); 1: as trained
    teacher_actions: str | None = None  # a Hugging Face teacher's action tokenizer JSON
    prompt_template: str = "{instruction}"  # a Hugging Face teacher's prompt
    checkpoint_every: int = 250
    log_every: int = 50
    threads: int = 1
    device: str = "auto"
    precision: str = "auto"  # "bf16" (autocast, where the hardware has it), "fp32", or "auto"

    def check(self) -> "StudentConfig":
        for name in ("steps", "batch_size", "eval_seeds"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.rounds < 0 or (self.rounds and (self.round_steps < 1 or self.round_episodes < 1)):
            raise UserError("--rounds must be >= 0, and each round needs --round-steps and --round-episodes >= 1")
        if not 0 <= self.robot_ratio <= 1:
            raise UserError(f"--robot-ratio must be in [0, 1], got {self.robot_ratio}")
        if not 0 <= self.round_ratio <= 1:
            raise UserError(f"--round-ratio must be in [0, 1], got {self.round_ratio}")
        if self.round_labeller not in ROUND_LABELLERS:
            raise UserError(f"--round-labeller must be one of {', '.join(ROUND_LABELLERS)}, got '{self.round_labeller}'")
        if self.round_seed_start < 0:
            raise UserError(f"--round-seed-start must be >= 0, got {self.round_seed_start}")
        if self.eval_phases not in ("all", "last"):
            raise UserError(f"--eval-phases must be 'all' or 'last', got '{self.eval_phases}'")
        if self.eval_workers < 1:
            raise UserError(f"--eval-workers must be at least 1, got {self.eval_workers}")
        if self.question_every < 1:
            raise UserError(f"--question-every must be at least 1, got {self.question_every}")
        if not 0 < self.merge_init <= 1:
            raise UserError(f"--merge-init must be in (0, 1], got {self.merge_init}")
        if self.merge_init < 1 and not self.init_from:
            raise UserError("--merge-init blends the trained weights with the --init-from student's: pass --init-from")
        try:
            self.sizes.check()
        except ValueError as err:
            raise UserError(f"student sizes: {err}") from None
        return self

    @property
    def total_steps(self) -> int:
        return self.steps + self.rounds * self.round_steps

    def phase_end(self, phase: int) -> int:
        """Last step of phase 0 (offline) or of round `phase`."""
        return self.steps + phase * self.round_steps


def smoke_student_config(teacher: str, dataset: str, out: str) -> StudentConfig:
    return StudentConfig(teacher=teacher, dataset=dataset, out=out, sizes=SMOKE_STUDENT_SIZES, steps=30, rounds=1,
                         round_steps=10, round_episodes=1, batch_size=8, lr=3e-3, warmup_steps=5, shift=1,
                         eval_seeds=1, eval_max_steps=15, checkpoint_every=20, log_every=10)


def parse_sizes(text: str, base: ModelSizes = STUDENT_SIZES) -> ModelSizes:
    """'vision_width=96,text_width=112' -> the default student's sizes with those fields changed."""
    names = {f for f in asdict(base) if f != "views"}  # views come from the dataset
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names or not value.strip().isdigit():
            raise UserError(f"--sizes: '{item}' is not <field>=<integer> with a field among {', '.join(sorted(names))}")
        changes[key] = int(value)
    sizes = replace(base, **changes)
    try:
        return sizes.check()
    except ValueError as err:
        raise UserError(f"--sizes: {err}") from None


def require_teacher_action_ids(student_ids, teacher_ids, what: str, remedy: str) -> None:
    """Refuse a student whose action-id table is not the teacher's: the KL compares the same 256 ids."""
    if list(student_ids) != list(teacher_ids):
        raise UserError(f"{what} uses another action-id table than the teacher: teacher and student must share "
                        f"their action ids; {remedy}")


def init_sizes(source: Path, template: VlaConfig, camera: str, views: int) -> ModelSizes:
    """The sizes of the --init-from student (a folder or checkpoint), once it is known to fit this teacher and data."""
    import json

    try:
        saved = json.loads((source / "config.json").read_text())
        sizes = ModelSizes(**saved["sizes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"--init-from {source}: no readable vla-edge config.json there ({err}): pass a student "
                        f"folder written by `python -m distill student` or its checkpoint") from None
    require_teacher_action_ids(saved.get("action_ids", []), template.action_ids, f"--init-from {source}",
                               "pass a student distilled from this teacher")
    if saved.get("camera") != camera or sizes.views != views:
        raise UserError(f"--init-from {source} was trained on '{saved.get('camera')}' frames ({sizes.views} views), "
                        f"the dataset holds '{camera}' ({views} views): pass a dataset recorded with its camera")
    return sizes


def student_model_config(teacher_config: VlaConfig, sizes: ModelSizes, camera: str | None = None) -> VlaConfig:
    """A student of the teacher's family: same vocabulary, special ids and action ids."""
    text = teacher_config.text_config
    return VlaConfig.from_sizes(sizes, text.vocab_size, list(teacher_config.action_ids), text.pad_token_id,
                                text.bos_token_id, text.eos_token_id, action_dim=teacher_config.action_dim,
                                camera=camera)


@torch.no_grad()
def token_agreement(student, labeler, data_s: CoTrainingData, data_t: CoTrainingData, max_frames: int = 512,
                    batch_size: int = 64) -> float:
    """Share of action positions where the student's argmax over the 256 action ids equals the teacher's,
    both teacher-forced with the data's action tokens (held-out frames)."""
    student.eval()
    frames = torch.from_numpy(np.sort(np.random.default_rng(4321).permutation(len(data_s))[:max_frames]))
    agree = total = 0
    for chunk in frames.split(batch_size):
        batch = data_s.batch(chunk, data_s.frame_prompt[chunk], data_s.action_targets[chunk])
        logits = student(student.preprocess(batch["frames"]), batch["prompt_ids"], batch["prompt_mask"],
                         batch["target_inputs"])[..., student.action_ids]
        teacher_bins = labeler.label_actions(data_t, chunk).argmax(-1)
        agree += int((logits.argmax(-1) == teacher_bins).sum())
        total += teacher_bins.numel()
    return agree / max(total, 1)


def closed_loop(policy, dataset: Dataset, config: StudentConfig, name: str, progress: bool,
                folder: Path | None = None) -> dict:
    """Closed-loop success on the evaluation seeds; in --eval-workers processes when `folder` (a model
    folder or checkpoint holding `policy`'s weights) is given."""
    eval_config = EvalConfig(tasks=sorted(dataset.tasks), seeds_per_task=config.eval_seeds,
                             max_steps=config.eval_max_steps, image_size=dataset.image["height"],
                             camera=dataset.image["camera"])
    if folder is not None and config.eval_workers > 1:
        report = evaluate_in_workers(str(folder), eval_config, config.eval_workers, progress=progress)
    else:
        report = evaluate(lambda task: policy, eval_config, name, progress=progress)
    return {"config": report["config"], "tasks": report["tasks"]}


@torch.no_grad()
def merge_toward_init(model: VlaModel, init_from: Path, alpha: float) -> int:
    """Weight-space ensembling (WiSE-FT): every tensor becomes init + alpha * (trained - init), in place.

    `init_from` is the student folder the run started from (same sizes). A tensor the start did not have
    (a camera rig grown by a view) stays as trained. Returns how many tensors were blended.
    """
    from safetensors.torch import load_file

    start = load_file(str(init_from / "model.safetensors"))
    blended = 0
    for name, tensor in model.state_dict().items():
        source = start.get(name)
        if source is None or source.shape != tensor.shape or not tensor.is_floating_point():
            continue
        tensor.copy_(torch.lerp(source.to(tensor), tensor, alpha))
        blended += 1
    return blended


def round_labeller(config: StudentConfig, teacher: "LoadedTeacher"):
    """(labeller(task), name) for a round's action tokens: the teacher's greedy actions or the scripted expert's."""
    if config.round_labeller == "expert":
        from distill.expert import ScriptedExpert

        return ScriptedExpert, "expert"
    return (lambda task: teacher.policy), "teacher"


def reuse_teacher_eval(config: StudentConfig, dataset: Dataset) -> dict | None:
    """The teacher folder's own closed-loop report, when it ran on exactly the seeds and settings we would."""
    import json

    from distill.model_card import EVAL_FILE

    path = Path(config.teacher) / EVAL_FILE
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    want = EvalConfig(tasks=sorted(dataset.tasks), seeds_per_task=config.eval_seeds, max_steps=config.eval_max_steps,
                      image_size=dataset.image["height"], camera=dataset.image["camera"]).check()
    have = report.get("config", {})
    same = all(have.get(k) == v for k, v in asdict(want).items() if k != "tasks") and \
        sorted(have.get("tasks", [])) == sorted(want.tasks)
    return {"config": have, "tasks": report["tasks"]} if same else None


@dataclass
class LoadedTeacher:
    """What distillation needs of a teacher, whatever its kind."""

    kind: str  # "vla-edge" | "huggingface"
    model: torch.nn.Module
    labeler: object  # VlaTeacher | HFTeacher
    policy: object  # a Policy that acts as the teacher (closed loop, DAgger labels)
    text_tok: object  # the student's text tokenizer
    action_tok: ActionTokenizer  # the student's action tokenizer
    student_template: VlaConfig  # vocabulary, special ids and action ids the student takes over
    image_size: int | None  # the teacher's input size (None: its processor resizes)
    topk: int  # question labels kept per position (0: the vocabularies differ, none)
    terminate_delay: int  # the stop-label delay it was trained with, for the expert targets (0: none or unknown)


def load_teacher(config: StudentConfig) -> LoadedTeacher:
    """A vla-edge teacher folder, or a Hugging Face VLM folder with --teacher-actions."""
    if is_vla_edge_folder(config.teacher):
        model, text_tok, action_tok = load_vla_folder(config.teacher)
        model.eval()
        return LoadedTeacher("vla-edge", model, VlaTeacher(model, config.teacher), TorchVlaPolicy(model, text_tok, action_tok),
                             text_tok, action_tok, model.config, model.config.vision_config.image_size, DEFAULT_TOPK,
                             trained_terminate_delay(config.teacher))
    if not Path(config.teacher).is_dir():
        raise UserError(f"teacher folder {config.teacher} does not exist: pass a vla-edge or Hugging Face model folder")
    if not config.teacher_actions:
        raise UserError(f"{config.teacher} is not a vla-edge model: a Hugging Face teacher needs --teacher-actions "
                        f"(its action tokenizer JSON: statistics and the 256 ids in its vocabulary)")
    teacher_actions = ActionTokenizer.load(config.teacher_actions)
    text_tok, table = build_text_tokenizer()
    action_tok = ActionTokenizer.from_statistics(teacher_actions.names, teacher_actions.low, teacher_actions.high, table,
                                                 teacher_actions.units)
    hf = HFTeacher(config.teacher, teacher_actions, action_tok, config.prompt_template)
    template = config_for_tokenizer(config.sizes, text_tok, table.ids, action_tok.dim)
    return LoadedTeacher("huggingface", hf.model, hf, HFTeacherPolicy(hf), text_tok, action_tok, template, None, 0, 0)


def distill_student(config: StudentConfig, progress: bool = True, command: list[str] | None = None) -> dict:
    """Run (or resume) every phase and write the student folder with metrics.json."""
    config.check()
    torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    dataset = Dataset.open_nonempty(config.dataset)
    teacher = load_teacher(config)
    teacher_camera = getattr(teacher.student_template, "camera", None)
    if teacher_camera and teacher_camera != dataset.image["camera"]:
        raise UserError(
            f"the teacher {config.teacher} was trained on '{teacher_camera}' frames but {config.dataset} holds "
            f"'{dataset.image['camera']}' frames: record a dataset with --camera {teacher_camera}"
        )
    views, camera = dataset_views(dataset), dataset.image["camera"]
    out = Path(config.out)
    ckpt = out / CHECKPOINT_DIR
    resuming = (ckpt / "trainer_state.json").is_file()
    if not resuming:  # a new run: its sizes, checked before anything is written
        config.sizes = init_sizes(Path(config.init_from), teacher.student_template, camera, views) \
            if config.init_from else replace(config.sizes, views=views)
    text_tok, action_tok = teacher.text_tok, teacher.action_tok
    out.mkdir(parents=True, exist_ok=True)
    labels_dir = Path(config.labels) if config.labels else out / "labels"
    save_text_tokenizer(text_tok, out)
    action_tok.save(out / ACTION_TOKENIZER_FILE)
    tokenizer_files = (out / TOKENIZER_FILE, out / ACTION_TOKENIZER_FILE)
    train_eps, held_eps = split_episodes(dataset, config.heldout_fraction)
    delay = teacher.terminate_delay

    if resuming:
        student, optimizer, state = load_checkpoint(ckpt, VlaModel, lambda m: make_optimizer(m, config))
        require_teacher_action_ids(student.config.action_ids, action_tok.table.ids, f"the student in {ckpt}",
                                   f"delete {ckpt} to distil from the teacher {config.teacher}")
        config.sizes = ModelSizes(**student.config.sizes)
    else:
        torch.manual_seed(config.seed)
        student = VlaModel(student_model_config(teacher.student_template, config.sizes, camera=camera))
        if config.init_from:
            warm_start(student, Path(config.init_from))
        optimizer = make_optimizer(student, config)
        state = {"step": 0, "seed": config.seed, "train_seconds": 0.0, "log": [], "phases": []}
    student.to(device)

    settings = LoopSettings(steps=config.total_steps, seed=config.seed, lr=config.lr,
                            warmup_steps=config.warmup_steps, log_every=config.log_every,
                            eval_every=10**9, checkpoint_every=config.checkpoint_every,
                            precision=resolve_precision(config.precision, device))
    teacher_size = teacher.image_size or config.sizes.image_size
    student_size = config.sizes.image_size
    held = held_eps or train_eps[:1]
    held_s = CoTrainingData.build(dataset, text_tok, action_tok, held, student_size, terminate_delay=delay)
    held_t = held_s if teacher_size == student_size else \
        CoTrainingData.build(dataset, text_tok, action_tok, held, teacher_size, terminate_delay=delay)

    def student_policy():
        return TorchVlaPolicy(student.cpu().eval(), text_tok, action_tok)

    for phase in range(config.rounds + 1):
        if phase < len(state["phases"]):
            continue  # finished before a restart
        if phase > 0:  # DAgger: the current student drives, the teacher (or expert) labels; resumes a partial round
            labeller, labeller_name = round_labeller(config, teacher)
            record_round(out, phase, dataset, config.round_seed_start, config.round_episodes,
                         actor=lambda task: student_policy(), labeler=labeller,
                         policy_name=f"student-round-{phase}-labelled-by-{labeller_name}", progress=progress)
        sources = round_sources(dataset, train_eps, out, phase)
        data_s = data_t = None  # free the last phase's frames first: two copies of a large dataset do not fit
        data_s = CoTrainingData.build_from(sources, text_tok, action_tok, student_size, progress, delay,
                                           config.question_every)
        data_t = data_s if teacher_size == student_size else \
            CoTrainingData.build_from(sources, text_tok, action_tok, teacher_size, False, delay, config.question_every)
        teacher_device = next(teacher.model.parameters()).device.type
        with torch.autocast(teacher_device, dtype=torch.bfloat16, enabled=settings.precision == "bf16"):
            # the teacher labels in the training precision: bf16 is about 2.6x faster on 2 AVX512-BF16 cores
            labels = label_dataset(teacher.labeler, data_t, labels_dir, topk=teacher.topk, progress=progress)
        rounds_from = data_s.episode_rows[len(train_eps) - 1].frame_end  # the rounds' frames follow the demos
        student.to(device)
        run_loop(
            student, optimizer, state, replace(settings, stop_at=config.phase_end(phase)),
            sample=lambda rng: data_s.sample(rng, config.batch_size, config.robot_ratio, config.shift,
                                             rounds_from, config.round_ratio),
            loss_fn=lambda m, batch: distill_loss(m, batch, labels, config.weights, device),
            save=lambda st: save_checkpoint(ckpt, student, optimizer, st, extra_files=tokenizer_files),
            desc=f"distill phase {phase}", progress=progress,
        )
        last = phase == config.rounds  # run_loop's last save left this phase's weights in ckpt for the workers
        result = closed_loop(student_policy(), dataset, config, f"student after phase {phase}", progress, ckpt) \
            if last or config.eval_phases == "all" else None
        state["phases"].append({"phase": phase, "step": state["step"], "frames": len(data_s),
                                "closed_loop": result["tasks"] if result else None})
        save_checkpoint(ckpt, student, optimizer, state, extra_files=tokenizer_files)

    student.cpu().eval()
    merge = None
    if config.merge_init < 1:  # the checkpoint keeps the trained weights: a rerun blends them again, the same way
        trained_loop = state["phases"][-1]["closed_loop"]
        blended = merge_toward_init(student, Path(config.init_from), config.merge_init)
        merged_dir = out / "merged.tmp"  # a model folder of the blended weights for the evaluation workers
        if merged_dir.exists():
            shutil.rmtree(merged_dir)
        student.save_pretrained(merged_dir)
        for path in tokenizer_files:
            shutil.copyfile(path, merged_dir / path.name)
        merged_loop = closed_loop(student_policy(), dataset, config, "merged student", progress, merged_dir)
        shutil.rmtree(merged_dir)
        merge = {"alpha": config.merge_init, "init_from": str(config.init_from), "tensors": blended,
                 "closed_loop_trained": trained_loop, "closed_loop": merged_loop["tasks"]}
    teacher_loop = reuse_teacher_eval(config, dataset) or closed_loop(teacher.policy, dataset, config, "teacher", progress)
    prompt_len = mean_action_prompt(held_s)
    student_flops = flops_per_action(student.config, prompt_len)
    teacher_flops = flops_per_action(teacher.model.config, prompt_len) if teacher.topk else None
    metrics = {
        "command": command or ["python", "-m", "distill", "student"],
        "seed": config.seed,
        "config": {**asdict(config), "sizes": asdict(config.sizes)},
        "terminate_delay": delay,  # the teacher's stop-label delay, applied to the expert targets
        "teacher": {"folder": str(config.teacher), "kind": teacher.kind, "parameters": count_parameters(teacher.model),
                    "flops_per_action": teacher_flops.as_dict() if teacher_flops else None,
                    "closed_loop": teacher_loop["tasks"]},
        "student": {"parameters": count_parameters(student), "flops_per_action": student_flops.as_dict(),
                    "closed_loop": merge["closed_loop"] if merge else state["phases"][-1]["closed_loop"]},
        "merge": merge,
        "parameter_ratio": count_parameters(teacher.model) / count_parameters(student),
        "flops_ratio": teacher_flops.total / student_flops.total if teacher_flops else None,
        "token_agreement_heldout": token_agreement(student, teacher.labeler, held_s, held_t),
        "heldout": heldout_metrics(student, held_s, action_tok, text_tok, torch.device("cpu")),
        "phases": state["phases"],
        "closed_loop_eval": teacher_loop["config"],
        "train_seconds": round(state["train_seconds"], 1),
        "precision": settings.precision,
        "steps": state["step"],
        "loss_log": state["log"],
    }
    write_model_folder(out, student, text_tok, action_tok, metrics, report_name=METRICS_FILE)
    return metrics
