"""The fixed-rate control loop: camera -> policy -> safety envelope -> arm, with per-stage timings,
deadline monitoring and an episode log.

Overrun policy: an action whose computation ran past the step's deadline is stale; it is never sent.
The arm is told to hold position and the overrun is counted and logged. A step that finishes early
sleeps to the next tick; ticks are counted from the loop's start, so timing errors do not accumulate,
and ticks already missed after an overrun are skipped rather than caught up.
The episode stops cleanly when the policy asks to terminate on `terminate_after` consecutive steps.

    loop = ControlLoop(policy, camera, robot, SafetyEnvelope(config), "open the drawer", LoopConfig(rate_hz=10))
    summary = loop.run()
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from runtime.policy import Observation, Policy
from runtime.safety import SafetyEnvelope

# "act" is the one-call action graph (vision + prefill + decode together) where a bundle has it.
STAGES = ("capture", "preprocess", "vision", "prefill", "decode", "act", "detokenize", "safety", "send")


class Robot(Protocol):
    """What the loop needs of an arm: its hand position (for the workspace check), send, hold."""

    def hand_position(self) -> np.ndarray | None:
        """(3,) metres, or None when the arm does not report it."""

    def send_action(self, values: np.ndarray) -> np.ndarray:
        """Send one action; return what was actually sent (after the arm's own clamping)."""

    def hold(self) -> None:
        """Keep the current position (no motion)."""


@dataclass
class LoopConfig:
    rate_hz: float = 10.0
    deadline_s: float | None = None  # default: one period
    terminate_after: int = 3
    max_steps: int = 200
    log_path: str | None = None  # JSON lines, one record per step

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def deadline(self) -> float:
        return self.deadline_s if self.deadline_s is not None else self.period


@dataclass
class StepRecord:
    step: int
    t: float  # seconds since the loop started
    timings: dict[str, float]  # stage -> seconds
    model_action: list[float] | None
    sent_action: list[float] | None
    clamped: list[str] = field(default_factory=list)
    overrun: bool = False
    held: bool = False
    terminate: bool = False


class ControlLoop:
    def __init__(self, policy: Policy, camera, robot: Robot, safety: SafetyEnvelope, instruction: str,
                 config: LoopConfig, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy, self.camera, self.robot, self.safety = policy, camera, robot, safety
        self.instruction = instruction
        self.config = config
        self.clock, self.sleep = clock, sleep
        self.records: list[StepRecord] = []

    def step(self, index: int, start: float, tick: float) -> StepRecord:
        timings: dict[str, float] = {}
        t0 = self.clock()
        frame = self.camera.read()
        state = self.robot.hand_position()
        timings["capture"] = self.clock() - t0
        action = self.policy.act(Observation(image=frame, instruction=self.instruction, state=state))
        timings.update({k: v for k, v in action.timings.items() if k in STAGES})
        record = StepRecord(step=index, t=t0 - start, timings=timings, model_action=action.values.tolist(),
                            sent_action=None, terminate=action.terminate)
        if self.clock() - tick > self.config.deadline:  # stale: never send it
            record.overrun = record.held = True
            self.robot.hold()
            return record
        t1 = self.clock()
        decision = self.safety.apply(action.values, state, now=t1)
        timings["safety"] = self.clock() - t1
        record.clamped = decision.clamped
        t2 = self.clock()
        if decision.sent is None:
            record.held = True
            self.robot.hold()
        else:
            record.sent_action = np.asarray(self.robot.send_action(decision.sent)).tolist()
        timings["send"] = self.clock() - t2
        return record

    def run(self) -> dict:
        """Run until terminate or max_steps; return the summary (stage percentiles, overruns, clamps)."""
        self.policy.reset()
        self.safety.reset()
        log = open(self.config.log_path, "a") if self.config.log_path else None
        start = self.clock()
        terminates = 0
        ended_by = "max_steps"
        tick_index = 0
        try:
            for index in range(self.config.max_steps):
                tick = start + tick_index * self.config.period
                record = self.step(index, start, tick)
                self.records.append(record)
                if log is not None:
                    log.write(json.dumps(asdict(record)) + "\n")
                    log.flush()
                if getattr(self.robot, "done", False):  # a simulator that knows the task succeeded
                    ended_by = "success"
                    break
                terminates = terminates + 1 if record.terminate else 0
                if terminates >= self.config.terminate_after:
                    ended_by = "terminate"
                    break
                # The next tick that is not already past: after an overrun, missed ticks are skipped.
                now = self.clock()
                tick_index = max(tick_index + 1, math.ceil((now - start) / self.config.period - 1e-9))
                wait = start + tick_index * self.config.period - now
                if wait > 0:
                    self.sleep(wait)
        finally:
            if log is not None:
                log.close()
        return self.summary(ended_by, self.clock() - start)

    def summary(self, ended_by: str, wall: float) -> dict:
        stages = {}
        for stage in STAGES + ("total",):
            values = [sum(r.timings.values()) if stage == "total" else r.timings[stage]
                      for r in self.records if stage == "total" or stage in r.timings]
            if values:
                ms = 1000 * np.asarray(values)
                stages[stage] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                                 "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}
        steps = len(self.records)
        return {"steps": steps, "ended_by": ended_by, "wall_s": wall, "achieved_hz": steps / wall if wall > 0 else None,
                "overruns": sum(r.overrun for r in self.records), "held": sum(r.held for r in self.records),
                "safety": self.safety.summary(), "stages": stages}


def format_stage_table(summary: dict) -> str:
    lines = [f"{'stage':12s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}"]
    for stage, row in summary["stages"].items():
        lines.append(f"{stage:12s} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['p99_ms']:8.2f} {row['max_ms']:8.2f}")
    return "\n".join(lines)


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
