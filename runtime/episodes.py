"""Seeded episodes on a resettable robot (the in-process simulator, or the emulator's arm through the
serial link): the part of `python -m runtime run --sim` that the tests also call with a fake clock.

A robot here has `reset(seed)`, `task`, `instruction`, `camera` and the control loop's `Robot` methods.

    results = run_tasks(lambda task: SimRobot(task, image_size=96), ["drawer-open"], [100000, 100001],
                        policy, safety, LoopConfig(rate_hz=20))
    results.episodes[0]   # {"task": "drawer-open-v3", "seed": 100000, "ended_by": "success", "steps": 57, ...}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from runtime.control_loop import ControlLoop, LoopConfig


@dataclass
class TaskResults:
    episodes: list[dict] = field(default_factory=list)  # one summary per episode, in run order
    loops: list[ControlLoop] = field(default_factory=list)  # their loops, with every step's record

    def successes(self) -> dict[str, int]:
        """Task -> episodes that ended in success."""
        counts: dict[str, int] = {}
        for episode in self.episodes:
            counts[episode["task"]] = counts.get(episode["task"], 0) + (episode["ended_by"] == "success")
        return counts


def run_episode(robot, seed: int, policy, safety, config: LoopConfig, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> tuple[dict, ControlLoop]:
    """Reset `robot` to `seed` and run one control-loop episode on it."""
    robot.reset(seed)
    loop = ControlLoop(policy, robot.camera, robot, safety, robot.instruction, config, clock=clock, sleep=sleep)
    summary = loop.run()
    episode = {"task": robot.task, "seed": int(seed), "ended_by": summary["ended_by"], "steps": summary["steps"],
               "held": summary["held"], "overruns": summary["overruns"], "wall_s": summary["wall_s"]}
    return episode, loop


def run_tasks(make_robot: Callable[[str], object], tasks: Iterable[str], seeds: Iterable[int], policy, safety,
              config: LoopConfig, on_episode: Callable[[dict], None] | None = None, **loop_kwargs) -> TaskResults:
    """Every seed on every task; `make_robot(task)` gives the task's robot, closed after its seeds."""
    results = TaskResults()
    seeds = list(seeds)
    for task in tasks:
        robot = make_robot(task)
        try:
            for seed in seeds:
                episode, loop = run_episode(robot, seed, policy, safety, config, **loop_kwargs)
                results.episodes.append(episode)
                results.loops.append(loop)
                if on_episode is not None:
                    on_episode(episode)
        finally:
            robot.close()
    return results
