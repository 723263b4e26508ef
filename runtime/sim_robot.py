"""The simulator as a robot for the control loop (`python -m runtime run --sim TASK`): the same loop,
safety envelope and policy as on the arm, with Meta-World in place of the hardware. It needs the
workstation extra (`pip install '.[train]'`); the robot side never imports it.

    robot = SimRobot("drawer-open", image_size=96); robot.reset(seed=100000)
    loop = ControlLoop(policy, robot.camera, robot, safety, robot.instruction, config)
"""

from __future__ import annotations

import numpy as np

from runtime.errors import UserError


class SimRobot:
    def __init__(self, task: str, image_size: int = 96, camera: str | None = None) -> None:
        try:
            from distill.sim import MetaWorldSim
        except ImportError:
            raise UserError("--sim needs the simulator: pip install '.[train]' (the robot side runs without it)") from None
        from distill.sim import DEFAULT_CAMERA

        self.sim = MetaWorldSim(task, image_size=image_size, camera=camera or DEFAULT_CAMERA)
        self.instruction = self.sim.instruction
        self.done = False  # the simulator reported success
        self.camera = self

    def reset(self, seed: int) -> None:
        self.sim.reset(seed)
        self.done = False

    # Camera
    def read(self) -> np.ndarray:
        return self.sim.render()

    # Robot
    def hand_position(self) -> np.ndarray:
        return self.sim._last.state[:3]

    def send_action(self, values: np.ndarray) -> np.ndarray:
        sent = np.clip(np.asarray(values, np.float32), -1.0, 1.0)  # the arm's own limits
        step = self.sim.step(sent[:4])
        self.done = self.done or step.success
        return sent

    def hold(self) -> None:
        self.send_action(np.zeros(5, np.float32))

    def close(self) -> None:
        self.sim.close()
