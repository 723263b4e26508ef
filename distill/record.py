"""Record scripted-expert demonstrations into a dataset (see distill/dataset.py for the format).

Each episode: reset the task from its seed, then at every step render the camera frame, record frame,
proprioception, the simulator's observation and the expert's action, and step. After the first success
the episode goes on for `post_success_steps` more steps with terminate = 1, so that a policy learns to
say it is done (RT-2's terminate dimension).

    python -m distill record --out data/demos --tasks default --episodes 50
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from distill.dataset import (
    ACTION_NAMES,
    ACTION_UNITS,
    DATASET_FORMAT,
    DATASET_VERSION,
    EPISODE_DIR,
    MANIFEST,
    TERMINATE_INDEX,
    ActionStats,
    Dataset,
    DatasetError,
    EpisodeInfo,
    sha256_file,
    write_episode_chunk,
)
from distill.sim import (
    DEFAULT_CAMERA,
    DEFAULT_IMAGE_SIZE,
    METAWORLD_MAX_PATH_LENGTH,
    SIM_OBS_DIM,
    STATE_NAMES,
    camera_views,
)
from distill.tasks import instruction_for, resolve_tasks
from runtime.atomic_io import write_json_atomic
from runtime.errors import UserError
from runtime.policy import Policy


@dataclass
class RecordConfig:
    """What to record. `check()` explains any bad value."""

    tasks: list[str] = field(default_factory=lambda: resolve_tasks("default"))
    episodes_per_task: int = 50
    seed_start: int = 0  # episode e of every task uses seed seed_start + e
    image_size: int = DEFAULT_IMAGE_SIZE
    camera: str = DEFAULT_CAMERA
    max_steps: int = 200
    post_success_steps: int = 10
    supersample: int = 2

    def check(self) -> "RecordConfig":
        self.tasks = resolve_tasks(self.tasks)
        if self.episodes_per_task < 1:
            raise UserError(f"--episodes must be at least 1, got {self.episodes_per_task}")
        if self.seed_start < 0:
            raise UserError(f"--seed-start must be >= 0, got {self.seed_start}")
        if not 16 <= self.image_size <= 512:
            raise UserError(f"--image-size {self.image_size} is out of range: use 16 to 512 (64-128 is typical)")
        try:
            camera_views(self.camera)
        except ValueError as err:
            raise UserError(str(err)) from None
        if not 1 <= self.max_steps + self.post_success_steps <= METAWORLD_MAX_PATH_LENGTH:
            raise UserError(
                f"--max-steps plus --post-success-steps must be 1 to {METAWORLD_MAX_PATH_LENGTH} (Meta-World's limit)"
            )
        if self.post_success_steps < 0:
            raise UserError(f"--post-success-steps must be >= 0, got {self.post_success_steps}")
        return self

    def layout(self) -> dict:
        """The settings every episode of one dataset must share."""
        return {
            "image_size": self.image_size,
            "camera": self.camera,
            "max_steps": self.max_steps,
            "post_success_steps": self.post_success_steps,
            "supersample": self.supersample,
        }


@dataclass
class RecordSummary:
    episodes_recorded: int
    episodes_skipped: int  # already present (resume)
    frames: int
    seconds: float
    render_seconds: float
    successes: int

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def render_ms_per_frame(self) -> float:
        return 1000 * self.render_seconds / self.frames if self.frames else 0.0


def _prepare_folder(out: Path, config: RecordConfig, resume: bool) -> dict | None:
    """Check the output folder before anything is written; return the existing manifest when resuming."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: choose a folder for the dataset")
    if (out / MANIFEST).is_file():
        if not resume:
            raise UserError(
                f"{out} already holds a dataset: pass --resume to add the missing episodes, or choose another --out"
            )
        dataset = Dataset.open(out)  # validates the manifest and every chunk's size
        if dataset.manifest.get("recording", {}).get("layout") != config.layout():
            raise UserError(
                f"{out} was recorded with {dataset.manifest.get('recording', {}).get('layout')}, not "
                f"{config.layout()}: resume with the same --image-size, --camera, --max-steps, "
                f"--post-success-steps, or record into another --out"
            )
        return dataset.manifest
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no dataset: choose an empty or new folder for --out")
    return None


def _manifest(config: RecordConfig, episodes: list[EpisodeInfo], actions: list[np.ndarray], control_dt: float,
              policy: str) -> dict:
    import metaworld
    import mujoco

    all_actions = np.concatenate(actions) if actions else np.zeros((2, len(ACTION_NAMES)), np.float32)
    stats = ActionStats.from_actions(all_actions).to_dict()
    stats["units"] = list(ACTION_UNITS)
    tasks = sorted({ep.task for ep in episodes} | set(config.tasks))
    return {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "simulator": {
            "name": "metaworld",
            "metaworld": getattr(metaworld, "__version__", "3.1.1"),
            "mujoco": mujoco.__version__,
            "control_dt_s": control_dt,
        },
        "recording": {"policy": policy, "layout": config.layout()},
        "image": {
            "height": config.image_size,
            "width": config.image_size * len(camera_views(config.camera)),
            "channels": 3,
            "channel_order": "RGB",
            "camera": config.camera,
        },
        "action": stats,
        "state": {"names": list(STATE_NAMES)},
        "sim_obs_dim": SIM_OBS_DIM,
        "tasks": {t: instruction_for(t) for t in tasks},
        "num_frames": int(sum(ep.length for ep in episodes)),
        "episodes": [ep.to_dict() for ep in episodes],
    }


def record(out: str | Path, config: RecordConfig, resume: bool = False, progress: bool = True,
           actor: Callable[[str], Policy] | None = None, labeler: Callable[[str], Policy] | None = None,
           policy_name: str = "scripted-expert", workers: int = 1) -> RecordSummary:
    """Record `config.episodes_per_task` episodes of every task into the dataset folder `out`.

    `actor(task)` drives the arm; `labeler(task)` gives the action written to the dataset (DAgger: the
    student acts, the teacher labels). Both default to Meta-World's scripted expert.
    `workers` > 1 records the scripted expert's episodes in that many processes (distill/record_workers.py);
    the dataset is the same file for file as one process would write. Either way the manifest lists only
    the episodes finished in order, so a crash loses at most the episodes in flight and --resume goes on.
    """
    from tqdm import tqdm

    config.check()
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and (actor is not None or labeler is not None):
        raise UserError("recording in worker processes runs the scripted expert only: use --workers 1 here")
    out = Path(out)
    existing = _prepare_folder(out, config, resume)
    episodes: list[EpisodeInfo] = []
    actions: list[np.ndarray] = []
    done: set[tuple[str, int]] = set()
    if existing is not None:
        dataset = Dataset(out, existing)
        episodes = list(dataset.episodes)
        actions = [dataset.load_episode(ep.index).actions for ep in episodes]
        done = {(ep.task, ep.seed) for ep in episodes}
    (out / EPISODE_DIR).mkdir(parents=True, exist_ok=True)

    todo = [
        (task, config.seed_start + e)
        for task in config.tasks
        for e in range(config.episodes_per_task)
        if (task, config.seed_start + e) not in done
    ]
    jobs = [EpisodeJob(task, seed, len(episodes) + k) for k, (task, seed) in enumerate(todo)]
    summary = RecordSummary(0, config.episodes_per_task * len(config.tasks) - len(todo), 0, 0.0, 0.0, 0)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="ep", desc="recording", disable=not progress)
    finished: dict[int, tuple[EpisodeInfo, float]] = {}  # index -> (info, render seconds), not yet in order

    def add(info: EpisodeInfo, render_s: float, control_dt: float) -> None:
        """Take one finished episode; write the manifest for every episode now complete in order."""
        finished[info.index] = (info, render_s)
        complete = len(episodes)
        while len(episodes) in finished:
            ready, seconds = finished.pop(len(episodes))
            episodes.append(ready)
            actions.append(np.load(out / ready.file)["actions"])
            summary.episodes_recorded += 1
            summary.frames += ready.length
            summary.render_seconds += seconds
            summary.successes += int(ready.success)
        if len(episodes) > complete:  # an episode that finished ahead of its turn leaves the manifest as it is
            write_json_atomic(out / MANIFEST, _manifest(config, episodes, actions, control_dt, policy_name))
        bar.update(1)
        bar.set_postfix(task=info.task.removesuffix("-v3"), fps=f"{summary.frames / (time.perf_counter() - start):.0f}")

    try:
        if workers > 1 and len(jobs) > 1:
            from distill.record_workers import record_in_workers

            record_in_workers(out, config, jobs, min(workers, len(jobs)), add)
        else:
            recorder = EpisodeRecorder(out, config, actor, labeler)
            try:
                for job in jobs:
                    add(*recorder.record(job), recorder.control_dt)
            finally:
                recorder.close()
    finally:
        bar.close()
    if not episodes:
        raise DatasetError("nothing was recorded: check --tasks and --episodes")
    summary.seconds = time.perf_counter() - start
    return summary


@dataclass(frozen=True)
class EpisodeJob:
    task: str
    seed: int
    index: int  # its place in the dataset: episodes/<index>.npz

    @property
    def file(self) -> str:
        return f"{EPISODE_DIR}/{self.index:06d}.npz"


class EpisodeRecorder:
    """Records episodes one at a time, keeping one simulator per task in turn."""

    def __init__(self, out: Path, config: RecordConfig, actor: Callable[[str], Policy] | None = None,
                 labeler: Callable[[str], Policy] | None = None) -> None:
        from distill.expert import ScriptedExpert

        self.out, self.config = out, config
        self.actor, self.labeler = actor or ScriptedExpert, labeler
        self.sim = None
        self.control_dt = 0.0

    def record(self, job: EpisodeJob) -> tuple[EpisodeInfo, float]:
        """Run and write one episode; returns its manifest entry and the seconds spent rendering."""
        from distill.sim import MetaWorldSim

        if self.sim is None or self.sim.task != job.task:
            self.close()
            self.sim = MetaWorldSim(job.task, image_size=self.config.image_size, camera=self.config.camera,
                                    supersample=self.config.supersample)
            self.control_dt = float(self.sim._env.dt)
            self._acting = self.actor(job.task)
            self._labelling = self.labeler(job.task) if self.labeler is not None else None
        arrays, success_step, render_s = run_labelled_episode(self.sim, self._acting, self._labelling, job.seed,
                                                              self.config)
        path = self.out / job.file
        write_episode_chunk(path, arrays)
        info = EpisodeInfo(index=job.index, file=job.file, task=job.task, instruction=self.sim.instruction,
                           seed=job.seed, length=len(arrays["actions"]), success=success_step is not None,
                           success_step=success_step, bytes=path.stat().st_size, sha256=sha256_file(path))
        return info, render_s

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None


def run_labelled_episode(sim, actor: Policy, labeler: Policy | None, seed: int,
                         config: RecordConfig) -> tuple[dict[str, np.ndarray], int | None, float]:
    """Run one episode driven by `actor`, recording `labeler`'s action (the actor's when None).

    Returns the episode's arrays, the first frame showing success, and the seconds spent rendering.
    """
    frames, states, sim_obs, acts, succ = [], [], [], [], []
    actor.reset()
    if labeler is not None:
        labeler.reset()
    step = sim.reset(seed)
    success_step: int | None = None
    render_s = 0.0
    t = 0
    while True:
        r0 = time.perf_counter()
        obs = sim.observation()
        render_s += time.perf_counter() - r0
        executed = actor.act(obs).values  # (5,)
        action = (labeler.act(obs).values if labeler is not None else executed).copy()
        action[TERMINATE_INDEX] = 1.0 if success_step is not None else 0.0
        frames.append(obs.image)
        states.append(obs.state)
        sim_obs.append(step.sim_obs)
        acts.append(action)
        step = sim.step(executed[:4])
        succ.append(step.success)
        t += 1
        if step.success and success_step is None:
            success_step = t  # the next frame is the first that shows success
        if success_step is not None and t >= success_step + config.post_success_steps:
            break
        if success_step is None and t >= config.max_steps:
            break
    arrays = {
        "frames": np.stack(frames).astype(np.uint8),
        "state": np.stack(states).astype(np.float32),
        "sim_obs": np.stack(sim_obs).astype(np.float32),
        "actions": np.stack(acts).astype(np.float32),
        "success": np.asarray(succ, dtype=np.bool_),
    }
    return arrays, success_step, render_s
