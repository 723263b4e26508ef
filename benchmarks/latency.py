"""`python -m benchmarks latency`: one action end to end, camera frame to the arm controller's ACK, for
every way vla-edge can run, timed side by side in one process on the same frames and instructions.

Paths (rows of the table):

    student fp32 / fp16 / int8   the on-robot runtime (OnnxVla, one CPU thread) on each bundle
    student tensorrt             TensorRT where it exists; a "not available" row elsewhere
    student generate()           PyTorch, transformers' generate() with a logits processor masking to the action ids
    student genai, genai-rewind  onnxruntime-genai (a fresh Generator per frame; one per instruction, rewound)
    teacher fp32                 the teacher on the robot (the runtime, its fp32 bundle)
    teacher cloud <profile>      the teacher served by `python -m runtime serve` (a child process), reached by a
                                 CloudPolicy through a `python -m runtime netem-proxy` child per network profile

Every action then goes through the bundle's safety envelope and over a serial link at --baud to the
controller emulator (`python -m firmware_bridge emulate --pty --pace`, a child process whose UART
wire time is emulated), and is timed until its ACK: that is the end of one control step.

Interleaving: frame 1 through every path (in an order rotated per frame), then frame 2, ...; machine
noise falls on all paths alike. Warm-up frames (one per instruction, plus --warmup) are not timed.
Per path and stage: p50, p95, p99 and max; end to end, achieved control rate 1 / end-to-end at p50 and
p99; parameters, FLOPs per action and measured / compute floor (benchmarks/compute_floor.py).

    python -m benchmarks latency --student models/student --teacher models/teacher --frames 200
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import (DEFAULT_BUNDLES, DEFAULT_OUT, check_model_folder, device_info, load_average, percentiles,
                               result_suffix, single_thread)
from runtime.errors import UserError

DEFAULT_PROFILES = ("lan", "wifi", "lte", "cloud")
# Stages in table order. "model" is PyTorch's whole forward pass; "server" the cloud server's own time
# (its model stages are listed too); "inference" is the Policy.act() call; "end_to_end" adds safety and serial.
STAGES = ("preprocess", "encode", "vision", "prefill", "decode", "act", "model", "server", "network",
          "detokenize+safety", "serial", "inference", "end_to_end")
MODEL_STAGES = ("preprocess", "vision", "prefill", "decode", "act", "model")
HAND_XYZ = np.array([0.0, 0.6, 0.15])  # metres: a hand inside the default workspace box, for the safety check


@dataclass
class LatencyConfig:
    student: str
    teacher: str
    bundles_dir: str = DEFAULT_BUNDLES
    out: str = DEFAULT_OUT
    frames: int = 200
    warmup: int = 5
    profiles: list[str] = field(default_factory=lambda: list(DEFAULT_PROFILES))
    dataset: str | None = None
    baud: int = 1_000_000
    serial: bool = True
    decode: str = "auto"
    device: str = "cpu"
    cloud_timeout_s: float = 5.0
    parity_frames: int = 50
    full_export: bool = False
    quick: bool = False
    seed: int = 0

    def check(self) -> LatencyConfig:
        from runtime.net_profiles import get_profiles

        check_model_folder(self.student, "student")
        check_model_folder(self.teacher, "teacher")
        if self.profiles:
            get_profiles(",".join(self.profiles))
        if self.frames < 1 or self.warmup < 0:
            raise UserError("--frames must be at least 1 and --warmup at least 0")
        if self.baud < 300:
            raise UserError(f"--baud {self.baud} is too low: use 115200 or 1000000")
        if self.decode not in ("auto", "act", "loop"):
            raise UserError(f"--decode {self.decode}: choose auto, act or loop")
        if self.dataset and not Path(self.dataset, "manifest.json").is_file():
            raise UserError(f"--dataset {self.dataset} is not a recording: make one with `python -m distill record "
                            f"--out {self.dataset}`, or leave --dataset out for seeded random frames")
        if not 0 < self.cloud_timeout_s <= 60:
            raise UserError("--cloud-timeout-s must be in (0, 60]")
        return self

    def command(self) -> str:
        args = ["python", "-m", "benchmarks", "latency", "--student", self.student, "--teacher", self.teacher,
                "--bundles-dir", self.bundles_dir, "--out", self.out, "--frames", str(self.frames),
                "--warmup", str(self.warmup), "--profiles", ",".join(self.profiles) or "none"]
        if self.dataset:
            args += ["--dataset", self.dataset]
        if not self.serial:
            args.append("--no-serial")
        elif self.baud != 1_000_000:
            args += ["--baud", str(self.baud)]
        for flag, value, default in (("--decode", self.decode, "auto"), ("--device", self.device, "cpu")):
            if value != default:
                args += [flag, value]
        if self.full_export:
            args.append("--full-export")
        if self.quick:
            args.append("--quick")
        return shlex.join(args)


@dataclass
class BenchPath:
    """One row of the table: a `Policy` and what the table says about it."""

    key: str  # short id: student-int8, teacher-cloud-lte, ...
    name: str  # what the table shows
    model: str  # "student" | "teacher"
    engine: str  # onnxruntime, tensorrt, pytorch generate(), onnxruntime-genai, cloud
    precision: str
    where: str  # "edge" or "cloud"
    policy: object | None = None
    manifest: dict | None = None  # the bundle whose safety defaults apply
    parameters: int | None = None
    flops: int | None = None
    note: str = ""
    profile: str | None = None
    safety: object = None
    clock: float = 0.0

    @property
    def available(self) -> bool:
        return self.policy is not None


# -- frames --------------------------------------------------------------------------------------------
def benchmark_frames(count: int, dataset: str | None, size: int, seed: int = 0,
                     views: int = 1) -> tuple[np.ndarray, list[str], str]:
    """(F, H, W, 3) uint8 camera frames, F instructions and where they came from. With a dataset: frames of
    its held-out episodes (the highest seeds per task, as train-teacher holds out) at the recorded size and
    camera rig; else seeded random (size, size * views) frames, `views` square views side by side as a
    camera rig tiles them, with the default tasks' instructions in turn (a greedy decode of a fixed number of
    tokens costs the same whatever the picture)."""
    if dataset:
        from distill.dataset import Dataset
        from distill.train_teacher import split_episodes

        ds = Dataset.open(dataset)
        _, held = split_episodes(ds, 0.1)
        held = held or [e.index for e in ds.episodes]
        episodes = [ds.load_episode(i) for i in held]
        frames, instructions = [], []
        t = 0
        while len(frames) < count and t < max(len(e) for e in episodes):
            for ep in episodes:  # tasks in turn, every third frame
                if t < len(ep) and len(frames) < count:
                    frames.append(ep.frames[t])
                    instructions.append(ep.info.instruction)
            t += 3
        source = f"held-out episodes of {dataset} ({len(held)} episodes, every 3rd frame, tasks in turn)"
        return np.stack(frames), instructions, source
    from distill.tasks import DEFAULT_TASKS, INSTRUCTIONS

    rng = np.random.default_rng(seed)
    instructions = [INSTRUCTIONS[DEFAULT_TASKS[i % len(DEFAULT_TASKS)]] for i in range(count)]
    width = size * views
    return (rng.integers(0, 256, (count, size, width, 3), dtype=np.uint8), instructions,
            f"seeded random {width}x{size} frames ({views} view{'s' * (views > 1)}, seed {seed}), "
            "the default tasks' instructions in turn")


# -- paths ---------------------------------------------------------------------------------------------
def rig_views(*configs) -> int:
    """The number of camera views the models take: one frame must suit every model compared. A one-view
    model takes a frame of any aspect (runtime/camera.py fit_frame resizes it), a rig model only its own."""
    rigs = {int(getattr(c, "views", 1)) for c in configs} - {1}
    if len(rigs) > 1:
        raise UserError(f"the models take frames of different camera rigs ({sorted(rigs)} views); "
                        "compare models recorded with the same --camera")
    return rigs.pop() if rigs else 1


def model_config(folder: str | Path):
    import distill.model  # noqa: F401  (registers the vla_edge config class)
    from distill.model import VlaConfig

    return VlaConfig.from_pretrained(str(folder))


def action_flops(config, prompt_tokens: int, action_rows_only: bool = True, prompt_cached: bool = True) -> int:
    """FLOPs of one action (distill/flops.py). The runtime's graphs compute only the 256 action rows of the
    output layer, generate() the whole vocabulary. Where the instruction's KV cache is kept between frames
    (the runtime, genai-rewind, the policy server), the per-frame prefill is the image tokens' queries only:
    n / (P + n) of the [prompt | image] prefill, exactly, since at a fixed number of keys every term of a
    decoder pass is linear in the number of queries."""
    from distill.flops import flops_per_action, image_token_count

    f = flops_per_action(config, prompt_tokens, head_rows=256 if action_rows_only else None)
    image_tokens = image_token_count(config)
    prefill = f.prefill * image_tokens / (prompt_tokens + image_tokens) if prompt_cached else f.prefill
    return int(round(f.vision + f.projector + prefill + f.decode + f.head))


def providers_for(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def onnx_policy(bundle_path: Path, device: str, decode: str):
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxPolicy, OnnxVla

    engine = OnnxVla(Bundle.load(bundle_path), threads=1, providers=providers_for(device), decode=decode)
    return OnnxPolicy(engine), engine


def build_local_paths(config: LatencyConfig, bundles: dict[str, Path], genai_folder: Path | None,
                      prompt_tokens: int, log=print) -> list[BenchPath]:
    """Every on-robot path, loaded (or marked unavailable with the reason)."""
    from runtime.bundle import Bundle

    student_cfg, teacher_cfg = model_config(config.student), model_config(config.teacher)
    manifests = {key: Bundle.load(path, verify_files=False).manifest for key, path in bundles.items()}
    s_params = manifests["student-fp32"]["model"]["parameters"]
    t_params = manifests["teacher-fp32"]["model"]["parameters"]
    s_flops = action_flops(student_cfg, prompt_tokens)
    paths = []
    for precision in ("fp32", "fp16", "int8"):
        key = f"student-{precision}"
        policy, engine = onnx_policy(bundles[key], config.device, config.decode)
        note = f"decode={engine.decode_mode}; providers {','.join(engine.providers)}"
        if config.device == "cuda" and engine.providers[0] != "CUDAExecutionProvider":
            note += " (CUDA was asked for but onnxruntime chose another provider)"
        paths.append(BenchPath(key, f"student {precision} (onnxruntime)", "student", "onnxruntime", precision, "edge",
                               policy, manifests[key], s_params, s_flops, note))
    paths.append(tensorrt_path(config, bundles["student-fp32"], manifests["student-fp32"], s_params, s_flops))
    from distill.reference_policy import TorchVlaPolicy

    generate = TorchVlaPolicy.load(config.student, use_generate=True, device=config.device)
    paths.append(BenchPath("student-generate", "student generate() (PyTorch)", "student", "pytorch generate()", "fp32",
                           "edge", generate, manifests["student-fp32"], s_params,
                           action_flops(student_cfg, prompt_tokens, action_rows_only=False, prompt_cached=False),
                           f"transformers generate() with a logits processor masking to the action ids, torch on "
                           f"{config.device}"))
    for key, reuse, label in (("student-genai", False, "a fresh Generator per frame"),
                              ("student-genai-rewind", True, "one Generator per instruction, rewound per frame")):
        name = f"student {key.removeprefix('student-')} (onnxruntime-genai)"
        row = BenchPath(key, name, "student", "onnxruntime-genai", "fp32", "edge", None, manifests["student-fp32"],
                        s_params, s_flops if reuse else action_flops(student_cfg, prompt_tokens, prompt_cached=False),
                        label)
        if genai_folder is None:
            row.note = "not run: onnxruntime-genai is not installed (pip install '.[bench]')"
        elif config.device != "cpu":
            row.note = "not run: the onnxruntime-genai build here runs on the CPU; its figures would mix devices"
        else:
            from benchmarks.genai_vla import GenaiVla
            from runtime.onnx_engine import OnnxPolicy

            row.policy = OnnxPolicy(GenaiVla(genai_folder, Bundle.load(bundles["student-fp32"]), reuse_prompt=reuse,
                                             threads=1))
        paths.append(row)
    policy, engine = onnx_policy(bundles["teacher-fp32"], config.device, config.decode)
    paths.append(BenchPath("teacher-fp32", "teacher fp32 (onnxruntime, on the robot)", "teacher", "onnxruntime", "fp32",
                           "edge", policy, manifests["teacher-fp32"], t_params, action_flops(teacher_cfg, prompt_tokens),
                           f"decode={engine.decode_mode}; providers {','.join(engine.providers)}"))
    return paths


def tensorrt_path(config: LatencyConfig, bundle: Path, manifest: dict, params: int, flops: int) -> BenchPath:
    row = BenchPath("student-tensorrt", "student (TensorRT)", "student", "tensorrt", "-", "edge", None, manifest,
                    params, flops)
    if config.device != "cuda":
        row.note = ("not available on this machine: TensorRT needs an NVIDIA GPU and NVIDIA's packages "
                    "(`python -m export doctor`); run with --device cuda where they exist")
        return row
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        row.note = "not available: TensorRT is not installed (JetPack ships it; NVIDIA's index elsewhere)"
        return row
    from runtime.engines import load_policy

    try:
        row.policy = load_policy(bundle, "tensorrt")
        row.precision = manifest.get("tensorrt", {}).get("precision", row.precision)
    except UserError as err:
        row.note = f"not run: {err}"
    return row


# -- helper processes: policy server, netem proxies, controller emulator -------------------------------------
@contextlib.contextmanager
def _environment(**changes: str):
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_cloud(stack: contextlib.ExitStack, config: LatencyConfig, teacher_bundle: Path, manifest: dict,
                params: int, flops: int, log=print) -> list[BenchPath]:
    """The teacher served by a child process, one netem proxy child and one CloudPolicy per profile."""
    from runtime.cloud_client import ClientConfig, CloudPolicy
    from runtime.cloud_eval import spawn_listening, stop_process
    from runtime.net_profiles import get_profiles

    if not config.profiles:
        return []
    # A CPU run keeps the server on the CPU too, even where onnxruntime could use a GPU: one device per table.
    hide_gpu = {"CUDA_VISIBLE_DEVICES": ""} if config.device == "cpu" else {}
    with _environment(**hide_gpu):
        server, port = spawn_listening(["serve", "--bundle", str(teacher_bundle), "--host", "127.0.0.1", "--port", "0",
                                        "--threads", "1", "--quiet"], "policy server")
    stack.callback(stop_process, server)
    log(f"cloud: teacher served by `python -m runtime serve` (pid {server.pid}) on 127.0.0.1:{port}")
    paths = []
    for profile in get_profiles(",".join(config.profiles)):
        proxy, proxy_port = spawn_listening(["netem-proxy", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{port}",
                                             "--profile", profile.name, "--seed", str(config.seed)], "netem proxy")
        stack.callback(stop_process, proxy)
        client = CloudPolicy(ClientConfig(f"ws://127.0.0.1:{proxy_port}", timeout_s=config.cloud_timeout_s,
                                          fallback="hold"))
        stack.callback(client.close)
        paths.append(BenchPath(f"teacher-cloud-{profile.name}", f"teacher cloud ({profile.name})", "teacher", "cloud",
                               "fp32", "cloud", client, manifest, params, flops, profile.describe(),
                               profile=profile.name))
    return paths


def start_serial(stack: contextlib.ExitStack, config: LatencyConfig, log=print):
    """A SerialLink to the controller emulator (UART wire time emulated at --baud), or None."""
    if not config.serial:
        return None
    from benchmarks.serial_rtt import EmulatorProcess
    from firmware_bridge.link import LinkConfig, SerialLink

    emulator = EmulatorProcess(config.baud, paced=True)
    stack.callback(emulator.close)
    link = SerialLink(LinkConfig(port=emulator.path, baud=config.baud)).open()
    stack.callback(link.close)
    log(f"serial: controller emulator on {emulator.path} at {config.baud} baud, UART wire time emulated")
    return link


# -- timing ----------------------------------------------------------------------------------------------
def time_step(path: BenchPath, observation, link) -> dict[str, float]:
    """One control step of one path: act, safety, serial send until the ACK; seconds per stage."""
    from firmware_bridge.link import LinkError

    t0 = time.perf_counter()
    action = path.policy.act(observation)
    t1 = time.perf_counter()
    decision = path.safety.apply(action.values, HAND_XYZ, now=path.clock)
    path.clock += 1.0  # a virtual clock one second a step: the rate limit never refuses a benchmark step
    t2 = time.perf_counter()
    serial = float("nan")
    if link is not None and decision.sent is not None:
        try:
            link.send_action(decision.sent)
            serial = time.perf_counter() - t2
        except LinkError:
            pass  # lost after every retransmission: counted as a NaN serial time
    t3 = time.perf_counter()
    stages = {"inference": t1 - t0, "end_to_end": t3 - t0, "serial": serial}
    timings = dict(action.timings)
    if path.where == "cloud":
        server = getattr(action, "server_timings", {}) or {}
        stages["encode"] = timings.get("encode", float("nan"))
        if getattr(action, "source", "cloud") == "cloud":
            stages["network"] = timings.get("network", float("nan"))
            stages["server"] = float(server.get("total", float("nan")))
            timings = dict(server.get("policy") or {})
        else:
            stages["fallback"] = 1.0
            timings = {}
    for stage in MODEL_STAGES:
        if stage in timings:
            stages[stage] = float(timings[stage])
    stages["detokenize+safety"] = float(timings.get("detokenize", 0.0)) + (t2 - t1)
    return stages


def run_interleaved(paths: list[BenchPath], observations: list, warmup: list, link, progress: bool = True
                    ) -> list[list[dict[str, float]]]:
    """Per path, per timed frame, the stage timings; warm-up untimed; the order of paths rotates per frame."""
    from tqdm import tqdm

    live = [p for p in paths if p.available]
    for observation in tqdm(warmup, desc="warm-up", unit="frame", disable=not progress, leave=False):
        for path in live:
            time_step(path, observation, link)
    for path in live:
        path.policy.reset()
        path.safety.reset()
    records: dict[str, list[dict[str, float]]] = {p.key: [] for p in live}
    for f, observation in enumerate(tqdm(observations, desc="latency", unit="frame", disable=not progress)):
        first = f % len(live)
        for path in live[first:] + live[:first]:
            records[path.key].append(time_step(path, observation, link))
    return [records.get(p.key, []) for p in paths]


# -- summary -----------------------------------------------------------------------------------------------
def _series(records: list[dict[str, float]], stage: str) -> np.ndarray:
    return np.array([r.get(stage, np.nan) for r in records], np.float64)


def summarize_path(path: BenchPath, records: list[dict[str, float]], floor_rate: float) -> dict:
    row = {"key": path.key, "name": path.name, "model": path.model, "engine": path.engine,
           "precision": path.precision, "where": path.where, "profile": path.profile, "available": path.available,
           "note": path.note, "parameters": path.parameters, "flops_per_action": path.flops, "frames": len(records)}
    if not path.available:
        return row
    stages = {}
    for stage in STAGES:
        values = _series(records, stage)
        if np.isfinite(values).any():
            stages[stage] = percentiles(values)
    e2e, inference = stages["end_to_end"], stages["inference"]
    row.update(stages=stages, end_to_end=e2e, inference=inference,
               rate_hz_p50=1000 / e2e["p50_ms"], rate_hz_p99=1000 / e2e["p99_ms"],
               fallbacks=int(np.nansum(_series(records, "fallback"))),
               serial_lost=int(sum(1 for r in records if "serial" in r and not np.isfinite(r["serial"]))),
               times_ms={stage: [round(float(x) * 1e3, 4) for x in _series(records, stage)]
                         for stage in ("end_to_end", "inference")})
    if path.where == "cloud":
        row["bytes_per_request"] = int(path.policy.stats["bytes_last"])  # every frame has the same size
    if path.flops and floor_rate and path.where == "edge":
        floor_ms = 1e3 * path.flops / floor_rate
        row.update(floor_ms=floor_ms, measured_over_floor=inference["p50_ms"] / floor_ms)
    return row


def ratio_row(name: str, rows: dict[str, dict], base: str, candidate: str, metric: str, seed: int) -> dict | None:
    """How many times faster `candidate` is than `base` on `metric` (end_to_end or inference), same frames."""
    from benchmarks.latency_stats import speedup

    b, c = rows.get(base), rows.get(candidate)
    if not b or not c or not b.get("available") or not c.get("available"):
        return None
    bt, ct = np.asarray(b["times_ms"][metric], float), np.asarray(c["times_ms"][metric], float)
    ok = np.isfinite(bt) & np.isfinite(ct)
    if not ok.any():
        return None
    paired = speedup(bt[ok], ct[ok], np.random.default_rng(seed), 2000)
    return {"ratio": name, "baseline": base, "candidate": candidate, "metric": metric,
            "p50_ratio": float(np.percentile(bt[ok], 50) / np.percentile(ct[ok], 50)),
            "p99_ratio": float(np.percentile(bt[ok], 99) / np.percentile(ct[ok], 99)),
            "paired_median": paired["paired_median"], "paired_ci95_low": paired["paired_ci95"][0],
            "paired_ci95_high": paired["paired_ci95"][1], "frames": int(ok.sum())}


def compute_ratios(rows: dict[str, dict], profiles: list[str], seed: int) -> list[dict]:
    """The ratios the report gives: edge int8 vs the cloud teacher per profile, runtime vs generate() and
    vs onnxruntime-genai, student int8 vs the teacher on the robot, and measured vs compute floor."""
    out = []
    for profile in profiles:
        out.append(ratio_row(f"edge student int8 vs cloud teacher ({profile})", rows, f"teacher-cloud-{profile}",
                             "student-int8", "end_to_end", seed))
    out.append(ratio_row("edge student int8 vs teacher on the robot", rows, "teacher-fp32", "student-int8",
                         "end_to_end", seed))
    out.append(ratio_row("runtime (student fp32) vs generate()", rows, "student-generate", "student-fp32",
                         "inference", seed))
    genai = [k for k in ("student-genai", "student-genai-rewind") if rows.get(k, {}).get("available")]
    if genai:
        best = min(genai, key=lambda k: rows[k]["inference"]["p50_ms"])
        out.append(ratio_row(f"runtime (student fp32) vs onnxruntime-genai ({best.removeprefix('student-')})",
                             rows, best, "student-fp32", "inference", seed))
    for key, row in rows.items():
        if row.get("measured_over_floor") is not None:
            out.append({"ratio": f"measured / compute floor: {row['name']}", "baseline": "compute floor",
                        "candidate": key, "metric": "inference p50", "p50_ratio": row["measured_over_floor"]})
    return [r for r in out if r is not None]


# -- the benchmark -----------------------------------------------------------------------------------------
def run_latency(config: LatencyConfig, log=print, progress: bool = True) -> dict:
    config.check()
    single_thread()
    device = device_info(config.device)
    from benchmarks.bundles import ensure_bundles, ensure_genai
    from benchmarks.compute_floor import measure_matmul_rates, model_shapes
    from benchmarks.machine import describe
    from runtime.policy import Observation
    from runtime.safety import SafetyConfig, SafetyEnvelope

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = load_average()
    bundles = ensure_bundles({"student": config.student, "teacher": config.teacher},
                             {"student": ["fp32", "fp16", "int8"], "teacher": ["fp32"]}, config.bundles_dir,
                             config.dataset, config.parity_frames, config.full_export, log=log)
    genai_folder = None
    try:
        from benchmarks.genai_vla import import_genai

        import_genai()
        genai_folder = ensure_genai(config.student, config.bundles_dir, log=log)
    except UserError as err:
        log(f"onnxruntime-genai rows skipped: {err}")
    student_cfg, teacher_cfg = model_config(config.student), model_config(config.teacher)
    size = max(student_cfg.vision_config.image_size, teacher_cfg.vision_config.image_size)
    frames, instructions, source = benchmark_frames(config.frames, config.dataset, size, config.seed,
                                                    rig_views(student_cfg, teacher_cfg))
    from runtime.bundle import Bundle

    prompts = Bundle.load(bundles["student-fp32"], verify_files=False).manifest["prompt"]["prompts"]
    prompt_tokens = int(round(np.mean([len(prompts[i.strip().lower()]) for i in instructions])))
    observations = [Observation(image=f, instruction=i) for f, i in zip(frames, instructions)]
    first_of_each = list({o.instruction: o for o in reversed(observations)}.values())
    warmup = first_of_each + observations[: config.warmup]
    log("measuring this machine's single-thread matmul rate (the compute floor)")
    shapes = model_shapes(student_cfg, prompt_tokens) + model_shapes(teacher_cfg, prompt_tokens)
    floor = measure_matmul_rates(shapes, quick=config.quick)
    with contextlib.ExitStack() as stack:
        paths = build_local_paths(config, bundles, genai_folder, prompt_tokens, log)
        teacher_fp32 = next(p for p in paths if p.key == "teacher-fp32")
        paths += start_cloud(stack, config, bundles["teacher-fp32"], teacher_fp32.manifest, teacher_fp32.parameters,
                             teacher_fp32.flops, log)
        for path in paths:
            path.safety = SafetyEnvelope(SafetyConfig.from_manifest(path.manifest))
        link = start_serial(stack, config, log)
        log(f"timing {sum(p.available for p in paths)} paths on {len(observations)} frames "
            f"(+{len(warmup)} warm-up), interleaved")
        wall = time.perf_counter()
        records = run_interleaved(paths, observations, warmup, link, progress)
        wall = time.perf_counter() - wall
    floor_after = measure_matmul_rates(shapes, quick=True)  # how much the machine's speed moved during the run
    rate = floor["gflops"] * 1e9
    rows = {p.key: summarize_path(p, r, rate) for p, r in zip(paths, records)}
    return {"benchmark": "latency", "command": config.command(), "started": started, "device": device,
            "machine": {**describe(), "load_average_before": load_before, "load_average_after": load_average()},
            "threads": {"onnxruntime_intra_op": 1, "torch": 1, "genai_intra_op": 1, "server_intra_op": 1},
            "frames": len(observations), "warmup_frames": len(warmup), "frame_source": source,
            "prompt_tokens_mean": prompt_tokens, "wall_s": wall,
            "serial": {"baud": config.baud, "line": "uart wire time emulated"} if config.serial else None,
            "compute_floor": {**floor, "gflops_after_run_quick": floor_after["gflops"]},
            "bundles": {k: str(v) for k, v in bundles.items()}, "genai_folder": str(genai_folder) if genai_folder else None,
            "config": asdict(config), "paths": list(rows.values()),
            "ratios": compute_ratios(rows, config.profiles, config.seed)}


# -- outputs -----------------------------------------------------------------------------------------------
TABLE_COLUMNS = ["key", "name", "where", "engine", "precision", "available", "parameters", "flops_per_action",
                 "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms", "e2e_max_ms", "rate_hz_p50", "rate_hz_p99",
                 "inference_p50_ms", "inference_p99_ms", "floor_ms", "measured_over_floor", "fallbacks",
                 "serial_lost", "bytes_per_request", "frames", "note"]


def table_rows(result: dict) -> list[dict]:
    rows = []
    for p in result["paths"]:
        row = {k: p.get(k) for k in TABLE_COLUMNS}
        for prefix, key in (("e2e", "end_to_end"), ("inference", "inference")):
            for q in ("p50", "p95", "p99", "max"):
                row[f"{prefix}_{q}_ms"] = (p.get(key) or {}).get(f"{q}_ms")
        rows.append(row)
    return rows


def stage_rows(result: dict) -> list[dict]:
    return [{"key": p["key"], "name": p["name"], "stage": stage, **stats}
            for p in result["paths"] if p.get("available") for stage, stats in p["stages"].items()]


def write_outputs(result: dict, out: str | Path) -> list[Path]:
    """latency.json, latency.csv, latency_stages.csv, latency_ratios.csv and latency.png under `out`."""
    from benchmarks.common import write_csv_atomic
    from benchmarks.plots import plot_latency
    from runtime.atomic_io import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = result_suffix(result["device"]["kind"])
    written = [out / f"latency{suffix}.json"]
    write_json_atomic(written[0], result)
    written.append(write_csv_atomic(out / f"latency{suffix}.csv", table_rows(result), TABLE_COLUMNS))
    written.append(write_csv_atomic(out / f"latency_stages{suffix}.csv", stage_rows(result),
                                    ["key", "name", "stage", "p50_ms", "p95_ms", "p99_ms", "max_ms", "n"]))
    written.append(write_csv_atomic(out / f"latency_ratios{suffix}.csv", result["ratios"],
                                    ["ratio", "baseline", "candidate", "metric", "p50_ratio", "p99_ratio",
                                     "paired_median", "paired_ci95_low", "paired_ci95_high", "frames"]))
    written.append(plot_latency(result, out / f"latency{suffix}.png"))
    return written
