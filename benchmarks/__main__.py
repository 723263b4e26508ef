"""`python -m benchmarks`: latency and success tables.

Examples:

    python -m benchmarks machine
"""

from __future__ import annotations

import json
import sys

from runtime.cli import CommandLine


def cmd_machine(args) -> int:
    from benchmarks.machine import describe

    print(json.dumps(describe(), indent=2))
    return 0


cli = CommandLine("python -m benchmarks", "Latency and success benchmarks (the tables arrive with the benchmarks issue).",
                  __doc__)
cli.command("machine", "describe this machine (CPU, cores, library versions) as JSON", "python -m benchmarks machine",
            cmd_machine, description="Print the machine description every benchmark report starts with.")

if __name__ == "__main__":
    sys.exit(cli.run())
