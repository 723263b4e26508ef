"""`python -m firmware_bridge`: serial-link commands.

Examples:

    python -m firmware_bridge ports
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


cli = CommandLine(
    "python -m firmware_bridge",
    "Serial link to the arm controller (protocol, host link and emulator arrive with the bridge issue).",
    __doc__,
)
cli.command("ports", "list the serial ports this machine has", "python -m firmware_bridge ports", cmd_ports,
            description="List serial ports (USB adapters, on-board UARTs) with their descriptions.")

if __name__ == "__main__":
    sys.exit(cli.run())
