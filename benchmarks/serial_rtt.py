"""Action round trip over the serial link, from `send_action` to its ACK, against the controller emulator
on a pseudo-terminal.

    python -m benchmarks serial_rtt --actions 2000 --bauds 115200,1000000 --out runs/serial_rtt.json

For each baud rate the emulator runs in its own process (a controller is separate hardware), twice:
"uart" makes it take the time a UART at that rate needs to carry each frame in and each reply out (a pty
itself moves bytes at memory speed whatever its baud setting; `emulate --pace`), "pty" does not, which
leaves the software's share: encoding, system calls, the emulator's Python, scheduling. The host side is
the runtime's own `SerialLink`, with the timeout it derives from the baud rate and its retransmissions.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from firmware_bridge.emulator import BITS_PER_BYTE
from firmware_bridge.link import ActionLost, LinkConfig, SerialLink
from firmware_bridge.protocol import AckPayload, ActionPayload, Frame, MsgType, encode_frame
from runtime.errors import UserError

REPO = Path(__file__).resolve().parent.parent
WARMUP = 50


def wire_bytes() -> tuple[int, int]:
    """Bytes on the wire of a typical ACTION frame and of its ACK (COBS and delimiter included)."""
    action = ActionPayload(1.23, -4.56, 0.5, 0.25)
    ack = AckPayload(1000, 0, 0, (12_345, 600_000, 200_000), 0.5, action)
    return (len(encode_frame(Frame(MsgType.ACTION, 1000, action.pack()))),
            len(encode_frame(Frame(MsgType.ACK, 1000, ack.pack()))))


class EmulatorProcess:
    """`python -m firmware_bridge emulate --pty` (kinematic arm) in a child process."""

    def __init__(self, baud: int, paced: bool) -> None:
        command = [sys.executable, "-m", "firmware_bridge", "emulate", "--pty", "--baud", str(baud)]
        self.proc = subprocess.Popen(command + (["--pace"] if paced else []), cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        banner = self.proc.stdout.readline()
        found = re.search(r"emulator on (\S+) ", banner)
        if not found:
            self.close()
            raise UserError(f"the controller emulator did not start: {banner.strip() or self.proc.stderr.read()[-500:]}")
        self.path = found.group(1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


def measure(baud: int, actions: int, paced: bool) -> dict:
    """Round trips of `actions` actions (after WARMUP more) at `baud`; milliseconds."""
    emulator = EmulatorProcess(baud, paced)
    rng = np.random.default_rng(0)
    values = rng.uniform(-1, 1, size=(WARMUP + actions, 5)).astype(np.float32)
    times, lost = [], 0
    try:
        link = SerialLink(LinkConfig(port=emulator.path, baud=baud)).open()
        try:
            for i, action in enumerate(values):
                start = time.perf_counter()
                try:
                    link.send_action(action)
                except ActionLost:
                    lost += i >= WARMUP
                    continue
                if i >= WARMUP:
                    times.append(time.perf_counter() - start)
            retransmits, timeout = link.stats["retransmits"], link.config.attempt_timeout
        finally:
            link.close()
    finally:
        emulator.close()
    ms = 1000 * np.asarray(times)
    action_bytes, ack_bytes = wire_bytes()
    return {"baud": baud, "mode": "uart" if paced else "pty", "actions": actions, "acked": len(times), "lost": lost,
            "retransmits": retransmits, "attempt_timeout_ms": 1000 * timeout,
            "wire_ms": 1000 * (action_bytes + ack_bytes) * BITS_PER_BYTE / baud,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def run(bauds: list[int], actions: int, modes: tuple[str, ...] = ("uart", "pty")) -> list[dict]:
    return [measure(baud, actions, paced=mode == "uart") for baud in bauds for mode in modes]


def format_table(rows: list[dict]) -> str:
    lines = [f"{'baud':>9s} {'line':5s} {'wire ms':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} "
             f"{'retx':>5s} {'lost':>5s}"]
    for r in rows:
        lines.append(f"{r['baud']:>9d} {r['mode']:5s} {r['wire_ms']:8.3f} {r['p50_ms']:8.3f} {r['p95_ms']:8.3f} "
                     f"{r['p99_ms']:8.3f} {r['max_ms']:8.3f} {r['retransmits']:>5d} {r['lost']:>5d}")
    return "\n".join(lines)
