"""The shape every `python -m <package>` shares: subcommands, each with help and an example, and
user errors printed as one line.

    cli = CommandLine("python -m runtime", "On-robot runtime.", __doc__)
    p = cli.command("tokenizer", "check an action tokenizer file", "python -m runtime tokenizer tok.json", cmd)
    p.add_argument("path")
    sys.exit(cli.run())
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

from runtime.errors import run_cli


class CommandLine:
    """An argparse front end whose subcommands each carry a handler and an example."""

    def __init__(self, prog: str, description: str, module_doc: str | None = None) -> None:
        examples = (module_doc or "").split("Examples:", 1)
        self.parser = argparse.ArgumentParser(
            prog=prog,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="examples:" + examples[1] if len(examples) == 2 else None,
        )
        self._commands = self.parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        self, name: str, help: str, example: str, handler: Callable[[argparse.Namespace], int | None],
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        """Add a subcommand; its --help shows `description` (default: `help`) and `example`."""
        text = description or help[0].upper() + help[1:] + "."
        parser = self._commands.add_parser(name, help=help, description=f"{text} Example: {example}")
        parser.set_defaults(handler=handler)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = self.parser.parse_args(argv)
        if args.command is None:
            self.parser.print_help()
            return 0
        return int(args.handler(args) or 0)

    def run(self, argv: Sequence[str] | None = None) -> int:
        """Parse and dispatch; user errors become one line on stderr and exit status 2."""
        return run_cli(self.main, argv)
