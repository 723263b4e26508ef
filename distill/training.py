"""The optimizer loop shared by teacher training and distillation: deterministic batches, warm-up and
cosine schedule, gradient clipping, a log of mean losses, periodic held-out checks and checkpoints.

The batch at step k depends only on (seed, k), so a run stopped and resumed from its checkpoint sees
the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from runtime.errors import UserError


@dataclass
class LoopSettings:
    steps: int
    seed: int
    lr: float
    warmup_steps: int
    log_every: int = 50
    eval_every: int = 2000
    checkpoint_every: int = 250
    stop_at: int | None = None  # stop (with a checkpoint) here; the schedule still runs to `steps`
    start: int = 0  # the schedule's first step (a later phase of a run has its own warm-up and decay)
    precision: str = "fp32"  # "bf16": forward and loss under bfloat16 autocast; weights and optimizer stay fp32


PRECISIONS = ("auto", "bf16", "fp32")


def bf16_is_native(device: torch.device) -> bool:
    """Whether this device multiplies bfloat16 in hardware (AVX512-BF16/AMX CPUs, Ampere-or-later GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the hardware has it (about 2x faster training on this CPU), else 'fp32'.

    Mixed precision: matrix products run in bfloat16 under autocast, the weights, gradients and optimizer
    state stay float32, and losses are computed in float32; saved models are float32 either way.
    """
    if name not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{name}'")
    if name == "auto":
        return "bf16" if bf16_is_native(device) else "fp32"
    if name == "bf16" and not bf16_is_native(device):
        raise UserError(f"--precision bf16: this {device.type} has no native bfloat16 (it would be slower than "
                        "float32): use --precision fp32 or auto")
    return name


def lr_at(step: int, s: LoopSettings) -> float:
    """Linear warm-up from `start`, then cosine decay to 10% of the peak at the last step."""
    step = step - s.start
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.start - s.warmup_steps)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def run_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,  # {"step", "train_seconds", "log", ...}; updated in place and checkpointed
    settings: LoopSettings,
    sample: Callable[[np.random.Generator], dict],
    loss_fn: Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]],
    save: Callable[[dict], None],
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> dict:
    """Train from state["step"] to settings.steps (or stop_at), checkpointing through `save(state)`."""
    from tqdm import tqdm

    model.train()
    device_type = next(model.parameters()).device.type
    start_step = state["step"]
    last_step = min(settings.steps, settings.stop_at or settings.steps)
    t0 = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=start_step, desc=desc, unit="step", disable=not progress)
    running: dict[str, float] = {}  # exponential averages for the progress bar
    interval: dict[str, list[float]] = {}  # raw values since the last log entry
    for step in range(start_step, last_step):
        batch = sample(np.random.default_rng([settings.seed, step]))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=settings.precision == "bf16"):
            loss, parts = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            running[key] = 0.98 * running.get(key, value) + 0.02 * value
            interval.setdefault(key, []).append(value)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            state["log"].append({"step": done, **{k: round(float(np.mean(v)), 4) for k, v in interval.items()}})
            interval.clear()
        if evaluate is not None and done % settings.eval_every == 0 and done < settings.steps:
            metrics = evaluate(model)
            model.train()
            state["log"].append({"step": done, "heldout": metrics})
            bar.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
        if done % settings.checkpoint_every == 0 or done == last_step:
            state.update(step=done, train_seconds=state["train_seconds"] + time.perf_counter() - t0)
            t0 = time.perf_counter()
            save(state)
    bar.close()
    return state
