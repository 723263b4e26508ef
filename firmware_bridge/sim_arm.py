"""Meta-World's arm behind the controller (`python -m firmware_bridge emulate --arm metaworld`).

An ACTION that the controller applies steps the simulator once; a HEARTBEAT steps it once with no
hand motion and the gripper kept at its last command (a control period spent holding, as `runtime.sim_robot.SimRobot.hold` does); the watchdog and
the e-stop stop the arm without stepping (simulated time stands still while nothing is commanded, so a
slow host never changes an episode). ACKs report the simulated hand position.

The same object serves the test bench (firmware_bridge/bench.py): reset to a seed, switch task, render
the camera frame, report success. Every method holds one lock: the serial thread and the bench thread
share the simulator.

It needs the workstation extra (`pip install '.[train]'`); the import happens when an arm is made.

    arm = MetaWorldArm("drawer-open", image_size=96)
    core = ControllerCore(arm, ControllerLimits(max_step_mm=10.0))
"""

from __future__ import annotations

import threading

import numpy as np

from firmware_bridge.protocol import ActionPayload, metres_to_um
from runtime.errors import UserError

MM_PER_UNIT = 10.0  # Meta-World: an action of 1.0 moves the hand 1 cm per step
MAX_STEP_MM = 10.0  # Meta-World clips actions to [-1, 1]: the controller's own limit matches


def sim_action(action: ActionPayload, mm_per_unit: float = MM_PER_UNIT) -> np.ndarray:
    """(4,) float64 Meta-World action (dx, dy, dz, gripper) from an applied ACTION payload."""
    return np.asarray(action.units(mm_per_unit), np.float64)


def _distill():
    """The simulator modules, or a UserError that says how to install them."""
    try:
        from distill import sim, tasks
    except ImportError:
        raise UserError("--arm metaworld needs the simulator: pip install '.[train]' (or use --arm kinematic)") from None
    return sim, tasks


def make_sim(task: str, image_size: int, camera: str | None):
    """A MetaWorldSim, or a UserError naming what is wrong with the task, size or camera."""
    sim, _ = _distill()
    try:
        return sim.MetaWorldSim(task, image_size=image_size, camera=camera or sim.DEFAULT_CAMERA)
    except UserError:
        raise
    except ValueError as err:
        raise UserError(f"cannot simulate task '{task}': {err}") from None


class MetaWorldArm:
    """The controller's `ArmModel` over a Meta-World task, plus what the test bench asks of it."""

    def __init__(self, task: str, image_size: int = 96, camera: str | None = None, seed: int = 0) -> None:
        self._lock = threading.RLock()
        self.sim = None
        self.gripper_command = 0.0  # the last applied gripper value: a HEARTBEAT keeps it (a grasp stays closed)
        self.success = False  # the task succeeded at some step since the last reset
        self.truncated = False  # Meta-World's step limit was reached: further motion is refused
        self.configure(task, image_size, camera)
        self.reset(seed)

    # -- bench -------------------------------------------------------------------------------------
    def configure(self, task: str, image_size: int, camera: str | None) -> None:
        """Simulate `task` at `image_size` pixels from `camera`; a new simulator only when one changes."""
        task = _distill()[1].resolve_task(task)
        with self._lock:
            if self.sim is not None and (self.sim.task, self.sim.image_size) == (task, image_size) \
                    and camera in (None, self.sim.camera):
                return
            sim = make_sim(task, image_size, camera)
            if self.sim is not None:
                self.sim.close()
            self.sim = sim

    def reset(self, seed: int) -> None:
        with self._lock:
            self.sim.reset(seed)
            self.success = self.truncated = False
            self.gripper_command = 0.0

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB from the simulator's camera."""
        with self._lock:
            return self.sim.render()

    @property
    def steps(self) -> int:
        return self.sim.steps

    def describe(self) -> dict:
        with self._lock:
            return {"task": self.sim.task, "instruction": self.sim.instruction, "image_size": self.sim.image_size,
                    "camera": self.sim.camera, "steps": self.sim.steps, "success": self.success,
                    "truncated": self.truncated, "hand_um": list(self.hand_um()), "gripper": self.gripper()}

    # -- ArmModel ----------------------------------------------------------------------------------
    def apply(self, action: ActionPayload) -> None:
        values = sim_action(action)  # (4,) dx, dy, dz, gripper
        with self._lock:
            self.gripper_command = float(values[3])
        self._step(values)

    def idle_step(self) -> None:
        with self._lock:
            self._step(np.array([0.0, 0.0, 0.0, self.gripper_command]))

    def hold(self) -> None:
        """The simulator only moves when stepped: holding is not stepping."""

    def hand_um(self) -> tuple[int, int, int]:
        with self._lock:
            return metres_to_um(self.sim._last.state[:3])

    def gripper(self) -> float:
        with self._lock:
            return float(np.clip(self.sim._last.state[3], 0.0, 1.0))

    def _step(self, action: np.ndarray) -> None:
        with self._lock:
            if self.sim.steps >= _distill()[0].METAWORLD_MAX_PATH_LENGTH:  # Meta-World refuses more: hold instead of crashing
                self.truncated = True
                return
            succeeded = self.sim.step(action).success
            self.success = self.success or succeeded

    def close(self) -> None:
        with self._lock:
            if self.sim is not None:
                self.sim.close()
                self.sim = None
