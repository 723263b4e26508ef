"""The two ONNX graphs of a bundle, as torch modules with flat tensor inputs and outputs.

Vision:  pixel_values (B, 3, H, W) float32, normalized  ->  image_embeds (B, N, D)
Decoder: inputs_embeds (B, S, D), attention_mask (B, P + S) int64, position_ids (B, S) int64,
         past_key_values.{i}.key|value (B, KV, P, head)  ->  logits (B, S, R), present.{i}.key|value (B, KV, P + S, head)

R is the full vocabulary (text mode) or the 256 action ids only (action mode: the output layer keeps just
those rows). Names follow Hugging Face / ONNX Runtime GenAI. Both graphs take dynamic batch, sequence and
past lengths, including a past of length 0 (prefill).

Act (one call per action, batch 1): pixel_values (1, 3, H, W) and the instruction's KV cache
past_key_values.{i}.key|value (1, KV, P, head)  ->  action_bins (1, A) int64, action_logits (1, A, 256).
Vision, image prefill and the A greedy decode steps (argmax over the 256 action rows, the chosen action
token's embedding fed back) unrolled in one graph: no Python and no session call between tokens.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache

OPSET = 18


def kv_names(layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names) in layer order, key before value."""
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return past, present


class VisionGraph(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.embed_image(pixel_values)


class DecoderGraph(nn.Module):
    """The Llama decoder with an explicit KV cache; `action_ids` keeps only those output rows."""

    def __init__(self, model, action_ids: list[int] | None = None) -> None:
        super().__init__()
        lm = model.language_model
        self.decoder = lm.model
        self.layers = lm.config.num_hidden_layers
        weight = lm.lm_head.weight.detach()
        if action_ids is not None:
            weight = weight[torch.tensor(action_ids)]
        self.head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.head.weight = nn.Parameter(weight.clone(), requires_grad=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        hidden = self.decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=cache, use_cache=True).last_hidden_state
        present = []
        for layer in cache.layers:
            present += [layer.keys, layer.values]
        return (self.head(hidden), *present)


class ActGraph(nn.Module):
    """Frame + prompt KV cache -> all action bins of one action, greedy over the action rows."""

    def __init__(self, model, action_dim: int) -> None:
        super().__init__()
        self.model = model
        self.step = DecoderGraph(model, list(model.config.action_ids))
        self.action_dim = action_dim
        table = model.language_model.get_input_embeddings().weight.detach()[model.action_ids]
        self.register_buffer("action_embeds", table.clone())  # (256, D): the action tokens' input embeddings

    def forward(self, pixel_values, *past):
        prompt_len = past[0].shape[2]
        embeds = self.model.embed_image(pixel_values)  # (1, N, D)
        length = prompt_len + embeds.shape[1]
        positions = torch.arange(prompt_len, length, device=embeds.device).unsqueeze(0)
        mask = torch.ones(1, length, dtype=torch.long, device=embeds.device)
        bins, logits_all = [], []
        for k in range(self.action_dim):
            logits, *past = self.step(embeds, mask, positions, *past)
            last = logits[:, -1]  # (1, 256)
            choice = torch.argmax(last, dim=-1)  # (1,)
            bins.append(choice)
            logits_all.append(last)
            if k + 1 < self.action_dim:
                embeds = self.action_embeds[choice].unsqueeze(1)  # (1, 1, D)
                positions = torch.full((1, 1), length, dtype=torch.long, device=embeds.device)
                length = length + 1
                mask = torch.ones(1, length, dtype=torch.long, device=embeds.device)
        return torch.stack(bins, dim=1), torch.stack(logits_all, dim=1)  # (1, A) int64, (1, A, 256)


def _quiet_export(*args, **kwargs):
    """torch.onnx.export (dynamo) without its progress prints and torchvision notices."""
    import logging

    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.onnx.export(*args, dynamo=True, opset_version=OPSET, external_data=False, verbose=False, **kwargs)


def export_vision(model, path: Path) -> None:
    dummy = torch.randn(2, 3, *model.frame_shape)  # (B, 3, H, views * H)
    batch = torch.export.Dim("batch", min=1, max=64)
    _quiet_export(VisionGraph(model).eval(), (dummy,), str(path), input_names=["pixel_values"],
                  output_names=["image_embeds"], dynamic_shapes=({0: batch},))


def export_decoder(model, path: Path, action_ids: list[int] | None = None) -> None:
    t = model.config.text_config
    head_dim = t.hidden_size // t.num_attention_heads
    graph = DecoderGraph(model, action_ids).eval()
    past_names, present_names = kv_names(graph.layers)
    b, s, p = 2, 3, 4  # a batch-2, past-length>0 example, so that no dimension is specialized away
    embeds = torch.randn(b, s, t.hidden_size)
    mask = torch.ones(b, p + s, dtype=torch.long)
    positions = torch.arange(p, p + s).repeat(b, 1)
    past = [torch.randn(b, t.num_key_value_heads, p, head_dim) for _ in past_names]
    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("seq", min=1, max=t.max_position_embeddings)
    past_len = torch.export.Dim("past", min=0, max=t.max_position_embeddings)
    total = torch.export.Dim("total", min=1, max=2 * t.max_position_embeddings)
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, tuple({0: batch, 2: past_len} for _ in past))
    _quiet_export(graph, (embeds, mask, positions, *past), str(path),
                  input_names=["inputs_embeds", "attention_mask", "position_ids", *past_names],
                  output_names=["logits", *present_names], dynamic_shapes=dynamic)


def export_act(model, path: Path, action_dim: int) -> None:
    """The one-call action graph (see the module docstring); batch 1, dynamic prompt length."""
    t = model.config.text_config
    head_dim = t.hidden_size // t.num_attention_heads
    graph = ActGraph(model, action_dim).eval()
    past_names, _ = kv_names(graph.step.layers)
    pixels = torch.randn(1, 3, *model.frame_shape)
    past = [torch.randn(1, t.num_key_value_heads, 5, head_dim) for _ in past_names]
    prompt = torch.export.Dim("prompt", min=1, max=t.max_position_embeddings // 2)
    dynamic = (None, tuple({2: prompt} for _ in past))
    _quiet_export(graph, (pixels, *past), str(path), input_names=["pixel_values", *past_names],
                  output_names=["action_bins", "action_logits"], dynamic_shapes=dynamic)
