"""The arm controller, emulated on the host: the protocol core on the other end of a serial port.

`python -m firmware_bridge emulate --pty` opens a pseudo-terminal pair (a real tty) and prints the path
for the host side; `--port PATH` serves an existing port or pyserial URL instead.

    emulator = Emulator.on_pty(ControllerCore(KinematicArm()))
    link = SerialLink(LinkConfig(port=emulator.host_path)).open()
"""

from __future__ import annotations

import os
import select
import threading
import tty

from firmware_bridge.controller import ControllerCore
from firmware_bridge.protocol import FrameDecoder, encode_frame


class Emulator:
    """Serves a ControllerCore on a file descriptor (the controller's end of a pty) in a thread."""

    def __init__(self, core: ControllerCore, fd: int, host_path: str | None = None, drop_every: int = 0) -> None:
        self.core = core
        self.fd = fd
        self.host_path = host_path
        self.decoder = FrameDecoder()
        self.drop_every = drop_every  # fault injection: ignore every N-th frame (0: never)
        self._frames = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slave: int | None = None

    @classmethod
    def on_pty(cls, core: ControllerCore, **kwargs) -> "Emulator":
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        emulator = cls(core, master, host_path=os.ttyname(slave), **kwargs)
        emulator._slave = slave  # kept open so the pty stays up between host connections
        return emulator

    def start(self) -> "Emulator":
        self._thread = threading.Thread(target=self.serve, name="controller-emulator", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self.fd], [], [], 0.005)
            self.core.tick()
            if not readable:
                continue
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                continue
            for frame in self.decoder.feed(data):
                self._frames += 1
                if self.drop_every and self._frames % self.drop_every == 0:
                    continue  # a frame lost on the wire
                for reply in self.core.handle(frame):
                    os.write(self.fd, encode_frame(reply))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self.fd, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
