"""The arm over the serial link, for the control loop.

A real arm is a `firmware_bridge.link.SerialLink` itself (send_action, hold, hand_position, close).
`BenchRobot` is the emulator's Meta-World arm: motion goes through the serial link exactly as to a real
controller, while the camera frame, the scene reset and the success flag come from the emulator's test
bench (firmware_bridge/bench.py), so the closed loop is runtime -> serial -> emulator -> simulator ->
camera frame -> runtime.

    link = open_link("/dev/ttyACM0", baud=1_000_000)                       # a real arm, handshaken
    bench = BenchClient("127.0.0.1:47000")                                  # the emulator's bench
    robot = BenchRobot(open_link(pty, 1_000_000, processing_ms=100), bench, "drawer-open", image_size=96)
    robot.reset(100000)
    ControlLoop(policy, robot.camera, robot, safety, robot.instruction, config).run()
"""

from __future__ import annotations

import numpy as np

from firmware_bridge.link import ActionLost, ControllerRefused, LinkConfig, SerialLink
from firmware_bridge.protocol import um_to_metres
from runtime.errors import UserError

SIM_PROCESSING_MS = 100.0  # the emulated Meta-World arm steps a physics simulator before it answers


def open_link(port: str, baud: int, mm_per_unit: float = 10.0, ack_timeout_ms: float | None = None,
              processing_ms: float | None = None) -> SerialLink:
    """An open, handshaken link; a UserError that says what to check when no controller answers."""
    config = LinkConfig(port=port, baud=baud, timeout_s=None if ack_timeout_ms is None else ack_timeout_ms / 1000)
    if processing_ms is not None:
        config.processing_s = processing_ms / 1000
    link = SerialLink(config, mm_per_unit=mm_per_unit)
    try:
        return link.open()
    except ActionLost:
        link.close()
        raise UserError(f"no arm controller answered on {port} at {baud} baud: check that the controller is powered "
                        f"and runs the vla-edge firmware, that --baud matches it, and that the port is the right one "
                        f"(`python -m firmware_bridge ports`)") from None
    except ControllerRefused as err:
        link.close()
        raise UserError(f"the controller on {port} refused the handshake ({err}): update the firmware or the "
                        f"runtime so that both speak the same protocol version (firmware_bridge/PROTOCOL.md)") from None


class BenchRobot:
    """The emulated Meta-World arm: `Robot` over the serial link, camera and success over the bench."""

    def __init__(self, link: SerialLink, bench, task: str, image_size: int, camera: str | None = None) -> None:
        self.link, self.bench = link, bench
        self.task, self.image_size, self.camera_name = task, image_size, camera
        self.instruction: str | None = None
        self.done = False  # the simulator reported success since the reset
        self.camera = self
        self._hand: np.ndarray | None = None

    def reset(self, seed: int) -> None:
        """A new episode: the bench resets the scene; the hand position comes with the reply."""
        state = self.bench.reset(seed, task=self.task, image_size=self.image_size, camera=self.camera_name)
        self.task, self.instruction = state["task"], state["instruction"]
        self._hand = um_to_metres(state["hand_um"])
        self.done = False

    # Camera
    def read(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, rendered by the simulator in the emulator's process."""
        image, _ = self.bench.frame()
        return image

    # Robot
    def hand_position(self) -> np.ndarray | None:
        """(3,) metres: from the last ACK (or the reset), in the controller's micrometres."""
        return self._hand

    def send_action(self, values: np.ndarray) -> np.ndarray:
        sent = self.link.send_action(values)
        self._after_step()
        return sent

    def hold(self) -> None:
        self.link.hold()
        self._after_step()

    def _after_step(self) -> None:
        self._hand = self.link.hand_position()
        self.done = self.done or bool(self.bench.status()["success"])

    def close(self) -> None:
        """The link and the bench belong to the caller (one of each serves every task)."""
