"""The PyTorch reference policy: a trained VLA folder behind the `Policy` protocol.

Greedy decoding restricted to the action ids, with a KV cache (distill/decoding.py). It is the ground
truth that the ONNX runtime's parity checks compare against. `generate=True` decodes through
transformers' `generate()` with a logits processor instead (the baseline the runtime is benchmarked
against); both give the same tokens.

    policy = TorchVlaPolicy.load("models/teacher")
    action = policy.act(observation)     # Action(values=(5,), tokens=(5,), timings={...})
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from distill.checkpoint import load_model
from distill.decoding import allowed_mask, greedy_decode
from distill.model import VlaModel
from distill.prompts import action_prompt
from distill.teacher_data import encode_prompt
from distill.text_tokenizer import load_text_tokenizer
from distill.train_teacher import ACTION_TOKENIZER_FILE
from runtime.action_tokenizer import ActionTokenizer
from runtime.camera import fit_frame
from runtime.errors import UserError
from runtime.policy import Action, Observation


def load_vla_folder(folder: str | Path) -> tuple[VlaModel, object, ActionTokenizer]:
    """(model, text tokenizer, action tokenizer) from a model folder, checked against each other."""
    folder = Path(folder)
    model = load_model(folder, VlaModel)
    text_tok = load_text_tokenizer(folder)
    action_tok = ActionTokenizer.load(folder / ACTION_TOKENIZER_FILE)
    if list(action_tok.table.ids) != list(model.config.action_ids):
        raise UserError(
            f"{folder}: the action tokenizer's ids do not match the model's action ids: "
            f"{ACTION_TOKENIZER_FILE} belongs to another model; copy the folder again"
        )
    if action_tok.table.vocab_size != model.config.text_config.vocab_size or \
            text_tok.get_vocab_size() != model.config.text_config.vocab_size:
        raise UserError(f"{folder}: tokenizer and model vocabulary sizes differ: the files come from different models")
    return model, text_tok, action_tok


class TorchVlaPolicy:
    """A VLA in PyTorch, one action per observation (greedy, masked to the action ids)."""

    name = "torch"

    def __init__(self, model: VlaModel, text_tok, action_tok: ActionTokenizer, use_generate: bool = False,
                 device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.text_tok = text_tok
        self.action_tok = action_tok
        self.device = torch.device(device)
        self.use_generate = use_generate
        vocab = model.config.text_config.vocab_size
        self._mask = allowed_mask(vocab, allowed=model.action_ids).to(self.device)
        self._prompts: dict[str, torch.Tensor] = {}
        self.frame_shape = model.frame_shape  # (H, W): W holds config.views square views
        self.views, self.camera = model.config.views, getattr(model.config, "camera", None)

    @classmethod
    def load(cls, folder: str | Path, **kwargs) -> "TorchVlaPolicy":
        return cls(*load_vla_folder(folder), **kwargs)

    def reset(self) -> None:
        """Stateless between steps: nothing to forget."""

    def prompt_ids(self, instruction: str) -> torch.Tensor:
        if instruction not in self._prompts:
            ids = encode_prompt(self.text_tok, action_prompt(instruction))
            self._prompts[instruction] = torch.tensor([ids], dtype=torch.long, device=self.device)
        return self._prompts[instruction]

    @torch.no_grad()
    def act(self, observation: Observation) -> Action:
        timings = {}
        t0 = time.perf_counter()
        frame = fit_frame(observation.image, *self.frame_shape, self.views, self.camera)
        pixels = self.model.preprocess(torch.from_numpy(np.ascontiguousarray(frame))[None].to(self.device))
        prompt = self.prompt_ids(observation.instruction)
        t1 = time.perf_counter()
        timings["preprocess"] = t1 - t0
        steps = self.action_tok.dim
        if self.use_generate:
            ids = self._generate(pixels, prompt, steps)
        else:
            ids = greedy_decode(self.model, pixels, prompt, torch.ones_like(prompt), steps, self._mask)
        ids = ids[0].cpu().numpy()
        t2 = time.perf_counter()
        timings["model"] = t2 - t1
        values = self.action_tok.decode(ids)
        timings["detokenize"] = time.perf_counter() - t2
        return Action(values=values, tokens=ids, timings=timings)

    def _generate(self, pixels: torch.Tensor, prompt: torch.Tensor, steps: int) -> torch.Tensor:
        """transformers' generate() fed [prompt | image] embeddings, with a logits processor for the mask."""
        from transformers import LogitsProcessor, LogitsProcessorList

        mask = self._mask

        class ActionOnly(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return scores + mask

        embeds = torch.cat([self.model.embed_tokens(prompt), self.model.embed_image(pixels)], dim=1)
        out = self.model.language_model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device),
            max_new_tokens=steps, min_new_tokens=steps, do_sample=False, logits_processor=LogitsProcessorList([ActionOnly()]),
            pad_token_id=self.model.config.text_config.pad_token_id, eos_token_id=None,
        )
        return out[:, -steps:]
