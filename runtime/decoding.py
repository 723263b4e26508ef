"""Token selection and the runtime's three decode modes, numpy only and model-agnostic.

A model is reached through one callable, `step(token_id) -> logits`, that feeds one token at the next
position (advancing its KV cache) and returns the next position's logits over the full vocabulary. The
modes only decide which ids each position may take:

- action: exactly `n` tokens, each restricted to the action ids (RT-2's vocabulary-masked decoding);
- text: free text over the non-action ids, until <eos> or a length limit (answers to questions);
- plan-then-act: free text after "Plan:" until the "Action:" marker (or a plan length limit, after which
  the marker is forced), then the `n` action tokens as in action mode (RT-2's chain of thought).

Greedy by default; `temperature > 0` samples with an explicit `numpy.random.Generator`, so a run is
reproducible from its seed. Whatever the logits hold (NaN, infinities, ties, the largest value on a
text id), an action position yields an action id or raises NonFiniteLogits: no action from a bad step.

    ids = decode_action(step, first_logits, n=5, action_ids=table)        # (5,) vocabulary ids
    plan, ids = decode_plan_then_act(step, first_logits, 5, table, marker_ids, eos_id=2)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Step = Callable[[int], np.ndarray]  # feed one token id, get the next position's (vocab,) logits


class NonFiniteLogits(RuntimeError):
    """The model produced NaN or infinite logits where a token had to be chosen: nothing may follow."""


def choose(logits: np.ndarray, allowed: np.ndarray | None = None, temperature: float = 0.0,
           rng: np.random.Generator | None = None) -> int:
    """The chosen vocabulary id among `allowed` (all ids when None).

    Greedy ties go to the first allowed id in `allowed`'s order. Non-finite logits on any allowed id
    raise NonFiniteLogits (a +inf could be a real preference or an overflow; the step fails safe)."""
    logits = np.asarray(logits)
    if logits.ndim != 1:
        raise ValueError(f"logits must be 1-D (vocab,), got shape {logits.shape}")
    ids = np.arange(logits.shape[0]) if allowed is None else np.asarray(allowed, dtype=np.int64)
    if ids.size == 0:
        raise ValueError("no token is allowed here")
    if ids.min() < 0 or ids.max() >= logits.shape[0]:
        raise ValueError(f"allowed ids reach {int(ids.max())} but the logits cover {logits.shape[0]} ids")
    values = logits[ids].astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise NonFiniteLogits(f"{int(np.sum(~np.isfinite(values)))} non-finite logits among the allowed ids")
    if temperature <= 0.0:
        return int(ids[int(np.argmax(values))])
    if rng is None:
        raise ValueError("sampling (temperature > 0) needs an explicit numpy Generator: rng=np.random.default_rng(seed)")
    scaled = (values - values.max()) / temperature
    probs = np.exp(scaled)
    probs /= probs.sum()
    return int(ids[int(rng.choice(len(ids), p=probs))])


def decode_action(step: Step, first_logits: np.ndarray, n: int, action_ids: np.ndarray,
                  temperature: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """(n,) action ids: the first chosen from `first_logits`, each next one after feeding the last."""
    out, logits = [], first_logits
    for k in range(n):
        out.append(choose(logits, action_ids, temperature, rng))
        if k + 1 < n:
            logits = step(out[-1])
    return np.asarray(out, dtype=np.int64)


def text_ids(vocab_size: int, action_ids: np.ndarray, banned: tuple[int, ...] = ()) -> np.ndarray:
    """Every id that is not an action id (nor in `banned`, e.g. <pad> and <bos>)."""
    keep = np.ones(vocab_size, dtype=bool)
    keep[np.asarray(action_ids, dtype=np.int64)] = False
    keep[list(banned)] = False
    return np.flatnonzero(keep)


def decode_text(step: Step, first_logits: np.ndarray, allowed: np.ndarray, eos_id: int, max_tokens: int,
                temperature: float = 0.0, rng: np.random.Generator | None = None) -> list[int]:
    """Free text over `allowed` ids until <eos> (not returned) or `max_tokens`."""
    out, logits = [], first_logits
    for _ in range(max_tokens):
        token = choose(logits, allowed, temperature, rng)
        if token == eos_id:
            break
        out.append(token)
        logits = step(token)
    return out


def decode_plan_then_act(step: Step, first_logits: np.ndarray, n: int, action_ids: np.ndarray,
                         marker_ids: list[int], allowed_text: np.ndarray, max_plan: int = 32,
                         temperature: float = 0.0, rng: np.random.Generator | None = None
                         ) -> tuple[list[int], np.ndarray]:
    """(plan ids, (n,) action ids). The plan is free text over `allowed_text`; it ends when the model
    writes the whole `marker_ids` ("Action:") or after `max_plan` tokens, when the rest of the marker is
    forced. The action follows, masked to `action_ids`."""
    if not marker_ids:
        raise ValueError("the action marker must be at least one token")
    plan, logits = [], first_logits
    while len(plan) < max_plan:
        token = choose(logits, allowed_text, temperature, rng)
        plan.append(token)
        logits = step(token)
        if plan[-len(marker_ids):] == list(marker_ids):
            return plan[: -len(marker_ids)], decode_action(step, logits, n, action_ids, temperature, rng)
    # Out of plan budget: force the marker, continuing any prefix of it the plan already ends with.
    done = max((k for k in range(len(marker_ids), 0, -1) if plan[-k:] == list(marker_ids[:k])), default=0)
    for token in marker_ids[done:]:
        logits = step(token)
    return plan[: len(plan) - done], decode_action(step, logits, n, action_ids, temperature, rng)
