"""A user-space TCP proxy that imposes network conditions (delay, jitter, bandwidth, loss) on loopback,
because the kernel here has no netem. Standard library only.

    python -m runtime netem-proxy --listen 127.0.0.1:9000 --target 127.0.0.1:8765 --profile lte
    python -m runtime netem-proxy --listen 127.0.0.1:9000 --target 127.0.0.1:8765 --rtt-ms 150 --jitter-ms 10

    with ProxyThread("127.0.0.1", 8765, get_profile("wifi")) as proxy:   # in-process, for tests
        CloudPolicy(ClientConfig(f"ws://127.0.0.1:{proxy.port}"))

Every accepted connection is piped to the target in both directions. Each chunk read from one side
gets a release time from that direction's `LinkShaper` (serialization at the link rate, then delay,
jitter and the cost of a lost segment; see net_profiles.py for the model and the figures) and is
written to the other side at that time, in order. Connection ends are forwarded as half-closes, and a
reset on either side closes both.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import threading

from runtime.net_profiles import MSS, NetProfile

log = logging.getLogger("vla_edge.netem")

CHUNK = 65536
QUEUE_CHUNKS = 256  # back-pressure: at most this many chunks wait in one direction


class LinkShaper:
    """When each chunk of one direction of one connection may be delivered (loop time, seconds)."""

    def __init__(self, profile: NetProfile, upstream: bool, rng: random.Random) -> None:
        self.profile, self.upstream, self.rng = profile, upstream, rng
        rate = profile.up_mbit if upstream else profile.down_mbit
        self.bytes_per_s = rate * 1e6 / 8 if rate else 0.0
        self.link_free = 0.0  # when the link has sent everything queued so far
        self.last_release = 0.0  # bytes keep their order

    def release_time(self, nbytes: int, now: float) -> float:
        start = max(now, self.link_free)
        self.link_free = start + (nbytes / self.bytes_per_s if self.bytes_per_s else 0.0)
        delay = self.delay_s()
        loss = self.profile.loss
        if loss and self.rng.random() < 1.0 - (1.0 - loss) ** max(1, math.ceil(nbytes / MSS)):
            delay += self.profile.rto_ms / 1000  # a segment of this chunk was retransmitted
        self.last_release = max(self.link_free + delay, self.last_release)
        return self.last_release

    def delay_s(self) -> float:
        p = self.profile
        if p.rtt_quantiles_ms:
            floor = p.rtt_quantiles_ms[0][1] / 2
            return (sample_quantiles(p.rtt_quantiles_ms, self.rng.random()) - floor) / 1000 if self.upstream else floor / 1000
        one_way = p.rtt_ms / 2
        if p.jitter_ms:
            one_way += self.rng.gauss(0.0, p.jitter_ms)
        return max(0.0, one_way) / 1000


def sample_quantiles(points: tuple[tuple[float, float], ...], u: float) -> float:
    """Inverse CDF through (quantile, value) points, log-linear between them."""
    for (q0, v0), (q1, v1) in zip(points, points[1:]):
        if u <= q1:
            t = 0.0 if q1 == q0 else (u - q0) / (q1 - q0)
            return math.exp(math.log(v0) + t * (math.log(v1) - math.log(v0)))
    return points[-1][1]


class NetemProxy:
    """Listen on (host, port) and pipe every connection to (target_host, target_port) through shapers."""

    def __init__(self, target_host: str, target_port: int, profile: NetProfile, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.profile = profile.check()
        self.rng = random.Random(seed)
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Start listening; returns the port."""
        self._server = await asyncio.start_server(self._connection, *self.listen)
        return self.port

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        self._tasks.add(task)
        writers: tuple[asyncio.StreamWriter, ...] = (client_writer,)
        try:
            try:
                server_reader, server_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
            except (OSError, asyncio.TimeoutError) as err:
                log.warning("netem proxy: cannot reach %s:%s (%s)", *self.target, err)
                return
            writers = (client_writer, server_writer)
            for writer in writers:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = LinkShaper(self.profile, True, random.Random(self.rng.random()))
            down = LinkShaper(self.profile, False, random.Random(self.rng.random()))
            await asyncio.gather(self._pipe(client_reader, server_writer, up, writers),
                                 self._pipe(server_reader, client_writer, down, writers))
        finally:
            self._tasks.discard(task)
            for writer in writers:
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shaper: LinkShaper,
                    writers: tuple[asyncio.StreamWriter, ...]) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)

        async def deliver() -> None:
            while True:
                release, data = await queue.get()
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(CHUNK):
                await queue.put((shaper.release_time(len(data), loop.time()), data))
            await queue.put((0.0, None))
            await sender
        except (ConnectionError, OSError):
            for other in writers:  # a reset on either side ends the whole connection
                other.close()
        finally:
            sender.cancel()


class ProxyThread:
    """A NetemProxy on its own event loop in a daemon thread (tests, in-process evaluation)."""

    def __init__(self, target_host: str, target_port: int, profile: NetProfile, seed: int = 0) -> None:
        self.proxy = NetemProxy(target_host, target_port, profile, seed=seed)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netem-proxy", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.proxy.start())
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> "ProxyThread":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the netem proxy did not start within 10 s")
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def port(self) -> int:
        return self.proxy.port


async def serve_proxy(proxy: NetemProxy, announce) -> None:
    """Run until cancelled; `announce(port)` once listening."""
    announce(await proxy.start())
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.close()
