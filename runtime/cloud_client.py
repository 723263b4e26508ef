"""The robot side of the cloud path: `CloudPolicy` is a `Policy` whose model runs on a policy server
(runtime/policy_server.py), so the control loop cannot tell it from the local engine. It needs only
numpy, msgpack, websockets and OpenCV (for optional JPEG frames).

    config = ClientConfig("ws://gpu-box:8765", timeout_s=0.06, fallback="local", jpeg_quality=90)
    with CloudPolicy(config, local=OnnxPolicy.load("bundles/student-int8")) as policy:
        action = policy.act(observation)   # a CloudAction: .source is "cloud", "hold" or "local"
        policy.stats                       # requests, late, stale, fallbacks, bytes sent, ...

Timing contract: `act()` returns within `timeout_s` of being called; in hybrid mode ("local") the
local policy's own inference comes on top, after the hand-over. A sender thread always sends the
newest frame only and a receiver thread reads replies, so `act()` itself only ever waits on an event
for the time left: a stalled socket, a slow server or a dead network cannot hold it longer.
Reconnecting also happens in the background: while the link is down every step falls back at once.

Late replies: every request carries a sequence number and only the reply to the request now waiting
is accepted. A reply that arrives after its step has fallen back is discarded and counted
(`stats["stale"]`); it is never applied to a later step.

Fallback when the reply is late, the link is down or the server could not produce an action:
- "hold": a zero-motion action (the gripper kept as last commanded, terminate 0), `source="hold"`;
- "local": the `local` policy decides this step (`source="local"`): hybrid mode, in which the cloud
  teacher acts while the network is good and the on-robot student when it is not. Budget:
  `timeout_s` plus the student's inference time must fit in one control period.
A request the server refuses as malformed (unknown instruction, a frame over its size limit) raises
`CloudRequestError`: falling back would hide a mistake that repeats on every step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from runtime import wire
from runtime.errors import UserError
from runtime.policy import Action, Observation, Policy

log = logging.getLogger("vla_edge.cloud")

FALLBACKS = ("hold", "local")
MAX_REPLY_BYTES = 1 << 20


class CloudRequestError(UserError):
    """The server refused a request for what it is (not for the network): it would fail every time."""


@dataclass
class ClientConfig:
    url: str  # ws://host:port of a policy server (or of a netem proxy in front of one)
    timeout_s: float = 0.08  # the longest act() waits for a reply
    fallback: str = "hold"  # "hold" or "local" (needs a local policy)
    jpeg_quality: int | None = None  # None: raw frames (lossless); 1-100: JPEG
    connect_timeout_s: float = 5.0
    reconnect_interval_s: float = 1.0  # at most one reconnect attempt this often

    def check(self) -> "ClientConfig":
        if not self.url.startswith(("ws://", "wss://")):
            raise UserError(f"policy server address '{self.url}' must start with ws:// or wss://, "
                            f"e.g. ws://127.0.0.1:8765")
        if not 0 < self.timeout_s <= 60:
            raise UserError(f"cloud timeout {self.timeout_s} s is out of range: use a value within one control "
                            f"period, e.g. 0.08 at 10 Hz")
        if self.fallback not in FALLBACKS:
            raise UserError(f"unknown fallback '{self.fallback}': choose {' or '.join(FALLBACKS)}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"JPEG quality {self.jpeg_quality} is out of range: use 1 to 100 (90 is near-lossless)")
        if self.connect_timeout_s <= 0 or self.reconnect_interval_s <= 0:
            raise UserError("connect_timeout_s and reconnect_interval_s must be positive")
        return self


@dataclass
class CloudAction(Action):
    """An action with where it came from: "cloud", or the fallback "hold" or "local", and why."""

    source: str = "cloud"
    reason: str | None = None  # why a fallback: "late", "disconnected", "server:<code>"
    seq: int | None = None
    bytes_sent: int = 0
    server_timings: dict = field(default_factory=dict)


@dataclass
class _Waiter:
    seq: int
    event: threading.Event = field(default_factory=threading.Event)
    reply: dict | None = None


class _Link:
    """One websocket connection: the hello, a sender thread (control messages in order, then the
    newest frame only) and a receiver thread handing every reply to `on_reply`; `on_close()` once
    the connection is lost."""

    def __init__(self, url: str, connect_timeout: float, on_reply, on_close) -> None:
        from websockets.sync.client import connect

        self._stack = ExitStack()  # websockets >= 17.1 wants connect() entered as a context manager
        self.ws = self._stack.enter_context(connect(url, open_timeout=connect_timeout, close_timeout=1,
                                                    compression=None, max_size=MAX_REPLY_BYTES))
        try:
            self.hello = wire.unpack(self.ws.recv(timeout=connect_timeout))
        except BaseException:
            self._stack.close()
            raise
        self.on_reply, self.on_close = on_reply, on_close
        self.closed = False
        self.close_reason = ""
        self._controls: deque[bytes] = deque()
        self._frame: bytes | None = None
        self._wake = threading.Condition()
        self._threads = [threading.Thread(target=self._send_loop, name="cloud-send", daemon=True),
                         threading.Thread(target=self._recv_loop, name="cloud-recv", daemon=True)]
        for thread in self._threads:
            thread.start()

    def post(self, blob: bytes, control: bool = False) -> None:
        """Queue a message; a frame replaces any frame not sent yet (only the newest matters)."""
        with self._wake:
            if control:
                self._controls.append(blob)
            else:
                self._frame = blob
            self._wake.notify()

    def _send_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            with self._wake:
                while not self.closed and not self._controls and self._frame is None:
                    self._wake.wait()
                if self.closed:
                    return
                if self._controls:
                    blob = self._controls.popleft()
                else:
                    blob, self._frame = self._frame, None
            try:
                self.ws.send(blob)
            except (ConnectionClosed, OSError) as err:
                self._mark_closed(f"send failed: {err}")
                return

    def _recv_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for data in self.ws:
                self.on_reply(data)
            self._mark_closed("the server closed the connection")
        except ConnectionClosed as err:
            self._mark_closed(f"connection closed ({err})")
        except Exception as err:  # a bug in reply handling must not leave the link looking alive
            log.exception("cloud reply handling failed")
            self._mark_closed(f"reply handling failed: {err}")

    def _mark_closed(self, reason: str) -> None:
        with self._wake:
            first = not self.closed
            if first:
                self.closed, self.close_reason = True, reason
            self._wake.notify_all()
        if first:
            self.on_close()

    def close(self) -> None:
        self._mark_closed("closed by the client")
        self._stack.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)


class CloudPolicy:
    """A `Policy` served by a remote policy server, with bounded waits and a defined fallback."""

    name = "cloud"

    def __init__(self, config: ClientConfig, local: Policy | None = None) -> None:
        self.config = config.check()
        if config.fallback == "local" and local is None:
            raise UserError("fallback 'local' needs a local policy (e.g. the student bundle: --local-bundle)")
        self.local = local
        self._lock = threading.Lock()
        self._waiter: _Waiter | None = None
        self._sent_at: dict[int, float] = {}
        self._seq = 0
        self._last_values: np.ndarray | None = None
        self._closing = False
        self._reconnecting = False
        self._last_attempt = time.monotonic()
        self.stats = {"requests": 0, "cloud": 0, "late": 0, "stale": 0, "hold": 0, "local": 0, "server_errors": 0,
                      "disconnected_steps": 0, "reconnects": 0, "bytes_sent": 0, "bytes_last": 0}
        self.round_trips: deque[float] = deque(maxlen=100_000)  # seconds, every reply, late ones included
        self._link: _Link | None = self._open_link()
        self.hello = self._link.hello
        self._check_hello(self.hello)
        self.names = list(self.hello["action"]["names"])
        self.instructions = {i.strip().lower() for i in self.hello.get("instructions") or []}
        self.max_message_bytes = int(self.hello["max_message_bytes"])

    # -- connection ---------------------------------------------------------------------------
    def _open_link(self) -> _Link:
        try:
            return _Link(self.config.url, self.config.connect_timeout_s, self._on_reply, self._on_close)
        except (OSError, TimeoutError) as err:
            raise UserError(f"cannot reach the policy server at {self.config.url} ({err}): start one with "
                            f"`python -m runtime serve --bundle BUNDLE --port PORT` and check the address") from None
        except Exception as err:  # websockets' handshake errors (InvalidHandshake, InvalidURI, ...)
            raise UserError(f"{self.config.url} did not answer as a policy server ({type(err).__name__}: {err}): "
                            f"is it `python -m runtime serve`?") from None

    @staticmethod
    def _check_hello(hello: dict) -> None:
        if hello.get("type") != "hello":
            raise UserError(f"the server's first message was '{hello.get('type')}', not 'hello': is it a vla-edge "
                            f"policy server?")
        if hello.get("protocol") != wire.PROTOCOL_VERSION:
            raise UserError(f"the server speaks cloud protocol {hello.get('protocol')}, this robot "
                            f"{wire.PROTOCOL_VERSION}: install the same vla-edge on both")

    def _usable_link(self) -> _Link | None:
        link = self._link
        if link is not None and not link.closed:
            return link
        if link is not None:
            log.warning("lost the policy server: %s; reconnecting in the background", link.close_reason)
            self._link = None
        self._reconnect_in_background()
        return None

    def _reconnect_in_background(self) -> None:
        with self._lock:
            if (self._closing or self._reconnecting
                    or time.monotonic() - self._last_attempt < self.config.reconnect_interval_s):
                return
            self._reconnecting, self._last_attempt = True, time.monotonic()
        threading.Thread(target=self._reconnect, name="cloud-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        try:
            link = _Link(self.config.url, self.config.connect_timeout_s, self._on_reply, self._on_close)
            if link.hello.get("model", {}).get("sha256") != self.hello["model"].get("sha256"):
                log.warning("the policy server came back with another model (%s)", link.hello["model"].get("name"))
            if link.hello.get("action", {}).get("names") != self.names:
                log.error("the policy server came back with another action spec; staying on the fallback")
                link.close()
                return
            self._link = link
            self.stats["reconnects"] += 1
        except Exception as err:
            log.info("reconnect to %s failed: %s", self.config.url, err)
        finally:
            self._reconnecting = False

    def close(self) -> None:
        self._closing = True
        if self._link is not None:
            self._link.close()
            self._link = None

    def __enter__(self) -> "CloudPolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- replies (receiver thread) ------------------------------------------------------------------
    def _on_reply(self, data: bytes | str) -> None:
        arrived = time.perf_counter()
        try:
            message = wire.unpack(data)
        except wire.WireError:
            log.warning("the server sent a malformed reply; ignored")
            return
        seq = message.get("seq")
        with self._lock:
            sent = self._sent_at.pop(seq, None)
            if sent is not None:
                self.round_trips.append(arrived - sent)
            waiter = self._waiter
            if waiter is not None and waiter.seq == seq:
                waiter.reply = message
                self._waiter = None
                waiter.event.set()
            elif message["type"] in ("action", "error"):
                self.stats["stale"] += 1  # its step has already fallen back: never applied

    def _on_close(self) -> None:
        """The link is gone: the step waiting now falls back at once instead of at its timeout."""
        with self._lock:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.event.set()

    # -- Policy ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """New episode: the server session resets (in order, before the next request), as does the
        local policy; the hold action forgets the gripper."""
        self._last_values = None
        if self.local is not None:
            self.local.reset()
        link = self._usable_link()
        if link is not None:
            link.post(wire.pack({"type": "reset", "seq": self._next_seq()}), control=True)

    def act(self, observation: Observation) -> CloudAction:
        start = time.perf_counter()
        deadline = start + self.config.timeout_s
        if self.instructions and observation.instruction.strip().lower() not in self.instructions:
            raise CloudRequestError(f"unknown instruction '{observation.instruction}': the served model knows "
                                    f"{len(self.instructions)} instructions (policy.hello['instructions'])")
        link = self._usable_link()
        if link is None:
            self.stats["disconnected_steps"] += 1
            return self._fall_back(observation, "disconnected", {})
        seq = self._next_seq()
        frame = wire.encode_frame(observation.image, self.config.jpeg_quality)
        blob = wire.pack(wire.act_request(seq, observation.instruction, frame, observation.state))
        if len(blob) > self.max_message_bytes:
            raise CloudRequestError(f"a request of {len(blob)} bytes exceeds the server's limit of "
                                    f"{self.max_message_bytes}: send JPEG frames (jpeg_quality=90), smaller frames, "
                                    f"or start the server with a larger --max-message-bytes")
        encoded = time.perf_counter()
        waiter = _Waiter(seq)
        with self._lock:
            self._waiter = waiter
            self._sent_at[seq] = encoded
            while len(self._sent_at) > 1000:
                self._sent_at.pop(next(iter(self._sent_at)))
        link.post(blob)
        self.stats["requests"] += 1
        self.stats["bytes_sent"] += len(blob)
        self.stats["bytes_last"] = len(blob)
        waiter.event.wait(max(0.0, deadline - time.perf_counter()))
        with self._lock:
            if self._waiter is waiter:
                self._waiter = None  # from now on its reply is stale
        reply = waiter.reply
        timings = {"encode": encoded - start, "wait": time.perf_counter() - encoded}
        if reply is None and link.closed:
            self.stats["disconnected_steps"] += 1
            return self._fall_back(observation, "disconnected", timings, seq, len(blob))
        if reply is None:
            self.stats["late"] += 1
            return self._fall_back(observation, "late", timings, seq, len(blob))
        if reply["type"] == "error":
            return self._server_error(observation, reply, timings, seq, len(blob))
        return self._cloud_action(reply, timings, seq, len(blob))

    def _cloud_action(self, reply: dict, timings: dict, seq: int, sent: int) -> CloudAction:
        try:
            values = wire.decode_array(reply.get("values"), "values").astype(np.float32)
            tokens = None if reply.get("tokens") is None else wire.decode_array(reply["tokens"], "tokens")
        except wire.WireError as err:
            raise UserError(f"the policy server sent a malformed action ({err}): update it to this vla-edge") from None
        if values.shape != (len(self.names),):
            raise UserError(f"the policy server sent {values.shape} action values; its hello promised "
                            f"{len(self.names)} ({', '.join(self.names)})")
        server = reply.get("timings") or {}
        total = float(server.get("total", 0.0))
        timings.update(server=total, network=max(0.0, timings["wait"] - total))
        self.stats["cloud"] += 1
        self._last_values = values
        return CloudAction(values=values, tokens=tokens, timings=timings, source="cloud", seq=seq, bytes_sent=sent,
                           server_timings=server)

    def _server_error(self, observation: Observation, reply: dict, timings: dict, seq: int, sent: int) -> CloudAction:
        code, message = reply.get("code"), reply.get("message")
        if code in wire.REQUEST_ERRORS:
            raise CloudRequestError(f"the policy server refused the request ({code}): {message}")
        self.stats["server_errors"] += 1
        log.warning("policy server error %s: %s", code, message)
        return self._fall_back(observation, f"server:{code}", timings, seq, sent)

    def _fall_back(self, observation: Observation, reason: str, timings: dict, seq: int | None = None,
                   sent: int = 0) -> CloudAction:
        if self.config.fallback == "local":
            action = self.local.act(observation)
            self.stats["local"] += 1
            self._last_values = action.values
            return CloudAction(values=action.values, tokens=action.tokens, timings={**timings, **action.timings},
                               source="local", reason=reason, seq=seq, bytes_sent=sent)
        self.stats["hold"] += 1
        return CloudAction(values=self.hold_values(), timings=timings, source="hold", reason=reason, seq=seq,
                           bytes_sent=sent)

    def hold_values(self) -> np.ndarray:
        """Zero motion, the gripper as last commanded (a hold never drops or grabs), terminate 0."""
        values = np.zeros(len(self.names), np.float32)
        if "gripper" in self.names and self._last_values is not None:
            index = self.names.index("gripper")
            values[index] = self._last_values[index]
        return values

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq


def fetch_health(url: str, timeout_s: float = 2.0) -> dict:
    """GET /healthz of a policy server given its ws:// or http:// address."""
    import json
    import urllib.request

    http = url.replace("wss://", "https://").replace("ws://", "http://").rstrip("/")
    with urllib.request.urlopen(f"{http}/healthz", timeout=timeout_s) as response:
        return json.loads(response.read())
