"""Bring your own teacher: a Hugging Face vision-language model in a local folder (PaliGemma, say) as
the teacher of a vla-edge student.

Requirements on the folder: `AutoProcessor` and `AutoModelForImageTextToText` load it offline, and the
model's forward takes `pixel_values`, `input_ids` and `attention_mask` and returns vocabulary logits.
The user supplies the teacher's action tokenizer (a JSON from `python -m distill tokenizer --ids ...`):
its statistics say what each bin means, its id table which of the teacher's vocabulary ids stand for
the 256 bins. The student keeps vla-edge's own vocabulary; distillation is over bins, so the two
vocabularies never need to agree (question answers are then learnt from the data alone).

    teacher = HFTeacher("teachers/paligemma", teacher_actions, student_actions)
    logits = teacher.action_logits(frames, ["open the drawer"], teacher_ids)   # (B, 5, 256)
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from distill.prompts import ACTION_PREFIX
from distill.teacher_data import CoTrainingData
from distill.teacher_labels import folder_fingerprint
from runtime.action_tokenizer import ActionTokenizer
from runtime.errors import UserError
from runtime.policy import Action, Observation

DEFAULT_TEMPLATE = "{instruction}"


def is_vla_edge_folder(folder: str | Path) -> bool:
    """True for a model folder written by vla-edge (config model_type 'vla_edge')."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("model_type") == "vla_edge"
    except (OSError, json.JSONDecodeError):
        return False


class HFTeacher:
    """A local Hugging Face VLM that labels actions over its own vocabulary's action ids."""

    def __init__(self, folder: str | Path, teacher_actions: ActionTokenizer, student_actions: ActionTokenizer,
                 prompt_template: str = DEFAULT_TEMPLATE) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise UserError(f"teacher folder {folder} has no config.json: pass a Hugging Face model folder")
        if "{instruction}" not in prompt_template:
            raise UserError(f"--prompt-template must contain {{instruction}}, got '{prompt_template}'")
        differences = [d for d in teacher_actions.differences(student_actions) if "ids" not in d and "vocab" not in d]
        if differences:
            raise UserError(f"the teacher's action statistics differ from the student's ({differences[0]}): "
                            f"bins would mean different actions; build both from the same dataset statistics")
        try:
            self.processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(self.folder, local_files_only=True).eval()
        except (OSError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot load a vision-language model from {folder} offline ({first})") from None
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if teacher_actions.table.vocab_size != vocab:
            raise UserError(f"the teacher's action-id table is for a vocabulary of {teacher_actions.table.vocab_size}, "
                            f"the model in {folder} has {vocab}: pass the id table made for this model")
        self.processor.tokenizer.padding_side = "left"
        self.teacher_actions = teacher_actions
        self.student_actions = student_actions
        self.template = prompt_template
        self._action_ids = torch.tensor(teacher_actions.table.ids, dtype=torch.long)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(folder_fingerprint(self.folder).encode())
        digest.update(json.dumps(self.teacher_actions.to_dict(), sort_keys=True).encode())
        digest.update(self.template.encode())
        return digest.hexdigest()

    @torch.no_grad()
    def action_logits(self, frames: np.ndarray, instructions: list[str], teacher_ids: torch.Tensor) -> torch.Tensor:
        """(B, D, 256) logits over the teacher's action ids, teacher-forced with `teacher_ids` (B, D)."""
        inputs = self.processor(text=[self.template.format(instruction=i) for i in instructions],
                                images=list(frames), return_tensors="pt", padding=True)
        steps = teacher_ids.shape[1]
        ids = torch.cat([inputs["input_ids"], teacher_ids[:, :-1]], dim=1)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(teacher_ids[:, :-1])], dim=1)
        logits = self.model(input_ids=ids, attention_mask=mask, pixel_values=inputs["pixel_values"]).logits
        return logits[:, -steps:, :][..., self._action_ids].float()

    def label_actions(self, data: CoTrainingData, frames: torch.Tensor) -> torch.Tensor:
        bins = self.student_actions.ids_to_bins(data.action_targets[frames].numpy())  # (B, D)
        teacher_ids = torch.from_numpy(self.teacher_actions.table.ids_array[bins])
        instructions = [data.prompt_texts[i].removeprefix(ACTION_PREFIX) for i in data.frame_prompt[frames].tolist()]
        return self.action_logits(data.frames[frames].numpy(), instructions, teacher_ids)


class HFTeacherPolicy:
    """The HF teacher acting: greedy decoding over its action ids, one token at a time."""

    name = "hf-teacher"

    def __init__(self, teacher: HFTeacher) -> None:
        self.teacher = teacher

    def reset(self) -> None:
        """Stateless."""

    @torch.no_grad()
    def act(self, observation: Observation) -> Action:
        start = time.perf_counter()
        actions = self.teacher.teacher_actions
        chosen: list[int] = []
        for _ in range(actions.dim):  # grow the forced prefix one greedy token at a time
            ids = torch.tensor([chosen + [int(actions.table.ids[0])]])
            logits = self.teacher.action_logits(observation.image[None], [observation.instruction], ids)
            chosen.append(int(actions.table.ids[int(logits[0, len(chosen)].argmax())]))
        tokens = np.asarray(chosen)
        return Action(values=actions.decode(tokens), tokens=tokens, timings={"model": time.perf_counter() - start})
