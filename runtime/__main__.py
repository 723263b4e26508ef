"""`python -m runtime`: on-robot commands (numpy, onnxruntime, OpenCV; never torch).

Examples:

    python -m runtime tokenizer runs/action_tokenizer.json
    python -m runtime tokenizer runs/action_tokenizer.json --encode 0.1,-0.5,0.0,1.0,0.0
"""

from __future__ import annotations

import sys

import numpy as np

from runtime.cli import CommandLine
from runtime.errors import UserError


def cmd_tokenizer(args) -> int:
    from runtime.action_tokenizer import ActionTokenizer

    tok = ActionTokenizer.load(args.path)
    print(f"{args.path}: {tok.dim} dimensions x {tok.n_bins} bins; {tok.table.describe()}")
    width = tok.bin_width()
    for k, name in enumerate(tok.names):
        unit = f" {tok.units[k]}" if tok.units else ""
        print(f"  {name:10s} [{tok.low[k]:+.4f}, {tok.high[k]:+.4f}]{unit}  bin width {width[k]:.5f}")
    if args.encode:
        try:
            action = np.array([float(v) for v in args.encode.split(",")], dtype=np.float64)
        except ValueError:
            raise UserError(f"--encode takes comma-separated numbers, got '{args.encode}'") from None
        ids = tok.encode(action)
        print(f"ids {ids.tolist()} -> decoded {np.round(tok.decode(ids), 4).tolist()}")
    return 0


cli = CommandLine(
    "python -m runtime",
    "On-robot runtime (the engine, control loop and policy server arrive with the runtime issue).",
    __doc__,
)
_tok = cli.command("tokenizer", "check an action tokenizer file and show its ranges and ids",
                   "python -m runtime tokenizer runs/action_tokenizer.json", cmd_tokenizer,
                   description="Load and validate an action tokenizer JSON; optionally encode one action.")
_tok.add_argument("path", help="action tokenizer JSON (written by `python -m distill tokenizer`)")
_tok.add_argument("--encode", help="comma-separated action to encode and decode back, e.g. 0.1,-0.5,0,1,0")

if __name__ == "__main__":
    sys.exit(cli.run())
