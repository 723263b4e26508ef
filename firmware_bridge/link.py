"""The host side of the serial link (pyserial): handshake, actions acknowledged within a timeout,
retransmission, errors with meaning, reconnect; safe to call from the control loop's thread.

    with SerialLink(LinkConfig(port="/dev/ttyACM0", baud=1_000_000)) as arm:
        sent = arm.send_action(values)     # what the controller actually applied (policy units)
        arm.hand_position()                # metres, from the last ACK
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from firmware_bridge.protocol import (
    ACTION,
    ERROR,
    HELLO,
    HELLO_ACK,
    PROTOCOL_VERSION,
    STATE_ESTOP,
    AckPayload,
    AckStatus,
    ActionPayload,
    ErrorCode,
    Frame,
    FrameDecoder,
    MsgType,
    ProtocolError,
    encode_frame,
    um_to_metres,
    validate,
)
from runtime.errors import UserError

ACK_WIRE_BYTES = 40  # an ACK with the applied action, COBS and delimiter included (upper bound)
ACTION_WIRE_BYTES = 18


class LinkError(RuntimeError):
    """The link failed in a way the caller must handle (the arm holds by its watchdog meanwhile)."""


class ActionLost(LinkError):
    """No acknowledgement after every retransmission: the action may or may not have been applied."""


class LinkDown(LinkError):
    """The port itself failed (a cable pulled, a device reset): reconnect() once it is back."""


class ControllerRefused(LinkError):
    """The controller answered with an ERROR frame."""

    def __init__(self, code: int, seq: int) -> None:
        self.code = code
        name = ErrorCode(code).name if code in {int(c) for c in ErrorCode} else str(code)
        super().__init__(f"controller refused message {seq}: {name}")


class EStopped(LinkError):
    """The controller's e-stop is latched: actions are refused until `clear_estop()`."""


@dataclass
class LinkConfig:
    port: str  # a device path, or a pyserial URL (loop://, socket://host:port, rfc2217://...)
    baud: int = 1_000_000
    usb_latency_s: float = 0.001  # CDC-ACM; an FTDI adapter's default latency timer is 16 ms
    processing_s: float = 0.002  # the controller's allowance to answer
    retries: int = 3
    timeout_s: float | None = None  # per attempt; default derived from the baud rate

    @property
    def attempt_timeout(self) -> float:
        """Twice the wire time of the frame and its ACK, plus twice the USB latency, plus processing."""
        if self.timeout_s is not None:
            return self.timeout_s
        wire = (ACTION_WIRE_BYTES + ACK_WIRE_BYTES) * 10 / self.baud
        return 2 * wire + 2 * self.usb_latency_s + self.processing_s


class SerialLink:
    """A `Robot` over the serial protocol: `send_action` returns what the controller applied."""

    def __init__(self, config: LinkConfig, open_port: Callable | None = None,
                 clock: Callable[[], float] = time.monotonic, mm_per_unit: float = 10.0) -> None:
        self.config = config
        self._open_port = open_port
        self.clock = clock
        self.mm_per_unit = mm_per_unit
        self._lock = threading.Lock()
        self._port = None
        self._decoder = FrameDecoder()
        self._seq = 0
        self.controller: dict | None = None  # from HELLO_ACK
        self.last_ack: AckPayload | None = None
        self.stats = {"sent": 0, "retransmits": 0, "lost": 0, "round_trip_s": []}

    # -- lifetime --------------------------------------------------------------------------------
    def open(self) -> "SerialLink":
        import serial

        opener = self._open_port or (lambda: serial.serial_for_url(self.config.port, baudrate=self.config.baud,
                                                                     timeout=0, write_timeout=1.0))
        try:
            self._port = opener()
        except (serial.SerialException, OSError, ValueError) as err:
            raise UserError(f"cannot open serial port {self.config.port} ({err}): check the path "
                            f"(`python -m firmware_bridge ports`) and that no other program holds it") from None
        self._port.write(b"\x00")  # flush any line noise before the first frame
        self._decoder = FrameDecoder()
        reply = self._request(MsgType.HELLO, HELLO.pack(PROTOCOL_VERSION, PROTOCOL_VERSION))
        if reply.type != MsgType.HELLO_ACK:
            raise LinkError(f"controller answered HELLO with message type {reply.type}")
        version, dims, period, watchdog = HELLO_ACK.unpack(reply.payload)
        self.controller = {"version": version, "action_dims": dims, "control_period_ms": period, "watchdog_ms": watchdog}
        return self

    def close(self) -> None:
        with self._lock:
            if self._port is not None:
                self._port.close()
                self._port = None

    def reconnect(self) -> None:
        self.close()
        self.open()

    def __enter__(self) -> "SerialLink":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- Robot interface ---------------------------------------------------------------------------
    def send_action(self, values: np.ndarray) -> np.ndarray:
        """Send one action (policy units); return what the controller applied, in the same units."""
        values = np.asarray(values, np.float32)
        payload = ActionPayload.from_values(values, self.mm_per_unit).pack()
        ack = self._ack(self._request(MsgType.ACTION, payload))
        if ack.status == AckStatus.ESTOPPED:
            raise EStopped("the controller's e-stop is latched: clear it with clear_estop() once it is safe")
        out = values.copy()
        out[:4] = ack.applied.units(self.mm_per_unit)
        return out

    def hold(self) -> None:
        """Feed the watchdog without moving."""
        self._ack(self._request(MsgType.HEARTBEAT, b""))

    def estop(self, reason: int = 1) -> None:
        self._ack(self._request(MsgType.ESTOP, bytes([reason])))

    def clear_estop(self) -> None:
        self._ack(self._request(MsgType.ESTOP_CLEAR, b""))

    def hand_position(self) -> np.ndarray | None:
        if self.last_ack is None:
            return None
        return um_to_metres(self.last_ack.hand_um)

    @property
    def rejected_frames(self) -> int:
        """Frames from the controller dropped by the decoder since open() (bad COBS, CRC, length)."""
        return self._decoder.rejected

    @property
    def estopped(self) -> bool:
        return bool(self.last_ack and self.last_ack.state_flags & STATE_ESTOP)

    # -- request / reply -----------------------------------------------------------------------------
    def _ack(self, reply: Frame) -> AckPayload:
        ack = AckPayload.unpack(reply.payload)
        self.last_ack = ack
        return ack

    def _request(self, msg_type: MsgType, payload: bytes) -> Frame:
        with self._lock:
            if self._port is None:
                raise LinkError("the link is closed: open() it (or reconnect()) first")
            self._seq = (self._seq + 1) & 0xFFFF
            frame = Frame(msg_type, self._seq, payload)
            wire = encode_frame(frame)
            start = self.clock()
            for attempt in range(self.config.retries + 1):
                if attempt:
                    self.stats["retransmits"] += 1
                try:
                    self._port.write(wire)
                    self.stats["sent"] += 1
                    reply = self._await(frame.seq, self.clock() + self.config.attempt_timeout)
                except (OSError, ValueError) as err:  # pyserial's SerialException is an OSError
                    raise LinkDown(f"serial port {self.config.port} failed ({err}): the cable or the controller "
                                   f"is gone; reconnect() once it is back (the controller's watchdog holds the arm)") from None
                if reply is not None:
                    self.stats["round_trip_s"].append(self.clock() - start)
                    if reply.type == MsgType.ERROR:
                        code, seq = ERROR.unpack(reply.payload)
                        raise ControllerRefused(code, seq)
                    return reply
            self.stats["lost"] += 1
            raise ActionLost(f"{msg_type.name} {frame.seq} was not acknowledged after {self.config.retries + 1} "
                             f"attempts of {1000 * self.config.attempt_timeout:.1f} ms: the link or the controller "
                             f"is down (the controller's watchdog holds the arm)")

    def _await(self, seq: int, deadline: float) -> Frame | None:
        """The reply to `seq`, or None at the deadline. Replies to older messages are dropped."""
        while True:
            waiting = self._port.in_waiting
            data = self._port.read(waiting or 1)
            for frame in self._decoder.feed(data) if data else ():
                try:
                    validate(frame)
                except ProtocolError:
                    continue
                if frame.seq == seq and frame.type in (MsgType.ACK, MsgType.ERROR, MsgType.HELLO_ACK):
                    return frame
            if self.clock() >= deadline:
                return None
            if not data:
                time.sleep(0.0002)


__all__ = ["SerialLink", "LinkConfig", "LinkError", "LinkDown", "ActionLost", "ControllerRefused", "EStopped", "ACTION"]
