"""The vla-edge serial protocol, version 1 (byte layout in firmware_bridge/PROTOCOL.md).

A frame is COBS-encoded and ends with a zero byte, so a receiver resynchronizes at the next zero after
any garbage. Inside the COBS envelope:

    version u8 | type u8 | seq u16 LE | length u8 | payload (length bytes) | crc16 u16 LE

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF; the `crc` package's Crc16.IBM_3740) over
everything before it. Encoding and decoding are pure functions over bytes: no I/O, no clock.

    wire = encode_frame(Frame(MsgType.ACTION, seq=7, payload=ActionPayload.from_values(a).pack()))
    frames, rest = FrameDecoder().feed(wire)
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np
from cobs import cobs
from crc import Calculator, Crc16

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 64
HEADER = struct.Struct("<BBHB")  # version, type, seq, length
CRC = struct.Struct("<H")
DELIMITER = b"\x00"
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size  # before COBS
MAX_WIRE = MAX_FRAME + MAX_FRAME // 254 + 2  # COBS overhead + delimiter

_crc16 = Calculator(Crc16.IBM_3740, optimized=True)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data` (check value 0x29B1 for b'123456789')."""
    return _crc16.checksum(data)


class MsgType(enum.IntEnum):
    HELLO = 0x01  # host -> controller: versions the host speaks
    HELLO_ACK = 0x02  # controller -> host: version chosen, timing and limits
    ACTION = 0x10  # host -> controller: one action in fixed point
    ACK = 0x11  # controller -> host: the message acknowledged, its status, the controller's state
    HEARTBEAT = 0x20  # host -> controller: keeps the watchdog fed without moving
    ESTOP = 0x30  # host -> controller: latch the emergency stop
    ESTOP_CLEAR = 0x31  # host -> controller: release the latch
    ERROR = 0x7F  # controller -> host: a message was refused


class AckStatus(enum.IntEnum):
    APPLIED = 0  # applied as sent
    CLAMPED = 1  # applied after the controller's own limits changed it
    DUPLICATE = 2  # already applied (a retransmission): not applied again
    ESTOPPED = 3  # refused: the emergency stop is latched
    HELD = 4  # acknowledged a heartbeat / e-stop / clear: no motion


class ErrorCode(enum.IntEnum):
    BAD_VERSION = 1
    BAD_TYPE = 2
    BAD_PAYLOAD = 3
    STALE_SEQUENCE = 4
    NOT_CONNECTED = 5  # an action before the HELLO handshake


class ProtocolError(ValueError):
    """A frame that must not be applied: bad COBS, CRC, version, length or payload."""


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION


def encode_frame(frame: Frame) -> bytes:
    """The bytes on the wire for `frame`: COBS(header | payload | crc) followed by a zero byte."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    body = HEADER.pack(frame.version, int(frame.type), frame.seq & 0xFFFF, len(frame.payload)) + frame.payload
    return cobs.encode(body + CRC.pack(crc16(body))) + DELIMITER


def decode_body(encoded: bytes) -> Frame:
    """One frame from the bytes between two delimiters; ProtocolError if anything is wrong."""
    if not encoded:
        raise ProtocolError("empty frame")
    if len(encoded) > MAX_WIRE:
        raise ProtocolError(f"frame of {len(encoded)} bytes exceeds {MAX_WIRE}")
    try:
        raw = cobs.decode(encoded)
    except cobs.DecodeError as err:
        raise ProtocolError(f"bad COBS encoding: {err}") from None
    if len(raw) < HEADER.size + CRC.size:
        raise ProtocolError(f"frame of {len(raw)} bytes is shorter than a header and CRC")
    body, (received,) = raw[:-CRC.size], CRC.unpack(raw[-CRC.size:])
    if crc16(body) != received:
        raise ProtocolError("CRC mismatch")
    version, msg_type, seq, length = HEADER.unpack(body[:HEADER.size])
    if length != len(body) - HEADER.size:
        raise ProtocolError(f"length field says {length}, frame holds {len(body) - HEADER.size}")
    return Frame(type=msg_type, seq=seq, payload=bytes(body[HEADER.size:]), version=version)


class FrameDecoder:
    """Stream decoder: feed it any bytes, get whole frames; garbage and bad frames are counted, skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._discarding = False  # inside an oversized run: drop bytes until the next delimiter
        self.rejected = 0  # frames dropped (bad COBS, CRC, length, oversized)
        self.last_error: str | None = None

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        self._buffer.extend(data)
        while True:
            end = self._buffer.find(0)
            if end < 0:
                if len(self._buffer) > MAX_WIRE:  # no delimiter in sight: drop the garbage, keep waiting
                    self._buffer.clear()
                    if not self._discarding:
                        self._discarding = True
                        self._reject("oversized frame without a delimiter")
                return frames
            chunk = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:  # the tail of an oversized run
                self._discarding = False
                continue
            if not chunk:
                continue  # back-to-back delimiters: resynchronization padding
            try:
                frames.append(decode_body(chunk))
            except ProtocolError as err:
                self._reject(str(err))

    def _reject(self, why: str) -> None:
        self.rejected += 1
        self.last_error = why


# -- payloads ------------------------------------------------------------------------------------

MM_SCALE = 100.0  # dx, dy, dz travel as int16 hundredths of a millimetre per step
GRIPPER_SCALE = 10_000.0  # gripper effort in [-1, 1] as int16 ten-thousandths
ACTION = struct.Struct("<hhhhB")  # dx, dy, dz, gripper, flags
FLAG_TERMINATE = 0x01


@dataclass(frozen=True)
class ActionPayload:
    """One action in fixed-point physical units: hand motion in mm per step, gripper effort, flags."""

    dx_mm: float
    dy_mm: float
    dz_mm: float
    gripper: float
    terminate: bool = False

    @classmethod
    def from_values(cls, values, mm_per_unit: float = 10.0) -> "ActionPayload":
        """From a policy action (dx, dy, dz in the spec's units, gripper, terminate)."""
        return cls(values[0] * mm_per_unit, values[1] * mm_per_unit, values[2] * mm_per_unit, float(values[3]),
                   bool(len(values) > 4 and values[4] > 0.5))

    def pack(self) -> bytes:
        def fixed(value: float, scale: float) -> int:
            return int(max(-32768, min(32767, round(value * scale))))

        return ACTION.pack(fixed(self.dx_mm, MM_SCALE), fixed(self.dy_mm, MM_SCALE), fixed(self.dz_mm, MM_SCALE),
                           fixed(self.gripper, GRIPPER_SCALE), FLAG_TERMINATE if self.terminate else 0)

    def units(self, mm_per_unit: float = 10.0) -> tuple[float, float, float, float]:
        """(dx, dy, dz, gripper) back in the policy's units: the inverse of `from_values`."""
        return (self.dx_mm / mm_per_unit, self.dy_mm / mm_per_unit, self.dz_mm / mm_per_unit, self.gripper)

    @classmethod
    def quantize(cls, values, mm_per_unit: float = 10.0) -> "ActionPayload":
        """`values` as they arrive at the controller: through the wire's fixed point and back."""
        return cls.unpack(cls.from_values(values, mm_per_unit).pack())

    @classmethod
    def unpack(cls, payload: bytes) -> "ActionPayload":
        if len(payload) != ACTION.size:
            raise ProtocolError(f"ACTION payload is {len(payload)} bytes, expected {ACTION.size}")
        dx, dy, dz, grip, flags = ACTION.unpack(payload)
        if flags & ~FLAG_TERMINATE:
            raise ProtocolError(f"ACTION has unknown flags 0x{flags:02x}")
        return cls(dx / MM_SCALE, dy / MM_SCALE, dz / MM_SCALE, grip / GRIPPER_SCALE, bool(flags & FLAG_TERMINATE))


def metres_to_um(xyz) -> tuple[int, int, int]:
    """A hand position in metres as the ACK carries it: whole micrometres."""
    return tuple(int(round(float(v) * 1e6)) for v in xyz[:3])


def um_to_metres(hand_um) -> np.ndarray:
    """(3,) float64 metres from an ACK's micrometres."""
    return np.asarray(hand_um, np.float64) / 1e6


HELLO = struct.Struct("<BB")  # lowest and highest version the host speaks
HELLO_ACK = struct.Struct("<BBHH")  # version chosen, action dimensions, control period ms, watchdog ms
# acked seq, status, state flags, hand x/y/z (um, int32), gripper opening (1e-4), applied action (as ACTION)
ACK = struct.Struct("<HBBiiih") 
STATE_WATCHDOG_HOLD = 0x01  # the watchdog fired: holding position
STATE_ESTOP = 0x02  # the emergency stop is latched
ERROR = struct.Struct("<BH")  # code, offending seq


@dataclass(frozen=True)
class AckPayload:
    seq: int
    status: int
    state_flags: int
    hand_um: tuple[int, int, int]
    gripper: float
    applied: ActionPayload | None  # the action as applied (after the controller's clamps), ACTION frames only

    def pack(self) -> bytes:
        head = ACK.pack(self.seq, self.status, self.state_flags, *self.hand_um, int(round(self.gripper * GRIPPER_SCALE)))
        return head + (self.applied.pack() if self.applied is not None else b"")

    @classmethod
    def unpack(cls, payload: bytes) -> "AckPayload":
        if len(payload) not in (ACK.size, ACK.size + ACTION.size):
            raise ProtocolError(f"ACK payload is {len(payload)} bytes, expected {ACK.size} or {ACK.size + ACTION.size}")
        seq, status, flags, x, y, z, grip = ACK.unpack(payload[:ACK.size])
        applied = ActionPayload.unpack(payload[ACK.size:]) if len(payload) > ACK.size else None
        return cls(seq, status, flags, (x, y, z), grip / GRIPPER_SCALE, applied)


PAYLOAD_SIZES = {
    MsgType.HELLO: (HELLO.size,),
    MsgType.HELLO_ACK: (HELLO_ACK.size,),
    MsgType.ACTION: (ACTION.size,),
    MsgType.ACK: (ACK.size, ACK.size + ACTION.size),
    MsgType.HEARTBEAT: (0,),
    MsgType.ESTOP: (1,),  # reason code
    MsgType.ESTOP_CLEAR: (0,),
    MsgType.ERROR: (ERROR.size,),
}


def validate(frame: Frame) -> Frame:
    """Protocol-level checks after a frame decoded: version, known type, payload size for that type."""
    if frame.version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {frame.version}, this side speaks {PROTOCOL_VERSION}")
    try:
        msg_type = MsgType(frame.type)
    except ValueError:
        raise ProtocolError(f"unknown message type 0x{frame.type:02x}") from None
    if len(frame.payload) not in PAYLOAD_SIZES[msg_type]:
        raise ProtocolError(f"{msg_type.name} payload of {len(frame.payload)} bytes, expected {PAYLOAD_SIZES[msg_type]}")
    if msg_type == MsgType.ACTION:
        ActionPayload.unpack(frame.payload)
    return frame


def seq_newer(seq: int, than: int) -> bool:
    """True when 16-bit sequence number `seq` comes after `than` (serial-number arithmetic, RFC 1982)."""
    return seq != than and ((seq - than) & 0xFFFF) < 0x8000
