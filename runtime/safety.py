"""The safety envelope between the model and the arm: every action passes through it, and every
clamp is counted and logged.

Checks, in order, per action (values in the action spec's units, dx/dy/dz in cm per step):
1. non-finite values: the whole action is replaced by "hold" (zero motion, the previous gripper command)
   and counted;
2. per-dimension bounds [low, high];
3. maximum change per step against the previous action sent (slew limit);
4. workspace box: the motion is cut so the hand's next position (state xyz + motion * metres_per_unit)
   stays inside the box (bounds and slew still hold; a hand already outside moves back toward it);
5. rate limit: an action arriving sooner than 1 / max_rate_hz after the previous one is refused
   (the caller holds position), so a runaway loop cannot flood the arm.

    envelope = SafetyEnvelope(SafetyConfig.from_manifest(bundle.manifest))
    decision = envelope.apply(values, hand_xyz, now=time.monotonic())
    decision.sent, decision.clamped          # what goes to the arm; which checks changed it
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from runtime.errors import UserError

log = logging.getLogger("vla_edge.safety")

CHECKS = ("non_finite", "bounds", "max_delta", "workspace", "rate")


@dataclass(frozen=True)
class SafetyConfig:
    low: tuple[float, ...]  # per-dimension bounds
    high: tuple[float, ...]
    max_delta: tuple[float, ...]  # largest change per step, per dimension
    motion_dims: tuple[int, int, int] = (0, 1, 2)  # which dimensions move the hand in x, y, z
    metres_per_unit: float = 0.01  # Meta-World: 1.0 = 1 cm of hand motion per step
    workspace_low: tuple[float, float, float] = (-0.5, 0.35, 0.03)  # metres, the hand's allowed box
    workspace_high: tuple[float, float, float] = (0.5, 1.0, 0.35)
    max_rate_hz: float = 100.0
    hold: tuple[float, ...] | None = None  # the "do nothing" action (default: zeros)

    def __post_init__(self) -> None:
        n = len(self.low)
        if not (len(self.high) == len(self.max_delta) == n):
            raise UserError(f"safety: low, high and max_delta need one value per action dimension ({n})")
        if any(h < lo for lo, h in zip(self.low, self.high)):
            raise UserError("safety: every high must be >= its low; check the bundle's safety defaults")
        if any(d <= 0 for d in self.max_delta):
            raise UserError("safety: max_delta must be positive in every dimension")
        if any(h <= lo for lo, h in zip(self.workspace_low, self.workspace_high)):
            raise UserError("safety: the workspace box needs high > low on every axis")
        if self.max_rate_hz <= 0:
            raise UserError("safety: max_rate_hz must be positive")

    @classmethod
    def from_manifest(cls, manifest: dict, **overrides) -> "SafetyConfig":
        """The bundle's safety defaults (bounds and slew from the training range), with overrides."""
        safety = manifest["safety"]
        fields = {"low": tuple(safety["low"]), "high": tuple(safety["high"]), "max_delta": tuple(safety["max_delta"])}
        for key in ("workspace_low", "workspace_high", "max_rate_hz", "metres_per_unit"):
            if key in safety:
                fields[key] = tuple(safety[key]) if isinstance(safety[key], list) else safety[key]
        fields.update(overrides)
        return cls(**fields)


@dataclass
class SafetyDecision:
    model: np.ndarray  # (D,) what the policy asked for
    sent: np.ndarray | None  # (D,) what may go to the arm; None when refused (rate limit): hold position
    clamped: list[str] = field(default_factory=list)  # checks that changed or refused the action


class SafetyEnvelope:
    """Stateful: remembers the last action sent and when, and counts every clamp."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self._low = np.asarray(config.low, np.float32)
        self._high = np.asarray(config.high, np.float32)
        self._max_delta = np.asarray(config.max_delta, np.float32)
        self._hold = np.asarray(config.hold if config.hold is not None else np.zeros(len(config.low)), np.float32)
        self.counts: Counter[str] = Counter()
        self.actions = 0
        self.reset()

    def reset(self) -> None:
        """Start of an episode: no previous action, no rate history."""
        self._previous: np.ndarray | None = None
        self._last_time: float | None = None

    def apply(self, values: np.ndarray, hand_xyz: np.ndarray | None, now: float) -> SafetyDecision:
        with np.errstate(over="ignore"):  # a float64 too large for float32 becomes inf: caught below
            values = np.asarray(values, dtype=np.float32).reshape(-1)
        if values.shape != self._low.shape:
            raise ValueError(f"safety: action has {values.size} values, the envelope {self._low.size}")
        self.actions += 1
        decision = SafetyDecision(model=values.copy(), sent=None)
        c = self.config
        if self._last_time is not None and now - self._last_time < 1.0 / c.max_rate_hz:
            self._count(decision, "rate")
            return decision
        sent = values.copy()
        broken = not np.all(np.isfinite(sent))
        if broken:
            sent = (self._hold if self._previous is None else self._previous).copy()  # keep the gripper as it was
            self._count(decision, "non_finite")
        bounded = np.clip(sent, self._low, self._high)
        if not np.array_equal(bounded, sent):
            self._count(decision, "bounds")
        lo, hi = self._low, self._high  # the hard limits: bounds, then slew around the previous action
        if self._previous is not None:
            lo = np.maximum(lo, self._previous - self._max_delta)
            hi = np.minimum(hi, self._previous + self._max_delta)
        sent = np.clip(bounded, lo, hi)
        if not np.array_equal(sent, bounded):
            self._count(decision, "max_delta")
        if broken:
            sent[list(c.motion_dims)] = 0.0  # a broken action holds position: stopping is always allowed
        elif hand_xyz is not None:
            # Motion that keeps the hand in the box, within the hard limits; a hand already outside the
            # box gets the largest allowed motion back toward it.
            dims = list(c.motion_dims)
            hand = np.asarray(hand_xyz, np.float32)[:3]
            inside_lo = (np.asarray(c.workspace_low) - hand) / c.metres_per_unit
            inside_hi = (np.asarray(c.workspace_high) - hand) / c.metres_per_unit
            motion = np.clip(np.clip(sent[dims], inside_lo, inside_hi), lo[dims], hi[dims])
            if not np.allclose(motion, sent[dims]):
                sent[dims] = motion
                self._count(decision, "workspace")
        decision.sent = sent
        self._previous = sent
        self._last_time = now
        return decision

    def _count(self, decision: SafetyDecision, check: str) -> None:
        decision.clamped.append(check)
        self.counts[check] += 1
        log.info("safety %s clamp: model %s", check, np.array2string(decision.model, precision=3))

    def summary(self) -> dict[str, int]:
        return {"actions": self.actions, **{check: self.counts.get(check, 0) for check in CHECKS}}
