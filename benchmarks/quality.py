"""`python -m benchmarks quality`: what each deployment choice costs in task success and answers.

1. Closed-loop success per task (Meta-World, unseen seeds from 100000) of the teacher and of the student
   at each precision, run on their bundles by the project's evaluator (distill/evaluate.py: in this
   process, or `--workers N` child processes), and of the teacher over the cloud path under each network
   profile at a fixed control rate (runtime/cloud_eval.py: the runtime's control loop, the safety
   envelope, a `python -m runtime serve` child and a netem proxy child per profile; a reply later than
   80% of the control period is a held step).
2. Token agreement of each precision with fp32, recomputed here on the same frames (the held-out frames of
   --dataset, else seeded random frames), beside the figure the export recorded in the bundle.
3. Question accuracy (RT-2's co-fine-tuned scene questions): the bundle's text mode
   (runtime.onnx_engine.TextMode) answers each question about held-out frames of --dataset, scored
   against the answer derived from the simulator state the dataset recorded (distill/vqa.py). Needs
   --dataset.

The evaluator steps the simulator as fast as the policy decides (no clock, raw actions); the cloud rows
run at --rate Hz through the runtime's loop (safety envelope, fixed-point serial quantization, held steps
when a reply is late). The `lan` row is the reference for what that harness alone changes.

    python -m benchmarks quality --student models/student --teacher models/teacher --dataset data/demos_3v --seeds 20
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_BUNDLES, DEFAULT_OUT, check_model_folder, load_average, single_thread
from runtime.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class QualityConfig:
    student: str
    teacher: str
    bundles_dir: str = DEFAULT_BUNDLES
    out: str = DEFAULT_OUT
    dataset: str | None = None
    tasks: str = "default"
    seeds: int = 20
    seed_start: int = 100_000
    max_steps: int = 200
    workers: int = 1
    profiles: list[str] = field(default_factory=lambda: ["lan", "wifi", "lte", "cloud"])
    rate_hz: float = 10.0
    agreement_frames: int = 200
    questions: int = 200
    parity_frames: int = 50
    full_export: bool = False
    quick: bool = False
    seed: int = 0

    def check(self) -> QualityConfig:
        from distill.tasks import resolve_tasks
        from runtime.net_profiles import get_profiles

        check_model_folder(self.student, "student")
        check_model_folder(self.teacher, "teacher")
        resolve_tasks(self.tasks)
        if self.profiles:
            get_profiles(",".join(self.profiles))
        if self.seeds < 1 or self.workers < 1 or self.max_steps < 1:
            raise UserError("--seeds, --workers and --max-steps must be at least 1")
        if not 0.5 <= self.rate_hz <= 200:
            raise UserError(f"--rate {self.rate_hz} Hz is out of range: use 0.5 to 200")
        if self.agreement_frames < 1 or self.questions < 0:
            raise UserError("--agreement-frames must be at least 1 and --questions at least 0")
        if self.dataset and not Path(self.dataset, "manifest.json").is_file():
            raise UserError(f"--dataset {self.dataset} is not a recording: make one with `python -m distill record "
                            f"--out {self.dataset}`")
        return self

    def command(self) -> str:
        args = ["python", "-m", "benchmarks", "quality", "--student", self.student, "--teacher", self.teacher,
                "--bundles-dir", self.bundles_dir, "--out", self.out, "--tasks", self.tasks, "--seeds",
                str(self.seeds), "--max-steps", str(self.max_steps), "--workers", str(self.workers),
                "--profiles", ",".join(self.profiles) or "none", "--rate", f"{self.rate_hz:g}",
                "--agreement-frames", str(self.agreement_frames), "--questions", str(self.questions)]
        if self.dataset:
            args += ["--dataset", self.dataset]
        if self.full_export:
            args.append("--full-export")
        if self.quick:
            args.append("--quick")
        return shlex.join(args)


# -- closed loop ---------------------------------------------------------------------------------------------
def evaluate_bundle(bundle: Path, config: QualityConfig, tasks: list[str], progress: bool) -> dict:
    """The evaluator's report for one bundle (distill/evaluate.py), at the image size and camera it was
    trained with."""
    from distill.__main__ import policy_factory, recorded_image_settings
    from distill.evaluate import EvalConfig, evaluate, evaluate_in_workers
    from distill.sim import DEFAULT_CAMERA, DEFAULT_IMAGE_SIZE

    size, camera = recorded_image_settings(str(bundle))
    eval_config = EvalConfig(tasks=list(tasks), seeds_per_task=config.seeds, seed_start=config.seed_start,
                             max_steps=config.max_steps, image_size=size or DEFAULT_IMAGE_SIZE,
                             camera=camera or DEFAULT_CAMERA).check()
    if config.workers > 1 and len(tasks) > 1:
        return evaluate_in_workers(str(bundle), eval_config, config.workers, progress=progress)
    make_policy, name = policy_factory(str(bundle))
    return evaluate(make_policy, eval_config, policy_name=name, progress=progress)


def success_table(report_tasks: dict, tasks: list[str]) -> dict:
    """{task: {"successes", "episodes", "success_rate"}, ..., "overall": ...} from an evaluator report."""
    out = {}
    for task in tasks + ["overall"]:
        row = report_tasks.get(task)
        if row:
            out[task] = {"successes": int(row["successes"]), "episodes": int(row["episodes"]),
                         "success_rate": float(row["successes"]) / max(int(row["episodes"]), 1)}
    return out


def cloud_success(config: QualityConfig, teacher_bundle: Path, tasks: list[str], log) -> dict:
    """Per profile: success per task through the cloud path at a fixed rate (runtime/cloud_eval.py)."""
    from runtime.cloud_eval import CloudEvalConfig, run_cloud_eval

    if not config.profiles:
        return {}
    report = run_cloud_eval(CloudEvalConfig(bundle=str(teacher_bundle), tasks=list(tasks), seeds=config.seeds,
                                            seed_start=config.seed_start, profiles=list(config.profiles),
                                            rate_hz=config.rate_hz, max_steps=config.max_steps),
                            progress=log)
    out = {}
    for profile, row in report["profiles"].items():
        tasks_rows = {t: {"successes": r["successes"], "episodes": r["episodes"]} for t, r in row["tasks"].items()}
        tasks_rows["overall"] = {"successes": row["successes"], "episodes": row["episodes"]}
        out[profile] = {"success": success_table(tasks_rows, tasks), "fallback_steps": row["fallback_steps"],
                        "steps": row["steps"], "late": row["late"], "round_trip_ms": row["round_trip_ms"],
                        "timeout_ms": report["timeout_ms"], "profile": row["profile"]}
    return out


# -- token agreement and questions ------------------------------------------------------------------------------
def agreement_frames(config: QualityConfig, size: int, views: int = 1) -> tuple[np.ndarray, list[str], str]:
    from benchmarks.latency import benchmark_frames

    return benchmark_frames(config.agreement_frames, config.dataset, size, config.seed, views)


def token_agreement(bundles: dict[str, Path], frames: np.ndarray, instructions: list[str], progress: bool) -> dict:
    """Each student precision against the student fp32 bundle on the same frames."""
    from tqdm import tqdm

    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla

    engines = {p: OnnxVla(Bundle.load(bundles[f"student-{p}"]), threads=1, providers=["CPUExecutionProvider"])
               for p in PRECISIONS}
    ids = list(engines["fp32"].action_ids)
    tokens = {p: [] for p in PRECISIONS}
    for frame, instruction in tqdm(list(zip(frames, instructions)), desc="token agreement", unit="frame",
                                   disable=not progress, leave=False):
        for p, engine in engines.items():
            tokens[p].append(engine.decode_actions(frame, instruction)[0])
    reference = np.stack(tokens["fp32"])  # (F, D)
    out = {}
    for p in PRECISIONS:
        mine = np.stack(tokens[p])
        bins = np.vectorize(ids.index)(mine) - np.vectorize(ids.index)(reference)
        metrics = engines[p].bundle.manifest.get("metrics", {})
        export = metrics.get(f"{p}_vs_fp32", {})
        out[f"student {p}"] = {"precision": p, "frames": len(mine),
                               "token_agreement": float(np.mean(mine == reference)),
                               "frame_agreement": float(np.mean(np.all(mine == reference, axis=1))),
                               "mean_bin_error": float(np.mean(np.abs(bins))),
                               "export_token_agreement": export.get("token_agreement", 1.0 if p == "fp32" else None),
                               "export_frames": export.get("frames", metrics.get("parity_fp32", {}).get("frames"))}
    return out


def question_set(dataset: str, count: int, seed: int) -> list[tuple[np.ndarray, str, str, str]]:
    """(frame, question, answer, kind) from held-out episodes of `dataset`, answers from the simulator state."""
    from distill.dataset import Dataset
    from distill.train_teacher import split_episodes
    from distill.vqa import QUESTION_TYPES, answer

    ds = Dataset.open(dataset)
    _, held = split_episodes(ds, 0.1)
    items = []
    for index in held or [e.index for e in ds.episodes]:
        ep = ds.load_episode(index)
        for t in range(0, len(ep), 3):
            for kind in QUESTION_TYPES:
                qa = answer(kind, ep.info.task, ep.sim_obs, t, ep.info.success_step)
                if qa is not None:
                    items.append((ep.frames[t], qa[0], qa[1], kind))
    order = np.random.default_rng(seed).permutation(len(items))[:count]
    return [items[i] for i in sorted(order)]


def question_accuracy(bundle: Path, questions: list, progress: bool) -> dict:
    from tqdm import tqdm

    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla, TextMode

    try:
        text = TextMode(OnnxVla(Bundle.load(bundle), threads=1, providers=["CPUExecutionProvider"]))
    except UserError as err:
        return {"accuracy": None, "note": str(err)}
    right: dict[str, list[bool]] = {}
    examples = []
    start = time.perf_counter()
    for frame, question, truth, kind in tqdm(questions, desc=f"questions {bundle.name}", unit="q",
                                             disable=not progress, leave=False):
        reply = text.answer(frame, question)
        right.setdefault(kind, []).append(reply == truth)
        if len(examples) < 5:
            examples.append({"question": question, "expected": truth, "answer": reply})
    every = [ok for oks in right.values() for ok in oks]
    return {"accuracy": float(np.mean(every)) if every else None, "questions": len(every),
            "by_kind": {k: float(np.mean(v)) for k, v in sorted(right.items())},
            "ms_per_answer": 1e3 * (time.perf_counter() - start) / max(len(every), 1), "examples": examples}


# -- the benchmark -------------------------------------------------------------------------------------------------
def run_quality(config: QualityConfig, log=print, progress: bool = True) -> dict:
    config.check()
    single_thread()
    from benchmarks.bundles import ensure_bundles
    from benchmarks.machine import describe
    from distill.tasks import resolve_tasks
    from runtime.bundle import Bundle

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = load_average()
    tasks = resolve_tasks(config.tasks)
    bundles = ensure_bundles({"student": config.student, "teacher": config.teacher},
                             {"student": list(PRECISIONS), "teacher": ["fp32"]}, config.bundles_dir,
                             config.dataset, config.parity_frames, config.full_export, log=log)
    wall = time.perf_counter()
    success: dict[str, dict] = {}
    for key in ("teacher-fp32", "student-fp32", "student-fp16", "student-int8"):
        log(f"closed loop: {key} on {len(tasks)} tasks x {config.seeds} seeds")
        report = evaluate_bundle(bundles[key], config, tasks, progress)
        name = key.replace("-", " ")
        success[name] = {"kind": "edge", "bundle": str(bundles[key]), "precision": key.split("-")[1],
                         "harness": "distill evaluate (as fast as the policy decides, raw actions)",
                         **success_table(report["tasks"], tasks)}
    for profile, row in cloud_success(config, bundles["teacher-fp32"], tasks, log).items():
        success[f"teacher cloud ({profile})"] = {
            "kind": "cloud", "bundle": str(bundles["teacher-fp32"]), "precision": "fp32",
            "harness": f"runtime control loop at {config.rate_hz:g} Hz, safety envelope, held steps on late replies",
            **row["success"], "cloud": {k: v for k, v in row.items() if k != "success"}}
    image = Bundle.load(bundles["student-fp32"], verify_files=False).manifest["image"]
    frames, instructions, source = agreement_frames(config, image["height"], int(image.get("views", 1)))
    log(f"token agreement with fp32 on {len(frames)} frames")
    agreement = token_agreement(bundles, frames, instructions, progress)
    questions: dict[str, dict] = {}
    question_note = None
    if config.dataset and config.questions:
        items = question_set(config.dataset, config.questions, config.seed)
        log(f"question accuracy on {len(items)} questions about held-out frames of {config.dataset}")
        for key in ("teacher-fp32", "student-fp32", "student-fp16", "student-int8"):
            questions[key.replace("-", " ")] = question_accuracy(bundles[key], items, progress)
    else:
        question_note = "not measured: pass --dataset (the recording whose simulator state gives the answers)"
    return {"benchmark": "quality", "command": config.command(), "started": started,
            "device": {"kind": "cpu", "label": "CPU (closed loop, agreement and questions run on the CPU)"},
            "machine": {**describe(), "load_average_before": load_before, "load_average_after": load_average()},
            "wall_s": time.perf_counter() - wall, "tasks": tasks, "config": asdict(config),
            "bundles": {k: str(v) for k, v in bundles.items()}, "success": success,
            "agreement": agreement, "agreement_frame_source": source,
            "questions": questions, "question_note": question_note}


# -- outputs -----------------------------------------------------------------------------------------------------
def success_rows(result: dict) -> list[dict]:
    rows = []
    for name, entry in result["success"].items():
        for task in result["tasks"] + ["overall"]:
            if task in entry:
                rows.append({"policy": name, "kind": entry["kind"], "precision": entry["precision"], "task": task,
                             **entry[task]})
    return rows


def write_outputs(result: dict, out: str | Path) -> list[Path]:
    from benchmarks.common import write_csv_atomic
    from benchmarks.plots import plot_quality
    from distill.vqa import QUESTION_TYPES
    from runtime.atomic_io import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "quality.json", result)
    written = [out / "quality.json",
               write_csv_atomic(out / "quality_success.csv", success_rows(result),
                                ["policy", "kind", "precision", "task", "successes", "episodes", "success_rate"]),
               write_csv_atomic(out / "quality_agreement.csv",
                                [{"bundle": k, **v} for k, v in result["agreement"].items()],
                                ["bundle", "precision", "frames", "token_agreement", "frame_agreement",
                                 "mean_bin_error", "export_token_agreement", "export_frames"]),
               write_csv_atomic(out / "quality_questions.csv",
                                [{"bundle": k, **v, **{f"accuracy_{kind}": a for kind, a in (v.get("by_kind") or {}).items()}}
                                 for k, v in result["questions"].items()],
                                ["bundle", "accuracy", "questions"] + [f"accuracy_{k}" for k in QUESTION_TYPES]
                                + ["ms_per_answer", "note"]),
               plot_quality(result, out / "quality.png")]
    return written
