"""Build the action tokenizer for a dataset: its 1st/99th-percentile statistics plus an id table.

    python -m distill tokenizer --dataset data/demos --scheme last --vocab-size 1024 --out runs/action_tokenizer.json
    python -m distill tokenizer --dataset data/demos --ids my_ids.json --out runs/action_tokenizer.json

`--ids` takes a JSON file holding either an id table written by vla-edge ({"ids": [...], "vocab_size": N,
"scheme": ...}) or a plain list of 256 ids together with --vocab-size. The RT-2 scheme (the 256 least-used
ids of a text tokenizer over the instruction corpus) is chosen by the teacher's training, which owns
the text tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.dataset import ACTION_UNITS, Dataset
from runtime.action_tokenizer import ActionIdTable, ActionTokenizer, TokenizerError
from runtime.errors import UserError


def load_id_table(path: str | Path, vocab_size: int | None) -> ActionIdTable:
    """Read an id table from JSON: a vla-edge table object, or a plain list of ids plus `vocab_size`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"id table {path} does not exist: pass the JSON file that lists the 256 action ids") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"id table {path} is not valid JSON ({err}): it is truncated or corrupt") from None
    try:
        if isinstance(data, list):
            if vocab_size is None:
                raise UserError(f"id table {path} is a plain list: also pass --vocab-size (the model's vocabulary size)")
            return ActionIdTable(ids=tuple(data), vocab_size=vocab_size, scheme="explicit")
        if isinstance(data, dict) and "table" in data:  # a whole tokenizer file: take its table
            data = data["table"]
        return ActionIdTable.from_dict(data)
    except TokenizerError as err:
        raise TokenizerError(f"id table {path}: {err}") from None


def build_tokenizer(dataset: Dataset, table: ActionIdTable) -> ActionTokenizer:
    stats = dataset.action_stats
    units = dataset.manifest["action"].get("units", list(ACTION_UNITS))
    return ActionTokenizer.from_statistics(stats.names, low=stats.p01, high=stats.p99, table=table, units=units)
