"""`python -m firmware_bridge`: serial-link commands.

Examples:

    python -m firmware_bridge ports
    python -m firmware_bridge emulate --pty
    python -m firmware_bridge emulate --port /dev/ttyUSB1 --baud 1000000
    python -m firmware_bridge emulate --pty --arm metaworld --task drawer-open --image-size 96
"""

from __future__ import annotations

import sys

from runtime.cli import CommandLine
from runtime.errors import UserError


def cmd_ports(args) -> int:
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        print("no serial ports found (a USB adapter shows up as /dev/ttyUSB* or /dev/ttyACM*)")
    for port in ports:
        print(f"{port.device:20s} {port.description}  {port.hwid}")
    return 0


def make_arm(args):
    """The arm model behind the emulated controller, and the controller limits that go with it."""
    from firmware_bridge.controller import ControllerLimits, KinematicArm

    if args.arm == "kinematic":
        if args.task:
            raise UserError("--task drives the Meta-World arm: add --arm metaworld (the kinematic arm has no task)")
        return KinematicArm(), ControllerLimits(watchdog_ms=args.watchdog_ms)
    if not args.task:
        raise UserError("--arm metaworld needs --task, e.g. --task drawer-open (`python -m distill tasks` lists them)")
    from firmware_bridge.sim_arm import MAX_STEP_MM, MetaWorldArm

    arm = MetaWorldArm(args.task, image_size=args.image_size, camera=args.camera)
    return arm, ControllerLimits(max_step_mm=MAX_STEP_MM, watchdog_ms=args.watchdog_ms)


def cmd_emulate(args) -> int:
    import signal
    import threading

    from firmware_bridge.controller import ControllerCore
    from firmware_bridge.emulator import Emulator

    if bool(args.pty) == bool(args.port):
        raise UserError("say where to serve: --pty (a new pseudo-terminal pair) or --port PATH_OR_URL")
    if args.pace and not args.pty:
        raise UserError("--pace emulates a UART's wire time on a pty; a real port at --port keeps its own time")
    arm, limits = make_arm(args)
    core = ControllerCore(arm, limits)
    pace = args.baud if args.pace else None
    emulator = (Emulator.on_pty(core, pace_baud=pace) if args.pty
                else Emulator.on_port(core, args.port, args.baud, pace_baud=pace))
    bench = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        emulator.start()
        where = emulator.host_path or args.port
        paced = f", paced at {args.baud} baud" if pace else ""
        print(f"controller emulator on {where} ({args.arm} arm, watchdog {args.watchdog_ms} ms{paced}); Ctrl-C to stop",
              flush=True)
        if args.arm == "metaworld":
            from firmware_bridge.bench import BenchServer

            bench = BenchServer(arm, port=args.bench_port).start()
            host, port = bench.address
            print(f"bench on {host}:{port} ({arm.describe()['task']}, {args.image_size} px): "
                  f"python -m runtime run --bundle BUNDLE --sim TASK --port {where} --bench {host}:{port}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        emulator.stop()
        if bench is not None:
            bench.stop()
        if hasattr(arm, "close"):
            arm.close()
    print(f"served: {core.counters}", flush=True)
    if emulator.errors:
        print(f"the arm model failed on {emulator.errors} frames (left unanswered); the last: {emulator.last_error}",
              file=sys.stderr)
    return 0


cli = CommandLine(
    "python -m firmware_bridge",
    "Serial link to the arm controller: list ports, emulate the controller (protocol: firmware_bridge/PROTOCOL.md).",
    __doc__,
)
cli.command("ports", "list the serial ports this machine has", "python -m firmware_bridge ports", cmd_ports,
            description="List serial ports (USB adapters, on-board UARTs) with their descriptions.")

_emu = cli.command("emulate", "act as the arm controller on a pseudo-terminal or a serial port",
                   "python -m firmware_bridge emulate --pty --arm metaworld --task drawer-open", cmd_emulate,
                   description="Run the controller's protocol logic (handshake, acks, limits, watchdog, e-stop) on the "
                               "other end of a pty pair or a serial port, driving a kinematic arm or the Meta-World "
                               "arm. With the Meta-World arm it also serves the test bench on 127.0.0.1 (camera "
                               "frames, resets, success) for `python -m runtime run --sim TASK --port ... --bench ...`.")
_where = _emu.add_mutually_exclusive_group()
_where.add_argument("--pty", action="store_true", help="open a pseudo-terminal pair and print the host-side path")
_where.add_argument("--port", help="serve this serial device or pyserial URL (/dev/ttyUSB1, socket://host:port)")
_emu.add_argument("--baud", type=int, default=1_000_000, help="baud rate of --port (default: %(default)s)")
_emu.add_argument("--pace", action="store_true", help="with --pty: take the wire time of a UART at --baud per frame")
_emu.add_argument("--arm", choices=("kinematic", "metaworld"), default="kinematic",
                  help="the arm model: a kinematic point hand, or Meta-World's arm (needs the train extra)")
_emu.add_argument("--task", help="with --arm metaworld: the task to simulate first, e.g. drawer-open")
_emu.add_argument("--image-size", type=int, default=96, help="with --arm metaworld: camera frame size (default: 96)")
_emu.add_argument("--camera", help="with --arm metaworld: Meta-World camera (default: corner4)")
_emu.add_argument("--bench-port", type=int, default=0,
                  help="with --arm metaworld: TCP port of the bench on 127.0.0.1 (default: any free port, printed)")
_emu.add_argument("--watchdog-ms", type=int, default=200, help="hold position after this silence (default: %(default)s)")

if __name__ == "__main__":
    sys.exit(cli.run())
