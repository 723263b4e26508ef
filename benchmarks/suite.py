"""The command lines of `python -m benchmarks latency | quality | scaling | all | report` (the logic lives in
latency.py, quality.py, scaling.py and report.py). Every run writes its JSON, CSV and PNG files into --out
and then rewrites --out/report.md from every result found there.

--quick (for CI): every path and table on a few frames, one seed of a few steps, the smallest scaling grid.
An option given explicitly wins over what --quick would choose.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from benchmarks.common import DEFAULT_BUNDLES, DEFAULT_OUT, DEVICES
from runtime.errors import UserError

# What --quick changes, and the normal defaults.
QUICK = {"frames": 3, "warmup": 1, "parity_frames": 3, "seeds": 1, "max_steps": 5, "agreement_frames": 3,
         "questions": 6, "scaling_frames": 3}
NORMAL = {"frames": 200, "warmup": 5, "parity_frames": 50, "seeds": 20, "max_steps": 200, "agreement_frames": 200,
          "questions": 200, "scaling_frames": 30}

LATENCY_EXAMPLE = ("python -m benchmarks latency --student models/student --teacher models/teacher "
                   "--bundles-dir runs/bundles --frames 200 --profiles lan,wifi,lte,cloud --out benchmarks/results")
QUALITY_EXAMPLE = ("python -m benchmarks quality --student models/student --teacher models/teacher "
                   "--dataset data/demos_3v --seeds 20 --workers 2")
SCALING_EXAMPLE = "python -m benchmarks scaling --teacher models/teacher --frames 30"
ALL_EXAMPLE = ("python -m benchmarks all --student models/student --teacher models/teacher --dataset data/demos_3v "
               "--readme README.md")
REPORT_EXAMPLE = "python -m benchmarks report --out benchmarks/results --readme README.md"


def _value(args, name: str, key: str | None = None):
    """The option as given, else its --quick value, else its normal default."""
    given = getattr(args, name, None)
    if given is not None:
        return given
    key = key or name
    return QUICK[key] if args.quick else NORMAL[key]


def _profiles(text: str) -> list[str]:
    return [] if text.strip().lower() == "none" else [p.strip() for p in text.split(",") if p.strip()]


def _log(args):
    return print if not getattr(args, "quiet", False) else (lambda *a, **k: None)


# -- arguments ------------------------------------------------------------------------------------------------
def _models(parser, student: bool = True) -> None:
    if student:
        parser.add_argument("--student", required=True, help="the student model folder (models/student; made by "
                                                             "`python -m distill student`)")
    parser.add_argument("--teacher", required=True, help="the teacher model folder (models/teacher)")


def _output(parser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, help="results folder: JSON, CSV, PNG and report.md "
                                                           "(default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="CI mode: every path on a few frames, one seed of a few "
                                                             "steps, the smallest scaling grid")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _bundles(parser) -> None:
    parser.add_argument("--bundles-dir", default=DEFAULT_BUNDLES,
                        help="where the student-fp32/-fp16/-int8 and teacher-fp32 bundles are (made there when "
                             "missing or exported from other weights; default: %(default)s)")
    parser.add_argument("--dataset", help="a recording (data/demos): held-out frames for timing and agreement, "
                                          "parity frames for exports, questions (default: seeded random frames)")
    parser.add_argument("--parity-frames", type=int, help="frames of the export parity checks (default: 50; quick: 3)")
    parser.add_argument("--full-export", action="store_true",
                        help="export fp16 and int8 with `python -m export`'s whole pipeline instead of quantizing a "
                             "copy of the fp32 bundle (slower, same graphs)")


def add_latency_arguments(parser) -> None:
    _models(parser)
    _bundles(parser)
    parser.add_argument("--frames", type=int, help="timed frames per path (default: 200; quick: 3)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up frames, besides one per instruction "
                                                   "(default: 5; quick: 1)")
    parser.add_argument("--profiles", default="lan,wifi,lte,cloud",
                        help="network profiles of the cloud rows, comma-separated, or none (default: %(default)s)")
    parser.add_argument("--baud", type=int, default=1_000_000, help="serial baud rate (default: %(default)s)")
    parser.add_argument("--no-serial", action="store_true", help="leave the serial round trip out")
    parser.add_argument("--decode", choices=("auto", "act", "loop"), default="auto",
                        help="the runtime's decode mode: the one-call act graph, or the token loop with vision, "
                             "prefill and decode timed apart (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="cuda: onnxruntime's CUDA provider and PyTorch on the GPU, results in *-cuda files, "
                             "labelled with the GPU's name (default: %(default)s)")
    parser.add_argument("--cloud-timeout-s", type=float, default=5.0,
                        help="longest wait for a cloud reply before it counts as a fallback (default: %(default)s)")
    _output(parser)


def add_quality_arguments(parser) -> None:
    _models(parser)
    _bundles(parser)
    parser.add_argument("--tasks", default="default", help="tasks, comma-separated, or default (default: %(default)s)")
    parser.add_argument("--seeds", type=int, help="unseen seeds per task (default: 20; quick: 1)")
    parser.add_argument("--max-steps", type=int, help="steps per episode (default: 200; quick: 5)")
    parser.add_argument("--workers", type=int, default=1, help="evaluator processes for the edge rows "
                                                                "(default: %(default)s)")
    parser.add_argument("--profiles", default="lan,wifi,lte,cloud",
                        help="network profiles of the cloud rows, comma-separated, or none (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=10.0, help="control rate of the cloud rows, Hz "
                                                                 "(default: %(default)s)")
    parser.add_argument("--agreement-frames", type=int, help="frames for token agreement (default: 200; quick: 3)")
    parser.add_argument("--questions", type=int, help="scene questions per bundle, needs --dataset (default: 200; "
                                                      "quick: 6)")
    _output(parser)


def add_scaling_arguments(parser, teacher: bool = True) -> None:
    if teacher:
        parser.add_argument("--teacher", required=True, help="the model folder whose tokenizers the random models "
                                                             "use (models/teacher)")
    flags = ("--frames", "--scaling-frames") if teacher else ("--scaling-frames",)  # `all` has latency's --frames
    parser.add_argument(*flags, type=int, dest="scaling_frames",
                        help="timed frames per scaling point (default: 30; quick: 3)")
    parser.add_argument("--axes", default="image-tokens,instruction-length,width,depth",
                        help="knobs to vary, comma-separated (default: %(default)s)")
    if teacher:
        parser.add_argument("--device", choices=DEVICES, default="cpu", help="cpu or cuda (default: %(default)s)")
        _output(parser)


def add_all_arguments(parser) -> None:
    add_latency_arguments(parser)  # then quality's own options (the shared ones are latency's)
    parser.add_argument("--tasks", default="default", help="quality: tasks (default: %(default)s)")
    parser.add_argument("--seeds", type=int, help="quality: unseen seeds per task (default: 20; quick: 1)")
    parser.add_argument("--max-steps", type=int, help="quality: steps per episode (default: 200; quick: 5)")
    parser.add_argument("--workers", type=int, default=1, help="quality: evaluator processes (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=10.0, help="quality: cloud control rate, Hz (default: %(default)s)")
    parser.add_argument("--agreement-frames", type=int, help="quality: frames for token agreement (default: 200)")
    parser.add_argument("--questions", type=int, help="quality: scene questions per bundle (default: 200)")
    add_scaling_arguments(parser, teacher=False)
    parser.add_argument("--readme", help="also rewrite the headline table between the markers of this README")


def add_report_arguments(parser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, help="results folder to report on (default: %(default)s)")
    parser.add_argument("--readme", help="also rewrite the headline table between the markers of this README")


# -- configs ----------------------------------------------------------------------------------------------------
def latency_config(args):
    from benchmarks.latency import LatencyConfig

    return LatencyConfig(student=args.student, teacher=args.teacher, bundles_dir=args.bundles_dir, out=args.out,
                         frames=_value(args, "frames"), warmup=_value(args, "warmup"), profiles=_profiles(args.profiles),
                         dataset=args.dataset, baud=args.baud, serial=not args.no_serial, decode=args.decode,
                         device=args.device, cloud_timeout_s=args.cloud_timeout_s,
                         parity_frames=_value(args, "parity_frames"), full_export=args.full_export, quick=args.quick)


def quality_config(args):
    from benchmarks.quality import QualityConfig

    return QualityConfig(student=args.student, teacher=args.teacher, bundles_dir=args.bundles_dir, out=args.out,
                         dataset=args.dataset, tasks=args.tasks, seeds=_value(args, "seeds"),
                         max_steps=_value(args, "max_steps"), workers=args.workers, profiles=_profiles(args.profiles),
                         rate_hz=args.rate, agreement_frames=_value(args, "agreement_frames"),
                         questions=_value(args, "questions"), parity_frames=_value(args, "parity_frames"),
                         full_export=args.full_export, quick=args.quick)


def scaling_config(args):
    from benchmarks.scaling import ScalingConfig

    return ScalingConfig(teacher=args.teacher, out=args.out, frames=_value(args, "scaling_frames"),
                         warmup=QUICK["warmup"] if args.quick else 3, device=args.device,
                         axes=tuple(a.strip().replace("-", " ").replace("_", " ") for a in args.axes.split(",")
                                    if a.strip()), quick=args.quick)


# -- handlers ---------------------------------------------------------------------------------------------------
def _finish(args, written: list[Path]) -> None:
    from benchmarks.report import update_readme, write_report

    report = write_report(args.out)
    print("written: " + ", ".join(str(p) for p in written + [report]))
    if getattr(args, "readme", None):
        print(f"headline table: {update_readme(args.readme, args.out)}")


def _measure(run, write_outputs, config, args, suite: str | None) -> tuple[dict, list[Path]]:
    """Run one benchmark, stamp the suite's command on its result when part of `all`, write its files."""
    result = run(config, log=print, progress=not args.no_progress)
    if suite:
        result["suite_command"] = suite
    return result, write_outputs(result, config.out)


def _run_latency(args, suite: str | None = None) -> list[Path]:
    from benchmarks.latency import run_latency, write_outputs
    from benchmarks.report import headline_table, ratio_table

    result, written = _measure(run_latency, write_outputs, latency_config(args), args, suite)
    print(f"\nlatency, {result['device']['label']}, {result['frames']} frames\n{headline_table(result)}\n\n"
          f"{ratio_table(result)}\n")
    return written


def _run_quality(args, suite: str | None = None) -> list[Path]:
    from benchmarks.quality import run_quality, write_outputs

    config = quality_config(args)
    if getattr(args, "device", "cpu") != "cpu":
        print("quality runs on the CPU (closed loop, agreement and questions); --device applies to latency and scaling")
    result, written = _measure(run_quality, write_outputs, config, args, suite)
    overall = ", ".join(f"{n} {100 * p['overall']['success_rate']:.0f}%" for n, p in result["success"].items())
    print(f"\nclosed-loop success: {overall}\n")
    return written


def _run_scaling(args, suite: str | None = None) -> list[Path]:
    from benchmarks.scaling import run_scaling, write_outputs

    result, written = _measure(run_scaling, write_outputs, scaling_config(args), args, suite)
    for p in result["points"]:
        print(f"  {p['axis']:18s} {p['value']:>6} {p['total_p50_ms']:8.2f} ms per action "
              f"(floor {p['floor_ms']:.3f} ms)")
    return written


def cmd_latency(args) -> int:
    _finish(args, _run_latency(args))
    return 0


def cmd_quality(args) -> int:
    _finish(args, _run_quality(args))
    return 0


def cmd_scaling(args) -> int:
    _finish(args, _run_scaling(args))
    return 0


def cmd_all(args) -> int:
    suite = shlex.join(["python", "-m", "benchmarks", "all", *sys.argv[2:]]) if sys.argv[1:2] == ["all"] else None
    # each step checks its own options first, so a typo fails before anything slow runs
    latency_config(args).check()
    quality_config(args).check()
    scaling_config(args).check()
    written = _run_latency(args, suite) + _run_quality(args, suite) + _run_scaling(args, suite)
    _finish(args, written)
    return 0


def cmd_report(args) -> int:
    if not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} does not exist: run `python -m benchmarks all` (or latency, quality, "
                        f"scaling) with --out {args.out} first")
    _finish(args, [])
    return 0


def register(cli) -> None:
    """Add the five subcommands to `python -m benchmarks`."""
    for name, help_text, example, handler, add, description in (
        ("latency", "per-stage latency of every path: edge student per precision, TensorRT, generate(), "
                    "onnxruntime-genai, the teacher on the robot and over the cloud per network profile",
         LATENCY_EXAMPLE, cmd_latency, add_latency_arguments,
         "Export missing bundles, then time one action frame-to-ACK for every path on the same frames, interleaved, "
         "one CPU thread each: p50/p95/p99/max per stage and end to end, control rate, parameters, FLOPs per "
         "action and measured / compute floor; ratios edge vs cloud, runtime vs generate() and vs genai."),
        ("quality", "closed-loop success per task (teacher, student per precision, cloud teacher per profile), "
                    "token agreement, question accuracy", QUALITY_EXAMPLE, cmd_quality, add_quality_arguments,
         "Closed-loop success in Meta-World on unseen seeds for the teacher and each student precision (the "
         "evaluator) and for the cloud teacher per network profile at a fixed control rate (cloud-eval); token "
         "agreement of each precision with fp32; scene-question accuracy against the dataset's simulator state."),
        ("scaling", "the cost curve: latency against image tokens, instruction length, width and depth",
         SCALING_EXAMPLE, cmd_scaling, lambda p: add_scaling_arguments(p),
         "Build random-weight models one knob at a time, export them to ONNX in a temporary folder and time the "
         "runtime per action on each, interleaved; a table, a plot and each point's compute floor."),
        ("all", "latency, quality and scaling, then report.md (and the README headline with --readme)",
         ALL_EXAMPLE, cmd_all, add_all_arguments,
         "Run latency, quality and scaling with one set of options and write report.md: the one command that "
         "regenerates every table, plot and the README's headline."),
        ("report", "rewrite report.md (and the README headline) from the results already in --out",
         REPORT_EXAMPLE, cmd_report, add_report_arguments,
         "Assemble report.md from latency.json, quality.json, scaling.json (and their -cuda twins) in --out."),
    ):
        add(cli.command(name, help_text, example, handler, description=description))
