"""The cloud wire format: one msgpack map per binary websocket message; numpy arrays travel as
`{"dtype", "shape", "data"}`; nothing is ever pickled and object arrays are refused.

Robot -> server (every request carries `seq`, which the reply echoes):

    {"type": "act", "seq": 7, "instruction": "open the drawer", "image": FRAME, "state": ARRAY | nil}
    {"type": "reset", "seq": 8}          # start of an episode (in order with the requests around it)
    {"type": "health", "seq": 9}

Server -> robot:

    {"type": "hello", "protocol": 1, "model": {...}, "action": {...}, "image": {...},
     "instructions": [...], "max_message_bytes": N, "encodings": ["raw", "jpeg"]}   # first, on connect
    {"type": "action", "seq": 7, "values": ARRAY, "tokens": ARRAY | nil,
     "timings": {"decode": s, "queue": s, "inference": s, "total": s, "policy": {...}}}
    {"type": "reset", "seq": 8}
    {"type": "health", "seq": 9, "ok": true, ...}
    {"type": "error", "seq": 7 | nil, "code": "unknown_instruction", "message": "... how to fix it"}

ARRAY is `{"dtype": "<f4", "shape": [5], "data": <raw little-endian bytes>}` with a dtype from
`DTYPES`; FRAME is an ARRAY of shape (H, W, 3) uint8 RGB, or `{"format": "jpeg", "data": <bytes>}`.
A message larger than the server's `max_message_bytes` is refused by the websocket layer before it
is read (close code 1009), so an oversized frame never reaches memory.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
# Plain little-endian numeric dtypes only: no objects, strings, structured or big-endian types.
DTYPES = frozenset({"|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"})
MAX_DIMS = 8
MAX_IMAGE_SIDE = 4096
MAX_INSTRUCTION_CHARS = 500

# Error codes a server may answer with. The first group is the request's fault: sending it again
# gives the same answer, so a client raises; the rest are worth a fallback.
REQUEST_ERRORS = ("malformed", "bad_request", "unknown_type", "unknown_instruction", "too_large")
SERVER_ERRORS = ("no_action", "internal", "busy")


class WireError(ValueError):
    """A message that breaks the wire format; `code` is one of REQUEST_ERRORS or SERVER_ERRORS."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def reply(self, seq: int | None) -> dict:
        return error_reply(seq, self.code, str(self))


def error_reply(seq: int | None, code: str, message: str) -> dict:
    return {"type": "error", "seq": seq, "code": code, "message": message}


# -- messages ------------------------------------------------------------------------------------
def pack(message: dict) -> bytes:
    """One message -> bytes (msgpack, binary strings kept as bytes)."""
    return msgpack.packb(message, use_bin_type=True)


def unpack(data: bytes | str) -> dict:
    """Bytes -> one message map with a string `type` and an integer-or-nil `seq`."""
    if isinstance(data, str):
        raise WireError("malformed", "got a text websocket message: send one binary msgpack map per message")
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as err:  # msgpack raises several types (ExtraData, FormatError, StackError, ...)
        raise WireError("malformed", f"the message is not valid msgpack ({type(err).__name__}): send one "
                                     f"msgpack map per binary message (runtime/wire.py)") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("malformed", "a message must be a msgpack map with a string 'type' "
                                     "('act', 'reset' or 'health')")
    seq = message.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise WireError("bad_request", f"'seq' must be an integer, got {type(seq).__name__}")
    return message


# -- arrays --------------------------------------------------------------------------------------
def encode_array(array: np.ndarray) -> dict:
    """A numeric numpy array -> {"dtype", "shape", "data"} (little-endian, C order)."""
    array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if array.dtype.str not in DTYPES:
        raise WireError("bad_request", f"arrays of dtype {array.dtype} cannot travel: use a numeric dtype "
                                       f"({', '.join(sorted(DTYPES))})")
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes(order="C")}


def decode_array(value: Any, name: str) -> np.ndarray:
    """{"dtype", "shape", "data"} -> a read-only numpy array, every field checked."""
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data"}:
        raise WireError("bad_request", f"'{name}' must be an array map with exactly dtype, shape and data")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise WireError("bad_request", f"'{name}' has dtype {dtype!r}: only little-endian numeric dtypes "
                                       f"travel ({', '.join(sorted(DTYPES))}); object arrays never do")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise WireError("bad_request", f"'{name}' shape must be a list of at most {MAX_DIMS} non-negative ints")
    if not isinstance(data, bytes):
        raise WireError("bad_request", f"'{name}' data must be msgpack bin (bytes), got {type(data).__name__}")
    itemsize = np.dtype(dtype).itemsize
    if math.prod(shape) * itemsize != len(data):
        raise WireError("bad_request", f"'{name}' holds {len(data)} bytes but shape {shape} of {dtype} "
                                       f"needs {math.prod(shape) * itemsize}")
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(shape))


# -- frames --------------------------------------------------------------------------------------
def encode_frame(image: np.ndarray, jpeg_quality: int | None = None) -> dict:
    """An (H, W, 3) uint8 RGB frame -> a raw ARRAY, or JPEG bytes when `jpeg_quality` is set."""
    if jpeg_quality is None:
        return encode_array(image)
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the frame")
    return {"format": "jpeg", "data": jpeg.tobytes()}


def decode_frame(value: Any) -> np.ndarray:
    """A FRAME -> (H, W, 3) uint8 RGB; a JPEG is size-checked from its header before it is decoded."""
    if isinstance(value, dict) and value.get("format") == "jpeg":
        data = value.get("data")
        if not isinstance(data, bytes):
            raise WireError("bad_request", "a jpeg 'image' needs its bytes in 'data'")
        height, width = jpeg_size(data)
        if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
            raise WireError("bad_request", f"the JPEG is {width}x{height}: frames must be 1 to {MAX_IMAGE_SIDE} "
                                           f"pixels a side; resize the camera frame")
        import cv2

        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise WireError("bad_request", "the JPEG could not be decoded: send cv2.imencode('.jpg', frame) bytes")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    image = decode_array(value, "image")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise WireError("bad_request", f"'image' must be (H, W, 3) uint8 RGB, got shape {list(image.shape)} "
                                       f"dtype {image.dtype}")
    if not (0 < image.shape[0] <= MAX_IMAGE_SIDE and 0 < image.shape[1] <= MAX_IMAGE_SIDE):
        raise WireError("bad_request", f"'image' is {image.shape[1]}x{image.shape[0]}: frames must be 1 to "
                                       f"{MAX_IMAGE_SIDE} pixels a side")
    return image


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame header, without decoding the image."""
    if data[:2] != b"\xff\xd8":
        raise WireError("bad_request", "the 'image' bytes are not a JPEG (no start-of-image marker)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                break
            return int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
        pos += 2 + length
    raise WireError("bad_request", "the JPEG has no readable frame header: send cv2.imencode('.jpg', frame) bytes")


# -- requests ------------------------------------------------------------------------------------
def act_request(seq: int, instruction: str, frame: dict, state: np.ndarray | None) -> dict:
    return {"type": "act", "seq": seq, "instruction": instruction, "image": frame,
            "state": None if state is None else encode_array(np.asarray(state, np.float32))}


def parse_act(message: dict) -> tuple[str, np.ndarray, np.ndarray | None]:
    """An "act" request -> (instruction, RGB frame, state or None), every field checked."""
    instruction = message.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip() or len(instruction) > MAX_INSTRUCTION_CHARS:
        raise WireError("bad_request", f"'instruction' must be a non-empty string of at most "
                                       f"{MAX_INSTRUCTION_CHARS} characters, e.g. 'open the drawer'")
    if "image" not in message:
        raise WireError("bad_request", "an 'act' request needs an 'image' (raw array or jpeg)")
    image = decode_frame(message["image"])
    state = message.get("state")
    if state is not None:
        state = decode_array(state, "state")
        if state.ndim != 1 or state.dtype.kind != "f":
            raise WireError("bad_request", f"'state' must be a 1-D float array, got shape {list(state.shape)} "
                                           f"dtype {state.dtype}")
    return instruction, image, state
