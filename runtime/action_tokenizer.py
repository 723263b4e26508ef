"""Continuous robot actions <-> language-model vocabulary ids (RT-2 / OpenVLA discretisation).

Each action dimension is normalised with the dataset's 1st/99th percentiles to [-1, 1],

    x_norm = 2 * (x - low) / (high - low) - 1        (low = p01, high = p99)

clipped to [-1, 1] and cut into `n_bins` (256) uniform bins over [-1, 1]. Bin k is written as one
vocabulary id of the language model, `table.ids[k]`. Decoding goes back through the bin centre,

    x_norm = -1 + (k + 0.5) * 2 / n_bins

and then to physical units. Which ids stand for the bins is recorded explicitly in an
`ActionIdTable` (RT-2: the least-used ids of the text tokenizer; OpenVLA: the last ids of the
vocabulary), and the whole tokenizer travels with every model as one JSON file. Two tokenizers that
disagree in anything are an error (`check_matches`), never a silent fallback.

This module runs on the robot: numpy only, never torch.

Example:

    table = ActionIdTable.last(vocab_size=257_152)
    tok = ActionTokenizer.from_statistics(("dx", "dy", "dz", "gripper"), low=p01, high=p99, table=table)
    ids = tok.encode(actions)       # (T, 4) float -> (T, 4) int64 vocabulary ids
    back = tok.decode(ids)          # (T, 4) int64 -> (T, 4) float32, bin centres, physical units
    tok.save("runs/x/action_tokenizer.json")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic_io import atomic_open
from runtime.errors import UserError

FORMAT = "vla-edge-action-tokenizer"
VERSION = 1
DEFAULT_N_BINS = 256
SCHEMES = ("least_used", "last", "explicit")


class TokenizerError(UserError, ValueError):
    """An action tokenizer, its file, or its input is wrong; the message says what and how to fix it."""


# --------------------------------------------------------------------------------------------------
# small validation helpers


def _is_int(value: Any) -> bool:
    """True for Python and numpy integers, but not for bools (True is not a vocabulary id)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    """True for Python/numpy ints and floats, but not for bools."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_n_bins(n_bins: Any) -> int:
    if not _is_int(n_bins) or int(n_bins) < 2:
        raise TokenizerError(
            f"n_bins must be an integer >= 2, got {n_bins!r}; use the default 256 unless the model was "
            "trained with another bin count"
        )
    return int(n_bins)


def _describe_ids(ids: Sequence[int]) -> str:
    """Short human description of an id set, e.g. 'ids 31744..31999' or '256 ids between 5 and 900'."""
    lo, hi = min(ids), max(ids)
    if hi - lo + 1 == len(ids):
        return f"ids {lo}..{hi}"
    return f"{len(ids)} ids between {lo} and {hi}"


def _require_keys(d: Any, keys: Sequence[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise TokenizerError(
            f"{what} must be a JSON object, got {type(d).__name__}; regenerate the file with "
            "ActionTokenizer.save()"
        )
    missing = [k for k in keys if k not in d]
    if missing:
        raise TokenizerError(
            f"{what} is missing the key(s) {missing}; regenerate the file with ActionTokenizer.save()"
        )


# --------------------------------------------------------------------------------------------------
# the id table


@dataclass(frozen=True)
class ActionIdTable:
    """Which vocabulary id stands for which action bin: `ids[k]` is the id of bin k.

    Build one with `ActionIdTable.last(...)` (OpenVLA), `ActionIdTable.least_used(...)` (RT-2), or
    pass the ids directly with scheme="explicit". The constructor validates everything.
    """

    ids: tuple[int, ...]  # (n_bins,) vocabulary id of each bin, all distinct, 0 <= id < vocab_size
    vocab_size: int  # size of the language model's vocabulary
    scheme: str  # "least_used" | "last" | "explicit": how the ids were chosen (informational)
    n_bins: int = DEFAULT_N_BINS
    # id -> bin lookup, (vocab_size,) int64, -1 where the id is not an action token. Derived, read-only.
    _bin_of_id: np.ndarray = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]
    _ids_array: np.ndarray = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n_bins = _check_n_bins(self.n_bins)
        if not _is_int(self.vocab_size) or int(self.vocab_size) < 1:
            raise TokenizerError(
                f"vocab_size must be a positive integer, got {self.vocab_size!r}; pass the language "
                "model's vocabulary size (e.g. len(text_tokenizer))"
            )
        vocab_size = int(self.vocab_size)
        if self.scheme not in SCHEMES:
            raise TokenizerError(
                f"unknown id-table scheme {self.scheme!r}; use one of {', '.join(SCHEMES)}"
            )
        if isinstance(self.ids, (str, bytes)) or not isinstance(self.ids, Iterable):
            raise TokenizerError(
                f"ids must be a sequence of {n_bins} integers, got {type(self.ids).__name__}; pass e.g. "
                "a list or tuple of vocabulary ids"
            )
        raw = list(self.ids.tolist() if isinstance(self.ids, np.ndarray) else self.ids)
        bad = [v for v in raw if not _is_int(v)]
        if bad:
            raise TokenizerError(
                f"ids must all be integers, found {bad[0]!r} ({type(bad[0]).__name__}); pass integer "
                "vocabulary ids"
            )
        ids = tuple(int(v) for v in raw)
        if len(ids) != n_bins:
            raise TokenizerError(
                f"the id table has {len(ids)} ids but n_bins is {n_bins}; give exactly one vocabulary id "
                "per bin (or set n_bins to the number of ids)"
            )
        if len(set(ids)) != len(ids):
            values, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
            dup = int(values[counts > 1][0])
            raise TokenizerError(
                f"the id table has duplicate ids (e.g. {dup} appears more than once); every bin needs "
                "its own vocabulary id"
            )
        out_of_range = [v for v in ids if not 0 <= v < vocab_size]
        if out_of_range:
            raise TokenizerError(
                f"the id table has id {out_of_range[0]} outside the vocabulary [0, {vocab_size}); check "
                "that vocab_size matches the language model the table was built for"
            )

        ids_array = np.asarray(ids, dtype=np.int64)  # (n_bins,)
        lookup = np.full(vocab_size, -1, dtype=np.int64)  # (vocab_size,)
        lookup[ids_array] = np.arange(n_bins, dtype=np.int64)
        ids_array.setflags(write=False)
        lookup.setflags(write=False)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "vocab_size", vocab_size)
        object.__setattr__(self, "n_bins", n_bins)
        object.__setattr__(self, "_ids_array", ids_array)
        object.__setattr__(self, "_bin_of_id", lookup)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def last(cls, vocab_size: int, n_bins: int = DEFAULT_N_BINS) -> ActionIdTable:
        """OpenVLA-style table: the last `n_bins` ids of the vocabulary, bin k -> id vocab_size - n_bins + k."""
        n_bins = _check_n_bins(n_bins)
        if not _is_int(vocab_size) or int(vocab_size) < n_bins:
            raise TokenizerError(
                f"vocab_size {vocab_size!r} is too small for {n_bins} action bins; pass the language "
                "model's full vocabulary size"
            )
        vocab_size = int(vocab_size)
        return cls(tuple(range(vocab_size - n_bins, vocab_size)), vocab_size, "last", n_bins)

    @classmethod
    def least_used(
        cls,
        corpus_token_ids: Iterable[Sequence[int]],
        vocab_size: int,
        n_bins: int = DEFAULT_N_BINS,
        exclude: Iterable[int] = (),
    ) -> ActionIdTable:
        """RT-2-style table: the `n_bins` ids used least often in an encoded text corpus.

        `corpus_token_ids` is an iterable of id sequences (one per encoded document). Ids in `exclude`
        (pad, bos, eos, image tokens, ...) are never chosen. Ties in the count are broken towards
        higher ids. The chosen ids are stored in ascending order, so bin order follows id order.
        """
        if not _is_int(vocab_size) or int(vocab_size) < 1:
            raise TokenizerError(
                f"vocab_size must be a positive integer, got {vocab_size!r}; pass the language model's "
                "vocabulary size"
            )
        vocab_size = int(vocab_size)
        if isinstance(corpus_token_ids, (str, bytes)) or not isinstance(corpus_token_ids, Iterable):
            raise TokenizerError(
                "corpus_token_ids must be an iterable of token-id sequences (one per document), got "
                f"{type(corpus_token_ids).__name__}; encode the corpus with the text tokenizer first"
            )
        counts = np.zeros(vocab_size, dtype=np.int64)  # (vocab_size,)
        for index, seq in enumerate(corpus_token_ids):
            arr = np.asarray(seq)
            if arr.size == 0:
                continue
            if arr.dtype.kind not in "iu" or arr.ndim != 1:
                raise TokenizerError(
                    f"corpus document {index} must be a 1-D sequence of integer ids, got dtype "
                    f"{arr.dtype} shape {arr.shape}; pass the encoded ids, not text"
                )
            bad = (arr < 0) | (arr >= vocab_size)
            if bad.any():
                raise TokenizerError(
                    f"corpus document {index} contains id {arr[bad][0]} outside the vocabulary "
                    f"[0, {vocab_size}); check that vocab_size matches the tokenizer that encoded the corpus"
                )
            counts += np.bincount(arr.astype(np.int64), minlength=vocab_size)
        return cls.least_used_from_counts(counts, n_bins=n_bins, exclude=exclude)

    @classmethod
    def least_used_from_counts(
        cls, counts: Sequence[int] | np.ndarray, n_bins: int = DEFAULT_N_BINS, exclude: Iterable[int] = ()
    ) -> ActionIdTable:
        """Like `least_used`, from precomputed per-id counts: `counts[i]` = occurrences of id i.

        The vocabulary size is len(counts).
        """
        n_bins = _check_n_bins(n_bins)
        counts_arr = np.asarray(counts)  # (vocab_size,)
        if counts_arr.ndim != 1 or counts_arr.dtype.kind not in "iu" or counts_arr.size == 0:
            raise TokenizerError(
                f"counts must be a non-empty 1-D integer array of length vocab_size, got dtype "
                f"{counts_arr.dtype} shape {counts_arr.shape}; count id occurrences with np.bincount"
            )
        if (counts_arr < 0).any():
            raise TokenizerError("counts must be non-negative; they are occurrence counts of each id")
        vocab_size = int(counts_arr.size)
        excluded = np.zeros(vocab_size, dtype=bool)  # (vocab_size,)
        for e in exclude:
            if not _is_int(e) or not 0 <= int(e) < vocab_size:
                raise TokenizerError(
                    f"excluded id {e!r} is not a vocabulary id in [0, {vocab_size}); check the special-token "
                    "ids and vocab_size"
                )
            excluded[int(e)] = True
        candidates = np.flatnonzero(~excluded)  # (n_candidates,) ascending ids
        if candidates.size < n_bins:
            raise TokenizerError(
                f"only {candidates.size} vocabulary ids are available after excluding {int(excluded.sum())} "
                f"special ids, but {n_bins} action bins need one each; use a larger vocabulary, exclude "
                "fewer ids or use fewer bins"
            )
        # Primary key: count ascending; secondary: id descending (np.lexsort sorts by the last key first).
        order = np.lexsort((-candidates, counts_arr[candidates]))
        chosen = np.sort(candidates[order[:n_bins]])  # (n_bins,) ascending
        return cls(tuple(int(v) for v in chosen), vocab_size, "least_used", n_bins)

    # ---- use ------------------------------------------------------------------------------------

    @property
    def ids_array(self) -> np.ndarray:
        """(n_bins,) int64, read-only: the vocabulary id of each bin."""
        return self._ids_array

    @property
    def bin_of_id(self) -> np.ndarray:
        """(vocab_size,) int64, read-only: the bin of each vocabulary id, -1 for non-action ids."""
        return self._bin_of_id

    def __repr__(self) -> str:
        return f"ActionIdTable({self.describe()}, n_bins={self.n_bins})"

    def describe(self) -> str:
        """One-line summary, e.g. "scheme 'last', ids 31744..31999 of vocab 32000"."""
        return f"scheme {self.scheme!r}, {_describe_ids(self.ids)} of vocab {self.vocab_size}"

    # ---- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: scheme, vocab_size, n_bins, ids."""
        return {"scheme": self.scheme, "vocab_size": self.vocab_size, "n_bins": self.n_bins, "ids": list(self.ids)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionIdTable:
        """Inverse of `to_dict`; validates keys, types and the table itself."""
        _require_keys(d, ("scheme", "vocab_size", "n_bins", "ids"), "the action id table")
        if not isinstance(d["ids"], list):
            raise TokenizerError(
                f"the action id table's 'ids' must be a list of integers, got {type(d['ids']).__name__}; "
                "regenerate the file with ActionTokenizer.save()"
            )
        if not isinstance(d["scheme"], str):
            raise TokenizerError(
                f"the action id table's 'scheme' must be a string, got {type(d['scheme']).__name__}; "
                f"use one of {', '.join(SCHEMES)}"
            )
        return cls(ids=tuple(d["ids"]), vocab_size=d["vocab_size"], scheme=d["scheme"], n_bins=d["n_bins"])


# --------------------------------------------------------------------------------------------------
# the tokenizer


def _float_tuple(values: Any, what: str) -> tuple[float, ...]:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        raise TokenizerError(
            f"{what} must be a 1-D sequence of numbers (one per action dimension), got dtype {arr.dtype} "
            f"shape {arr.shape}; pass the per-dimension dataset statistics"
        )
    return tuple(float(v) for v in arr.astype(np.float64))


@dataclass(frozen=True)
class ActionTokenizer:
    """Per-dimension statistics + id table: turns (..., D) physical actions into (..., D) vocabulary ids.

    Equality compares names, units, statistics and the id table (including its scheme label);
    `check_matches` compares everything that changes which id an action gets, and says what differs.
    """

    names: tuple[str, ...]  # (D,) dimension names, e.g. ("dx", "dy", "dz", "gripper", "terminate")
    low: tuple[float, ...]  # (D,) 1st percentile of each dimension, physical units
    high: tuple[float, ...]  # (D,) 99th percentile of each dimension, physical units, > low
    table: ActionIdTable
    units: tuple[str, ...] | None = None  # (D,) e.g. ("m", "m", "m", "1", "1"); informational
    _low: np.ndarray = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]
    _high: np.ndarray = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if isinstance(self.names, str) or not isinstance(self.names, Iterable):
            raise TokenizerError(
                f"names must be a sequence of dimension names, got {self.names!r}; pass e.g. "
                "('dx', 'dy', 'dz', 'gripper')"
            )
        names = tuple(self.names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TokenizerError(
                f"names must be a non-empty sequence of non-empty strings, got {names!r}; pass e.g. "
                "('dx', 'dy', 'dz', 'gripper')"
            )
        if len(set(names)) != len(names):
            raise TokenizerError(
                f"names must be distinct, got {names!r}; give every action dimension its own name"
            )
        low = _float_tuple(self.low, "low")
        high = _float_tuple(self.high, "high")
        if len(low) != len(names) or len(high) != len(names):
            raise TokenizerError(
                f"got {len(names)} names but {len(low)} low and {len(high)} high values; give one 1st/99th "
                "percentile per action dimension"
            )
        for name, lo, hi in zip(names, low, high):
            if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(hi - lo)):
                raise TokenizerError(
                    f"dimension {name!r} has non-finite statistics low={lo}, high={hi}; recompute the dataset "
                    "percentiles (NaN or inf in the demonstrations?)"
                )
            if not hi > lo:
                raise TokenizerError(
                    f"dimension {name!r} has high={hi} <= low={lo}; the range must be non-empty: check the "
                    "dataset statistics, or widen the range (e.g. low=-1, high=1 for a constant dimension)"
                )
        if not isinstance(self.table, ActionIdTable):
            raise TokenizerError(
                f"table must be an ActionIdTable, got {type(self.table).__name__}; build one with "
                "ActionIdTable.last(vocab_size) or ActionIdTable.least_used(...)"
            )
        units = self.units
        if units is not None:
            if isinstance(units, str) or not isinstance(units, Iterable):
                raise TokenizerError(f"units must be a sequence of strings or None, got {units!r}")
            units = tuple(units)
            if len(units) != len(names) or not all(isinstance(u, str) for u in units):
                raise TokenizerError(
                    f"units must be {len(names)} strings, one per dimension, got {units!r}; pass e.g. "
                    "('m', 'm', 'm', '1') or None"
                )
        low_arr = np.asarray(low, dtype=np.float64)  # (D,)
        high_arr = np.asarray(high, dtype=np.float64)  # (D,)
        low_arr.setflags(write=False)
        high_arr.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "_low", low_arr)
        object.__setattr__(self, "_high", high_arr)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_statistics(
        cls,
        names: Sequence[str],
        low: Sequence[float] | np.ndarray,
        high: Sequence[float] | np.ndarray,
        table: ActionIdTable,
        units: Sequence[str] | None = None,
    ) -> ActionTokenizer:
        """Build from per-dimension dataset statistics: low = 1st percentile, high = 99th percentile."""
        return cls(
            names=tuple(names),
            low=_float_tuple(low, "low"),
            high=_float_tuple(high, "high"),
            table=table,
            units=None if units is None else tuple(units),
        )

    # ---- properties -----------------------------------------------------------------------------

    @property
    def n_bins(self) -> int:
        return self.table.n_bins

    @property
    def dim(self) -> int:
        return len(self.names)

    # ---- input checks ---------------------------------------------------------------------------

    def _check_actions(self, actions: Any, what: str = "actions") -> np.ndarray:
        """(..., D) anything numeric -> (..., D) float64, finite; else TokenizerError."""
        arr = np.asarray(actions)
        if arr.dtype.kind not in "biuf":
            raise TokenizerError(
                f"{what} must be numeric, got dtype {arr.dtype}; pass a float array of shape (..., {self.dim})"
            )
        if arr.ndim == 0 or arr.shape[-1] != self.dim:
            got = "a scalar" if arr.ndim == 0 else f"last dimension {arr.shape[-1]} (shape {arr.shape})"
            raise TokenizerError(
                f"{what} must have last dimension {self.dim} ({', '.join(self.names)}), got {got}; pass "
                f"arrays of shape (..., {self.dim}) in this tokenizer's dimension order"
            )
        arr = arr.astype(np.float64, copy=False)
        finite = np.isfinite(arr)
        if not finite.all():
            where = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise TokenizerError(
                f"{what} contain a non-finite value {arr[where]} at index {where} (dimension "
                f"{self.names[where[-1]]!r}); fix the policy/dataset upstream, NaN or inf cannot be binned"
            )
        return arr

    def _check_int(self, values: Any, what: str) -> np.ndarray:
        """(..., D) integer array, or TokenizerError."""
        arr = np.asarray(values)
        if arr.dtype.kind not in "iu":
            raise TokenizerError(
                f"{what} must be integers, got dtype {arr.dtype}; pass an integer array of shape (..., {self.dim})"
            )
        if arr.ndim == 0 or arr.shape[-1] != self.dim:
            got = "a scalar" if arr.ndim == 0 else f"last dimension {arr.shape[-1]} (shape {arr.shape})"
            raise TokenizerError(
                f"{what} must have last dimension {self.dim} ({', '.join(self.names)}), got {got}; pass one "
                "value per action dimension"
            )
        return arr

    # ---- the maps -------------------------------------------------------------------------------

    def _normalize64(self, arr: np.ndarray) -> np.ndarray:
        """(..., D) finite float64 physical -> (..., D) float64 in [-1, 1]."""
        # Clip in physical units first: same result as clipping afterwards, and no overflow for huge inputs.
        clipped = np.clip(arr, self._low, self._high)  # (..., D)
        normed = 2.0 * (clipped - self._low) / (self._high - self._low) - 1.0  # (..., D)
        return np.clip(normed, -1.0, 1.0)

    def normalize(self, actions: Any) -> np.ndarray:
        """(..., D) physical -> (..., D) float32 in [-1, 1]; values outside [low, high] are clipped."""
        return self._normalize64(self._check_actions(actions)).astype(np.float32)

    def denormalize(self, normed: Any) -> np.ndarray:
        """(..., D) normalised -> (..., D) float32 physical: x = (x_norm + 1) / 2 * (high - low) + low."""
        arr = self._check_actions(normed, "normalised actions")
        return ((arr + 1.0) * 0.5 * (self._high - self._low) + self._low).astype(np.float32)

    def to_bins(self, actions: Any) -> np.ndarray:
        """(..., D) physical -> (..., D) int64 bin indices in [0, n_bins - 1]."""
        normed = self._normalize64(self._check_actions(actions))  # (..., D) in [-1, 1]
        bins = np.floor((normed + 1.0) * (0.5 * self.n_bins)).astype(np.int64)  # (..., D)
        return np.clip(bins, 0, self.n_bins - 1)  # x_norm == 1 lands in the last bin

    def from_bins(self, bins: Any) -> np.ndarray:
        """(..., D) int bin indices -> (..., D) float32 physical values at the bin centres."""
        arr = self._check_int(bins, "bins")
        bad = (arr < 0) | (arr >= self.n_bins)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise TokenizerError(
                f"bin {arr[where]} at index {where} is outside [0, {self.n_bins - 1}]; bins come from "
                "to_bins() or decode(), check that the same tokenizer produced them"
            )
        centres = -1.0 + (arr.astype(np.float64) + 0.5) * (2.0 / self.n_bins)  # (..., D) in (-1, 1)
        return ((centres + 1.0) * 0.5 * (self._high - self._low) + self._low).astype(np.float32)

    def encode(self, actions: Any) -> np.ndarray:
        """(..., D) physical actions -> (..., D) int64 vocabulary ids."""
        return self.table.ids_array[self.to_bins(actions)]

    def ids_to_bins(self, ids: Any) -> np.ndarray:
        """(..., D) vocabulary ids -> (..., D) int64 bins; any id not in the table -> TokenizerError."""
        arr = self._check_int(ids, "ids")
        in_vocab = (arr >= 0) & (arr < self.table.vocab_size)  # (..., D)
        bins = np.full(arr.shape, -1, dtype=np.int64)  # (..., D)
        bins[in_vocab] = self.table.bin_of_id[arr[in_vocab]]
        bad = bins < 0
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise TokenizerError(
                f"id {arr[where]} at index {where} (dimension {self.names[where[-1]]!r}) is not an action "
                f"token ({int(bad.sum())} bad id(s) in all; the table has {self.table.describe()}); constrain "
                "decoding to the table's ids, and check that the model and its tokenizer file belong together"
            )
        return bins

    def decode(self, ids: Any) -> np.ndarray:
        """(..., D) vocabulary ids -> (..., D) float32 physical actions (bin centres)."""
        return self.from_bins(self.ids_to_bins(ids))

    def bin_width(self) -> np.ndarray:
        """(D,) float64 physical width of one bin per dimension: (high - low) / n_bins."""
        return (self._high - self._low) / self.n_bins

    # ---- comparison -----------------------------------------------------------------------------

    def differences(self, other: ActionTokenizer) -> list[str]:
        """Human-readable list of what differs between two tokenizers; empty when they are equal."""
        diffs: list[str] = []
        if self.names != other.names:
            diffs.append(f"names {list(self.names)} vs {list(other.names)}")
        if self.units != other.units:
            diffs.append(f"units {self.units} vs {other.units}")
        if self.names == other.names:
            for key in ("low", "high"):
                mine, theirs = getattr(self, key), getattr(other, key)
                changed = [n for n, a, b in zip(self.names, mine, theirs) if a != b]
                if changed:
                    diffs.append(f"{key} statistics differ for {changed}")
        elif (self.low, self.high) != (other.low, other.high):
            diffs.append("low/high statistics")
        t, o = self.table, other.table
        if t.n_bins != o.n_bins:
            diffs.append(f"n_bins {t.n_bins} vs {o.n_bins}")
        if t.vocab_size != o.vocab_size:
            diffs.append(f"vocab_size {t.vocab_size} vs {o.vocab_size}")
        if t.ids != o.ids:
            if t.n_bins == o.n_bins:
                first = next(k for k, (a, b) in enumerate(zip(t.ids, o.ids)) if a != b)
                n_diff = sum(a != b for a, b in zip(t.ids, o.ids))
                diffs.append(
                    f"action ids ({n_diff} bins differ, first bin {first}: id {t.ids[first]} vs {o.ids[first]}; "
                    f"{t.describe()} vs {o.describe()})"
                )
            else:
                diffs.append(f"action ids ({t.describe()} vs {o.describe()})")
        return diffs

    def check_matches(self, other: ActionTokenizer, what: str = "model") -> None:
        """Raise TokenizerError naming every difference if `other` (from `what`) is not identical."""
        if not isinstance(other, ActionTokenizer):
            raise TokenizerError(
                f"the {what} has no ActionTokenizer (got {type(other).__name__}); ship the tokenizer file "
                "with every model"
            )
        diffs = self.differences(other)
        if diffs:
            raise TokenizerError(
                f"action tokenizer mismatch with the {what}: {'; '.join(diffs)}; a model and its "
                "bundle/dataset must share the same tokenizer file: copy the training run's "
                "action_tokenizer.json instead of rebuilding it"
            )

    # ---- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the format/version header."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "names": list(self.names),
            "units": None if self.units is None else list(self.units),
            "low": list(self.low),
            "high": list(self.high),
            "table": self.table.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionTokenizer:
        """Inverse of `to_dict`; checks the format/version header, keys, types and sizes."""
        _require_keys(d, ("format", "version"), "the action tokenizer")
        if d["format"] != FORMAT:
            raise TokenizerError(
                f"not an action tokenizer: format is {d['format']!r}, expected {FORMAT!r}; point at the "
                "action_tokenizer.json written by ActionTokenizer.save()"
            )
        if not _is_int(d["version"]) or d["version"] != VERSION:
            hint = (
                "it was written by a newer vla-edge: upgrade this one"
                if _is_int(d["version"]) and d["version"] > VERSION
                else "regenerate the file with ActionTokenizer.save()"
            )
            raise TokenizerError(
                f"unsupported action tokenizer version {d['version']!r} (this code reads version "
                f"{VERSION}); {hint}"
            )
        _require_keys(d, ("names", "low", "high", "table"), "the action tokenizer")
        for key in ("names", "low", "high"):
            if not isinstance(d[key], list):
                raise TokenizerError(
                    f"the action tokenizer's {key!r} must be a list, got {type(d[key]).__name__}; regenerate "
                    "the file with ActionTokenizer.save()"
                )
        for key in ("low", "high"):
            bad = [v for v in d[key] if not _is_number(v)]
            if bad:
                raise TokenizerError(
                    f"the action tokenizer's {key!r} must hold numbers, found {bad[0]!r}; regenerate the "
                    "file with ActionTokenizer.save()"
                )
        units = d.get("units")
        if units is not None and not isinstance(units, list):
            raise TokenizerError(
                f"the action tokenizer's 'units' must be a list or null, got {type(units).__name__}; "
                "regenerate the file with ActionTokenizer.save()"
            )
        return cls(
            names=tuple(d["names"]),
            low=tuple(d["low"]),
            high=tuple(d["high"]),
            table=ActionIdTable.from_dict(d["table"]),
            units=None if units is None else tuple(units),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically: a temp file in the same folder, fsync, then a rename over `path`."""
        data = self.to_dict()
        try:
            with atomic_open(path, "w") as f:
                json.dump(data, f, indent=1, allow_nan=False)
                f.write("\n")
        except OSError as e:
            raise TokenizerError(
                f"cannot write action tokenizer file {path}: {e}; check that the folder exists and is writable"
            ) from e

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ActionTokenizer:
        """Read a file written by `save`; every problem is a TokenizerError naming the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenizerError(
                f"action tokenizer file {path} does not exist; copy action_tokenizer.json from the training "
                "run next to the model"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(
                f"cannot read action tokenizer file {path}: {e}; check the path and permissions"
            ) from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TokenizerError(
                f"action tokenizer file {path} is not valid JSON ({e}); it is truncated or corrupt, copy it "
                "again from the training run"
            ) from e
        try:
            return cls.from_dict(data)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from e
