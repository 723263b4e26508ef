"""Analytic FLOPs per action for a vla-edge VLA (a multiply-add counts as 2 FLOPs; norms, activations
and softmax are left out: they are a few percent at these sizes).

One action = vision tower over the image, projector, decoder prefill over [prompt | image] (the last
position's logits only), then one cached decoder step per remaining action token, each with logits.

    flops = flops_per_action(model.config, prompt_tokens=8)
    flops.total, flops.as_dict()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ActionFlops:
    vision: int
    projector: int
    prefill: int
    decode: int
    head: int  # language-model head over the full vocabulary, once per action token

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.prefill + self.decode + self.head

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def image_token_count(config) -> int:
    """Image tokens of a VlaConfig: each of its `views` square views gives (image_size / patch_size)^2."""
    v = config.vision_config
    return getattr(config, "views", 1) * (v.image_size // v.patch_size) ** 2


def _vision_flops(v) -> int:
    """One view through the vision tower."""
    n = (v.image_size // v.patch_size) ** 2
    d, m = v.hidden_size, v.intermediate_size
    patch = 2 * 3 * v.patch_size**2 * d * n
    per_layer = 4 * 2 * d * d * n + 2 * 2 * n * n * d + 2 * 2 * d * m * n
    return patch + v.num_hidden_layers * per_layer


def _decoder_flops(t, queries: int, keys: int) -> int:
    """Decoder layers for `queries` new tokens attending to `keys` keys (full score matrix, as computed)."""
    d, m = t.hidden_size, t.intermediate_size
    head_dim = getattr(t, "head_dim", None) or d // t.num_attention_heads
    kv = t.num_key_value_heads * head_dim
    q_dim = t.num_attention_heads * head_dim
    proj = 2 * queries * (d * q_dim + 2 * d * kv + q_dim * d)
    attn = 2 * 2 * queries * keys * q_dim
    mlp = 3 * 2 * queries * d * m
    return t.num_hidden_layers * (proj + attn + mlp)


def flops_per_action(config, prompt_tokens: int, action_tokens: int | None = None, head_rows: int | None = None) -> ActionFlops:
    """FLOPs for one action of a VlaConfig; `head_rows` = 256 for an action-only output layer."""
    v, t = config.vision_config, config.text_config
    steps = action_tokens or config.action_dim
    n = image_token_count(config)
    prefill_len = prompt_tokens + n
    decode = sum(_decoder_flops(t, 1, prefill_len + k + 1) for k in range(steps - 1))
    rows = head_rows or t.vocab_size
    return ActionFlops(
        vision=getattr(config, "views", 1) * _vision_flops(v),
        projector=2 * n * v.hidden_size * t.hidden_size,
        prefill=_decoder_flops(t, prefill_len, prefill_len),
        decode=decode,
        head=2 * steps * t.hidden_size * rows,
    )
