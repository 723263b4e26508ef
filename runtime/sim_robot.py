"""The simulator as a robot for the control loop (`python -m runtime run --sim TASK`): the same loop,
safety envelope and policy as on the arm, with Meta-World in place of the hardware. It needs the
workstation extra (`pip install '.[train]'`); the robot side never imports it.

By default the simulated arm gets what a real one would over the serial link: actions in the protocol's
fixed point (0.01 mm, gripper 1e-4) after the controller's own limit, and hand positions in whole
micrometres, so an in-process run and a run through the emulator (`--port`) see the same numbers.

    robot = SimRobot("drawer-open", image_size=96); robot.reset(seed=100000)
    loop = ControlLoop(policy, robot.camera, robot, safety, robot.instruction, config)
"""

from __future__ import annotations

import numpy as np

from firmware_bridge.protocol import ActionPayload, metres_to_um, um_to_metres
from firmware_bridge.sim_arm import MM_PER_UNIT, sim_action
from runtime.errors import UserError


class SimRobot:
    def __init__(self, task: str, image_size: int = 96, camera: str | None = None, fixed_point: bool = True) -> None:
        try:
            from distill.sim import MetaWorldSim
        except ImportError:
            raise UserError("--sim needs the simulator: pip install '.[train]' (the robot side runs without it)") from None
        from distill.sim import DEFAULT_CAMERA

        self.sim = MetaWorldSim(task, image_size=image_size, camera=camera or DEFAULT_CAMERA)
        self.instruction = self.sim.instruction
        self.task = self.sim.task
        self.fixed_point = fixed_point  # quantize as the serial link does (False: raw float32 actions)
        self.done = False  # the simulator reported success
        self.gripper_command = 0.0  # the last gripper value sent: holding keeps it (a grasp stays closed)
        self.camera = self

    def reset(self, seed: int) -> None:
        self.sim.reset(seed)
        self.done = False
        self.gripper_command = 0.0

    # Camera
    def read(self) -> np.ndarray:
        return self.sim.render()

    # Robot
    def hand_position(self) -> np.ndarray:
        """(3,) metres: float32 from the simulator, or float64 whole micrometres in fixed point."""
        xyz = self.sim._last.state[:3]
        return um_to_metres(metres_to_um(xyz)) if self.fixed_point else xyz

    def send_action(self, values: np.ndarray) -> np.ndarray:
        sent = np.clip(np.asarray(values, np.float32), -1.0, 1.0)  # the arm's own limits
        if self.fixed_point:
            applied = ActionPayload.quantize(sent, MM_PER_UNIT)
            sent[:4] = applied.units(MM_PER_UNIT)
            step = self.sim.step(sim_action(applied))
        else:
            step = self.sim.step(sent[:4])
        self.done = self.done or step.success
        self.gripper_command = float(sent[3])
        return sent

    def hold(self) -> None:
        """One control period with no hand motion; the gripper keeps its last command."""
        hold = np.zeros(5, np.float32)
        hold[3] = self.gripper_command
        self.send_action(hold)

    def close(self) -> None:
        self.sim.close()
