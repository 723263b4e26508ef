"""The vla-edge VLA: a SigLIP vision tower, a linear projector and a Llama decoder fed `inputs_embeds`,
all from transformers' own building blocks. Actions are ordinary vocabulary ids (RT-2): the decoder's
language head predicts them; there is no separate action head.

Sequence layout (see distill/prompts.py): [prompt tokens] [image tokens] [target tokens].

    config = VlaConfig.from_sizes(TEACHER_SIZES, vocab_size=513, action_ids=table.ids, ...)
    model = VlaModel(config)
    model.save_pretrained("teacher/")             # config.json + model.safetensors
    model = VlaModel.from_pretrained("teacher/")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from distill.flops import image_token_count
from distill.prompts import BOS, EOS, PAD, PROMPT_LAYOUT


@dataclass(frozen=True)
class ModelSizes:
    """The knobs that size a VLA. Image tokens = views * (image_size / patch_size) ** 2."""

    image_size: int = 96  # one view's side; a frame holds `views` square views side by side
    patch_size: int = 16
    vision_width: int = 192
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 4
    mlp_ratio: int = 4
    views: int = 1  # cameras tiled left to right in the frame; each runs through the vision tower alone

    def check(self) -> "ModelSizes":
        if self.image_size % self.patch_size:
            raise ValueError(f"image size {self.image_size} is not a multiple of patch size {self.patch_size}")
        if self.vision_width % self.vision_heads or self.text_width % self.text_heads:
            raise ValueError("widths must be multiples of their head counts")
        if self.text_heads % self.text_kv_heads:
            raise ValueError("text heads must be a multiple of key/value heads")
        if not 1 <= self.views <= 4:
            raise ValueError(f"views must be 1 to 4, got {self.views}")
        return self

    @property
    def image_tokens(self) -> int:
        return self.views * (self.image_size // self.patch_size) ** 2


# The reference teacher (about 6.4M parameters) and a tiny model for smoke tests.
TEACHER_SIZES = ModelSizes()
SMOKE_SIZES = ModelSizes(image_size=32, patch_size=16, vision_width=32, vision_layers=1, vision_heads=2,
                         text_width=32, text_layers=1, text_heads=2, text_kv_heads=2)


class VlaConfig(PretrainedConfig):
    model_type = "vla_edge"
    sub_configs = {"vision_config": SiglipVisionConfig, "text_config": LlamaConfig}

    def __init__(
        self,
        vision_config: dict | SiglipVisionConfig | None = None,
        text_config: dict | LlamaConfig | None = None,
        action_ids: list[int] | None = None,
        action_dim: int = 5,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        prompt_layout: str = PROMPT_LAYOUT,
        sizes: dict | None = None,
        camera: str | None = None,
        views: int = 1,
        **kwargs,
    ) -> None:
        if isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**vision_config)
        if isinstance(text_config, dict):
            text_config = LlamaConfig(**text_config)
        self.vision_config = vision_config or SiglipVisionConfig()
        self.text_config = text_config or LlamaConfig()
        self.action_ids = list(action_ids or [])
        self.action_dim = action_dim
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.prompt_layout = prompt_layout
        self.sizes = dict(sizes or {})
        self.camera = camera  # the simulator camera the training frames came from (None: unknown)
        self.views = int(views)  # frames are (H, H * views): that many square views side by side
        super().__init__(**kwargs)

    @classmethod
    def from_sizes(cls, sizes: ModelSizes, vocab_size: int, action_ids: list[int], pad_id: int, bos_id: int,
                   eos_id: int, action_dim: int = 5, max_positions: int = 256,
                   camera: str | None = None) -> "VlaConfig":
        sizes.check()
        vision = SiglipVisionConfig(
            hidden_size=sizes.vision_width,
            intermediate_size=sizes.vision_width * sizes.mlp_ratio,
            num_hidden_layers=sizes.vision_layers,
            num_attention_heads=sizes.vision_heads,
            image_size=sizes.image_size,
            patch_size=sizes.patch_size,
            num_channels=3,
            vision_use_head=False,
        )
        text = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=sizes.text_width,
            intermediate_size=sizes.text_width * sizes.mlp_ratio,
            num_hidden_layers=sizes.text_layers,
            num_attention_heads=sizes.text_heads,
            num_key_value_heads=sizes.text_kv_heads,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            pad_token_id=pad_id,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
        )
        return cls(vision_config=vision, text_config=text, action_ids=list(action_ids), action_dim=action_dim,
                   sizes=asdict(sizes), camera=camera, views=sizes.views)


class VlaModel(PreTrainedModel):
    """SigLIP vision tower -> linear projector -> Llama decoder over [prompt | image | targets]."""

    config_class = VlaConfig
    base_model_prefix = "vla"
    main_input_name = "pixel_values"
    _supports_sdpa = True

    def __init__(self, config: VlaConfig) -> None:
        super().__init__(config)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.projector = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        if config.views > 1:  # which camera an image token came from, added after the projector
            self.view_embedding = nn.Parameter(torch.zeros(config.views, config.text_config.hidden_size))
        self.language_model = LlamaForCausalLM(config.text_config)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("action_ids", torch.tensor(config.action_ids, dtype=torch.long), persistent=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)

    # -- pieces --------------------------------------------------------------------------------
    @property
    def image_tokens(self) -> int:
        return image_token_count(self.config)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(H, W) of the frames the model takes: `views` square views side by side."""
        size = self.config.vision_config.image_size
        return size, size * self.config.views

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float normalized with the config's mean and std."""
        pixels = frames.permute(0, 3, 1, 2).to(self.image_mean.dtype) / 255.0
        return (pixels - self.image_mean) / self.image_std

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, V * H) normalized pixels -> (B, V * N, D) image embeddings in the decoder's space."""
        views = self.config.views
        if views == 1:
            return self.projector(self.vision_tower(pixel_values=pixel_values).last_hidden_state)
        batch, channels, height, width = pixel_values.shape
        tiles = pixel_values.reshape(batch, channels, height, views, width // views)  # (B, 3, H, V, H)
        tiles = tiles.permute(0, 3, 1, 2, 4).reshape(batch * views, channels, height, width // views)
        tokens = self.projector(self.vision_tower(pixel_values=tiles).last_hidden_state)  # (B * V, N, D)
        tokens = tokens.reshape(batch, views, tokens.shape[1], tokens.shape[2]) + self.view_embedding[:, None, :]
        return tokens.reshape(batch, views * tokens.shape[2], tokens.shape[3])  # (B, V * N, D)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D)."""
        return self.language_model.get_input_embeddings()(ids)

    # -- training forward -------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,  # (B, 3, H, W) normalized
        prompt_ids: torch.Tensor,  # (B, Lp) left-padded
        prompt_mask: torch.Tensor,  # (B, Lp) 1 for real tokens
        target_inputs: torch.Tensor,  # (B, Lt - 1) teacher-forced target tokens (targets[:, :-1])
    ) -> torch.Tensor:
        """Logits predicting the Lt target tokens: (B, Lt, vocab)."""
        batch = pixel_values.shape[0]
        image = self.embed_image(pixel_values)  # (B, N, D)
        embeds = torch.cat([self.embed_tokens(prompt_ids), image, self.embed_tokens(target_inputs)], dim=1)
        ones = prompt_mask.new_ones(batch, image.shape[1] + target_inputs.shape[1])
        mask = torch.cat([prompt_mask, ones], dim=1)  # (B, L)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.language_model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                           use_cache=False).last_hidden_state
        first = prompt_ids.shape[1] + image.shape[1] - 1  # the last image position predicts target 0
        return self.language_model.lm_head(hidden[:, first:])  # (B, Lt, vocab)


def config_for_tokenizer(sizes: ModelSizes, text_tok, action_ids, action_dim: int,
                         camera: str | None = None) -> VlaConfig:
    """A VlaConfig over `text_tok`'s vocabulary and special tokens, with `action_ids` as the action bins."""
    return VlaConfig.from_sizes(sizes, text_tok.get_vocab_size(), list(action_ids), text_tok.token_to_id(PAD),
                                text_tok.token_to_id(BOS), text_tok.token_to_id(EOS), action_dim=action_dim,
                                camera=camera)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# `AutoConfig.from_pretrained` / `AutoModel.from_pretrained` on a teacher folder work once distill.model is imported.
AutoConfig.register(VlaConfig.model_type, VlaConfig)
AutoModel.register(VlaConfig, VlaModel)
