"""Errors that a user can fix, and the command-line wrapper that prints them as one line.

A `UserError` is bad input (a wrong path, a corrupt file, an unknown name): the command prints
`error: <what is wrong>; <how to fix it>` and exits with status 2, with no traceback. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input that the user can fix; the message names the problem and the fix."""


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's `main(argv)`, turning user errors into one line on stderr and exit status 2."""
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
