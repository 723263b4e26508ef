"""`python -m benchmarks`: latency and success tables.

Examples:

    python -m benchmarks machine
    python -m benchmarks serial_rtt --actions 2000 --bauds 115200,1000000 --out runs/serial_rtt.json
    python -m benchmarks decode-speed --model models/student --bundle bundles/student-fp32 --frames 200
    python -m benchmarks latency --student models/student --teacher models/teacher --frames 200
    python -m benchmarks quality --student models/student --teacher models/teacher --dataset data/demos_3v --seeds 20
    python -m benchmarks scaling --teacher models/teacher
    python -m benchmarks all --student models/student --teacher models/teacher --dataset data/demos_3v --readme README.md
    python -m benchmarks report --out benchmarks/results
"""

from __future__ import annotations

import json
import sys

from runtime.cli import CommandLine


def cmd_machine(args) -> int:
    from benchmarks.machine import describe

    print(json.dumps(describe(), indent=2))
    return 0


def cmd_serial_rtt(args) -> int:
    import shlex

    from benchmarks.machine import describe
    from benchmarks.serial_rtt import format_table, run
    from runtime.atomic_io import write_json_atomic
    from runtime.errors import UserError

    try:
        bauds = [int(b) for b in args.bauds.split(",")]
    except ValueError:
        raise UserError(f"--bauds takes comma-separated integers, e.g. 115200,1000000; got '{args.bauds}'") from None
    if args.actions < 1 or any(b < 300 for b in bauds):
        raise UserError("--actions must be at least 1 and every baud rate at least 300")
    rows = run(bauds, args.actions, tuple(args.lines.split(",")))
    print(format_table(rows))
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        command = "python -m benchmarks serial_rtt " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        write_json_atomic(args.out, {"benchmark": "serial_rtt", "command": command, "machine": describe(),
                                     "results": rows})
        print(f"report: {args.out}")
    return 0


cli = CommandLine("python -m benchmarks", "Latency and success benchmarks: the latency, quality and scaling tables "
                  "and their report, decode speed against generate() and onnxruntime-genai, serial round trip, "
                  "machine description.", __doc__)
cli.command("machine", "describe this machine (CPU, cores, library versions) as JSON", "python -m benchmarks machine",
            cmd_machine, description="Print the machine description every benchmark report starts with.")

_rtt = cli.command("serial_rtt", "action round trip (send to ACK) over a pty to the controller emulator",
                   "python -m benchmarks serial_rtt --actions 2000 --bauds 115200,1000000 --out runs/serial_rtt.json",
                   cmd_serial_rtt,
                   description="Send N actions through the runtime's SerialLink to `python -m firmware_bridge emulate "
                               "--pty` in another process, per baud rate, with the UART's wire time emulated (uart) and "
                               "without it (pty); print p50/p95/p99/max in ms and write a JSON report.")
_rtt.add_argument("--actions", type=int, default=2000, help="timed actions per baud rate and line (default: %(default)s)")
_rtt.add_argument("--bauds", default="115200,1000000", help="baud rates, comma-separated (default: %(default)s)")
_rtt.add_argument("--lines", default="uart,pty", choices=("uart,pty", "uart", "pty"), metavar="LINES",
                  help="uart (the wire time emulated), pty (bytes at memory speed) or uart,pty (default: %(default)s)")
_rtt.add_argument("--out", default="runs/serial_rtt.json", help="JSON report (default: %(default)s; '' for none)")


def _add_decode_speed() -> None:
    """`decode-speed` (benchmarks/decode_speed.py): the runtime against generate() and onnxruntime-genai."""
    from benchmarks.decode_speed import EXAMPLE, add_arguments, cmd_decode_speed

    add_arguments(cli.command(
        "decode-speed", "time one action end to end on one CPU thread: generate(), torch loop, runtime, genai",
        EXAMPLE, cmd_decode_speed,
        description="Time frame-to-action decoding of the same model through transformers' generate(), the PyTorch "
                    "loop, the vla-edge runtime (every bundle passed) and onnxruntime-genai, interleaved per frame, "
                    "one CPU thread each, checking every path's tokens against the PyTorch reference."))


_add_decode_speed()


def _add_suite() -> None:
    """latency, quality, scaling, all, report (benchmarks/suite.py): the tables users read, report.md."""
    from benchmarks.suite import register

    register(cli)


_add_suite()

if __name__ == "__main__":
    sys.exit(cli.run())
