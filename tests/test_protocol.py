"""The serial protocol's byte layer: golden frames checked against an independent reference encoder,
resynchronization after garbage, and 100,000 corrupted frames of which none may be accepted."""

import json
import random
import struct
from pathlib import Path

import pytest

from firmware_bridge.protocol import (
    ActionPayload,
    AckPayload,
    Frame,
    FrameDecoder,
    MsgType,
    ProtocolError,
    decode_body,
    encode_frame,
    seq_newer,
    validate,
)

GOLDEN = json.loads((Path(__file__).resolve().parent.parent / "firmware_bridge" / "golden" / "frames.json").read_text())


def reference_crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, bit by bit (independent of the implementation under test)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def reference_cobs(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing, straight from the definition."""
    out, block = bytearray(), bytearray()
    for byte in data:
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(byte)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    return bytes(out + bytes([len(block) + 1]) + block)


def reference_frame(msg_type: int, seq: int, payload: bytes) -> bytes:
    body = bytes([1, msg_type]) + struct.pack("<H", seq) + bytes([len(payload)]) + payload
    return reference_cobs(body + struct.pack("<H", reference_crc16(body))) + b"\x00"


def test_crc_check_value():
    assert reference_crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("name", sorted(GOLDEN["frames"]))
def test_golden_frames_are_byte_exact(name):
    golden = GOLDEN["frames"][name]
    payload = bytes.fromhex(golden["payload"])
    wire = bytes.fromhex(golden["wire"])
    assert reference_frame(golden["type"], golden["seq"], payload) == wire  # independent encoder agrees
    assert encode_frame(Frame(golden["type"], golden["seq"], payload)) == wire
    frame = validate(decode_body(wire[:-1]))
    assert (frame.type, frame.seq, frame.payload) == (golden["type"], golden["seq"], payload)
    assert wire.count(0) == 1 and wire.endswith(b"\x00")  # one delimiter, none inside


def test_every_message_type_has_a_golden_frame():
    assert {g["type"] for g in GOLDEN["frames"].values()} == {int(t) for t in MsgType}


def test_payload_round_trips_in_fixed_point():
    action = ActionPayload.from_values([0.5, -0.25, 0.0, 0.6, 1.0])  # policy units: 1.0 = 1 cm per step
    back = ActionPayload.unpack(action.pack())
    assert (back.dx_mm, back.dy_mm, back.dz_mm, back.gripper, back.terminate) == (5.0, -2.5, 0.0, 0.6, True)
    ack = AckPayload(9, 1, 2, (1, -2, 3), -0.5, back)
    assert AckPayload.unpack(ack.pack()) == ack


def test_stream_decoder_resynchronizes_after_garbage():
    frames = [Frame(MsgType.HEARTBEAT, k) for k in range(6)]
    # Line noise, then the zero a link sends when it opens; later an oversized run and noise glued to frame 4.
    stream = b"\x13\x37garbage\x00" + b"".join(encode_frame(f) for f in frames[:2]) + b"\xff" * 300 + b"\x00"
    stream += encode_frame(frames[2]) + encode_frame(frames[3]) + b"noise" + b"".join(encode_frame(f) for f in frames[4:])
    decoder = FrameDecoder()
    got = []
    for k in range(0, len(stream), 7):  # arbitrary chunking, as a serial port delivers it
        got += decoder.feed(stream[k:k + 7])
    assert [f.seq for f in got] == [0, 1, 2, 3, 5]  # noise glued to a frame costs that frame only
    assert decoder.rejected == 3  # the leading garbage, the oversized run, frame 4 with noise


def test_sequence_numbers_wrap():
    assert seq_newer(0, 0xFFFF) and seq_newer(5, 3) and not seq_newer(3, 5) and not seq_newer(7, 7)


def _corrupt(rng: random.Random, wire: bytes) -> bytes:
    body = bytearray(wire[:-1])
    kind = rng.randrange(6)
    if kind == 0:  # 1-3 bit flips
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncated
        body = body[: rng.randrange(len(body))]
    elif kind == 2:  # a byte dropped
        del body[rng.randrange(len(body))]
    elif kind == 3:  # a byte inserted
        body.insert(rng.randrange(len(body) + 1), rng.randrange(1, 256))
    elif kind == 4:  # a burst of up to 16 bits
        start = rng.randrange(len(body))
        for k in range(start, min(len(body), start + 2)):
            body[k] ^= rng.randrange(1, 256)
    else:  # random garbage of a plausible length
        body = bytearray(rng.randrange(1, 256) for _ in range(rng.randint(1, 40)))
    return bytes(body)


def test_hundred_thousand_corrupted_frames_are_all_refused():
    rng = random.Random(1234)
    valid = [bytes.fromhex(g["wire"]) for g in GOLDEN["frames"].values()]
    accepted = crashed = 0
    for _ in range(100_000):
        original = rng.choice(valid)
        corrupted = _corrupt(rng, original)
        if corrupted == original[:-1]:
            continue  # an insertion/deletion pair that restored the frame is not a corruption
        try:
            validate(decode_body(corrupted))
            accepted += 1
        except ProtocolError:
            pass
        except Exception:  # noqa: BLE001 - anything else is a crash of the decoder
            crashed += 1
    assert (accepted, crashed) == (0, 0)
