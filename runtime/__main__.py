"""`python -m runtime`: on-robot commands (numpy, onnxruntime, OpenCV; never torch).

Examples:

    python -m runtime tokenizer runs/action_tokenizer.json
    python -m runtime tokenizer runs/action_tokenizer.json --encode 0.1,-0.5,0.0,1.0,0.0
    python -m runtime run --bundle bundles/student-int8 --sim default --seeds 5
    python -m runtime run --bundle bundles/student-int8 --camera 0 --instruction "open the drawer" --max-steps 300
"""

from __future__ import annotations

import sys

import numpy as np

from runtime.cli import CommandLine
from runtime.errors import UserError


def cmd_tokenizer(args) -> int:
    from runtime.action_tokenizer import ActionTokenizer

    tok = ActionTokenizer.load(args.path)
    print(f"{args.path}: {tok.dim} dimensions x {tok.n_bins} bins; {tok.table.describe()}")
    width = tok.bin_width()
    for k, name in enumerate(tok.names):
        unit = f" {tok.units[k]}" if tok.units else ""
        print(f"  {name:10s} [{tok.low[k]:+.4f}, {tok.high[k]:+.4f}]{unit}  bin width {width[k]:.5f}")
    if args.encode:
        try:
            action = np.array([float(v) for v in args.encode.split(",")], dtype=np.float64)
        except ValueError:
            raise UserError(f"--encode takes comma-separated numbers, got '{args.encode}'") from None
        ids = tok.encode(action)
        print(f"ids {ids.tolist()} -> decoded {np.round(tok.decode(ids), 4).tolist()}")
    return 0


def cmd_run(args) -> int:
    from runtime.bundle import Bundle
    from runtime.control_loop import LoopConfig
    from runtime.onnx_engine import OnnxPolicy, OnnxVla
    from runtime.safety import SafetyConfig, SafetyEnvelope

    bundle = Bundle.load(args.bundle)
    policy = OnnxPolicy(OnnxVla(bundle, threads=args.threads))
    safety = SafetyEnvelope(SafetyConfig.from_manifest(bundle.manifest))
    config = LoopConfig(rate_hz=args.rate, max_steps=args.max_steps, terminate_after=args.terminate_after,
                        log_path=args.log)
    if args.sim:
        return run_in_sim(args, bundle, policy, safety, config)
    if not args.instruction or args.camera is None:
        raise UserError("a real robot run needs --camera and --instruction (or --sim TASK for the simulator)")
    from runtime.camera import open_camera

    policy.engine.prompt_ids(args.instruction)  # refuse an unknown instruction before the camera opens
    camera = open_camera(args.camera)
    try:
        raise UserError("no arm connection yet: the serial link arrives with the firmware bridge; use --sim TASK")
    finally:
        camera.close()


def run_in_sim(args, bundle, policy, safety, config) -> int:
    from runtime.control_loop import ControlLoop, format_stage_table
    from runtime.sim_robot import SimRobot

    tasks = args.sim.split(",")
    if tasks == ["default"]:
        from distill.tasks import DEFAULT_TASKS

        tasks = list(DEFAULT_TASKS)
    results, loops = {}, []
    for task in tasks:
        robot = SimRobot(task, image_size=bundle.manifest["image"]["height"], camera=bundle.manifest["image"].get("camera"))
        try:
            successes = 0
            for seed in range(args.seed_start, args.seed_start + args.seeds):
                robot.reset(seed)
                loop = ControlLoop(policy, robot.camera, robot, safety, robot.instruction, config)
                summary = loop.run()
                successes += summary["ended_by"] == "success"
                loops.append(loop)
            results[robot.sim.task] = successes
            print(f"{robot.sim.task:28s} {successes}/{args.seeds}")
        finally:
            robot.close()
    total = sum(results.values())
    print(f"{'overall':28s} {total}/{args.seeds * len(tasks)} ({100 * total / (args.seeds * len(tasks)):.0f}%)")
    merged = loops[0]
    merged.records = [r for loop in loops for r in loop.records]
    print(format_stage_table(merged.summary("all", 1.0)))
    return 0


cli = CommandLine(
    "python -m runtime",
    "On-robot runtime (the engine, control loop and policy server arrive with the runtime issue).",
    __doc__,
)
_tok = cli.command("tokenizer", "check an action tokenizer file and show its ranges and ids",
                   "python -m runtime tokenizer runs/action_tokenizer.json", cmd_tokenizer,
                   description="Load and validate an action tokenizer JSON; optionally encode one action.")
_tok.add_argument("path", help="action tokenizer JSON (written by `python -m distill tokenizer`)")
_tok.add_argument("--encode", help="comma-separated action to encode and decode back, e.g. 0.1,-0.5,0,1,0")

_run = cli.command("run", "run a bundle in the control loop: on the simulator (--sim) or a camera and arm",
                   "python -m runtime run --bundle bundles/student-int8 --sim default --seeds 5", cmd_run,
                   description="Run a bundle closed-loop at a fixed rate with the safety envelope; prints success "
                               "and the per-stage latency table (p50, p95, p99).")
_run.add_argument("--bundle", required=True, help="bundle folder written by `python -m export`")
_run.add_argument("--sim", help="simulated tasks, comma-separated, or 'default' (needs the train extra)")
_run.add_argument("--camera", help="camera: device index, video file or GStreamer pipeline")
_run.add_argument("--instruction", help="what to do, e.g. 'open the drawer' (one the model was trained on)")
_run.add_argument("--seeds", type=int, default=5, help="simulated episodes per task (default: %(default)s)")
_run.add_argument("--seed-start", type=int, default=100_000, help="first simulator seed (default: %(default)s)")
_run.add_argument("--rate", type=float, default=20.0, help="control rate in Hz (default: %(default)s)")
_run.add_argument("--max-steps", type=int, default=200, help="steps per episode (default: %(default)s)")
_run.add_argument("--terminate-after", type=int, default=3, help="consecutive terminate actions that stop (default: 3)")
_run.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: %(default)s)")
_run.add_argument("--log", help="append every step to this JSON-lines file")

if __name__ == "__main__":
    sys.exit(cli.run())
