"""Greedy decoding for the PyTorch VLA with a KV cache, restricted to an allowed set of ids.

The ground truth that the ONNX runtime is checked against: prefill [prompt | image], then one decoder
step per token, each argmax taken over the allowed ids only (the 256 action ids in action mode, every
id but those in text mode).

    ids = greedy_decode(model, pixels, prompt_ids, prompt_mask, steps=5, allowed=model.action_ids)
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def allowed_mask(vocab_size: int, allowed: torch.Tensor | None = None, banned: torch.Tensor | None = None) -> torch.Tensor:
    """(vocab,) additive mask: 0 where an id may be emitted, -inf elsewhere."""
    mask = torch.zeros(vocab_size)
    if allowed is not None:
        mask.fill_(float("-inf"))
        mask[allowed] = 0.0
    if banned is not None:
        mask[banned] = float("-inf")
    return mask


@torch.no_grad()
def greedy_decode(
    model,
    pixel_values: torch.Tensor,  # (B, 3, H, W) normalized
    prompt_ids: torch.Tensor,  # (B, Lp) left-padded
    prompt_mask: torch.Tensor,  # (B, Lp)
    steps: int,
    mask: torch.Tensor,  # (vocab,) additive: 0 allowed, -inf forbidden
    stop_id: int | None = None,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(B, steps) greedily decoded ids; after `stop_id` a row keeps emitting `stop_id`.

    With `return_logits`, also the (B, steps, vocab) unmasked logits each token was chosen from.
    """
    lm = model.language_model
    batch = pixel_values.shape[0]
    image = model.embed_image(pixel_values)  # (B, N, D)
    embeds = torch.cat([model.embed_tokens(prompt_ids), image], dim=1)
    attn = torch.cat([prompt_mask, prompt_mask.new_ones(batch, image.shape[1])], dim=1)  # (B, L)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = lm(inputs_embeds=embeds, attention_mask=attn, position_ids=positions, past_key_values=cache,
             use_cache=True, logits_to_keep=1)
    next_pos = positions[:, -1:] + 1  # (B, 1)
    tokens, raw = [], []
    done = torch.zeros(batch, dtype=torch.bool)
    for step in range(steps):
        raw.append(out.logits[:, -1].float())
        logits = raw[-1] + mask  # (B, vocab)
        token = logits.argmax(-1)  # (B,)
        if stop_id is not None:
            token = torch.where(done, torch.full_like(token, stop_id), token)
            done |= token == stop_id
        tokens.append(token)
        if step + 1 == steps:
            break
        attn = torch.cat([attn, attn.new_ones(batch, 1)], dim=1)
        out = lm(inputs_embeds=model.embed_tokens(token[:, None]), attention_mask=attn, position_ids=next_pos,
                 past_key_values=out.past_key_values, use_cache=True)
        next_pos = next_pos + 1
    if return_logits:
        return torch.stack(tokens, dim=1), torch.stack(raw, dim=1)
    return torch.stack(tokens, dim=1)
