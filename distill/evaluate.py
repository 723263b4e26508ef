"""Closed-loop evaluation: run any `Policy` in the simulator over unseen seeds and report success.

An episode ends when the simulator reports success (a success), when the policy sets its terminate
flag on `terminate_after` consecutive steps (a failure, since the task is not done; a single stray
terminate token is executed as a motion and ignored, as the runtime's control loop does), or after
`max_steps` steps (a failure).
Evaluation seeds start at 100000 by default; recorded demonstrations use seeds from 0, so evaluation
never replays a training episode (pass --dataset to have that checked).

    python -m distill evaluate --policy expert --tasks default --seeds 20 --out runs/eval_expert.json
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from distill.dataset import ACTION_NAMES, Dataset
from distill.sim import (
    DEFAULT_CAMERA,
    DEFAULT_IMAGE_SIZE,
    METAWORLD_MAX_PATH_LENGTH,
    camera_views,
)
from distill.tasks import resolve_tasks
from runtime.atomic_io import write_json_atomic
from runtime.errors import UserError
from runtime.policy import Policy

EVAL_SEED_START = 100_000
REPORT_FORMAT = "vla-edge-eval"


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: resolve_tasks("default"))
    seeds_per_task: int = 20
    seed_start: int = EVAL_SEED_START
    max_steps: int = 200
    terminate_after: int = 3  # consecutive terminate actions that end an episode
    image_size: int = DEFAULT_IMAGE_SIZE
    camera: str = DEFAULT_CAMERA
    supersample: int = 2

    def check(self) -> "EvalConfig":
        self.tasks = resolve_tasks(self.tasks)
        if self.seeds_per_task < 1:
            raise UserError(f"--seeds must be at least 1, got {self.seeds_per_task}")
        if self.terminate_after < 1:
            raise UserError(f"--terminate-after must be at least 1, got {self.terminate_after}")
        if not 1 <= self.max_steps <= METAWORLD_MAX_PATH_LENGTH:
            raise UserError(f"--max-steps must be 1 to {METAWORLD_MAX_PATH_LENGTH}, got {self.max_steps}")
        try:
            camera_views(self.camera)
        except ValueError as err:
            raise UserError(str(err)) from None
        if not 16 <= self.image_size <= 512:
            raise UserError(f"--image-size {self.image_size} is out of range: use 16 to 512")
        return self

    def seeds(self) -> list[int]:
        return list(range(self.seed_start, self.seed_start + self.seeds_per_task))


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    length: int  # steps executed
    ended_by: str  # "success" | "terminate" | "max_steps"
    wall_s: float
    policy_s: float  # time inside policy.act()


def check_unseen(config: EvalConfig, dataset: Dataset) -> None:
    """Refuse evaluation seeds that the dataset was recorded on (they would not be unseen)."""
    config.check()
    recorded = dataset.seeds()
    for task in config.tasks:
        overlap = sorted(recorded.get(task, set()) & set(config.seeds()))
        if overlap:
            raise UserError(
                f"evaluation seeds {overlap[:5]} of {task} were recorded in {dataset.root}: "
                f"pass a --seed-start above {max(recorded[task])}"
            )


def run_episode(sim, policy: Policy, seed: int, max_steps: int, terminate_after: int = 1) -> EpisodeResult:
    """One closed-loop episode of `policy` in `sim` (a MetaWorldSim)."""
    start = time.perf_counter()
    policy_s = 0.0
    policy.reset()
    sim.reset(seed)
    ended_by, success, steps, terminates = "max_steps", False, 0, 0
    while steps < max_steps:
        observation = sim.observation()
        t0 = time.perf_counter()
        action = policy.act(observation)
        policy_s += time.perf_counter() - t0
        if action.values.shape != (len(ACTION_NAMES),):
            raise UserError(
                f"the policy returned a {action.values.shape} action; the evaluator needs "
                f"{len(ACTION_NAMES)} values ({', '.join(ACTION_NAMES)})"
            )
        terminates = terminates + 1 if action.terminate else 0
        if terminates >= terminate_after:
            ended_by = "terminate"
            break
        step = sim.step(action.values[:4])
        steps += 1
        if step.success:
            ended_by, success = "success", True
            break
    return EpisodeResult(sim.task, seed, success, steps, ended_by, time.perf_counter() - start, policy_s)


def summarize(results: list[EpisodeResult], tasks: list[str]) -> dict[str, dict]:
    per_task: dict[str, dict] = {}
    for task in tasks + ["overall"]:
        rows = [r for r in results if task == "overall" or r.task == task]
        if not rows:
            continue
        lengths = np.array([r.length for r in rows])
        successes = sum(r.success for r in rows)
        steps = int(lengths.sum())
        per_task[task] = {
            "episodes": len(rows),
            "successes": successes,
            "success_rate": successes / len(rows),
            "mean_length": float(lengths.mean()),
            "median_length": float(np.median(lengths)),
            "mean_length_success": float(np.mean([r.length for r in rows if r.success])) if successes else None,
            "wall_s": float(sum(r.wall_s for r in rows)),
            "policy_ms_per_step": 1000 * sum(r.policy_s for r in rows) / max(steps, 1),
        }
    return per_task


def evaluate(
    make_policy: Callable[[str], Policy],
    config: EvalConfig,
    policy_name: str,
    progress: bool = True,
) -> dict:
    """Evaluate `make_policy(task)` on every task and seed; return the report (see write_report)."""
    from tqdm import tqdm

    from distill.sim import MetaWorldSim

    config.check()
    results: list[EpisodeResult] = []
    start = time.perf_counter()
    bar = tqdm(total=len(config.tasks) * config.seeds_per_task, unit="ep", desc=f"evaluating {policy_name}",
               disable=not progress)
    try:
        for task in config.tasks:
            policy = make_policy(task)
            with MetaWorldSim(task, image_size=config.image_size, camera=config.camera,
                              supersample=config.supersample) as sim:
                for seed in config.seeds():
                    results.append(run_episode(sim, policy, seed, config.max_steps, config.terminate_after))
                    bar.update(1)
                    done = [r for r in results if r.task == task]
                    bar.set_postfix(task=task.removesuffix("-v3"), success=f"{sum(r.success for r in done)}/{len(done)}")
    finally:
        bar.close()
    return {
        "format": REPORT_FORMAT,
        "version": 1,
        "policy": policy_name,
        "config": asdict(config),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor()},
        "wall_s": time.perf_counter() - start,
        "tasks": summarize(results, config.tasks),
        "episodes": [asdict(r) for r in results],
    }


def evaluate_in_workers(policy: str, config: EvalConfig, workers: int, progress: bool = True) -> dict:
    """Spread the tasks over `workers` processes (`python -m distill evaluate` each, one torch thread),
    then merge their JSON reports into one, as if a single process had run every episode."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    config.check()
    groups = [config.tasks[k::workers] for k in range(workers) if config.tasks[k::workers]]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vla-edge-eval-") as tmp:
        procs = []
        for k, tasks in enumerate(groups):
            cmd = [sys.executable, "-m", "distill", "evaluate", "--policy", policy, "--tasks", ",".join(tasks),
                   "--seeds", str(config.seeds_per_task), "--seed-start", str(config.seed_start),
                   "--max-steps", str(config.max_steps), "--terminate-after", str(config.terminate_after),
                   "--image-size", str(config.image_size),
                   "--camera", config.camera, "--out", os.path.join(tmp, f"{k}.json"), "--no-progress"]
            env = dict(os.environ, OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise UserError(f"an evaluation worker failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
        reports = [json.loads(open(os.path.join(tmp, f"{k}.json")).read()) for k in range(len(groups))]
    order = {task: i for i, task in enumerate(config.tasks)}
    episodes = sorted((e for r in reports for e in r["episodes"]), key=lambda e: (order[e["task"]], e["seed"]))
    results = [EpisodeResult(**e) for e in episodes]
    merged = dict(reports[0])
    merged.update(config=asdict(config), wall_s=time.perf_counter() - start, workers=len(groups),
                  tasks=summarize(results, config.tasks), episodes=episodes)
    return merged


def format_table(report: dict) -> str:
    """The report as a fixed-width table for the terminal."""
    lines = [
        f"policy: {report['policy']}   seeds/task: {report['config']['seeds_per_task']}   "
        f"max steps: {report['config']['max_steps']}   wall: {report['wall_s']:.1f} s",
        f"{'task':28s} {'success':>9s} {'rate':>6s} {'len':>6s} {'wall s':>8s} {'policy ms/step':>15s}",
    ]
    for task, row in report["tasks"].items():
        if task == "overall":
            lines.append("-" * 77)
        lines.append(
            f"{task:28s} {row['successes']:>4d}/{row['episodes']:<4d} {100 * row['success_rate']:5.1f}% "
            f"{row['mean_length']:6.1f} {row['wall_s']:8.1f} {row['policy_ms_per_step']:15.2f}"
        )
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    return out
