"""Checkpoint -> bundle: ONNX graphs, embedding table, tokenizer and a manifest that says everything.

Written into a temporary folder beside the output and renamed into place only once the parity check
has passed, so a failed export leaves nothing behind. See export/BUNDLE.md for the layout.

    python -m export models/student --out bundles/student-fp32
    python -m export verify bundles/student-fp32 --dataset data/demos
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill.decoding import allowed_mask, greedy_decode
from distill.hf_teacher import is_vla_edge_folder
from distill.model import count_parameters
from distill.prompts import ACTION_PREFIX, PROMPT_LAYOUT, QUESTION_PREFIX, action_prompt, question_prompt
from distill.reference_policy import load_vla_folder
from distill.tasks import INSTRUCTIONS
from distill.teacher_data import encode_prompt
from distill.vqa import all_question_texts
from export.graphs import OPSET, export_act, export_decoder, export_vision, kv_names
from export.quantize import PRECISIONS, calibration_feeds, quantize_graph
from runtime.atomic_io import replace_folder
from runtime.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST, Bundle, sha256_file
from runtime.errors import UserError
from runtime.onnx_engine import OnnxVla

PARITY_MAX_LOGIT_DIFF = 1e-4


@dataclass
class ExportConfig:
    checkpoint: str
    out: str
    precision: str = "fp32"
    force: bool = False
    text_mode: bool = True  # also export the full-vocabulary decoder (question answering)
    parity_frames: int = 200
    dataset: str | None = None  # held-out frames for parity (random frames when absent)
    calibration_frames: int = 64  # int8-static: training frames whose activations set the scales
    name: str | None = None
    closed_loop_seeds: int = 0  # episodes per task run by the finished bundle in the simulator (0: none)
    eval_workers: int = 2  # processes for that closed loop (one thread each)

    def check(self) -> "ExportConfig":
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision} is not supported: choose one of {', '.join(PRECISIONS)}")
        if not Path(self.checkpoint).is_dir():
            raise UserError(f"checkpoint folder {self.checkpoint} does not exist: pass a model folder such as models/student")
        if not is_vla_edge_folder(self.checkpoint):
            raise UserError(f"{self.checkpoint} is not a vla-edge VLA checkpoint (config.json model_type 'vla_edge'): "
                            f"export takes folders written by `python -m distill train-teacher` or `distill student`")
        if self.precision == "int8-static" and not self.dataset:
            raise UserError("--precision int8-static calibrates on dataset frames: pass --dataset (the recording "
                            "the model was trained on)")
        if self.closed_loop_seeds < 0 or self.eval_workers < 1:
            raise UserError("--closed-loop-seeds must be >= 0 and --eval-workers >= 1")
        if Path(self.out).exists() and not self.force:
            raise UserError(f"{self.out} already exists: pass --force to replace it, or choose another --out")
        return self


def _file_entry(folder: Path, name: str) -> dict:
    path = folder / name
    return {"path": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _io_spec(path: Path) -> dict:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dtypes = {1: "float32", 7: "int64", 10: "float16", 6: "int32"}

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "inputs": [{"name": v.name, "dtype": dtypes.get(v.type.tensor_type.elem_type, "?"), "shape": dims(v)} for v in graph.input],
        "outputs": [{"name": v.name, "dtype": dtypes.get(v.type.tensor_type.elem_type, "?"), "shape": dims(v)} for v in graph.output],
    }


def build_manifest(model, text_tok, action_tok, folder: Path, files: dict[str, str], config: ExportConfig,
                   source: Path) -> dict:
    t = model.config.text_config
    head_size = t.hidden_size // t.num_attention_heads
    past, present = kv_names(t.num_hidden_layers)
    graphs = {"vision": {"file": "vision", **_io_spec(folder / files["vision"])},
              "decoder_action": {"file": "decoder_action", "output_rows": "action.token_ids",
                                 **_io_spec(folder / files["decoder_action"])}}
    if "act" in files:
        graphs["act"] = {"file": "act", "output_rows": "action.token_ids", "batch": 1,
                         "feeds": "pixel_values and the instruction's KV cache (decoder_action run on the prompt)",
                         **_io_spec(folder / files["act"])}
    if "decoder_text" in files:
        graphs["decoder_text"] = {"file": "decoder_text", "output_rows": "vocabulary", **_io_spec(folder / files["decoder_text"])}
    action_prompts = {text: encode_prompt(text_tok, action_prompt(text)) for text in INSTRUCTIONS.values()}
    question_prompts = {q: encode_prompt(text_tok, question_prompt(q)) for q in all_question_texts()}
    low, high = list(map(float, action_tok.low)), list(map(float, action_tok.high))
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "model": {"name": config.name or source.name, "parameters": count_parameters(model),
                  "source": str(source), "source_sha256": sha256_file(source / "model.safetensors"),
                  "architecture": "siglip-vision + linear projector + llama decoder (inputs_embeds)"},
        "precision": config.precision,
        "opset": OPSET,
        "files": {key: _file_entry(folder, name) for key, name in files.items()},
        "graphs": graphs,
        "decoder": {"layers": t.num_hidden_layers, "heads": t.num_attention_heads, "kv_heads": t.num_key_value_heads,
                    "head_size": head_size, "hidden_size": t.hidden_size, "vocab_size": t.vocab_size,
                    "max_positions": t.max_position_embeddings, "kv_dtype": "float32",
                    "past_names": past, "present_names": present,
                    "kv_shape": ["batch", t.num_key_value_heads, "past", head_size]},
        "embedding": {"file": "embed_tokens", "shape": [t.vocab_size, t.hidden_size], "dtype": "float32"},
        "tokenizer": {"file": "tokenizer", "kind": "huggingface-tokenizers", "bos_id": t.bos_token_id,
                      "eos_id": t.eos_token_id, "pad_id": t.pad_token_id},
        "prompt": {
            "layout": PROMPT_LAYOUT,
            "order": "[prompt token embeddings] [image embeddings] [action tokens]",
            "action_template": ACTION_PREFIX + "{instruction}",
            "question_template": QUESTION_PREFIX + "{question}",
            "prepend_bos": True,
            "lowercase": True,
            "image_tokens": model.image_tokens,
            "prompts": action_prompts,
            "questions": question_prompts,
            # plan-then-act (RT-2's chain of thought): the runtime feeds plan_marker_ids after the image, the
            # model writes its plan, then action_marker_ids, then the action tokens
            "plan_marker_ids": text_tok.encode("plan:").ids,
            "action_marker_ids": text_tok.encode(" action:").ids,
        },
        "image": {"height": model.frame_shape[0], "width": model.frame_shape[1], "views": model.config.views,
                  "channel_order": "RGB", "layout": "NCHW",
                  "dtype": "float32", "scale": 1 / 255, "mean": list(model.config.image_mean),
                  "std": list(model.config.image_std), "resize": "cv2.INTER_AREA",
                  "camera": getattr(model.config, "camera", None),
                  "formula": "((pixels * scale) - mean) / std per channel"},
        "action": {"names": list(action_tok.names), "units": list(action_tok.units or [""] * action_tok.dim),
                   "low": low, "high": high, "n_bins": action_tok.n_bins, "token_ids": list(action_tok.table.ids),
                   "vocab_size": action_tok.table.vocab_size, "terminate_index": action_tok.dim - 1,
                   "normalization": "x_norm = 2 (x - low) / (high - low) - 1, clipped to [-1, 1]",
                   "detokenize": "bin k -> x_norm = -1 + (k + 0.5) * 2 / n_bins -> x",
                   "decoding": "greedy, one token per dimension, argmax over token_ids only"},
        "safety": {"low": low, "high": high, "max_delta": [0.5 * (h - lo) for lo, h in zip(low, high)],
                   "note": "defaults: the training range per dimension; tighten them for your arm"},
        "metrics": {},
    }


def calibration_frames(config: ExportConfig, model, count: int) -> tuple[np.ndarray, list[str]]:
    """(count, H, W, 3) uint8 frames for int8 calibration: every 5th frame of the dataset's lowest-seed
    (training) episodes, tasks in turn, so calibration never sees the held-out parity frames."""
    import cv2

    from distill.dataset import Dataset

    height, width = model.frame_shape
    ds = Dataset.open(config.dataset)
    by_task: dict[str, list] = {}
    for info in sorted(ds.episodes, key=lambda e: e.seed):
        by_task.setdefault(info.task, []).append(info)
    frames, instructions = [], []
    for k in range(max(len(v) for v in by_task.values())):
        for infos in by_task.values():
            if k < len(infos) and len(frames) < count:
                ep = ds.load_episode(infos[k].index)
                for t in range(0, len(ep), 5)[: max(1, count // (2 * len(by_task)))]:
                    frames.append(cv2.resize(ep.frames[t], (width, height), interpolation=cv2.INTER_AREA))
                    instructions.append(infos[k].instruction)
    return np.stack(frames[:count]), instructions[:count]


def parity_frames(config: ExportConfig, model, count: int) -> tuple[np.ndarray, list[str]]:
    """(count, H, W, 3) uint8 frames and instructions: held-out dataset frames, else seeded noise."""
    height, width = model.frame_shape
    rng = np.random.default_rng(0)
    if config.dataset:
        from distill.dataset import Dataset

        import cv2

        ds = Dataset.open(config.dataset)
        frames, instructions = [], []
        for info in reversed(ds.episodes):  # the highest seeds: held out from training
            ep = ds.load_episode(info.index)
            for t in range(0, len(ep), 3):
                frames.append(cv2.resize(ep.frames[t], (width, height), interpolation=cv2.INTER_AREA))
                instructions.append(info.instruction)
            if len(frames) >= count:
                break
        return np.stack(frames[:count]), instructions[:count]
    instructions = list(INSTRUCTIONS.values())
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8), [instructions[i % 8] for i in range(count)]


@torch.no_grad()
def parity_check(model, text_tok, bundle: Bundle, frames: np.ndarray, instructions: list[str]) -> dict:
    """ONNX against PyTorch on the same frames: max |logit difference| over the action ids, token equality.
    Every decode mode of the bundle is checked (the one-call act graph and the per-token loop); the
    figures are the worst over the modes."""
    modes = ["act", "loop"] if "act" in bundle.manifest["graphs"] else ["loop"]
    engines = [OnnxVla(bundle, decode=mode) for mode in modes]
    action_ids = model.action_ids
    mask = allowed_mask(model.config.text_config.vocab_size, allowed=action_ids)
    worst, same = 0.0, 0
    for frame, instruction in zip(frames, instructions):
        prompt = torch.tensor([encode_prompt(text_tok, action_prompt(instruction))])
        ref_tokens, ref_logits = greedy_decode(model, model.preprocess(torch.from_numpy(frame)[None]), prompt,
                                               torch.ones_like(prompt), engines[0].steps, mask, return_logits=True)
        all_same = True
        for engine in engines:
            tokens, logits = engine.decode_actions(frame, instruction)
            worst = max(worst, float(np.abs(logits - ref_logits[0][:, action_ids].numpy()).max()))
            all_same &= bool(np.array_equal(tokens, ref_tokens[0].numpy()))
        same += int(all_same)
    return {"frames": len(frames), "max_abs_logit_diff": worst, "identical_tokens": same / len(frames),
            "decode_modes": modes}


def compare_with(bundle: Bundle, frames: np.ndarray, instructions: list[str],
                 reference: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """A quantized bundle against fp32 outputs on the same frames: token agreement, bin error, logit gap."""
    engine = OnnxVla(bundle)
    ids = list(bundle.manifest["action"]["token_ids"])
    agree, bin_error, worst = [], [], 0.0
    for frame, instruction, (ref_tokens, ref_logits) in zip(frames, instructions, reference):
        tokens, logits = engine.decode_actions(frame, instruction)
        agree.append(float(np.mean(tokens == ref_tokens)))
        bin_error.append(float(np.mean(np.abs(np.array([ids.index(t) for t in tokens]) -
                                              np.array([ids.index(t) for t in ref_tokens])))))
        worst = max(worst, float(np.abs(logits - ref_logits).max()))
    return {"frames": len(frames), "token_agreement": float(np.mean(agree)), "mean_bin_error": float(np.mean(bin_error)),
            "max_abs_logit_diff": worst}


def closed_loop_metrics(folder: Path, manifest: dict, config: ExportConfig, progress: bool = True) -> dict:
    """Closed-loop success of the bundle in `folder` on the unseen evaluation seeds (the number that matters
    for a precision), on the dataset's tasks (or the default set) with the camera and size it was trained on."""
    from distill.dataset import Dataset
    from distill.evaluate import EvalConfig, evaluate_in_workers

    tasks = sorted(Dataset.open(config.dataset).tasks) if config.dataset else "default"
    image = manifest["image"]
    eval_config = EvalConfig(tasks=tasks, seeds_per_task=config.closed_loop_seeds, image_size=image["height"],
                             camera=image["camera"])
    report = evaluate_in_workers(str(folder), eval_config, config.eval_workers, progress=progress)
    return {"config": report["config"], "tasks": report["tasks"]}


def export_bundle(config: ExportConfig, progress: bool = True) -> dict:
    """Export, check parity, and move the bundle into place; returns the manifest."""
    config.check()
    torch.set_num_threads(1)
    source = Path(config.checkpoint)
    model, text_tok, action_tok = load_vla_folder(source)
    model.eval()
    out = Path(config.out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        start = time.perf_counter()
        files = {"vision": "vision.onnx", "decoder_action": "decoder_action.onnx",
                 "embed_tokens": "embed_tokens.npy", "tokenizer": "tokenizer.json"}
        export_vision(model, tmp / files["vision"])
        export_decoder(model, tmp / files["decoder_action"], action_ids=list(model.config.action_ids))
        files["act"] = "act.onnx"
        export_act(model, tmp / files["act"], action_dim=len(action_tok.names))
        if config.text_mode:
            files["decoder_text"] = "decoder_text.onnx"
            export_decoder(model, tmp / files["decoder_text"])
        table = model.language_model.get_input_embeddings().weight.detach().numpy()  # (vocab, hidden)
        np.save(tmp / files["embed_tokens"], table, allow_pickle=False)
        shutil.copyfile(source / "tokenizer.json", tmp / files["tokenizer"])
        manifest = build_manifest(model, text_tok, action_tok, tmp, files, config, source)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        frames, instructions = parity_frames(config, model, config.parity_frames)
        parity = parity_check(model, text_tok, Bundle.load(tmp), frames, instructions)
        if parity["max_abs_logit_diff"] > PARITY_MAX_LOGIT_DIFF or parity["identical_tokens"] < 1.0:
            raise UserError(
                f"parity check failed: ONNX differs from PyTorch by {parity['max_abs_logit_diff']:.2e} in logits "
                f"(limit {PARITY_MAX_LOGIT_DIFF:.0e}), identical tokens on {parity['identical_tokens']:.1%} of "
                f"{parity['frames']} frames; nothing was written"
            )
        manifest["metrics"]["parity_fp32"] = parity
        if config.precision != "fp32":
            reference = [OnnxVla(Bundle.load(tmp)).decode_actions(f, i) for f, i in zip(frames, instructions)]
            feeds: dict[str, list[dict]] = {}
            if config.precision == "int8-static":
                calib_frames, calib_instructions = calibration_frames(config, model, config.calibration_frames)
                feeds = calibration_feeds(OnnxVla(Bundle.load(tmp)), calib_frames, calib_instructions)
                manifest["quantization"] = {"method": "static QDQ, per-channel int8 weights, uint8 activations",
                                            "calibration_frames": len(calib_frames),
                                            "calibration_source": "training episodes (lowest seeds) of the dataset"}
            for key, name in files.items():
                if name.endswith(".onnx"):
                    quantize_graph(tmp / name, config.precision,
                                   calibration=feeds.get(key if key in ("vision", "act") else "decoder"))
            manifest["files"] = {key: _file_entry(tmp, name) for key, name in files.items()}
            manifest["precision"] = config.precision
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            manifest["metrics"][f"{config.precision}_vs_fp32"] = compare_with(Bundle.load(tmp), frames, instructions,
                                                                              reference)
        if config.closed_loop_seeds:  # the finished bundle drives the simulator before it is moved into place
            manifest["metrics"]["closed_loop"] = closed_loop_metrics(tmp, manifest, config, progress)
        manifest["metrics"]["export_seconds"] = round(time.perf_counter() - start, 1)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
