"""The test bench beside the emulated Meta-World arm: a loopback side channel that plays the network
camera and the lab technician. The arm moves only through the serial protocol; the bench resets the
scene, switches tasks, hands out camera frames and says whether the task succeeded.

Requests and replies are msgpack maps (firmware_bridge/bench_wire.py), one reply per request:

| type | request fields | reply fields (besides `ok`) |
| --- | --- | --- |
| hello | | version, task, instruction, image_size, camera, steps, success, truncated, hand_um, gripper |
| reset | seed, task?, image_size?, camera? | the same as hello, after the reset |
| frame | | image (array), success, steps |
| status | | the same as hello |

A reply's `type` is the request's; a refused request gets `{"type": "error", "ok": false, "error": "..."}`,
and a malformed one also closes the connection.

    server = BenchServer(MetaWorldArm("drawer-open")).start()      # server.address: ("127.0.0.1", port)
    with BenchClient(f"127.0.0.1:{server.address[1]}") as bench:
        bench.reset(seed=100000, task="reach", image_size=32)
        image, success = bench.frame()
"""

from __future__ import annotations

import socket
import threading

import numpy as np

from firmware_bridge.bench_wire import BenchError, decode_image, encode_image, parse_address, recv_message, send_message
from runtime.errors import UserError

BENCH_VERSION = 1


class BenchServer:
    """Serves the bench for one `MetaWorldArm` on 127.0.0.1, a thread per connection."""

    def __init__(self, arm, port: int = 0) -> None:
        self.arm = arm
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refused = 0  # requests answered with an error (malformed or invalid)

    def start(self) -> "BenchServer":
        self._thread = threading.Thread(target=self._accept, name="bench", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread at once
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._listener.close()

    def __enter__(self) -> "BenchServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return  # the listener was closed
            threading.Thread(target=self._serve, args=(conn,), name="bench-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(None)
            while not self._stop.is_set():
                try:
                    request = recv_message(conn)
                except BenchError as err:  # the stream cannot be trusted any more: say why, then hang up
                    self.refused += 1
                    self._reply(conn, _refusal(err))
                    return
                except OSError:
                    return
                if request is None:
                    return
                if not self._reply(conn, self.handle(request)):
                    return

    def _reply(self, conn: socket.socket, reply: dict) -> bool:
        try:
            send_message(conn, reply)
            return True
        except OSError:
            return False

    def handle(self, request: dict) -> dict:
        """The reply to one decoded request (never raises for bad input)."""
        op = request.get("type")
        try:
            if op == "hello":
                return self._state(type=op, version=BENCH_VERSION)
            if op == "reset":
                return {**self._reset(request), "type": op}
            if op == "frame":
                return {"type": op, "ok": True, "image": encode_image(self.arm.render()), "success": self.arm.success,
                        "steps": self.arm.steps}
            if op == "status":
                return self._state(type=op)
            raise BenchError(f"unknown request type {op!r}: expected hello, reset, frame or status")
        except UserError as err:
            self.refused += 1
            return _refusal(err)
        except Exception as err:  # the simulator failed: the client hears why, the server keeps serving
            self.refused += 1
            return _refusal(f"{op} failed in the emulator: {type(err).__name__}: {err}")

    def _reset(self, request: dict) -> dict:
        seed = request.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
            raise BenchError(f"reset needs an integer seed in [0, 2**32), got {seed!r}")
        described = self.arm.describe()
        task = request.get("task") or described["task"]
        image_size = request.get("image_size") or described["image_size"]
        camera = request.get("camera")
        if not isinstance(task, str) or not isinstance(image_size, int) or not (camera is None or isinstance(camera, str)):
            raise BenchError("reset takes task (text), image_size (integer) and camera (text)")
        self.arm.configure(task, image_size, camera)
        self.arm.reset(seed)
        return self._state()

    def _state(self, **extra) -> dict:
        return {"ok": True, **self.arm.describe(), **extra}


def _refusal(reason) -> dict:
    return {"type": "error", "ok": False, "error": str(reason)}


class BenchClient:
    """The runtime's end of the bench: reset, frame, status over one loopback connection."""

    def __init__(self, address: str, timeout_s: float = 60.0) -> None:
        self.address = address
        host, port = parse_address(address)
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as err:
            raise UserError(f"cannot reach the bench at {address} ({err.strerror or err}): start "
                            f"`python -m firmware_bridge emulate --pty --arm metaworld --task TASK` and pass the "
                            f"bench address it prints") from None

    def call(self, op: str, **fields) -> dict:
        """Send one request; the reply's fields, or BenchError with the bench's reason."""
        try:
            send_message(self._sock, {"type": op, **fields})
            reply = recv_message(self._sock)
        except OSError as err:
            raise BenchError(f"the bench at {self.address} failed during '{op}' ({err}): is the emulator still "
                             f"running?") from None
        if reply is None:
            raise BenchError(f"the bench at {self.address} closed the connection during '{op}': is the emulator "
                             f"still running?")
        if reply.get("ok") is not True:
            raise BenchError(f"the bench refused '{op}': {reply.get('error', 'no reason given')}")
        return reply

    def hello(self) -> dict:
        return self.call("hello")

    def reset(self, seed: int, task: str | None = None, image_size: int | None = None,
              camera: str | None = None) -> dict:
        return self.call("reset", seed=int(seed), task=task, image_size=image_size, camera=camera)

    def frame(self) -> tuple[np.ndarray, bool]:
        """(H, W, 3) uint8 RGB camera frame and whether the task has succeeded since the reset."""
        reply = self.call("frame")
        return decode_image(reply.get("image")), bool(reply.get("success"))

    def status(self) -> dict:
        return self.call("status")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "BenchClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
