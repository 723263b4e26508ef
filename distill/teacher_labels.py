"""Offline teacher labels: run the teacher once over a dataset and keep its distributions on disk, so
that distillation never runs the teacher in its inner loop.

For every frame: the teacher's logits over the 256 action ids at each of the 5 action positions,
teacher-forced with the dataset's action tokens, in float16. For every scene question: the teacher's
top-k logits and their ids at each answer position (the full vocabulary would be 30x larger).

    <labels>/manifest.json     format, teacher and data fingerprints, top-k, per-episode files
    <labels>/000000.npz        action_logits (T, 5, 256) f16, qa_values (Q, 5, k) f16, qa_ids (Q, 5, k) i32

Per-episode files are written atomically and the manifest after each one: an interrupted run resumes.
A cache made by another teacher or for other data is refused (fingerprints), never silently reused.

    labels = label_dataset(teacher_folder, data, out="runs/labels")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill.teacher_data import CoTrainingData, EpisodeRows
from runtime.atomic_io import atomic_open, write_json_atomic
from runtime.errors import UserError

LABELS_FORMAT = "vla-edge-teacher-labels"
LABELS_VERSION = 1
DEFAULT_TOPK = 16
FINGERPRINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "action_tokenizer.json")


def folder_fingerprint(folder: str | Path, names: tuple[str, ...] | None = None) -> str:
    """sha256 over a model folder's files (weights, config, tokenizers); `names` limits it to those files."""
    folder = Path(folder)
    if names is None:
        names = tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))
    digest = hashlib.sha256()
    for name in names:
        path = folder / name
        if not path.is_file():
            raise UserError(f"teacher folder {folder} lacks {name}: pass a complete model folder")
        digest.update(name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def teacher_fingerprint(folder: str | Path) -> str:
    """sha256 over a vla-edge teacher's weights, config and tokenizers."""
    return folder_fingerprint(folder, FINGERPRINT_FILES)


class VlaTeacher:
    """A vla-edge VLA folder as a source of labels (same vocabulary as the student)."""

    def __init__(self, model, folder: str | Path) -> None:
        self.model = model.eval()
        self.folder = Path(folder)

    def fingerprint(self) -> str:
        return teacher_fingerprint(self.folder)

    @torch.no_grad()
    def label_actions(self, data: CoTrainingData, frames: torch.Tensor) -> torch.Tensor:
        """(B, 5, 256) logits over the action ids, teacher-forced with the data's action tokens."""
        batch = data.batch(frames, data.frame_prompt[frames], data.action_targets[frames])
        m = self.model
        logits = m(m.preprocess(batch["frames"]), batch["prompt_ids"], batch["prompt_mask"], batch["target_inputs"])
        return logits[..., m.action_ids]

    @torch.no_grad()
    def label_questions(self, data: CoTrainingData, rows: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 5, k) top-k logits and their ids at each answer position."""
        batch = data.batch(data.qa_frame[rows], data.qa_prompt[rows], data.qa_answer[rows])
        m = self.model
        logits = m(m.preprocess(batch["frames"]), batch["prompt_ids"], batch["prompt_mask"], batch["target_inputs"])
        return logits.topk(topk, dim=-1)


def rows_fingerprint(rows: EpisodeRows, data: CoTrainingData) -> str:
    """What a label file must match: the episode's chunk, its action targets and its questions' answers."""
    digest = hashlib.sha256(rows.sha256.encode())
    digest.update(data.action_targets[rows.frame_start:rows.frame_end].numpy().tobytes())
    digest.update(data.qa_answer[rows.qa_start:rows.qa_end].numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass
class TeacherLabels:
    """Labels aligned with a CoTrainingData's rows."""

    action_logits: torch.Tensor  # (N, 5, 256) float16
    qa_values: torch.Tensor  # (M, 5, k) float16 top-k logits
    qa_ids: torch.Tensor  # (M, 5, k) long vocabulary ids of those logits


def _episode_key(rows: EpisodeRows) -> str:
    return f"{Path(rows.dataset).resolve()}::{rows.episode}"


def _label_rows(teacher, data: CoTrainingData, rows: EpisodeRows, topk: int, batch_size: int) -> dict[str, np.ndarray]:
    out_actions, out_values, out_ids = [], [], []
    for chunk in torch.arange(rows.frame_start, rows.frame_end).split(batch_size):
        out_actions.append(teacher.label_actions(data, chunk).half().numpy())
    if topk:
        for chunk in torch.arange(rows.qa_start, rows.qa_end).split(batch_size):
            values, ids = teacher.label_questions(data, chunk, topk)
            out_values.append(values.half().numpy())
            out_ids.append(ids.int().numpy())
    n_q = rows.qa_end - rows.qa_start
    return {
        "action_logits": np.concatenate(out_actions) if out_actions else np.zeros((0, 5, 256), np.float16),
        "qa_values": np.concatenate(out_values) if out_values else np.zeros((n_q, 5, 0), np.float16),
        "qa_ids": np.concatenate(out_ids) if out_ids else np.zeros((n_q, 5, 0), np.int32),
    }


def label_dataset(teacher, data: CoTrainingData, out: str | Path, topk: int = DEFAULT_TOPK, batch_size: int = 64,
                  progress: bool = True) -> TeacherLabels:
    """Label every episode of `data` with `teacher` (a VlaTeacher or HFTeacher), reusing a cache at `out`.

    topk = 0 stores no question labels (a teacher whose vocabulary differs from the student's).
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = teacher.fingerprint()
    manifest_path = out / "manifest.json"
    manifest = {"format": LABELS_FORMAT, "version": LABELS_VERSION, "teacher": fingerprint, "topk": topk, "episodes": {}}
    if manifest_path.is_file():
        try:
            existing = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{manifest_path} is damaged: delete {out} to label again") from None
        if existing.get("format") != LABELS_FORMAT or existing.get("version") != LABELS_VERSION:
            raise UserError(f"{out} is not a teacher-label cache of this version: delete it or choose another folder")
        if existing.get("teacher") != fingerprint:
            raise UserError(
                f"the teacher-label cache {out} was made by another teacher (fingerprint {existing.get('teacher', '?')[:12]}, "
                f"this teacher is {fingerprint[:12]}): delete it or pass another labels folder"
            )
        if existing.get("topk") != topk:
            raise UserError(f"{out} holds top-{existing.get('topk')} labels, not top-{topk}: delete it to label again")
        manifest = existing
    for rows in tqdm(data.episode_rows, desc="teacher labels", unit="ep", disable=not progress):
        key = _episode_key(rows)
        expect = rows_fingerprint(rows, data)
        entry = manifest["episodes"].get(key)
        if entry is not None and entry["data"] == expect and (out / entry["file"]).is_file():
            continue
        if entry is not None and entry["data"] != expect:
            raise UserError(f"the teacher-label cache {out} was made for other data at {key}: delete it to label again")
        arrays = _label_rows(teacher, data, rows, topk, batch_size)
        name = f"{len(manifest['episodes']):06d}.npz" if entry is None else entry["file"]
        with atomic_open(out / name, "wb") as handle:
            np.savez(handle, **arrays)
        manifest["episodes"][key] = {"file": name, "data": expect}
        write_json_atomic(manifest_path, manifest)
    return load_labels(out, data, manifest)


def load_labels(out: Path, data: CoTrainingData, manifest: dict) -> TeacherLabels:
    actions, values, ids = [], [], []
    for rows in data.episode_rows:
        entry = manifest["episodes"][_episode_key(rows)]
        try:
            with np.load(out / entry["file"], allow_pickle=False) as chunk:
                a, v, i = chunk["action_logits"], chunk["qa_values"], chunk["qa_ids"]
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"teacher-label file {out / entry['file']} is damaged ({err}): delete {out} to label again") from None
        if len(a) != rows.frame_end - rows.frame_start or len(v) != rows.qa_end - rows.qa_start:
            raise UserError(f"teacher-label file {out / entry['file']} does not match its episode: delete {out} to label again")
        actions.append(a)
        values.append(v)
        ids.append(i)
    return TeacherLabels(
        action_logits=torch.from_numpy(np.concatenate(actions)),
        qa_values=torch.from_numpy(np.concatenate(values)),
        qa_ids=torch.from_numpy(np.concatenate(ids)).long(),
    )
