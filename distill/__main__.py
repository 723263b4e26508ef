"""`python -m distill`: record demonstrations, inspect datasets, evaluate policies in the simulator.

Examples:

    python -m distill tasks
    python -m distill record --out data/demos --tasks default --episodes 50
    python -m distill inspect data/demos --verify
    python -m distill tokenizer --dataset data/demos --scheme last --vocab-size 1024 --out runs/action_tokenizer.json
    python -m distill evaluate --policy expert --tasks drawer-open,push --seeds 20 --out runs/eval_expert.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli import CommandLine
from runtime.errors import UserError


def _add_sim_args(p: argparse.ArgumentParser, defaults_from_dataset: bool = False) -> None:
    from distill.sim import DEFAULT_CAMERA, DEFAULT_IMAGE_SIZE, WRIST_RIG

    hint = (" (default: the policy's, else the dataset's, else %(default)s)" if defaults_from_dataset
            else " (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=None if defaults_from_dataset else DEFAULT_IMAGE_SIZE,
                   help="camera view size in pixels (square; a rig's views sit side by side)" + hint.replace("%(default)s", str(DEFAULT_IMAGE_SIZE)))
    p.add_argument("--camera", default=None if defaults_from_dataset else DEFAULT_CAMERA,
                   help="Meta-World camera (corner, corner2, corner3, corner4, topview, behindGripper, gripperPOV), "
                        "'workspace' (corner4's mount aimed at the workspace, 36 degree lens: ~1.8x the detail), 'side' (from the "
                        "robot's right; with workspace it fixes floating goals in 3-D), "
                        f"or a rig of several joined by '+' whose views are tiled left to right, e.g. {WRIST_RIG}"
                   + hint.replace("%(default)s", DEFAULT_CAMERA))
    p.add_argument("--max-steps", type=int, default=200, help="steps before an episode counts as failed (default: 200)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_precision_arg(p: argparse.ArgumentParser) -> None:
    """--precision for the training commands (checked again by distill.training.resolve_precision)."""
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="'bf16': bfloat16 autocast, fp32 weights (about 2x faster on CPUs with AVX512-BF16); "
                        "'auto': bf16 where the hardware has it (default: auto)")


def cmd_tasks(args) -> int:
    from distill.tasks import DEFAULT_TASKS, HARD_FROM_PIXELS, INSTRUCTIONS

    for task, instruction in INSTRUCTIONS.items():
        mark = "*" if task in DEFAULT_TASKS else " "
        hard = " (hard from pixels)" if task in HARD_FROM_PIXELS else ""
        print(f"{mark} {task:30s} {instruction}{hard}")
    print(f"\n* default set ({len(DEFAULT_TASKS)} tasks): --tasks default")
    return 0


def cmd_record(args) -> int:
    from distill.record import RecordConfig, record

    config = RecordConfig(
        tasks=args.tasks, episodes_per_task=args.episodes, seed_start=args.seed_start, image_size=args.image_size,
        camera=args.camera, max_steps=args.max_steps, post_success_steps=args.post_success_steps,
    ).check()
    summary = record(args.out, config, resume=args.resume, progress=not args.no_progress, workers=args.workers)
    print(
        f"recorded {summary.episodes_recorded} episodes ({summary.episodes_skipped} already present), "
        f"{summary.frames} frames in {summary.seconds:.1f} s: {summary.frames_per_second:.0f} frames/s, "
        f"render {summary.render_ms_per_frame:.1f} ms/frame at {config.image_size}x{config.image_size}; "
        f"expert success {summary.successes}/{summary.episodes_recorded}\ndataset: {args.out}"
    )
    return 0


def cmd_inspect(args) -> int:
    from distill.dataset import Dataset

    ds = Dataset.open(args.dataset)
    if args.verify:
        ds.verify()
    img = ds.image
    print(f"dataset {ds.root}: {len(ds)} episodes, {ds.num_frames} frames, "
          f"{img['height']}x{img['width']} {img['channel_order']} from camera {img['camera']}")
    for task, instruction in ds.tasks.items():
        eps = [e for e in ds.episodes if e.task == task]
        ok = sum(e.success for e in eps)
        print(f"  {task:28s} {len(eps):4d} episodes, {ok:4d} successful   \"{instruction}\"")
    st = ds.action_stats
    print("action statistics (tokenizer range):")
    for k, name in enumerate(st.names):
        print(f"  {name:10s} p01 {st.p01[k]:+.3f}  p99 {st.p99[k]:+.3f}  mean {st.mean[k]:+.3f}  std {st.std[k]:.3f}")
    if args.verify:
        print("verified: every chunk matches its sha256 and shapes")
    return 0


def policy_factory(spec: str):
    """'expert' -> Meta-World's scripted expert per task; a model folder -> its PyTorch reference policy."""
    if spec == "expert":
        from distill.expert import ScriptedExpert

        return ScriptedExpert, "expert"
    if (Path(spec) / "manifest.json").is_file():  # an exported bundle: the on-robot ONNX path
        from runtime.onnx_engine import OnnxPolicy

        policy = OnnxPolicy.load(spec)
        return (lambda task: policy), f"onnx:{spec}"
    if Path(spec).is_dir():
        from distill.reference_policy import TorchVlaPolicy

        policy = TorchVlaPolicy.load(spec)
        return (lambda task: policy), f"torch:{spec}"
    raise UserError(f"unknown policy '{spec}': pass 'expert' or a model folder (e.g. models/teacher)")


def recorded_image_settings(spec: str) -> tuple[int | None, str | None]:
    """(image size, camera) that a model folder or bundle was trained with; (None, None) when unknown."""
    import json

    try:
        if (Path(spec) / "manifest.json").is_file():
            image = json.loads((Path(spec) / "manifest.json").read_text())["image"]
            return image.get("height"), image.get("camera")
        if (Path(spec) / "config.json").is_file():
            config = json.loads((Path(spec) / "config.json").read_text())
            return config.get("sizes", {}).get("image_size"), config.get("camera")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # loading the policy reports what is wrong with it
    return None, None


def cmd_evaluate(args) -> int:
    from distill.dataset import Dataset
    from distill.evaluate import EVAL_SEED_START, EvalConfig, check_unseen, evaluate, format_table, write_report
    from distill.sim import DEFAULT_CAMERA, DEFAULT_IMAGE_SIZE, camera_views

    dataset = Dataset.open(args.dataset) if args.dataset else None
    trained_size, trained_camera = recorded_image_settings(args.policy)
    config = EvalConfig(
        tasks=args.tasks,
        seeds_per_task=args.seeds,
        seed_start=EVAL_SEED_START if args.seed_start is None else args.seed_start,
        max_steps=args.max_steps,
        terminate_after=args.terminate_after,
        image_size=args.image_size or trained_size or (dataset.image["height"] if dataset else DEFAULT_IMAGE_SIZE),
        camera=args.camera or trained_camera or (dataset.image["camera"] if dataset else DEFAULT_CAMERA),
    ).check()
    if trained_camera and len(camera_views(config.camera)) != len(camera_views(trained_camera)):
        raise UserError(f"{args.policy} takes frames of camera rig '{trained_camera}'; '{config.camera}' gives "
                        f"another number of views: pass --camera {trained_camera}")
    if trained_camera and config.camera != trained_camera:
        print(f"warning: {args.policy} was trained on '{trained_camera}' frames; evaluating on '{config.camera}'",
              file=sys.stderr)
    if dataset is not None:
        check_unseen(config, dataset)
    if args.workers > 1 and len(config.tasks) > 1:
        from distill.evaluate import evaluate_in_workers

        report = evaluate_in_workers(args.policy, config, args.workers, progress=not args.no_progress)
    else:
        make_policy, name = policy_factory(args.policy)
        report = evaluate(make_policy, config, policy_name=name, progress=not args.no_progress)
    path = write_report(report, args.out)
    print(format_table(report))
    print(f"report: {path}")
    return 0


def cmd_train_teacher(args) -> int:
    import dataclasses

    from distill.train_teacher import TrainConfig, smoke_config, train_teacher

    config = smoke_config(args.dataset, args.out) if args.smoke else TrainConfig(dataset=args.dataset, out=args.out)
    overrides = {"steps": args.steps, "stop_at": args.stop_at, "batch_size": args.batch_size, "lr": args.lr,
                 "robot_ratio": args.robot_ratio, "rounds": args.rounds, "round_steps": args.round_steps,
                 "round_episodes": args.round_episodes, "round_lr": args.round_lr, "init_from": args.init_from,
                 "warmup_steps": args.warmup_steps, "terminate_delay": args.terminate_delay}
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    config.seed, config.threads, config.device, config.precision = args.seed, args.threads, args.device, args.precision
    if args.image_size:
        config.sizes = dataclasses.replace(config.sizes, image_size=args.image_size)
    report = train_teacher(config, progress=not args.no_progress, command=["python", "-m", "distill", *sys.argv[1:]])
    held = report["heldout"]
    print(f"teacher: {report['parameters'] / 1e6:.2f}M parameters, {report['steps']} steps, "
          f"{report['samples_per_second']} samples/s; held-out action token accuracy "
          f"{held['action_token_accuracy']:.3f}, question accuracy {held['question_accuracy']:.3f}\nwritten: {args.out}")
    return 0


def cmd_student(args) -> int:
    import dataclasses

    from distill.student import StudentConfig, distill_student, parse_sizes, smoke_student_config

    config = (smoke_student_config if args.smoke else StudentConfig)(args.teacher, args.dataset, args.out)
    for key in ("steps", "rounds", "round_steps", "round_episodes", "eval_seeds", "labels", "teacher_actions",
                "prompt_template", "question_every", "round_ratio", "lr", "init_from", "robot_ratio",
                "round_labeller", "round_seed_start", "eval_phases", "eval_workers", "merge_init"):
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    if args.sizes is not None:
        if args.init_from:
            raise UserError("--sizes and --init-from both set the student's shape: --init-from takes its folder's sizes")
        config.sizes = parse_sizes(args.sizes, config.sizes)
    if args.temperature is not None:
        config.weights = dataclasses.replace(config.weights, temperature=args.temperature)
    config.seed, config.threads, config.device, config.precision = args.seed, args.threads, args.device, args.precision
    metrics = distill_student(config, progress=not args.no_progress, command=["python", "-m", "distill", *sys.argv[1:]])
    overall = metrics["student"]["closed_loop"]["overall"]["success_rate"]
    teacher = metrics["teacher"]["closed_loop"]["overall"]["success_rate"]
    ratio = metrics["flops_ratio"]
    flops = f"{ratio:.1f}x fewer FLOPs per action" if ratio else "FLOPs not counted for this teacher"
    print(f"student: {metrics['student']['parameters'] / 1e6:.2f}M parameters ({metrics['parameter_ratio']:.1f}x fewer), "
          f"{flops}; closed-loop success {overall:.0%} vs teacher {teacher:.0%}; "
          f"token agreement {metrics['token_agreement_heldout']:.3f}\nwritten: {args.out}")
    return 0


def cmd_card(args) -> int:
    from distill.model_card import write_card

    print(f"written: {write_card(args.model, args.eval)}")
    return 0


def cmd_tokenizer(args) -> int:
    from distill.dataset import Dataset
    from distill.make_tokenizer import build_tokenizer, load_id_table
    from runtime.action_tokenizer import ActionIdTable

    dataset = Dataset.open(args.dataset)
    if args.scheme == "last":
        if args.vocab_size is None:
            raise UserError("--scheme last needs --vocab-size (the model's vocabulary size)")
        table = ActionIdTable.last(args.vocab_size)
    else:
        table = load_id_table(args.ids, args.vocab_size)
    tokenizer = build_tokenizer(dataset, table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(args.out)
    print(f"action tokenizer: {tokenizer.dim} dimensions x {tokenizer.n_bins} bins, {table.describe()}\nwritten: {args.out}")
    return 0


cli = CommandLine(
    "python -m distill",
    "Simulator demonstrations, datasets and closed-loop evaluation (training commands come with the teacher).",
    __doc__,
)
cli.command("tasks", "list the Meta-World tasks, their instructions and the default set", "python -m distill tasks",
            cmd_tasks, description="List every task with its instruction; * marks the default set.")

_rec = cli.command(
    "record", "record scripted-expert demonstrations to a dataset folder",
    "python -m distill record --out data/demos --tasks default --episodes 50 --workers 2", cmd_record,
    description="Record scripted-expert episodes (frames, state, actions, success) to a dataset (see distill/DATASET.md).",
)
_rec.add_argument("--out", required=True, help="dataset folder to create (or to complete with --resume)")
_rec.add_argument("--tasks", default="default", help="comma-separated task names, or 'default' (default: %(default)s)")
_rec.add_argument("--episodes", type=int, default=50, help="episodes per task (default: %(default)s)")
_rec.add_argument("--seed-start", type=int, default=0, help="first seed; episode e uses seed-start + e (default: %(default)s)")
_rec.add_argument("--post-success-steps", type=int, default=10,
                  help="steps recorded after success with terminate = 1 (default: %(default)s)")
_rec.add_argument("--resume", action="store_true", help="add the missing episodes to an existing dataset")
_rec.add_argument("--workers", type=int, default=1,
                  help="processes recording at once (one simulator each: up to one per core; the dataset is "
                       "the same file for file) (default: %(default)s)")
_add_sim_args(_rec)

_ins = cli.command("inspect", "summarize a dataset and check its files", "python -m distill inspect data/demos --verify",
                   cmd_inspect, description="Print a dataset's tasks, episodes and action statistics.")
_ins.add_argument("dataset", help="dataset folder")
_ins.add_argument("--verify", action="store_true", help="also check every chunk's sha256 and array shapes")

_tok = cli.command(
    "tokenizer", "build the action tokenizer (statistics + 256 vocabulary ids) for a dataset",
    "python -m distill tokenizer --dataset data/demos --scheme last --vocab-size 1024 --out runs/action_tokenizer.json",
    cmd_tokenizer, description="Build an action tokenizer from a dataset's 1st/99th percentiles and an id table.",
)
_tok.add_argument("--dataset", required=True, help="dataset folder whose action statistics to use")
_group = _tok.add_mutually_exclusive_group(required=True)
_group.add_argument("--scheme", choices=["last"], help="'last': the last 256 ids of the vocabulary (OpenVLA)")
_group.add_argument("--ids", help="JSON file with the id table, or a plain list of 256 ids (with --vocab-size)")
_tok.add_argument("--vocab-size", type=int, help="the language model's vocabulary size")
_tok.add_argument("--out", required=True, help="tokenizer JSON to write")

_ev = cli.command(
    "evaluate", "run a policy in the simulator on unseen seeds and report success",
    "python -m distill evaluate --policy expert --seeds 20 --out runs/eval.json", cmd_evaluate,
    description="Closed-loop evaluation over N unseen seeds per task; writes JSON and prints a table.",
)
_ev.add_argument("--policy", default="expert",
                 help="'expert' (Meta-World's scripted expert), a model folder such as models/teacher, "
                      "or a bundle folder (ONNX Runtime)")
_ev.add_argument("--tasks", default="default", help="comma-separated task names, or 'default' (default: %(default)s)")
_ev.add_argument("--seeds", type=int, default=20, help="episodes (seeds) per task (default: %(default)s)")
_ev.add_argument("--seed-start", type=int, default=None,
                 help="first evaluation seed (default: 100000, above every recorded seed)")
_ev.add_argument("--dataset", help="a dataset whose image settings to use and whose seeds must stay unseen")
_ev.add_argument("--terminate-after", type=int, default=3,
                 help="consecutive terminate actions that end an episode (default: %(default)s)")
_ev.add_argument("--workers", type=int, default=1,
                 help="processes to spread the tasks over, one thread each (default: %(default)s)")
_ev.add_argument("--out", default="runs/eval.json", help="JSON report path (default: %(default)s)")
_add_sim_args(_ev, defaults_from_dataset=True)

_tt = cli.command(
    "train-teacher", "train the reference teacher VLA (RT-2 co-fine-tuning; resumable)",
    "python -m distill train-teacher --dataset data/demos --out models/teacher --steps 20000", cmd_train_teacher,
    description="Co-fine-tune a SigLIP + Llama VLA on robot actions and scene questions. Running the same command "
                "again resumes from <out>/checkpoint. --smoke trains a tiny model for a few steps.",
)
_tt.add_argument("--dataset", required=True, help="dataset folder from `python -m distill record`")
_tt.add_argument("--out", required=True, help="teacher folder to write (weights, tokenizers, training.json)")
_tt.add_argument("--steps", type=int, default=None, help="total optimizer steps (default: 20000; smoke: 40)")
_tt.add_argument("--batch-size", type=int, default=None, help="samples per step (default: 32)")
_tt.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 3e-4)")
_tt.add_argument("--stop-at", type=int, default=None,
                 help="stop at this step with a checkpoint (run again to continue to --steps)")
_tt.add_argument("--terminate-delay", type=int, default=None,
                 help="label terminate only from this many frames after success: a later, surer stop (default: 0)")
_tt.add_argument("--robot-ratio", type=float, default=None, help="share of robot samples per batch (default: 0.66)")
_tt.add_argument("--seed", type=int, default=0, help="seed for weights and batches (default: %(default)s)")
_tt.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, fastest here)")
_tt.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda' (default: auto)")
_add_precision_arg(_tt)
_tt.add_argument("--image-size", type=int, default=None, help="model image size (default: 96; the dataset's frames are resized)")
_tt.add_argument("--rounds", type=int, default=None,
                 help="DAgger rounds after --steps: the teacher drives, Meta-World's scripted expert labels (default: 0)")
_tt.add_argument("--round-steps", type=int, default=None, help="training steps per round (default: 3000)")
_tt.add_argument("--round-episodes", type=int, default=None, help="teacher episodes per task per round (default: 20)")
_tt.add_argument("--round-lr", type=float, default=None, help="peak learning rate of each round (default: 1e-4)")
_tt.add_argument("--init-from", default=None,
                 help="start a new run from this model folder's weights (same sizes; a camera rig adds a view "
                      "embedding, zero at start)")
_tt.add_argument("--warmup-steps", type=int, default=None, help="learning-rate warm-up steps (default: 300)")
_tt.add_argument("--smoke", action="store_true", help="tiny model, 40 steps: a check that training works")
_tt.add_argument("--no-progress", action="store_true", help="no progress bar")

_st = cli.command(
    "student", "distil a teacher into a small student (offline labels, KL + CE, on-policy rounds; resumable)",
    "python -m distill student --teacher models/teacher --dataset data/demos --out models/student --rounds 2",
    cmd_student,
    description="Distil a teacher VLA into a student of the same family: offline teacher labels, temperature-scaled "
                "KL plus cross-entropy on actions and answers, then DAgger rounds. Writes the student and metrics.json.",
)
_st.add_argument("--teacher", required=True, help="teacher model folder (e.g. models/teacher)")
_st.add_argument("--dataset", required=True, help="dataset folder the teacher labels")
_st.add_argument("--out", required=True, help="student folder to write")
_st.add_argument("--steps", type=int, help="offline distillation steps (default: 6000)")
_st.add_argument("--rounds", type=int, help="on-policy rounds (default: 2)")
_st.add_argument("--round-steps", type=int, help="training steps after each round (default: 1500)")
_st.add_argument("--round-episodes", type=int, help="student episodes per task per round (default: 10)")
_st.add_argument("--eval-seeds", type=int, help="closed-loop seeds per task after each phase (default: 20)")
_st.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3)")
_st.add_argument("--robot-ratio", type=float, help="share of robot frames in a batch, the rest scene questions "
                                                   "(default: 0.66)")
_st.add_argument("--sizes", help="the student's shape: changes to the default student, e.g. "
                                 "'vision_width=96,text_width=112' (fields of ModelSizes in distill/model.py)")
_st.add_argument("--init-from", help="continue from a student folder's weights (a new --out only; its sizes are used): "
                                     "e.g. models/student, to distil further from the same teacher")
_st.add_argument("--merge-init", type=float,
                 help="weight-space ensemble with the --init-from student (WiSE-FT): the written student is "
                      "init + ALPHA * (trained - init), evaluated closed loop as such; the checkpoint keeps the "
                      "trained weights, so rerunning a finished run with another ALPHA only blends and evaluates "
                      "(default: 1, the trained weights)")
_st.add_argument("--labels", help="teacher-label cache folder (default: <out>/labels)")
_st.add_argument("--teacher-actions",
                 help="for a Hugging Face teacher: its action tokenizer JSON (statistics + 256 ids of its vocabulary)")
_st.add_argument("--prompt-template", help="for a Hugging Face teacher: prompt with {instruction} (default: {instruction})")
_st.add_argument("--round-ratio", type=float,
                 help="share of robot samples drawn from the on-policy rounds' frames (default: 0, uniform over "
                      "demonstrations and rounds, where the rounds are a few percent)")
_st.add_argument("--round-labeller", choices=("teacher", "expert"),
                 help="who writes a round's action tokens (the cross-entropy targets; the teacher's KL covers the "
                      "round's frames either way): the teacher's greedy actions, or the scripted expert's, which "
                      "reads the simulator state (default: teacher)")
_st.add_argument("--round-seed-start", type=int,
                 help="round r's student episodes use seeds from this + 1000 * r, so a run warm-started from "
                      "an earlier one's student can drive new scenes (default: 200000; evaluation uses 100000 on)")
_st.add_argument("--eval-phases", choices=("all", "last"),
                 help="closed loop after every phase, or after the last one only (default: all)")
_st.add_argument("--eval-workers", type=int,
                 help="closed-loop evaluation processes, one torch thread each (default: 1)")
_st.add_argument("--question-every", type=int,
                 help="scene questions at every k-th frame (default: 4; 1 labels them at every frame, ~2.4x the "
                      "teacher-labelling time)")
_st.add_argument("--temperature", type=float, help="distillation temperature (default: 2.0)")
_st.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
_st.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
_st.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
_add_precision_arg(_st)
_st.add_argument("--smoke", action="store_true", help="tiny student, a few steps, one small round: a check that it works")
_st.add_argument("--no-progress", action="store_true", help="no progress bar")

_card = cli.command("card", "write a model folder's README.md from its training record and an evaluation",
                    "python -m distill card models/teacher --eval runs/eval_teacher.json", cmd_card)
_card.add_argument("model", help="model folder (holds training.json)")
_card.add_argument("--eval", help="closed-loop report from `python -m distill evaluate`, copied into the folder")

if __name__ == "__main__":
    sys.exit(cli.run())
