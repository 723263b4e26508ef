"""`python -m benchmarks scaling`: the cost curve, i.e. how the runtime's time per action grows with the
number of image tokens, the instruction's length, the model's width and its depth.

Each point is a VlaModel with random weights (distill/model.py, VlaConfig.from_sizes over the teacher
tokenizer's vocabulary, special ids and action ids), its vision and action-decoder graphs exported to
ONNX with the project's exporter functions (export/graphs.py) and a manifest by export.exporter's
build_manifest, in a temporary folder. Every point is then timed by the runtime (OnnxVla, one thread,
token loop: vision, prefill of the image after the cached instruction, one decoder call per action
token), interleaved across points per frame so machine noise falls on all alike. The instruction's own
prefill (once per episode) is timed separately, on fresh prompts. Random weights cost the same as
trained ones: the decode length is fixed (one token per action dimension).

One knob moves at a time from the base model (the reference teacher's sizes; the smoke model's with
--quick). The instruction-length axis reuses the base model with prompts of that many tokens (real
instruction text). FLOPs per action (distill/flops.py, action rows only, the instruction's prefill left out
as the runtime caches it) over the single-thread matmul rate measured in the same run gives each point's
compute floor (benchmarks/compute_floor.py).

    python -m benchmarks scaling --teacher models/teacher --frames 30
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_OUT, check_model_folder, device_info, load_average, result_suffix, single_thread
from runtime.errors import UserError

AXES = {"image tokens": "image tokens (image px / 16, squared)",
        "instruction length": "instruction tokens (the prompt before the image)",
        "width": "decoder width (the vision tower's scaled alike)",
        "depth": "layers (vision tower and decoder each)"}


@dataclass
class ScalingConfig:
    teacher: str
    out: str = DEFAULT_OUT
    frames: int = 30
    warmup: int = 3
    device: str = "cpu"
    axes: tuple[str, ...] = tuple(AXES)
    quick: bool = False
    seed: int = 0

    def check(self) -> ScalingConfig:
        check_model_folder(self.teacher, "teacher")
        unknown = [a for a in self.axes if a not in AXES]
        if unknown:
            raise UserError(f"--axes: unknown {', '.join(unknown)}; choose from {', '.join(AXES)}")
        if self.frames < 1 or self.warmup < 0:
            raise UserError("--frames must be at least 1 and --warmup at least 0")
        return self

    def command(self) -> str:
        args = ["python", "-m", "benchmarks", "scaling", "--teacher", self.teacher, "--out", self.out,
                "--frames", str(self.frames), "--warmup", str(self.warmup)]
        if tuple(self.axes) != tuple(AXES):
            args += ["--axes", ",".join(a.replace(" ", "-") for a in self.axes)]
        if self.device != "cpu":
            args += ["--device", self.device]
        if self.quick:
            args.append("--quick")
        return shlex.join(args)


def grid(quick: bool) -> tuple[object, dict[str, list[tuple[float, object, int | None]]], int]:
    """(base sizes, {axis: [(value, sizes, prompt tokens or None)]}, the base prompt length)."""
    from distill.model import SMOKE_SIZES, TEACHER_SIZES

    base = SMOKE_SIZES if quick else TEACHER_SIZES
    replace = dataclasses.replace
    if quick:
        images, widths, depths, prompts = (32, 48), (1, 2), (1, 2), (4, 16)
    else:
        images, widths, depths, prompts = (32, 64, 96, 128), (0.5, 1, 2), (2, 4, 8), (4, 8, 16, 32, 64)
    axes = {
        "image tokens": [((s // base.patch_size) ** 2, replace(base, image_size=s), None) for s in images],
        "instruction length": [(p, base, p) for p in prompts],
        "width": [(int(base.text_width * f), replace(base, text_width=int(base.text_width * f),
                                                      vision_width=int(base.vision_width * f)), None) for f in widths],
        "depth": [(d, replace(base, text_layers=d, vision_layers=d), None) for d in depths],
    }
    return base, axes, 10


def build_point_bundle(sizes, teacher: Path, folder: Path, seed: int) -> tuple[Path, object]:
    """A random-weight model of `sizes` over the teacher's tokenizers, as a bundle (vision + action decoder);
    returns the bundle folder and the model's VlaConfig."""
    import torch

    from distill.model import VlaModel, config_for_tokenizer
    from distill.text_tokenizer import load_text_tokenizer
    from distill.train_teacher import ACTION_TOKENIZER_FILE
    from export.exporter import ExportConfig, build_manifest
    from export.graphs import export_decoder, export_vision
    from runtime.action_tokenizer import ActionTokenizer
    from runtime.bundle import MANIFEST

    text_tok = load_text_tokenizer(teacher)
    action_tok = ActionTokenizer.load(teacher / ACTION_TOKENIZER_FILE)
    torch.manual_seed(seed)
    model = VlaModel(config_for_tokenizer(sizes.check(), text_tok, action_tok.table.ids, action_tok.dim)).eval()
    source, bundle = folder / "model", folder / "bundle"
    source.mkdir(parents=True)
    bundle.mkdir()
    model.save_pretrained(source)
    files = {"vision": "vision.onnx", "decoder_action": "decoder_action.onnx", "embed_tokens": "embed_tokens.npy",
             "tokenizer": "tokenizer.json"}
    export_vision(model, bundle / files["vision"])
    export_decoder(model, bundle / files["decoder_action"], action_ids=list(model.config.action_ids))
    table = model.language_model.get_input_embeddings().weight.detach().numpy()
    np.save(bundle / files["embed_tokens"], table, allow_pickle=False)
    shutil.copyfile(teacher / "tokenizer.json", bundle / files["tokenizer"])
    manifest = build_manifest(model, text_tok, action_tok, bundle, files,
                              ExportConfig(str(source), str(bundle), text_mode=False, name=f"random-{sizes}"), source)
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return bundle, model.config


def prompt_ids(teacher: Path, length: int) -> list[int]:
    """`length` token ids of real instruction text, starting with <bos> (as the runtime's prompts do)."""
    from distill.prompts import action_prompt
    from distill.tasks import INSTRUCTIONS
    from distill.teacher_data import encode_prompt
    from distill.text_tokenizer import load_text_tokenizer

    ids = encode_prompt(load_text_tokenizer(teacher), action_prompt(" and ".join(INSTRUCTIONS.values())))
    if length > len(ids):
        raise UserError(f"an instruction of {length} tokens is longer than the text at hand ({len(ids)} tokens)")
    return ids[:length]


def run_scaling(config: ScalingConfig, log=print, progress: bool = True) -> dict:
    config.check()
    single_thread()
    device = device_info(config.device)
    from tqdm import tqdm

    from benchmarks.common import percentiles
    from benchmarks.compute_floor import measure_matmul_rates, model_shapes
    from benchmarks.latency import action_flops, providers_for
    from benchmarks.machine import describe
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla

    started, load_before = time.strftime("%Y-%m-%d %H:%M:%S %Z"), load_average()
    teacher = Path(config.teacher)
    base, axes, base_prompt = grid(config.quick)
    points, engines, configs, exports = [], {}, {}, {}
    rng = np.random.default_rng(config.seed)
    with tempfile.TemporaryDirectory(prefix="vla-scaling-") as tmp:
        todo = [(axis, value, sizes, prompt) for axis in config.axes for value, sizes, prompt in axes[axis]]
        for axis, value, sizes, prompt in tqdm(todo, desc="building models", unit="model", disable=not progress):
            if sizes not in engines:
                start = time.perf_counter()
                folder, configs[sizes] = build_point_bundle(sizes, teacher, Path(tmp) / f"m{len(engines)}", config.seed)
                exports[sizes] = time.perf_counter() - start
                engines[sizes] = OnnxVla(Bundle.load(folder), threads=1, providers=providers_for(config.device),
                                         decode="loop")
            engine = engines[sizes]
            length = prompt or base_prompt
            pixels = engine.preprocess(rng.integers(0, 256, (sizes.image_size, sizes.image_size, 3), dtype=np.uint8))
            points.append({"axis": axis, "value": value, "sizes": sizes, "prompt": prompt_ids(teacher, length),
                           "pixels": pixels, "engine": engine, "config": configs[sizes], "records": []})
        log(f"{len(engines)} models exported; timing {len(points)} points x {config.frames} frames, interleaved")
        for k in range(config.warmup + config.frames):
            first = k % len(points)
            for point in points[first:] + points[:first]:
                start = time.perf_counter()
                _, _, timings = point["engine"]._decode(point["pixels"], point["prompt"])
                if k >= config.warmup:
                    point["records"].append({**timings, "total": time.perf_counter() - start})
        pool = np.array(sorted(set(prompt_ids(teacher, 64)[1:])))  # ids of real instruction words
        for point in points:  # the instruction's own prefill, once per episode: on fresh prompts, never cached
            engine, bos, seen, times = point["engine"], point["prompt"][0], set(), []
            while len(times) < max(2, config.frames // 3):
                prompt = (bos, *(int(i) for i in rng.choice(pool, len(point["prompt"]) - 1)))
                if prompt in seen:
                    continue
                seen.add(prompt)
                start = time.perf_counter()
                engine.prompt_cache(prompt)
                times.append(time.perf_counter() - start)
            point["prompt_prefill"] = times
    shapes = [s for p in points for s in model_shapes(p["config"], len(p["prompt"]))]
    floor = measure_matmul_rates(shapes, quick=config.quick)
    rate = floor["gflops"] * 1e9
    rows = []
    for point in points:
        sizes = point["sizes"]
        flops = action_flops(point["config"], len(point["prompt"]))  # the instruction's KV cached, as timed
        stats = {stage: percentiles([r[stage] for r in point["records"]]) for stage in ("vision", "prefill", "decode",
                                                                                         "total")}
        stats["prompt_prefill"] = percentiles(point["prompt_prefill"])
        floor_ms = 1e3 * flops / rate
        rows.append({"axis": point["axis"], "value": point["value"], "image_tokens": sizes.image_tokens,
                     "image_size": sizes.image_size, "prompt_tokens": len(point["prompt"]),
                     "vision_width": sizes.vision_width, "text_width": sizes.text_width,
                     "vision_layers": sizes.vision_layers, "text_layers": sizes.text_layers,
                     "parameters": int(point["engine"].bundle.manifest["model"]["parameters"]),
                     "flops_per_action": int(flops),
                     **{f"{stage}_{q}_ms": s[f"{q}_ms"] for stage, s in stats.items() for q in ("p50", "p95")},
                     "floor_ms": floor_ms, "measured_over_floor": stats["total"]["p50_ms"] / floor_ms,
                     "export_s": exports[sizes]})
    return {"benchmark": "scaling", "command": config.command(), "started": started, "device": device,
            "machine": {**describe(), "load_average_before": load_before, "load_average_after": load_average()},
            "threads": {"onnxruntime_intra_op": 1}, "frames": config.frames, "warmup_frames": config.warmup,
            "base": asdict(base), "base_prompt_tokens": base_prompt, "axes": {a: AXES[a] for a in config.axes},
            "decode": "loop (vision, image prefill after the cached instruction, one decoder call per action token)",
            "compute_floor": floor, "config": asdict(config), "points": rows}


COLUMNS = ["axis", "value", "image_tokens", "image_size", "prompt_tokens", "vision_width", "text_width",
           "vision_layers", "text_layers", "parameters", "flops_per_action", "total_p50_ms", "total_p95_ms",
           "vision_p50_ms", "prefill_p50_ms", "decode_p50_ms", "prompt_prefill_p50_ms", "floor_ms",
           "measured_over_floor", "export_s"]


def write_outputs(result: dict, out: str | Path) -> list[Path]:
    from benchmarks.common import write_csv_atomic
    from benchmarks.plots import plot_scaling
    from runtime.atomic_io import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = result_suffix(result["device"]["kind"])
    write_json_atomic(out / f"scaling{suffix}.json", result)
    return [out / f"scaling{suffix}.json", write_csv_atomic(out / f"scaling{suffix}.csv", result["points"], COLUMNS),
            plot_scaling(result, out / f"scaling{suffix}.png")]
