"""Resumable training checkpoints without pickle: weights and optimizer tensors in safetensors,
everything else in JSON, written to a temporary folder and renamed into place.

    <run>/checkpoint/
      config.json, model.safetensors     (save_pretrained)
      optimizer.safetensors              AdamW moments and step counts
      trainer_state.json                 step, optimizer hyper-parameters, elapsed time
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from runtime.errors import UserError

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"{index}.{key}"] = value.detach().clone().contiguous() if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(folder: Path, model, optimizer: torch.optim.Optimizer, trainer_state: dict,
                    extra_files: tuple[Path, ...] = ()) -> None:
    """Write the checkpoint next to `folder` and swap it in, so a crash keeps the previous one.

    `extra_files` (tokenizers, say) are copied in, so a checkpoint can be evaluated as a model folder.
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tensors, groups = optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / OPTIMIZER_FILE))
    (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "param_groups": groups}, indent=2))
    for path in extra_files:
        shutil.copyfile(path, tmp / Path(path).name)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(folder: Path, model_cls, optimizer_factory) -> tuple[object, torch.optim.Optimizer, dict]:
    """(model, optimizer, trainer_state) from a checkpoint folder; UserError if it is incomplete."""
    folder = Path(folder)
    missing = [f for f in ("config.json", "model.safetensors", OPTIMIZER_FILE, STATE_FILE) if not (folder / f).is_file()]
    if missing:
        raise UserError(f"checkpoint {folder} lacks {', '.join(missing)}: it is incomplete; delete it to start over")
    model = load_model(folder, model_cls)
    state = json.loads((folder / STATE_FILE).read_text())
    optimizer = optimizer_factory(model)
    load_optimizer(optimizer, load_file(str(folder / OPTIMIZER_FILE)), state.pop("param_groups"))
    return model, optimizer, state


def load_model(folder: Path, model_cls):
    """`model_cls.from_pretrained(folder)` with the failures a user can fix turned into UserError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist: pass the folder written by `python -m distill train-teacher`")
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise UserError(f"model folder {folder} lacks {', '.join(missing)}: copy the whole folder again")
    try:
        return model_cls.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load the model in {folder} ({first}): the files are corrupt; copy them again") from None
