"""The on-disk demonstration dataset: a folder of compressed per-episode chunks and a manifest.

Layout (documented for users in DATASET.md):

    <dataset>/
      manifest.json          format, version, image and action specs, action statistics, episode index
      episodes/000000.npz    one compressed chunk per episode (numpy .npz, deflate; no pickled objects)
      episodes/000001.npz
      ...

Every file is written to a temporary name and renamed into place, and the manifest is rewritten after
each episode, so a crash loses at most the episode in flight and `record --resume` continues.
Episodes are read lazily: opening a dataset reads only the manifest; an episode's arrays are read
when asked for.

Example:

    ds = Dataset.open("data/demos")
    ds.action_stats.p01           # (5,) float32
    ep = ds.load_episode(0)
    ep.frames.shape               # (T, 96, 96, 3) uint8
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.atomic_io import atomic_open, sha256_file
from runtime.errors import UserError

DATASET_FORMAT = "vla-edge-dataset"
DATASET_VERSION = 1
MANIFEST = "manifest.json"
EPISODE_DIR = "episodes"

# RT-2's action layout for Meta-World: the simulator's 4-D action plus a terminate flag.
ACTION_NAMES = ("dx", "dy", "dz", "gripper", "terminate")
ACTION_UNITS = (
    "cm/step",  # Meta-World moves the hand's mocap by value/100 m per step (1.0 = 1 cm)
    "cm/step",
    "cm/step",
    "effort (-1 open, +1 close)",
    "flag (1 = task done)",
)
TERMINATE_INDEX = ACTION_NAMES.index("terminate")
# The keys of an episode chunk and their dtypes; shapes are checked against the manifest on load.
EPISODE_ARRAYS = {
    "frames": np.uint8,  # (T, H, W, 3) RGB, the camera frame seen before action t
    "state": np.float32,  # (T, 4) hand xyz (m), gripper opening
    "sim_obs": np.float32,  # (T, 39) Meta-World's full observation (privileged; for experts and labels)
    "actions": np.float32,  # (T, 5) dx, dy, dz, gripper, terminate
    "success": np.bool_,  # (T,) the simulator reported success after action t
}


class DatasetError(UserError):
    """A folder that is not a valid vla-edge dataset, or a damaged episode chunk."""


@dataclass(frozen=True)
class ActionStats:
    """Per-dimension statistics that the action tokenizer normalizes with."""

    names: tuple[str, ...]
    p01: np.ndarray  # (D,) float32, 1st percentile (the tokenizer's low end)
    p99: np.ndarray  # (D,) float32, 99th percentile (the tokenizer's high end)
    mean: np.ndarray  # (D,) float32
    std: np.ndarray  # (D,) float32

    @classmethod
    def from_actions(cls, actions: np.ndarray, names: tuple[str, ...] = ACTION_NAMES) -> "ActionStats":
        """Statistics of an (N, D) action array; the terminate flag's range is fixed to [0, 1]."""
        actions = np.asarray(actions, dtype=np.float64)
        p01 = np.percentile(actions, 1, axis=0)
        p99 = np.percentile(actions, 99, axis=0)
        if "terminate" in names:
            k = names.index("terminate")
            p01[k], p99[k] = 0.0, 1.0
        # A dimension that never varies would give an empty range: widen it to the observed extremes,
        # then to +-1 around a constant, so the tokenizer always has a non-empty interval.
        flat = p99 - p01 < 1e-6
        p01[flat] = np.minimum(p01[flat], actions.min(axis=0)[flat])
        p99[flat] = np.maximum(p99[flat], actions.max(axis=0)[flat])
        flat = p99 - p01 < 1e-6
        p01[flat] -= 1.0
        p99[flat] += 1.0
        return cls(
            names=tuple(names),
            p01=p01.astype(np.float32),
            p99=p99.astype(np.float32),
            mean=actions.mean(axis=0).astype(np.float32),
            std=actions.std(axis=0).astype(np.float32),
        )

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "p01": [float(v) for v in self.p01],
            "p99": [float(v) for v in self.p99],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ActionStats":
        names = tuple(d["names"])
        arrays = {k: np.asarray(d[k], dtype=np.float32) for k in ("p01", "p99", "mean", "std")}
        for key, arr in arrays.items():
            if arr.shape != (len(names),):
                raise DatasetError(f"action statistic '{key}' has {arr.size} values for {len(names)} dimensions")
        return cls(names=names, **arrays)


@dataclass(frozen=True)
class EpisodeInfo:
    """One episode's entry in the manifest."""

    index: int
    file: str  # relative to the dataset root
    task: str
    instruction: str
    seed: int
    length: int  # frames (= actions) in the chunk
    success: bool  # the simulator reported success during the episode
    success_step: int | None  # first frame whose observation shows success (terminate = 1 from here)
    bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Episode:
    """The arrays of one episode (see EPISODE_ARRAYS for shapes)."""

    info: EpisodeInfo
    frames: np.ndarray
    state: np.ndarray
    sim_obs: np.ndarray
    actions: np.ndarray
    success: np.ndarray

    def __len__(self) -> int:
        return self.info.length



def write_episode_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one episode's arrays as a compressed .npz, atomically."""
    for key, dtype in EPISODE_ARRAYS.items():
        if key not in arrays:
            raise ValueError(f"episode chunk is missing '{key}'")
        if arrays[key].dtype != dtype:
            raise ValueError(f"episode array '{key}' must be {np.dtype(dtype)}, got {arrays[key].dtype}")
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, **{k: arrays[k] for k in EPISODE_ARRAYS})


class Dataset:
    """A recorded dataset, opened from its folder. Reading the manifest is the only eager work."""

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root = root
        self.manifest = manifest
        self.episodes = [EpisodeInfo(**e) for e in manifest["episodes"]]
        self.image = manifest["image"]
        self.action_names = tuple(manifest["action"]["names"])
        self.action_stats = ActionStats.from_dict(manifest["action"])
        self.tasks: dict[str, str] = manifest["tasks"]

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike, check_files: bool = True) -> "Dataset":
        """Open a dataset folder; raises DatasetError with the fix if it is not one."""
        root = Path(root)
        manifest = read_manifest(root)
        dataset = cls(root, manifest)
        if check_files:
            dataset.check_files()
        return dataset

    @classmethod
    def open_nonempty(cls, root: str | os.PathLike) -> "Dataset":
        """Open a dataset that training will read: it must hold at least one episode."""
        dataset = cls.open(root)
        if len(dataset) == 0:
            raise DatasetError(f"dataset {root} is empty: record episodes with `python -m distill record --out {root}`")
        return dataset

    def check_files(self) -> None:
        """Cheap integrity check: every chunk exists with the size the manifest recorded."""
        for ep in self.episodes:
            path = self.root / ep.file
            if not path.is_file():
                raise DatasetError(
                    f"episode {ep.index} ({ep.file}) is missing from {self.root}: "
                    f"re-record it with `python -m distill record --out {self.root} --resume`"
                )
            size = path.stat().st_size
            if size != ep.bytes:
                raise DatasetError(
                    f"episode file {path} is truncated or damaged ({size} bytes, manifest says {ep.bytes}): "
                    f"delete it and run `python -m distill record --out {self.root} --resume` to re-record it"
                )

    def verify(self) -> None:
        """Full integrity check: sha256 of every chunk, and every array's shape and dtype."""
        for ep in self.episodes:
            digest = sha256_file(self.root / ep.file)
            if digest != ep.sha256:
                raise DatasetError(
                    f"episode file {self.root / ep.file} does not match its sha256 in the manifest: "
                    f"delete it and run `python -m distill record --out {self.root} --resume` to re-record it"
                )
            self.load_episode(ep.index)

    # -- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(ep.length for ep in self.episodes)

    def load_episode(self, index: int) -> Episode:
        """Read and check one episode's arrays."""
        info = self.episodes[index]
        path = self.root / info.file
        fix = f"delete it and run `python -m distill record --out {self.root} --resume` to re-record it"
        try:
            with np.load(path, allow_pickle=False) as chunk:
                arrays = {key: chunk[key] for key in EPISODE_ARRAYS}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
            raise DatasetError(f"episode file {path} is truncated or corrupt ({err}): {fix}") from None
        h, w = self.image["height"], self.image["width"]
        expected = {
            "frames": (info.length, h, w, 3),
            "state": (info.length, len(self.manifest["state"]["names"])),
            "sim_obs": (info.length, self.manifest["sim_obs_dim"]),
            "actions": (info.length, len(self.action_names)),
            "success": (info.length,),
        }
        for key, shape in expected.items():
            arr = arrays[key]
            if arr.shape != shape or arr.dtype != EPISODE_ARRAYS[key]:
                raise DatasetError(
                    f"episode file {path}: array '{key}' is {arr.dtype}{list(arr.shape)}, "
                    f"the manifest says {np.dtype(EPISODE_ARRAYS[key])}{list(shape)}: {fix}"
                )
        return Episode(info=info, **arrays)

    def iter_episodes(self) -> Iterator[Episode]:
        for ep in self.episodes:
            yield self.load_episode(ep.index)

    def all_actions(self) -> np.ndarray:
        """(N, D) float32: every recorded action, in episode order (reads every chunk)."""
        if not self.episodes:
            return np.zeros((0, len(self.action_names)), np.float32)
        return np.concatenate([ep.actions for ep in self.iter_episodes()])

    def seeds(self) -> dict[str, set[int]]:
        """task -> seeds recorded, to keep evaluation seeds unseen."""
        out: dict[str, set[int]] = {}
        for ep in self.episodes:
            out.setdefault(ep.task, set()).add(ep.seed)
        return out


def read_manifest(root: Path) -> dict:
    """Read and validate `root/manifest.json`; DatasetError names the problem and the fix."""
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist: record one with `python -m distill record --out {root}`")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a dataset folder: pass the folder `python -m distill record` wrote")
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(
            f"{root} is not a vla-edge dataset (no {MANIFEST}): pass the folder written by `python -m distill record`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}): the dataset is damaged; re-record it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path} is not a vla-edge dataset manifest (format should be '{DATASET_FORMAT}')")
    if manifest.get("version") != DATASET_VERSION:
        raise DatasetError(
            f"{path} has dataset format version {manifest.get('version')}, this vla-edge reads version "
            f"{DATASET_VERSION}: re-record the dataset with this version"
        )
    missing = [k for k in ("image", "action", "state", "sim_obs_dim", "tasks", "episodes") if k not in manifest]
    if missing:
        raise DatasetError(f"{path} lacks {', '.join(missing)}: the manifest is damaged; re-record the dataset")
    try:
        [EpisodeInfo(**e) for e in manifest["episodes"]]
        ActionStats.from_dict(manifest["action"])
    except (TypeError, KeyError) as err:
        raise DatasetError(f"{path} has a malformed entry ({err}): the manifest is damaged; re-record the dataset") from None
    return manifest
