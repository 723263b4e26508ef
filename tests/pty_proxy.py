"""A relay between two pseudo-terminal pairs for the link's fault tests: a serial cable that can lose
bytes, be pulled and be plugged back.

The host opens `host_path`, a stable symlink to the current host-side pty (as udev's
/dev/serial/by-id/ names are); the controller (the emulator) opens `controller_path`. Bytes cross in
both directions, each dropped with probability `drop` (seeded). `pull()` closes the host-side pair
(the host's reads and writes fail, as with a USB cable pulled out); `plug()` makes a new pair and
points the symlink at it.

    with PtyProxy(tmp_path, drop=0.01) as proxy:
        emulator = Emulator.on_port(core, proxy.controller_path, 1_000_000).start()
        link = SerialLink(LinkConfig(port=proxy.host_path)).open()
"""

from __future__ import annotations

import os
import queue
import random
import select
import threading
import tty
from pathlib import Path


def _pair() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)  # a full buffer loses bytes, as an overrun UART does, never blocks the relay
    return master, slave


class PtyProxy:
    def __init__(self, folder: Path, drop: float = 0.0, seed: int = 0) -> None:
        self.drop = drop
        self.rng = random.Random(seed)
        self.carried = self.dropped = 0  # bytes
        self._controller = _pair()
        self.controller_path = os.ttyname(self._controller[1])
        self.host_path = str(Path(folder) / "ttyVLA0")
        self._host: tuple[int, int] | None = None
        self._plug()
        # Every file-descriptor operation happens on the relay thread: plug() and pull() hand it a request.
        self._requests: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="pty-proxy", daemon=True)
        self._thread.start()

    def plug(self) -> None:
        """A new host-side pty pair behind `host_path`."""
        self._request(self._plug)

    def pull(self) -> None:
        """Close the host-side pair: whoever holds it open sees an I/O error."""
        self._request(self._pull)

    def _request(self, action) -> None:
        done = threading.Event()
        self._requests.put((action, done))
        if not done.wait(5):
            raise RuntimeError("the proxy's relay thread did not answer")

    def _plug(self) -> None:
        self._pull()
        self._host = _pair()
        tmp = self.host_path + ".new"
        os.symlink(os.ttyname(self._host[1]), tmp)
        os.replace(tmp, self.host_path)

    def _pull(self) -> None:
        if self._host is not None:
            for fd in self._host:
                os.close(fd)
            self._host = None

    def _relay(self) -> None:
        while not self._stop.is_set():
            while not self._requests.empty():
                action, done = self._requests.get()
                action()
                done.set()
            controller = self._controller[0]
            host = self._host[0] if self._host else None
            readable, _, _ = select.select([controller] + ([host] if host is not None else []), [], [], 0.005)
            for fd in readable:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                self._forward(data, host if fd == controller else controller)

    def _forward(self, data: bytes, fd: int | None) -> None:
        kept = bytes(b for b in data if not (self.drop and self.rng.random() < self.drop))
        self.dropped += len(data) - len(kept)
        self.carried += len(kept)
        if fd is not None and kept:
            try:
                os.write(fd, kept)
            except OSError:  # a full buffer (BlockingIOError) or a hung-up end: the bytes are lost
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._pull()
        for fd in self._controller:
            os.close(fd)

    def __enter__(self) -> "PtyProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
