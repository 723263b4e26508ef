"""Decode speed: one action, end to end from camera frame to de-tokenized action, on ONE CPU thread, for
every way vla-edge can run the same model, timed side by side in one process:

    generate        transformers' generate() with a logits processor masking to the action ids (PyTorch)
    torch           the PyTorch greedy masked loop with a KV cache (the reference every path must equal)
    onnx:<bundle>   the vla-edge runtime (OnnxVla) on each bundle passed (fp32, int8, ...): the act graph
    onnx-loop:<bundle>   the runtime's token loop (one decoder call per token), 256-row action head
    onnx-vocab:<bundle>  the same loop on the full-vocabulary decoder, logits masked to the action ids:
                    against onnx-loop, the saving of the action-mode head
    genai           onnxruntime-genai on the same model (a fresh Generator per frame: its usual use)
    genai-rewind    onnxruntime-genai keeping the prompt's KV cache per instruction (rewind_to), as the
                    runtime does

Frames are interleaved: every path decodes frame 1 (in an order rotated per frame), then frame 2, ...,
so machine noise falls on all paths alike; warm-up frames are not timed. Each path's action tokens are
compared with the torch loop's on the same frames: a path that decodes differently is reported, and the
command exits 1 when an exact (fp32) path disagrees. Frames are held-out dataset frames with --dataset
(the export parity set), else seeded random frames.

    python -m benchmarks decode-speed --model models/student --bundle bundles/student-fp32 \\
        --bundle bundles/student-int8 --dataset data/demos_3v --frames 200 --out benchmarks/results/decode_speed.json
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.latency_stats import latency_summary, markdown_table, speedup
from runtime.errors import UserError

ALL_PATHS = ("generate", "torch", "onnx", "onnx-loop", "onnx-vocab", "genai", "genai-rewind")
# bundle paths: name -> OnnxVla options
ONNX_PATHS = {"onnx": {}, "onnx-loop": {"decode": "loop"}, "onnx-vocab": {"decode": "loop", "head": "vocabulary"}}
REFERENCE = "torch"


@dataclass
class DecodeSpeedConfig:
    model: str
    bundles: list[str] = field(default_factory=list)
    genai: str | None = None  # an export/genai.py folder; exported to a temporary folder when absent
    dataset: str | None = None
    frames: int = 200
    warmup: int = 5
    paths: tuple[str, ...] = ALL_PATHS
    out: str | None = None
    seed: int = 0
    bootstrap: int = 2000

    def check(self) -> "DecodeSpeedConfig":
        if not Path(self.model, "config.json").is_file():
            raise UserError(f"--model {self.model} is not a model folder (no config.json): pass the folder the "
                            f"bundles were exported from, such as models/student")
        unknown = [p for p in self.paths if p not in ALL_PATHS]
        if unknown:
            raise UserError(f"--paths: unknown {', '.join(unknown)}; choose from {', '.join(ALL_PATHS)}")
        if REFERENCE not in self.paths:
            raise UserError(f"--paths must include '{REFERENCE}': it is the reference every path is checked against")
        needs_bundle = any(p in ONNX_PATHS or p.startswith("genai") for p in self.paths)
        if needs_bundle and not self.bundles:
            raise UserError("the onnx and genai paths need a bundle of this model: pass --bundle bundles/student-fp32 "
                            "(export one with `python -m export MODEL --out BUNDLE`), or --paths generate,torch")
        if self.frames < 1 or self.warmup < 0:
            raise UserError("--frames must be at least 1 and --warmup at least 0")
        if self.dataset and not Path(self.dataset).is_dir():
            raise UserError(f"--dataset {self.dataset} does not exist: pass a recording, or leave it out for random frames")
        return self

    def command(self) -> str:
        """The command line that reproduces this run."""
        args = ["python", "-m", "benchmarks", "decode-speed", "--model", self.model]
        for bundle in self.bundles:
            args += ["--bundle", bundle]
        for flag, value in (("--genai", self.genai), ("--dataset", self.dataset), ("--out", self.out)):
            if value:
                args += [flag, value]
        args += ["--frames", str(self.frames), "--warmup", str(self.warmup), "--seed", str(self.seed)]
        if tuple(self.paths) != ALL_PATHS:
            args += ["--paths", ",".join(self.paths)]
        return shlex.join(args)


@dataclass
class TimedPath:
    """One way of decoding: a `Policy` (reset/act) plus what the table says about it."""

    name: str
    policy: object
    precision: str
    exact: bool  # expected to equal the reference token for token (fp32 math)


def single_thread_torch() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran: intra-op is what matters here
        pass


def build_paths(config: DecodeSpeedConfig, genai_folder: Path | None) -> list[TimedPath]:
    """The policies to time, in table order, each loaded for one CPU thread."""
    from distill.reference_policy import TorchVlaPolicy, load_vla_folder
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxPolicy, OnnxVla

    model, text_tok, action_tok = load_vla_folder(config.model)
    paths = []
    if "generate" in config.paths:
        paths.append(TimedPath("generate", TorchVlaPolicy(model, text_tok, action_tok, use_generate=True), "fp32", True))
    paths.append(TimedPath(REFERENCE, TorchVlaPolicy(model, text_tok, action_tok), "fp32", True))
    bundles = [Bundle.load(b) for b in config.bundles]
    for kind, options in ONNX_PATHS.items():
        if kind not in config.paths:
            continue
        for bundle in bundles:
            precision = bundle.manifest["precision"]
            name = f"{kind}:{bundle.root.name}"
            if any(p.name == name for p in paths):  # two bundles in folders of the same name
                name = f"{kind}:{bundle.root}"
            engine = OnnxVla(bundle, threads=1, **options)
            paths.append(TimedPath(name, OnnxPolicy(engine), precision, precision == "fp32"))
    if genai_folder is not None:
        from benchmarks.genai_vla import GenaiVla

        spec = next((b for b in bundles if b.manifest["precision"] == "fp32"), bundles[0])
        for name, reuse in (("genai", False), ("genai-rewind", True)):
            if name in config.paths:
                paths.append(TimedPath(name, OnnxPolicy(GenaiVla(genai_folder, spec, reuse_prompt=reuse, threads=1)),
                                       "fp32", True))
    return paths


def benchmark_frames(config: DecodeSpeedConfig, model) -> tuple[np.ndarray, list[str], str]:
    """(F, H, W, 3) uint8 frames, F instructions, and a description of where they came from."""
    from export.exporter import ExportConfig, parity_frames

    frames, instructions = parity_frames(ExportConfig(config.model, "", dataset=config.dataset), model, config.frames)
    source = (f"held-out frames of {config.dataset} (the export parity set)" if config.dataset
              else "random uint8 frames, seed 0")
    if len(frames) < config.frames:
        source += f"; {len(frames)} of the {config.frames} requested: the recording holds no more held-out frames"
    return frames, instructions, source


def run_interleaved(paths: list[TimedPath], frames: np.ndarray, instructions: list[str], warmup: int
                    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, list[float]]]]:
    """(P, F) seconds per action, (P, F, D) action tokens, and per-path stage timings; warm-up untimed."""
    from runtime.policy import Observation

    observations = [Observation(image=f, instruction=i) for f, i in zip(frames, instructions)]
    for k in range(warmup):
        for path in paths:
            path.policy.act(observations[k % len(observations)])
    for path in paths:
        path.policy.reset()
    times = np.zeros((len(paths), len(observations)))
    tokens: list[list[np.ndarray]] = [[] for _ in paths]
    stages: list[dict[str, list[float]]] = [{} for _ in paths]
    for f, observation in enumerate(observations):
        first = f % len(paths)  # rotate who goes first, so no path always runs on a cold cache
        for p in list(range(first, len(paths))) + list(range(first)):
            start = time.perf_counter()
            action = paths[p].policy.act(observation)
            times[p, f] = time.perf_counter() - start
            tokens[p].append(np.asarray(action.tokens, np.int64))
            for stage, seconds in action.timings.items():
                stages[p].setdefault(stage, []).append(seconds)
    return times, np.array([np.stack(t) for t in tokens]), stages


def summarize(paths: list[TimedPath], times: np.ndarray, tokens: np.ndarray, stages: list[dict],
              seed: int, reps: int) -> tuple[dict[str, dict], str | None]:
    """Per-path statistics, agreement with the reference and ratios; also the genai baseline's name."""
    names = [p.name for p in paths]
    reference = tokens[names.index(REFERENCE)]  # (F, D)
    genai = [n for n in names if n.startswith("genai")]
    best_genai = min(genai, key=lambda n: np.median(times[names.index(n)])) if genai else None
    out = {}
    for p, path in enumerate(paths):
        same_frame = np.all(tokens[p] == reference, axis=1)  # (F,)
        row = {"precision": path.precision, "exact": path.exact, **latency_summary(times[p]),
               "agreement": float(same_frame.mean()), "token_agreement": float(np.mean(tokens[p] == reference)),
               "stages_median_ms": {k: float(np.median(v) * 1e3) for k, v in stages[p].items()},
               "times_ms": [round(float(t) * 1e3, 4) for t in times[p]]}
        for key, base in (("vs_generate", "generate"), ("vs_genai", best_genai)):
            if base in names and base != path.name:
                row[key] = speedup(times[names.index(base)], times[p], np.random.default_rng(seed), reps)
        out[path.name] = row
    return out, best_genai


def run_decode_speed(config: DecodeSpeedConfig) -> dict:
    """Run the benchmark; returns the result that --out holds."""
    config.check()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    single_thread_torch()
    from benchmarks.machine import describe

    with tempfile.TemporaryDirectory(prefix="vla-genai-") as tmp:
        genai_folder = None
        if any(p.startswith("genai") for p in config.paths):
            from benchmarks.genai_vla import import_genai

            try:
                import_genai()  # fail early, with the install line, before anything slow
            except UserError as err:
                raise UserError(f"{err}; or leave genai out with --paths generate,torch,onnx") from None
            genai_folder = Path(config.genai) if config.genai else _export_genai(config.model, Path(tmp) / "genai")
        paths = build_paths(config, genai_folder)
        frames, instructions, source = benchmark_frames(config, _model_of(paths))
        times, tokens, stages = run_interleaved(paths, frames, instructions, config.warmup)
    rows, best_genai = summarize(paths, times, tokens, stages, config.seed, config.bootstrap)
    return {"benchmark": "decode_speed", "command": config.command(), "machine": describe(),
            "threads": {"torch": 1, "onnxruntime_intra_op": 1, "genai_intra_op": 1},
            "frames": len(frames), "warmup_frames": config.warmup, "frame_source": source,
            "reference": REFERENCE, "genai_baseline": best_genai, "config": asdict(config), "paths": rows,
            "wrong_paths": [n for n, r in rows.items() if r["exact"] and r["agreement"] < 1.0]}


def _model_of(paths: list[TimedPath]):
    return next(p.policy.model for p in paths if p.name == REFERENCE)


def _export_genai(model: str, out: Path) -> Path:
    from export.genai import export_genai

    print(f"exporting the onnxruntime-genai folder of {model} (pass --genai FOLDER to reuse one)", flush=True)
    return export_genai(model, out)


# -- command line -------------------------------------------------------------------------------------
EXAMPLE = ("python -m benchmarks decode-speed --model models/student --bundle bundles/student-fp32 "
           "--dataset data/demos_3v --frames 200 --out benchmarks/results/decode_speed.json")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="the vla-edge model folder the bundles were exported from")
    parser.add_argument("--bundle", action="append", default=[], dest="bundles",
                        help="a bundle of that model (repeat for fp32, int8, ...); the first fp32 one also "
                             "supplies genai's preprocessing and prompts")
    parser.add_argument("--genai", help="an onnxruntime-genai folder from export/genai.py (default: exported "
                                        "from --model into a temporary folder)")
    parser.add_argument("--dataset", help="a recording: time held-out frames of it (default: seeded random frames)")
    parser.add_argument("--frames", type=int, default=200, help="timed frames (default 200)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up frames per path (default 5)")
    parser.add_argument("--paths", default=",".join(ALL_PATHS),
                        help=f"comma-separated subset of {','.join(ALL_PATHS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    parser.add_argument("--out", help="write the result as JSON here (atomically)")


def cmd_decode_speed(args) -> int:
    from runtime.atomic_io import write_json_atomic

    config = DecodeSpeedConfig(model=args.model, bundles=list(args.bundles), genai=args.genai, dataset=args.dataset,
                               frames=args.frames, warmup=args.warmup, out=args.out, seed=args.seed,
                               paths=tuple(p.strip() for p in args.paths.split(",") if p.strip()))
    result = run_decode_speed(config)
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config.out, result)
    machine = result["machine"]
    print(f"decode speed, one action end to end, 1 thread; {result['frames']} frames ({result['frame_source']}); "
          f"{machine['cpu']}, {machine['usable_cpus']} usable CPUs")
    print(markdown_table(result["paths"], result["genai_baseline"]))
    print(f"\ncommand: {result['command']}")
    if result["wrong_paths"]:
        print(f"error: {', '.join(result['wrong_paths'])} decoded other action tokens than the {REFERENCE} reference "
              f"on some frames: their timings are of a wrong decoder")
        return 1
    return 0
