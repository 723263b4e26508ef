"""A vla-edge model folder as an onnxruntime-genai model folder: the peer baseline of the decode benchmark.

onnxruntime-genai (0.18) drives a decoder that takes token ids, so it cannot be fed `inputs_embeds`
(DESIGN.md section 5). The decoder written here takes `input_ids` with a placeholder id where the image
goes, plus an extra input `image_embeds` (set with `Generator.set_model_input`); inside the graph the
placeholder positions take the image rows in order and every other position takes its token embedding:

    input_ids (B, S) int64, the placeholder id (= vocab_size, outside the vocabulary) at the N image positions
    attention_mask (B, T) int64, position_ids (B, S) int64, image_embeds (B, N, D) float32,
    past_key_values.{i}.key|value (B, KV, P, head)
      -> logits (B, S, vocab) float32, present.{i}.key|value (B, KV, P + S, head)

Masking to the action ids: genai 0.18 has no logits-mask search option; its guidance (`set_guidance`: JSON
schema, regex, Lark grammar) constrains text through a genai tokenizer, and `get_logits`/`set_logits`
would add a Python round trip and two copies per token. So the mask is baked into
the graph: the decoder computes only the 256 action rows of the output layer (the runtime's action head)
and scatters them into a vocabulary-wide row whose other entries are -1e9. genai's own greedy loop then
picks exactly the masked argmax and feeds real vocabulary ids back, with no Python between tokens.

The folder (written by `export_genai` below, or by `python -m benchmarks decode-speed` when it is given no
--genai folder):

    genai_config.json     model type llama, KV names, heads, head size, layers, context length,
                          eos/pad ids, one intra-op thread, greedy search
    decoder.onnx          the graph above
    vision.onnx           pixel_values (B, 3, H, W) -> image_embeds (B, N, D), same export as the bundle's
    vla_edge_genai.json   placeholder id, image tokens, action ids, and the source weights' sha256

No tokenizer is written: the prompts are token ids from the bundle's manifest, appended with
`Generator.append_tokens`, so genai never tokenizes text.

    export_genai("models/student", "genai/student")
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from export.graphs import DecoderGraph, _quiet_export, export_vision, kv_names
from runtime.atomic_io import replace_folder, sha256_file
from runtime.errors import UserError

GENAI_CONFIG = "genai_config.json"
SIDECAR = "vla_edge_genai.json"
DECODER_FILE = "decoder.onnx"
VISION_FILE = "vision.onnx"
MASKED_LOGIT = -1e9  # what every non-action id scores: never the argmax while action logits are finite


class GenaiDecoderGraph(nn.Module):
    """Token ids with image placeholders + image embeddings -> vocabulary-wide logits masked to actions.

    The k-th placeholder of a call takes image row k, so all N placeholders go in one `append_tokens`.
    """

    def __init__(self, model, placeholder_id: int) -> None:
        super().__init__()
        action_ids = list(model.config.action_ids)
        vocab = model.config.text_config.vocab_size
        self.decoder = DecoderGraph(model, action_ids)  # 256-row action head
        table = model.language_model.get_input_embeddings().weight.detach().clone()  # (vocab, D)
        self.embed = nn.Embedding.from_pretrained(table, freeze=True)
        self.placeholder_id = placeholder_id
        # row_of_id[v] = the action row of id v, or len(action_ids) (the masked column) for any other id
        row_of_id = torch.full((vocab,), len(action_ids), dtype=torch.long)
        row_of_id[torch.tensor(action_ids)] = torch.arange(len(action_ids))
        self.register_buffer("row_of_id", row_of_id, persistent=False)

    def forward(self, input_ids, attention_mask, position_ids, image_embeds, *past):
        is_image = input_ids == self.placeholder_id  # (B, S)
        tokens = self.embed(torch.where(is_image, torch.zeros_like(input_ids), input_ids))  # (B, S, D)
        last = image_embeds.shape[1] - 1
        slot = (is_image.long().cumsum(-1) - 1).clamp(0, last)  # (B, S): which image row goes where
        picked = torch.gather(image_embeds, 1, slot.unsqueeze(-1).expand(-1, -1, image_embeds.shape[2]))
        embeds = torch.where(is_image.unsqueeze(-1), picked, tokens)  # (B, S, D)
        action_logits, *present = self.decoder(embeds, attention_mask, position_ids, *past)  # (B, S, 256)
        floor = torch.full_like(action_logits[..., :1], MASKED_LOGIT)  # (B, S, 1)
        logits = torch.index_select(torch.cat([action_logits, floor], dim=-1), -1, self.row_of_id)  # (B, S, V)
        return (logits, *present)


def export_genai_decoder(model, path: Path, placeholder_id: int) -> None:
    """Write the genai decoder graph (dynamic batch, sequence and past lengths, past 0 included)."""
    t = model.config.text_config
    head_dim = t.hidden_size // t.num_attention_heads
    graph = GenaiDecoderGraph(model, placeholder_id).eval()
    past_names, present_names = kv_names(t.num_hidden_layers)
    n_image = model.image_tokens
    b, s, p = 2, 3, 4  # batch 2, past > 0, so that no dimension is specialized away
    ids = torch.tensor([[5, placeholder_id, placeholder_id], [placeholder_id, 7, 8]])
    mask = torch.ones(b, p + s, dtype=torch.long)
    positions = torch.arange(p, p + s).repeat(b, 1)
    image = torch.randn(b, n_image, t.hidden_size)
    past = [torch.randn(b, t.num_key_value_heads, p, head_dim) for _ in past_names]
    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("seq", min=1, max=t.max_position_embeddings)
    past_len = torch.export.Dim("past", min=0, max=t.max_position_embeddings)
    total = torch.export.Dim("total", min=1, max=2 * t.max_position_embeddings)
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, {0: batch},
               tuple({0: batch, 2: past_len} for _ in past))
    _quiet_export(graph, (ids, mask, positions, image, *past), str(path),
                  input_names=["input_ids", "attention_mask", "position_ids", "image_embeds", *past_names],
                  output_names=["logits", *present_names], dynamic_shapes=dynamic)


def genai_config(model, text_tok, threads: int = 1) -> dict:
    """genai_config.json for the decoder: a llama-type model, KV names of the bundle convention, greedy."""
    from distill.prompts import BOS, EOS, PAD

    t = model.config.text_config
    past_key, past_value = "past_key_values.%d.key", "past_key_values.%d.value"
    context = t.max_position_embeddings
    return {
        "model": {
            "type": "llama",
            "vocab_size": t.vocab_size,
            "context_length": context,
            "bos_token_id": text_tok.token_to_id(BOS),
            "eos_token_id": text_tok.token_to_id(EOS),
            "pad_token_id": text_tok.token_to_id(PAD),
            "decoder": {
                "filename": DECODER_FILE,
                "session_options": {"log_id": "vla-edge-genai", "intra_op_num_threads": threads,
                                    "inter_op_num_threads": 1, "provider_options": []},
                "hidden_size": t.hidden_size,
                "head_size": t.hidden_size // t.num_attention_heads,
                "num_attention_heads": t.num_attention_heads,
                "num_key_value_heads": t.num_key_value_heads,
                "num_hidden_layers": t.num_hidden_layers,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": past_key, "past_value_names": past_value},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": context,
                   "min_length": 0, "top_k": 1, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0,
                   "length_penalty": 1.0, "no_repeat_ngram_size": 0, "diversity_penalty": 0.0,
                   "early_stopping": True, "past_present_share_buffer": False,
                   # a fixed seed: with -1 genai seeds every Generator from std::random_device, which cost
                   # 17 ms per generator on these machines (greedy search never draws from it)
                   "random_seed": 0},
    }


def export_genai(checkpoint: str | os.PathLike, out: str | os.PathLike, threads: int = 1, force: bool = False) -> Path:
    """Write the onnxruntime-genai folder for a vla-edge model folder; returns its path.

    Written beside `out` and renamed into place, so a failed export leaves nothing behind.
    """
    from distill.reference_policy import load_vla_folder

    source, out = Path(checkpoint), Path(out)
    if not (source / "config.json").is_file():
        raise UserError(f"{source} is not a vla-edge model folder (no config.json): pass a folder written by "
                        f"`python -m distill train-teacher` or `distill student`, such as models/student")
    if out.exists() and not force:
        raise UserError(f"{out} already exists: pass force=True (--force) to replace it, or choose another folder")
    torch.set_num_threads(1)
    model, text_tok, _ = load_vla_folder(source)
    model.eval()
    placeholder = model.config.text_config.vocab_size  # outside the vocabulary: never a real token
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-", dir=out.parent) as work:  # gone on any error
        tmp = Path(work) / out.name
        tmp.mkdir()
        export_genai_decoder(model, tmp / DECODER_FILE, placeholder)
        export_vision(model, tmp / VISION_FILE)
        (tmp / GENAI_CONFIG).write_text(json.dumps(genai_config(model, text_tok, threads), indent=1))
        sidecar = {"placeholder_id": placeholder, "image_tokens": model.image_tokens,
                   "action_ids": list(model.config.action_ids), "masked_logit": MASKED_LOGIT,
                   "source": str(source), "source_sha256": sha256_file(source / "model.safetensors"),
                   "vision": VISION_FILE, "decoder": DECODER_FILE}
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1))
        replace_folder(tmp, out)
    return out
