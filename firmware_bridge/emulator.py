"""The arm controller, emulated on the host: the protocol core on the other end of a serial port.

`python -m firmware_bridge emulate --pty` opens a pseudo-terminal pair (a real tty) and prints the path
for the host side; `--port PATH_OR_URL` serves an existing port or pyserial URL instead (a USB adapter
wired to the robot computer's, one end of a `socat` pty pair, `socket://host:port`).

A pty moves bytes at memory speed whatever its baud setting; `pace_baud` makes the emulator wait the
time a UART at that rate needs to carry each frame in and each reply out, so that round trips measured
over a pty include the wire time of a real serial line.

    emulator = Emulator.on_pty(ControllerCore(KinematicArm())).start()
    link = SerialLink(LinkConfig(port=emulator.host_path)).open()
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

from firmware_bridge.controller import ControllerCore
from firmware_bridge.protocol import FrameDecoder, encode_frame
from runtime.errors import UserError

BITS_PER_BYTE = 10  # 8N1: a start bit, 8 data bits, a stop bit
REOPEN_INTERVAL_S = 0.25  # how often a vanished --port is tried again


class PtyEnd:
    """The controller's end of a pseudo-terminal pair; the host opens `host_path`."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)  # kept open so the pty stays up between host connections
        self.host_path = os.ttyname(self._slave)
        self.name = self.host_path

    def read(self, timeout: float) -> bytes:
        readable, _, _ = select.select([self.master], [], [], timeout)
        if not readable:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class SerialEnd:
    """A pyserial port (device path or URL) that the emulator serves; reopened if it fails."""

    def __init__(self, url: str, baud: int, read_timeout: float = 0.005) -> None:
        self.name, self.baud, self.read_timeout = url, baud, read_timeout
        self.host_path = None  # the host is on whatever the other end of this port is wired to
        self.failures = 0
        self._retry_at = 0.0
        self._port = self._open()

    def _open(self):
        import serial

        try:
            return serial.serial_for_url(self.name, baudrate=self.baud, timeout=self.read_timeout, write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as err:
            raise UserError(f"cannot open {self.name} for the emulator ({err}): check the path or URL "
                            f"(`python -m firmware_bridge ports`), or use --pty") from None

    def read(self, timeout: float) -> bytes:
        if self._port is None:  # the port went away: try again now and then, the watchdog keeps ticking
            time.sleep(timeout)
            if time.monotonic() < self._retry_at:
                return b""
            self._retry_at = time.monotonic() + REOPEN_INTERVAL_S
            try:
                self._port = self._open()  # the port came back
            except UserError:
                return b""
        try:
            return self._port.read(self._port.in_waiting or 1)
        except OSError:  # pyserial's SerialException: the cable or the adapter went away
            self._drop()
            return b""

    def write(self, data: bytes) -> None:
        if self._port is None:
            return  # nobody to answer: the host retransmits or reports the message lost
        try:
            self._port.write(data)
        except OSError:
            self._drop()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def _drop(self) -> None:
        self.failures += 1
        try:
            self._port.close()
        except OSError:
            pass
        self._port = None

    def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None


class Emulator:
    """Serves a ControllerCore on a port end (`PtyEnd` or `SerialEnd`) in a thread."""

    def __init__(self, core: ControllerCore, end, drop_every: int = 0, pace_baud: int | None = None) -> None:
        self.core = core
        self.end = end
        self.host_path = end.host_path
        self.decoder = FrameDecoder()
        self.drop_every = drop_every  # fault injection: ignore every N-th frame (0: never)
        self.pace_baud = pace_baud
        self._frames = 0
        self.ticks = 0  # serve-loop iterations, each of which ran the watchdog once
        self.errors = 0  # frames the arm model failed on (left unanswered)
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def on_pty(cls, core: ControllerCore, **kwargs) -> "Emulator":
        return cls(core, PtyEnd(), **kwargs)

    @classmethod
    def on_port(cls, core: ControllerCore, url: str, baud: int, **kwargs) -> "Emulator":
        return cls(core, SerialEnd(url, baud), **kwargs)

    def start(self) -> "Emulator":
        self._thread = threading.Thread(target=self.serve, name="controller-emulator", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        while not self._stop.is_set():
            data = self.end.read(0.005)
            self.core.tick()
            self.ticks += 1
            for frame in self.decoder.feed(data) if data else ():
                self._frames += 1
                if self.drop_every and self._frames % self.drop_every == 0:
                    continue  # a frame lost on the wire
                self._wire_time(encode_frame(frame))  # the frame's last byte arrives only now
                try:
                    replies = self.core.handle(frame)
                except Exception as err:  # the arm model failed (a simulator error): unanswered, the host
                    self.errors += 1      # retransmits or reports the action lost; the emulator serves on
                    self.last_error = f"{type(err).__name__}: {err}"
                    continue
                for reply in replies:
                    wire = encode_frame(reply)
                    self._wire_time(wire)
                    try:
                        self.end.write(wire)
                    except OSError:
                        pass  # the host's end is gone; it reports the message lost

    def _wire_time(self, wire: bytes) -> None:
        if self.pace_baud:
            time.sleep(len(wire) * BITS_PER_BYTE / self.pace_baud)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.end.close()

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
