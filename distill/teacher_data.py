"""Training samples for RT-2-style co-fine-tuning: robot frames (image + instruction -> action ids)
mixed with scene questions (image + question -> answer), held in memory as compact tensors.

    data = CoTrainingData.build(dataset, text_tok, action_tok, episodes, image_size=96)
    batch = data.sample(rng, batch_size=32, robot_ratio=0.66, shift=4)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from distill.dataset import TERMINATE_INDEX, Dataset
from distill.prompts import BOS, EOS, PAD, action_prompt, question_prompt
from distill.vqa import QUESTION_TYPES, answer
from runtime.action_tokenizer import ActionTokenizer
from runtime.errors import UserError

TARGET_LEN = 5  # action tokens per step; answers are padded to the same length
IGNORE = -100


def encode_prompt(text_tok, text: str) -> list[int]:
    return [text_tok.token_to_id(BOS)] + text_tok.encode(text).ids


def delay_terminate(actions: np.ndarray, success_step: int | None, delay: int) -> np.ndarray:
    """actions: (T, 5) with terminate = 1 from `success_step`; returns a copy with terminate = 1 only from
    `success_step + delay`.

    The frames just after success look like the frames just before it (a window a few millimetres past its
    mark), so a policy trained on them learns to stop a few millimetres short; the evaluator ends an episode
    at success anyway, and a premature stop is a failure. A delay moves the stop label to scenes that are
    plainly done.
    """
    if delay <= 0 or success_step is None:
        return actions
    out = actions.copy()
    out[success_step:success_step + delay, TERMINATE_INDEX] = 0.0
    return out


@dataclass(frozen=True)
class EpisodeRows:
    """Rows of one episode: frames [frame_start, frame_end), questions [qa_start, qa_end)."""

    dataset: str
    episode: int
    sha256: str  # of the episode's chunk: identifies its content whatever the image size
    frame_start: int
    frame_end: int
    qa_start: int
    qa_end: int


@dataclass
class CoTrainingData:
    frames: torch.Tensor  # (N, H, W, 3) uint8
    action_targets: torch.Tensor  # (N, 5) long vocabulary ids of the expert's action
    frame_prompt: torch.Tensor  # (N,) long index into `prompts` (the frame's action prompt)
    qa_frame: torch.Tensor  # (M,) long frame of each question
    qa_prompt: torch.Tensor  # (M,) long index into `prompts`
    qa_answer: torch.Tensor  # (M, 5) long answer ids + <eos>, padded with IGNORE
    qa_kind: list[str]  # (M,) question type
    prompts: list[list[int]]  # prompt id lists (action prompts per task, then questions)
    prompt_texts: list[str]  # the same prompts as text ("act: open the drawer")
    pad_id: int
    episode_rows: list["EpisodeRows"]  # where each episode's frames and questions sit in the arrays

    @classmethod
    def build(cls, dataset: Dataset, text_tok, action_tok: ActionTokenizer, episodes: list[int], image_size: int,
              progress: bool = False, terminate_delay: int = 0, question_every: int = 1) -> "CoTrainingData":
        """Samples from `episodes` of one dataset."""
        return cls.build_from([(dataset, episodes)], text_tok, action_tok, image_size, progress, terminate_delay,
                              question_every)

    @classmethod
    def build_from(cls, sources: list[tuple[Dataset, list[int]]], text_tok, action_tok: ActionTokenizer,
                   image_size: int, progress: bool = False, terminate_delay: int = 0,
                   question_every: int = 1) -> "CoTrainingData":
        """Samples from several (dataset, episode indices) sources, in order: frames of each episode, then
        its answerable questions (every question type at every `question_every`-th frame, in QUESTION_TYPES
        order; neighbouring frames look alike, so a stride mostly saves the time a teacher spends labelling).

        terminate_delay: the first `terminate_delay` frames after success are relabelled terminate = 0 (see
        `delay_terminate`); the scene questions keep the simulator's own success."""
        from tqdm import tqdm

        if not any(episodes for _, episodes in sources):
            roots = ", ".join(str(ds.root) for ds, _ in sources)
            raise UserError(f"no episodes selected from {roots}: record some with `python -m distill record`")
        prompt_index: dict[str, int] = {}
        prompts: list[list[int]] = []

        def prompt_id(text: str) -> int:
            if text not in prompt_index:
                prompt_index[text] = len(prompts)
                prompts.append(encode_prompt(text_tok, text))
            return prompt_index[text]

        eos = text_tok.token_to_id(EOS)
        targets, frame_prompt = [], []
        qa_frame, qa_prompt, qa_answer, qa_kind = [], [], [], []
        episode_rows: list[EpisodeRows] = []
        offset = 0
        todo = [(ds, index) for ds, episodes in sources for index in episodes]
        # (N, size, size * V, 3) uint8, filled in place: a list of episodes joined at the end would hold every
        # frame twice (24 GB for the three-view dataset's 146k frames). Episode shapes match the manifest.
        frames: np.ndarray | None = None
        total = sum(ds.episodes[index].length for ds, index in todo)
        for dataset, index in tqdm(todo, desc="loading episodes", unit="ep", disable=not progress):
            ep = dataset.load_episode(index)
            images = ep.frames
            if images.shape[1] != image_size:  # keep the views: (T, h, h * V, 3) -> (T, size, size * V, 3)
                size = (image_size * (images.shape[2] // images.shape[1]), image_size)
                images = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in images])
            if frames is None:
                frames = np.empty((total, *images.shape[1:]), dtype=np.uint8)
            frames[offset:offset + len(ep)] = images
            targets.append(action_tok.encode(delay_terminate(ep.actions, ep.info.success_step, terminate_delay)))
            frame_prompt += [prompt_id(action_prompt(ep.info.instruction))] * len(ep)
            qa_start = len(qa_frame)
            for t in range(0, len(ep), question_every):
                for kind in QUESTION_TYPES:
                    qa = answer(kind, ep.info.task, ep.sim_obs, t, ep.info.success_step)
                    if qa is None:
                        continue
                    ids = text_tok.encode(qa[1]).ids + [eos]
                    if len(ids) > TARGET_LEN:
                        raise UserError(f"answer '{qa[1]}' is longer than {TARGET_LEN - 1} tokens")
                    qa_frame.append(offset + t)
                    qa_prompt.append(prompt_id(question_prompt(qa[0])))
                    qa_answer.append(ids + [IGNORE] * (TARGET_LEN - len(ids)))
                    qa_kind.append(kind)
            episode_rows.append(EpisodeRows(str(dataset.root), index, ep.info.sha256, offset, offset + len(ep), qa_start, len(qa_frame)))
            offset += len(ep)
        return cls(
            frames=torch.from_numpy(frames),
            action_targets=torch.from_numpy(np.concatenate(targets)).long(),
            frame_prompt=torch.tensor(frame_prompt, dtype=torch.long),
            qa_frame=torch.tensor(qa_frame, dtype=torch.long),
            qa_prompt=torch.tensor(qa_prompt, dtype=torch.long),
            qa_answer=torch.tensor(qa_answer, dtype=torch.long),
            qa_kind=qa_kind,
            prompts=prompts,
            prompt_texts=list(prompt_index),
            pad_id=text_tok.token_to_id(PAD),
            episode_rows=episode_rows,
        )

    def __len__(self) -> int:
        return len(self.frames)

    def pad_prompts(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad the prompts `indices` to a common length: (B, Lp) ids and (B, Lp) mask."""
        rows = [self.prompts[i] for i in indices.tolist()]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            ids[k, width - len(row):] = torch.tensor(row)
            mask[k, width - len(row):] = 1
        return ids, mask

    def batch(self, frame_idx: torch.Tensor, prompt_idx: torch.Tensor, targets: torch.Tensor,
              shifts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Assemble a batch; `targets` (B, 5) with IGNORE past the answer; `shifts` (B, 2) pixel offsets."""
        frames = self.frames[frame_idx]  # (B, H, W, 3)
        if shifts is not None:
            frames = random_shift(frames, shifts)
        prompt_ids, prompt_mask = self.pad_prompts(prompt_idx)
        inputs = targets[:, :-1].clone()
        inputs[inputs == IGNORE] = self.pad_id
        return {"frames": frames, "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
                "target_inputs": inputs, "labels": targets}

    def sample(self, rng: np.random.Generator, batch_size: int, robot_ratio: float, shift: int,
               tail_from: int | None = None, tail_ratio: float = 0.0) -> dict[str, torch.Tensor]:
        """A mixed batch: each row is a robot sample with probability `robot_ratio`, else a question.

        tail_from, tail_ratio: a robot row comes from frames [tail_from, N) with probability `tail_ratio`
        (the on-policy rounds, which sit after the demonstrations), else uniformly from every frame."""
        robot = rng.random(batch_size) < robot_ratio
        if len(self.qa_frame) == 0:
            robot[:] = True
        n_robot = int(robot.sum())
        frame_rows = rng.integers(0, len(self), n_robot)
        if tail_from is not None and tail_ratio > 0 and tail_from < len(self):
            tail = rng.random(n_robot) < tail_ratio
            frame_rows[tail] = rng.integers(tail_from, len(self), int(tail.sum()))
        frame_rows = torch.from_numpy(frame_rows)
        qa_rows = torch.from_numpy(rng.integers(0, max(len(self.qa_frame), 1), batch_size - n_robot))
        frame_idx = torch.cat([frame_rows, self.qa_frame[qa_rows] if len(qa_rows) else qa_rows])
        prompt_idx = torch.cat([self.frame_prompt[frame_rows], self.qa_prompt[qa_rows] if len(qa_rows) else qa_rows])
        targets = torch.cat([self.action_targets[frame_rows], self.qa_answer[qa_rows] if len(qa_rows) else
                             torch.zeros((0, TARGET_LEN), dtype=torch.long)])
        shifts = torch.from_numpy(rng.integers(-shift, shift + 1, (batch_size, 2))) if shift else None
        out = self.batch(frame_idx, prompt_idx, targets, shifts)
        out["robot_rows"], out["qa_rows"] = frame_rows, qa_rows  # robot rows come first in the batch
        out["is_robot"] = torch.cat([torch.ones(n_robot, dtype=torch.bool), torch.zeros(batch_size - n_robot, dtype=torch.bool)])
        return out


def random_shift(frames: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each (H, W, 3) frame by (dy, dx) pixels, repeating the border (DrQ-style augmentation)."""
    pad = int(shifts.abs().max())
    if pad == 0:
        return frames
    h, w = frames.shape[1:3]
    padded = torch.nn.functional.pad(frames.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(frames)
    for k, (dy, dx) in enumerate(shifts.tolist()):
        out[k] = padded[k, :, pad + dy: pad + dy + h, pad + dx: pad + dx + w].permute(1, 2, 0).to(frames.dtype)
    return out
