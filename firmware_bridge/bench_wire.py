"""The test bench's wire format: length-prefixed msgpack maps over a loopback TCP connection.

    message = length (u32, big-endian) | msgpack map of `length` bytes (at most MAX_MESSAGE)

The maps are those of the cloud wire (runtime/wire.py): a string `type`, arrays as plain data
`{"dtype": "|u1", "shape": [H, W, 3], "data": <bytes>}` from a short list of numeric dtypes; nothing on
this wire can carry code (no pickle). A message that is oversized, truncated, not msgpack or not a map
with a `type` is a `BenchError` that says which.

    send_message(sock, {"type": "frame"})
    reply = recv_message(sock)                    # dict, or None when the peer closed cleanly
    image = decode_image(reply["image"])          # (H, W, 3) uint8
"""

from __future__ import annotations

import socket
import struct

import numpy as np

from runtime import wire
from runtime.errors import UserError

LENGTH = struct.Struct(">I")
MAX_MESSAGE = 16 * 1024 * 1024  # a 1024x1024 RGB frame is 3 MiB


class BenchError(UserError):
    """The bench side channel failed: malformed, truncated or oversized message, or a refused request."""


def encode_image(image: np.ndarray) -> dict:
    """An (H, W, 3) uint8 frame as msgpack-ready data (dtype, shape, raw bytes)."""
    return wire.encode_array(image)


def decode_image(value) -> np.ndarray:
    """(H, W, 3) uint8 RGB from `encode_image`'s data; BenchError if anything does not add up."""
    try:
        return wire.decode_frame(value)
    except ValueError as err:
        raise BenchError(f"malformed frame from the bench: {err}") from None


def pack_message(message: dict) -> bytes:
    """Length prefix and msgpack body; BenchError if the body would exceed MAX_MESSAGE."""
    body = wire.pack(message)
    if len(body) > MAX_MESSAGE:
        raise BenchError(f"bench message of {len(body)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return LENGTH.pack(len(body)) + body


def send_message(sock: socket.socket, message: dict) -> None:
    sock.sendall(pack_message(message))


def recv_message(sock: socket.socket) -> dict | None:
    """One message, or None when the peer closed the connection between messages."""
    head = _recv_exact(sock, LENGTH.size, allow_eof=True)
    if head is None:
        return None
    (length,) = LENGTH.unpack(head)
    if length > MAX_MESSAGE:
        raise BenchError(f"bench message of {length} bytes announced, the limit is {MAX_MESSAGE}: "
                         f"the peer does not speak this protocol")
    body = _recv_exact(sock, length)
    try:
        return wire.unpack(body)
    except wire.WireError as err:
        raise BenchError(f"malformed bench message ({err.code}): send one msgpack map with a string 'type' "
                         f"(hello, reset, frame or status) per length-prefixed message") from None


def _recv_exact(sock: socket.socket, size: int, allow_eof: bool = False) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            if allow_eof and got == 0:
                return None
            raise BenchError(f"truncated bench message: the connection closed after {got} of {size} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:5000' (or '5000', meaning 127.0.0.1) as (host, port); UserError otherwise."""
    host, _, port = text.rpartition(":")
    number = int(port) if port.isdigit() else 0
    if not 0 < number < 65536:
        raise UserError(f"bench address '{text}' is not HOST:PORT: pass the address the emulator printed, "
                        f"e.g. --bench 127.0.0.1:47000")
    return host or "127.0.0.1", number
