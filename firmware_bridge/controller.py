"""The controller side of the protocol as pure logic: frames in, frames out, with an injectable clock.

It is what the C firmware implements (firmware_bridge/firmware/) and what the emulator runs on the
host: handshake, sequence checks, duplicate suppression, the controller's own limits, the watchdog and
the e-stop latch. The arm itself is behind `ArmModel` (a kinematic model, or Meta-World's arm).

    core = ControllerCore(KinematicArm(), clock=time.monotonic)
    replies = core.handle(frame)       # frames to send back
    core.tick()                        # call often: runs the watchdog
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from firmware_bridge.protocol import (
    ACTION,
    ERROR,
    HELLO,
    HELLO_ACK,
    PROTOCOL_VERSION,
    STATE_ESTOP,
    STATE_WATCHDOG_HOLD,
    AckPayload,
    AckStatus,
    ActionPayload,
    ErrorCode,
    Frame,
    MsgType,
    ProtocolError,
    seq_newer,
    validate,
)


class ArmModel(Protocol):
    def apply(self, action: ActionPayload) -> None:
        """Move by one step of `action` (already within the controller's limits)."""

    def hold(self) -> None:
        """Stop moving (the watchdog fired, or the e-stop latched)."""

    def idle_step(self) -> None:
        """One control period without motion (a HEARTBEAT): a simulated arm lets its time advance."""

    def hand_um(self) -> tuple[int, int, int]:
        """Hand position, micrometres."""

    def gripper(self) -> float:
        """Gripper opening, 0 closed .. 1 open."""


class KinematicArm:
    """A point hand that moves by the commanded millimetres each step, inside a box; a 1-D gripper."""

    def __init__(self, start_mm=(0.0, 600.0, 200.0), low_mm=(-500.0, 350.0, 30.0), high_mm=(500.0, 1000.0, 350.0)):
        self.position = np.asarray(start_mm, np.float64)
        self.low, self.high = np.asarray(low_mm), np.asarray(high_mm)
        self.opening = 1.0
        self.steps = 0

    def apply(self, action: ActionPayload) -> None:
        self.position = np.clip(self.position + [action.dx_mm, action.dy_mm, action.dz_mm], self.low, self.high)
        self.opening = float(np.clip(self.opening - 0.2 * action.gripper, 0.0, 1.0))
        self.steps += 1

    def hold(self) -> None:
        """A point hand stops instantly."""

    def idle_step(self) -> None:
        """A point hand has no dynamics: nothing happens while it waits."""

    def hand_um(self) -> tuple[int, int, int]:
        return tuple(int(round(v * 1000)) for v in self.position)

    def gripper(self) -> float:
        return self.opening


@dataclass
class ControllerLimits:
    max_step_mm: float = 20.0  # largest hand motion per step, per axis
    control_period_ms: int = 50
    watchdog_ms: int = 200
    action_dims: int = 5


class ControllerCore:
    def __init__(self, arm: ArmModel, limits: ControllerLimits | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.arm = arm
        self.limits = limits or ControllerLimits()
        self.clock = clock or time.monotonic
        self.connected = False
        self.estop = False
        self.watchdog_hold = False
        self.last_seq: int | None = None  # the newest message applied
        self.last_ack: Frame | None = None  # replayed for a duplicate
        self.last_fed = self.clock()
        self.held_at: float | None = None  # when the watchdog last engaged (clock time)
        self.counters = {"applied": 0, "clamped": 0, "duplicates": 0, "stale": 0, "refused": 0, "watchdog": 0}

    # -- state -----------------------------------------------------------------------------------
    def state_flags(self) -> int:
        return (STATE_WATCHDOG_HOLD if self.watchdog_hold else 0) | (STATE_ESTOP if self.estop else 0)

    def tick(self) -> None:
        """The watchdog: with no ACTION or HEARTBEAT for its period, hold position (reported in ACKs)."""
        now = self.clock()
        if self.connected and not self.watchdog_hold and (now - self.last_fed) * 1000 > self.limits.watchdog_ms:
            self.watchdog_hold = True
            self.held_at = now
            self.counters["watchdog"] += 1
            self.arm.hold()

    # -- messages --------------------------------------------------------------------------------
    def handle(self, frame: Frame) -> list[Frame]:
        """Replies to one decoded frame (CRC already checked by the decoder)."""
        try:
            validate(frame)
        except ProtocolError:
            code = ErrorCode.BAD_VERSION if frame.version != PROTOCOL_VERSION else (
                ErrorCode.BAD_TYPE if frame.type not in {int(t) for t in MsgType} else ErrorCode.BAD_PAYLOAD)
            return [self._error(code, frame.seq)]
        msg = MsgType(frame.type)
        if msg == MsgType.HELLO:
            low, high = HELLO.unpack(frame.payload)
            if not low <= PROTOCOL_VERSION <= high:
                return [self._error(ErrorCode.BAD_VERSION, frame.seq)]
            self.connected, self.last_seq, self.last_ack = True, None, None
            self.last_fed = self.clock()
            lim = self.limits
            return [Frame(MsgType.HELLO_ACK, frame.seq,
                          HELLO_ACK.pack(PROTOCOL_VERSION, lim.action_dims, lim.control_period_ms, lim.watchdog_ms))]
        if not self.connected:
            return [self._error(ErrorCode.NOT_CONNECTED, frame.seq)]
        if self.last_seq is not None and frame.seq == self.last_seq and self.last_ack is not None:
            self.counters["duplicates"] += 1
            old = AckPayload.unpack(self.last_ack.payload)
            return [Frame(MsgType.ACK, frame.seq, AckPayload(old.seq, AckStatus.DUPLICATE, self.state_flags(),
                                                             self.arm.hand_um(), self.arm.gripper(), old.applied).pack())]
        if self.last_seq is not None and not seq_newer(frame.seq, self.last_seq):
            self.counters["stale"] += 1
            return [self._error(ErrorCode.STALE_SEQUENCE, frame.seq)]
        self.last_seq = frame.seq
        if msg == MsgType.ACTION:
            ack = self._action(frame)
        else:
            if msg == MsgType.HEARTBEAT:
                self._feed()
                self.arm.idle_step()
            elif msg == MsgType.ESTOP:
                self.estop = True
                self.arm.hold()
            elif msg == MsgType.ESTOP_CLEAR:
                self.estop = False
            ack = AckPayload(frame.seq, AckStatus.HELD, self.state_flags(), self.arm.hand_um(), self.arm.gripper(), None)
        self.last_ack = Frame(MsgType.ACK, frame.seq, ack.pack())
        return [self.last_ack]

    def _action(self, frame: Frame) -> AckPayload:
        if self.estop:
            self.counters["refused"] += 1
            self.arm.hold()
            return AckPayload(frame.seq, AckStatus.ESTOPPED, self.state_flags(), self.arm.hand_um(), self.arm.gripper(), None)
        self._feed()
        asked = ActionPayload.unpack(frame.payload)
        m = self.limits.max_step_mm
        applied = ActionPayload(float(np.clip(asked.dx_mm, -m, m)), float(np.clip(asked.dy_mm, -m, m)),
                                float(np.clip(asked.dz_mm, -m, m)), float(np.clip(asked.gripper, -1, 1)), asked.terminate)
        # Compare in fixed point, as the values travelled.
        status = AckStatus.APPLIED if applied.pack() == asked.pack() else AckStatus.CLAMPED
        applied = ActionPayload.unpack(applied.pack())
        self.arm.apply(applied)
        self.counters["applied" if status == AckStatus.APPLIED else "clamped"] += 1
        return AckPayload(frame.seq, status, self.state_flags(), self.arm.hand_um(), self.arm.gripper(), applied)

    def _feed(self) -> None:
        self.last_fed = self.clock()
        self.watchdog_hold = False

    def _error(self, code: ErrorCode, seq: int) -> Frame:
        return Frame(MsgType.ERROR, seq, ERROR.pack(int(code), seq & 0xFFFF))


__all__ = ["ControllerCore", "ControllerLimits", "KinematicArm", "ArmModel", "ACTION"]
