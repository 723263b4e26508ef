"""The policy server: any `Policy` served over websockets in the format of runtime/wire.py, to several
robots at once. Serving a bundle needs numpy, onnxruntime, OpenCV, msgpack and websockets (no torch).

    python -m runtime serve --bundle bundles/teacher-fp32 --host 0.0.0.0 --port 8765
    curl http://127.0.0.1:8765/healthz

    server = PolicyServer(make_session, info, ServerConfig(port=0)).start()   # in a background thread
    server.url                                                                 # ws://127.0.0.1:PORT

Connections and sessions. Each connection is one robot and gets its own policy session from
`make_session()` (for a bundle: a light OnnxPolicy over the one shared OnnxVla engine), so one robot's
reset never touches another robot's episode. The first message on every connection is the "hello"
(model name and sha256, action spec, image size, accepted instructions, protocol version, size limit).

Inference is serialized by one lock. On a CPU server two concurrent runs share the same cores (no
gain in throughput, a worse tail for everybody), and one engine in memory serves every robot where
per-connection engines would multiply memory by the number of robots. The time a request waited for
the lock is in every reply (`timings["queue"]`), so a robot can tell a busy server from a slow
network. (A GPU server would batch the waiting requests here instead.)

Errors are replies, never crashes: malformed msgpack, a wrong dtype or shape, an unknown instruction
or message type get an "error" reply naming the fix, and the connection stays open; a message larger
than `max_message_bytes` is refused by the websocket layer before it is read (close code 1009, that
connection only); a client that disconnects mid-request only ends its own session; a policy that
raises gets an "internal" error reply and the server logs the traceback. Beyond `max_connections`
robots a new connection is closed at once with code 1013 (try again later).

Health: an HTTP `GET /healthz` on the same port answers 200 with a JSON body, and a websocket
{"type": "health"} message answers the same fields.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime import wire
from runtime.errors import UserError
from runtime.policy import Observation, Policy

log = logging.getLogger("vla_edge.cloud")

DEFAULT_MAX_MESSAGE_BYTES = 4 << 20  # 4 MiB: a raw 1280x720 RGB frame is 2.8 MB


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (see PolicyServer.port)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connections: int = 64

    def check(self) -> "ServerConfig":
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port} is not a TCP port: use 1 to 65535 (0 picks a free one)")
        if not 1024 <= self.max_message_bytes <= 1 << 30:
            raise UserError(f"--max-message-bytes {self.max_message_bytes} is out of range: use 1024 to 2^30 "
                            f"(a raw 96x96 frame needs about 28 kB)")
        if self.max_connections < 1:
            raise UserError("--max-connections must be at least 1")
        return self


class PolicyServer:
    """Serve `make_session()` policies; `info` is the hello's model, action, image and instructions."""

    def __init__(self, make_session: Callable[[], Policy], info: dict, config: ServerConfig | None = None) -> None:
        self.make_session = make_session
        self.info = info
        self.config = (config or ServerConfig()).check()
        instructions = info.get("instructions")
        self.instructions = {i.strip().lower() for i in instructions} if instructions else None
        self._inference = threading.Lock()
        self._counts = threading.Lock()
        self.connections = self.requests = self.errors = 0
        self.started = time.monotonic()
        self._server = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def _bind(self) -> None:
        from websockets.sync.server import serve

        c = self.config
        try:
            self._server = serve(self._handle, c.host, c.port, max_size=c.max_message_bytes, compression=None,
                                 process_request=self._process_request, close_timeout=2)
        except OSError as err:
            raise UserError(f"cannot listen on {c.host}:{c.port} ({err.strerror or err}): choose another --port "
                            f"or stop the program using it") from None
        log.info("serving %s on %s (health: %s)", self.info["model"]["name"], self.url, self.health_url)

    def start(self) -> "PolicyServer":
        """Listen and serve from a background thread; returns at once (tests, in-process use)."""
        self._bind()
        self._thread = threading.Thread(target=self._server.serve_forever, name="policy-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, announce: Callable[[], None] | None = None) -> None:
        """Listen, call `announce()`, and serve in this thread until interrupted."""
        self._bind()
        if announce is not None:
            announce()
        try:
            self._server.serve_forever()
        finally:
            self._server.shutdown()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "PolicyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def port(self) -> int:
        return self._server.socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/healthz"

    # -- messages -----------------------------------------------------------------------------
    def hello(self) -> dict:
        return {"type": "hello", "protocol": wire.PROTOCOL_VERSION, **self.info,
                "max_message_bytes": self.config.max_message_bytes, "encodings": ["raw", "jpeg"]}

    def health(self) -> dict:
        with self._counts:
            return {"ok": True, "protocol": wire.PROTOCOL_VERSION, "model": self.info["model"]["name"],
                    "connections": self.connections, "requests": self.requests, "errors": self.errors,
                    "uptime_s": round(time.monotonic() - self.started, 3)}

    def _process_request(self, connection, request):
        """HTTP GET /healthz answers without a websocket; every other path goes on to the handshake."""
        if request.path.split("?", 1)[0] != "/healthz":
            return None
        respond = getattr(connection, "respond", None) or connection.protocol.reject
        return respond(200, json.dumps(self.health()) + "\n")

    def _handle(self, ws) -> None:
        """One robot: the hello, then one reply per request, until it disconnects."""
        from websockets.exceptions import ConnectionClosed
        from websockets.frames import CloseCode

        with self._counts:
            full = self.connections >= self.config.max_connections
            if not full:
                self.connections += 1
        if full:
            ws.close(CloseCode.TRY_AGAIN_LATER, f"server full: {self.config.max_connections} robots connected")
            return
        peer = ws.remote_address
        try:
            session = self.make_session()
            ws.send(wire.pack(self.hello()))
            for data in ws:
                ws.send(self._reply_bytes(session, data))
        except ConnectionClosed as err:
            code = err.rcvd.code if err.rcvd else (err.sent.code if err.sent else None)
            log.info("robot %s disconnected (code %s)", peer, code)
        finally:
            with self._counts:
                self.connections -= 1

    def _reply_bytes(self, session: Policy, data: bytes | str) -> bytes:
        start = time.perf_counter()
        reply = self.answer(session, data, start)
        with self._counts:
            self.requests += 1
            self.errors += reply["type"] == "error"
        try:
            return wire.pack(reply)
        except Exception as err:  # a policy returned something that cannot travel
            log.exception("could not pack a reply")
            return wire.pack(wire.error_reply(reply.get("seq"), "internal", f"the reply could not be packed ({err})"))

    def answer(self, session: Policy, data: bytes | str, start: float | None = None) -> dict:
        """The reply to one request; every failure becomes an "error" reply."""
        from runtime.onnx_engine import NonFiniteLogits

        start = time.perf_counter() if start is None else start
        seq = None
        try:
            message = wire.unpack(data)
            seq, kind = message.get("seq"), message["type"]
            if kind == "act":
                return self._act(session, message, start)
            if kind == "reset":
                with self._inference:
                    session.reset()
                return {"type": "reset", "seq": seq}
            if kind == "health":
                return {"type": "health", "seq": seq, **self.health()}
            raise wire.WireError("unknown_type", f"unknown message type '{kind}': send 'act', 'reset' or 'health'")
        except wire.WireError as err:
            return err.reply(seq)
        except NonFiniteLogits as err:
            return wire.error_reply(seq, "no_action", f"{err}: the model produced no usable action for this frame")
        except UserError as err:
            return wire.error_reply(seq, "bad_request", str(err))
        except Exception as err:
            log.exception("the policy failed on request %s", seq)
            return wire.error_reply(seq, "internal", f"the server failed on this request ({type(err).__name__}: "
                                                     f"{err}); see the server log")

    def _act(self, session: Policy, message: dict, start: float) -> dict:
        instruction, image, state = wire.parse_act(message)
        if self.instructions is not None and instruction.strip().lower() not in self.instructions:
            known = ", ".join(sorted(self.instructions)[:4])
            raise wire.WireError("unknown_instruction", f"unknown instruction '{instruction}': this model knows "
                                                        f"{len(self.instructions)} instructions ({known}, ...; all "
                                                        f"are listed in the hello message)")
        decoded = time.perf_counter()
        with self._inference:
            began = time.perf_counter()
            action = session.act(Observation(image=image, instruction=instruction, state=state))
            done = time.perf_counter()
        tokens = None if action.tokens is None else wire.encode_array(np.asarray(action.tokens, np.int64))
        timings = {"decode": decoded - start, "queue": began - decoded, "inference": done - began,
                   "policy": {k: float(v) for k, v in action.timings.items()}}
        reply = {"type": "action", "seq": message.get("seq"), "values": wire.encode_array(action.values.astype(np.float32)),
                 "tokens": tokens, "timings": timings}
        timings["total"] = time.perf_counter() - start
        return reply


def bundle_info(bundle) -> dict:
    """The hello's description of a bundle: model (name, sha256 of its manifest), action spec, image
    size (frames travel as RGB; the server converts), and the instructions it accepts."""
    from runtime.atomic_io import sha256_file
    from runtime.bundle import MANIFEST

    m = bundle.manifest
    return {
        "model": {"name": m["model"]["name"], "parameters": m["model"]["parameters"], "precision": m["precision"],
                  "sha256": sha256_file(bundle.root / MANIFEST)},
        "action": {key: m["action"][key] for key in ("names", "units", "low", "high")},
        "image": {"height": m["image"]["height"], "width": m["image"]["width"], "channel_order": "RGB",
                  "camera": m["image"].get("camera")},
        "instructions": sorted(m["prompt"]["prompts"]),
    }


def bundle_server(path, config: ServerConfig | None = None, threads: int = 1, engine: str = "onnx") -> PolicyServer:
    """A server for a bundle: one engine ("onnx" or "tensorrt", runtime/engines.py), one light policy
    session per robot over it."""
    from runtime.bundle import Bundle
    from runtime.engines import load_engine

    bundle = Bundle.load(path)
    vla = load_engine(bundle, engine, threads)
    if engine == "tensorrt":
        from runtime.tensorrt_engine import TensorRTPolicy as session
    else:
        from runtime.onnx_engine import OnnxPolicy as session
    return PolicyServer(lambda: session(vla), bundle_info(bundle), config)
