"""DAgger rounds (Ross et al., 2011), shared by teacher training and distillation.

Behaviour cloning learns only the states the demonstrator visits; in closed loop a policy drifts into
states it never saw and its errors compound (and it may say "done" in a state that merely looks
finished). A round lets the current model drive for a few episodes per task while a labeller writes
what it would have done at every visited frame; the episodes join the training data. The teacher is
labelled by Meta-World's scripted expert (which reads the simulator state, so it can correct any state),
the student by the teacher. Round r of a run records into <out>/rounds/round_<r> with its own seeds:

    teacher rounds: 300000 + 1000 r     student rounds: 200000 + 1000 r

far from the recorded demonstrations (0..) and from evaluation (100000..). The terminate dimension of
a round's labels follows the simulator's success flag, as in the demonstrations; a model's own
terminate never ends a round's episode early.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from distill.dataset import Dataset
from distill.record import RecordConfig, RecordSummary, record

STUDENT_ROUND_SEED_START = 200_000
TEACHER_ROUND_SEED_START = 300_000
ROUNDS_DIR = "rounds"


def round_dir(out: str | Path, r: int) -> Path:
    return Path(out) / ROUNDS_DIR / f"round_{r}"


def record_round(out: str | Path, r: int, dataset: Dataset, seed_start: int, episodes_per_task: int,
                 actor: Callable, labeler: Callable, policy_name: str, progress: bool = True) -> RecordSummary:
    """Record round `r` (resuming a partial one): `actor(task)` drives, `labeler(task)` writes the actions.

    Frames match `dataset` (size, camera, episode length limits), so the round's episodes can be mixed in.
    """
    layout = dataset.manifest["recording"]["layout"]
    config = RecordConfig(tasks=sorted(dataset.tasks), episodes_per_task=episodes_per_task,
                          seed_start=seed_start + 1000 * r, image_size=dataset.image["height"],
                          camera=dataset.image["camera"], max_steps=layout["max_steps"],
                          post_success_steps=layout["post_success_steps"])
    return record(round_dir(out, r), config, resume=True, progress=progress, actor=actor, labeler=labeler,
                  policy_name=policy_name)


def round_sources(dataset: Dataset, train_episodes: list[int], out: str | Path,
                  rounds_done: int) -> list[tuple[Dataset, list[int]]]:
    """The training episodes of `dataset` followed by every episode of rounds 1..rounds_done."""
    sources = [(dataset, train_episodes)]
    for r in range(1, rounds_done + 1):
        round_ds = Dataset.open(round_dir(out, r))
        sources.append((round_ds, [e.index for e in round_ds.episodes]))
    return sources


def rollout_success(out: str | Path, r: int) -> dict[str, dict[str, int]]:
    """Per task: how many of round `r`'s episodes the driving model finished (a closed-loop measure of
    the model as it was before that round's training, on the round's seeds)."""
    by_task: dict[str, dict[str, int]] = {}
    for ep in Dataset.open(round_dir(out, r)).episodes:
        row = by_task.setdefault(ep.task, {"episodes": 0, "successes": 0})
        row["episodes"] += 1
        row["successes"] += int(ep.success)
    return by_task
