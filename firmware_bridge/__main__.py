"""`python -m firmware_bridge`: serial-link commands.

Examples:

    python -m firmware_bridge ports
    python -m firmware_bridge emulate --pty
"""

from __future__ import annotations

import sys

from runtime.cli import CommandLine


def cmd_ports(args) -> int:
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        print("no serial ports found (a USB adapter shows up as /dev/ttyUSB* or /dev/ttyACM*)")
    for port in ports:
        print(f"{port.device:20s} {port.description}  {port.hwid}")
    return 0


def cmd_emulate(args) -> int:
    import time

    from firmware_bridge.controller import ControllerCore, ControllerLimits, KinematicArm
    from firmware_bridge.emulator import Emulator

    core = ControllerCore(KinematicArm(), ControllerLimits(watchdog_ms=args.watchdog_ms))
    if not args.pty:
        from runtime.errors import UserError

        raise UserError("serving an existing port is not wired yet: use --pty and point the host at the printed path")
    with Emulator.on_pty(core) as emulator:
        print(f"controller emulator on {emulator.host_path} (watchdog {args.watchdog_ms} ms); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    print(f"served: {core.counters}")
    return 0


cli = CommandLine(
    "python -m firmware_bridge",
    "Serial link to the arm controller (protocol, host link and emulator arrive with the bridge issue).",
    __doc__,
)
cli.command("ports", "list the serial ports this machine has", "python -m firmware_bridge ports", cmd_ports,
            description="List serial ports (USB adapters, on-board UARTs) with their descriptions.")

_emu = cli.command("emulate", "act as the arm controller on a pseudo-terminal (for tests and dry runs)",
                   "python -m firmware_bridge emulate --pty", cmd_emulate,
                   description="Run the controller's protocol logic and a kinematic arm on the other end of a pty pair.")
_emu.add_argument("--pty", action="store_true", help="open a pseudo-terminal pair and print the host-side path")
_emu.add_argument("--watchdog-ms", type=int, default=200, help="hold position after this silence (default: %(default)s)")

if __name__ == "__main__":
    sys.exit(cli.run())
