"""The one interface every policy speaks: `reset()` and `act(observation) -> Action`.

The control loop, the closed-loop evaluator and the benchmarks talk only to this protocol, so the
local ONNX engine, the TensorRT engine, the cloud client, the PyTorch reference and the scripted
expert are interchangeable.

Example (any policy):

    policy.reset()
    action = policy.act(Observation(image=frame, instruction="open the drawer"))
    action.values        # (D,) float32, physical units, in the order of the action spec
    action.timings       # {"vision": 0.004, "decode": 0.011, ...} seconds per stage
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Observation:
    """What a policy sees at one control step."""

    image: np.ndarray  # (H, W, 3) uint8, RGB, top row first
    instruction: str  # natural-language task, e.g. "open the drawer"
    state: np.ndarray | None = None  # (S,) float32 proprioception (hand xyz, gripper opening)
    # Privileged simulator observation, for scripted experts only; never present on a real robot.
    sim_state: np.ndarray | None = None

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"Observation.image must be an (H, W, 3) uint8 RGB array, got shape {image.shape} "
                f"dtype {image.dtype}; convert the camera frame with cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)"
            )
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ValueError("Observation.instruction must be a non-empty string, e.g. 'open the drawer'")
        self.image = image


@dataclass
class Action:
    """One action decided by a policy, with how long each stage took."""

    values: np.ndarray  # (D,) float32, physical units: the model's action before any safety clamp
    tokens: np.ndarray | None = None  # (D,) int64 vocabulary ids when the policy decodes tokens
    timings: dict[str, float] = field(default_factory=dict)  # stage name -> seconds
    sent: np.ndarray | None = None  # (D,) float32, what actually went to the arm after the safety envelope

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 1:
            raise ValueError(f"Action.values must be 1-D, got shape {self.values.shape}")

    @property
    def terminate(self) -> bool:
        """True when the policy says the episode is over (RT-2's terminate dimension, the last one)."""
        return bool(self.values[-1] > 0.5)


@runtime_checkable
class Policy(Protocol):
    """A policy: reset at the start of an episode, then one action per observation."""

    def reset(self) -> None:
        """Forget everything about the previous episode (KV caches, action history)."""

    def act(self, observation: Observation) -> Action:
        """Decide one action for this observation."""
