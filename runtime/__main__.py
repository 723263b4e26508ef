"""`python -m runtime`: on-robot commands (numpy, onnxruntime, OpenCV; never torch).

Examples:

    python -m runtime tokenizer runs/action_tokenizer.json
    python -m runtime tokenizer runs/action_tokenizer.json --encode 0.1,-0.5,0.0,1.0,0.0
    python -m runtime run --bundle bundles/student-int8 --sim default --seeds 5
    python -m runtime run --bundle bundles/student-int8 --camera 0 --instruction "open the drawer" --port /dev/ttyACM0
    python -m runtime run --bundle bundles/student-int8 --sim drawer-open --port /dev/pts/3 --bench 127.0.0.1:47000
    python -m runtime serve --bundle bundles/teacher-fp32 --host 127.0.0.1 --port 8765
    python -m runtime netem-proxy --listen 127.0.0.1:9000 --target 127.0.0.1:8765 --profile lte
    python -m runtime cloud-eval --bundle bundles/teacher-fp32 --tasks default --seeds 20 --profiles lan,wifi,lte,cloud
"""

from __future__ import annotations

import sys

import numpy as np

from runtime.cli import CommandLine
from runtime.engines import add_engine_argument
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


def check_run_args(args) -> None:
    """Refuse a contradictory `run` command line before anything is loaded."""
    if args.sim:
        if args.port and not args.bench:
            raise UserError("--sim with --port runs through the controller emulator: add --bench HOST:PORT, the "
                            "address that `python -m firmware_bridge emulate --pty --arm metaworld` prints")
        if args.bench and not args.port:
            raise UserError("--bench needs --port: the emulator's serial port (the pty path it prints)")
        return
    if not args.instruction or args.camera is None:
        raise UserError("a real robot run needs --camera and --instruction (or --sim TASK for the simulator)")
    if not args.port:
        raise UserError("a real robot run needs --port, the arm controller's serial port, e.g. --port /dev/ttyACM0 "
                        "(`python -m firmware_bridge ports` lists them; `python -m firmware_bridge emulate --pty` "
                        "emulates a controller)")
    if args.bench:
        raise UserError("--bench serves the simulator's frames and resets: use it with --sim TASK")


def cmd_run(args) -> int:
    from runtime.bundle import Bundle
    from runtime.control_loop import LoopConfig
    from runtime.engines import load_policy
    from runtime.safety import SafetyConfig, SafetyEnvelope

    check_run_args(args)
    bundle = Bundle.load(args.bundle)
    policy = load_policy(bundle, args.engine, threads=args.threads, decode=args.decode)
    engine = policy.engine
    if hasattr(engine, "warm_up"):
        engine.warm_up()
    print(f"engine: {args.engine} {getattr(engine, 'providers', '')}, decode: {getattr(engine, 'decode_mode', 'loop')}, "
          f"{args.threads} thread(s); warmed up", flush=True)
    safety = SafetyEnvelope(SafetyConfig.from_manifest(bundle.manifest))
    config = LoopConfig(rate_hz=args.rate, max_steps=args.max_steps, terminate_after=args.terminate_after,
                        log_path=args.log, deadline_s=None if args.deadline_ms is None else args.deadline_ms / 1000)
    if args.sim:
        return run_in_sim(args, bundle, policy, safety, config)
    return run_on_robot(args, bundle, policy, safety, config)


def run_on_robot(args, bundle, policy, safety, config) -> int:
    from contextlib import closing

    from firmware_bridge.link import LinkError
    from runtime.camera import open_rig
    from runtime.control_loop import ControlLoop, format_stage_table
    from runtime.serial_robot import open_link

    policy.engine.prompt_ids(args.instruction)  # refuse an unknown instruction before the camera opens
    image = bundle.manifest["image"]
    camera = open_rig(args.camera, image.get("views", 1), image["height"], image.get("camera"))
    try:
        with closing(open_link(args.port, args.baud, _mm_per_unit(safety), args.ack_timeout_ms)) as arm:
            arm.hold()  # the first ACK says where the hand is: the safety envelope's workspace check needs it
            if arm.estopped:
                raise UserError(f"the controller on {args.port} has its e-stop latched: once it is safe, release it "
                                f"(SerialLink.clear_estop(), or at the controller) and run again")
            summary = ControlLoop(policy, camera, arm, safety, args.instruction, config).run()
    except LinkError as err:
        raise UserError(f"the link to the arm on {args.port} failed: {err}") from None
    finally:
        camera.close()
    print(f"ended by {summary['ended_by']} after {summary['steps']} steps ({summary['held']} held, "
          f"{summary['overruns']} overruns)")
    print(format_stage_table(summary))
    episode = {"task": None, "instruction": args.instruction, "ended_by": summary["ended_by"], "steps": summary["steps"],
               "held": summary["held"], "overruns": summary["overruns"], "wall_s": summary["wall_s"]}
    _write_out(args, "robot", [episode])
    return 0


def run_in_sim(args, bundle, policy, safety, config) -> int:
    from contextlib import ExitStack, closing

    from firmware_bridge.link import LinkError
    from runtime.control_loop import format_stage_table
    from runtime.episodes import run_tasks

    tasks = args.sim.split(",")
    if tasks == ["default"]:
        from distill.tasks import DEFAULT_TASKS

        tasks = list(DEFAULT_TASKS)
    size, camera = bundle.manifest["image"]["height"], bundle.manifest["image"].get("camera")
    seeds = range(args.seed_start, args.seed_start + args.seeds)

    def report(episode: dict) -> None:
        print(f"  {episode['task']:28s} seed {episode['seed']}: {episode['ended_by']} after {episode['steps']} steps",
              flush=True)

    with ExitStack() as stack:
        if args.port:  # runtime -> serial -> emulator -> simulator -> bench frame -> runtime
            from firmware_bridge.bench import BenchClient
            from runtime.serial_robot import SIM_PROCESSING_MS, BenchRobot, open_link

            link = stack.enter_context(closing(open_link(args.port, args.baud, _mm_per_unit(safety),
                                                         args.ack_timeout_ms, processing_ms=SIM_PROCESSING_MS)))
            bench = stack.enter_context(BenchClient(args.bench))

            def make_robot(task):
                return BenchRobot(link, bench, task, size, camera)
        else:
            from runtime.sim_robot import SimRobot

            def make_robot(task):
                return SimRobot(task, image_size=size, camera=camera)
        try:
            results = run_tasks(make_robot, tasks, seeds, policy, safety, config, on_episode=report)
        except LinkError as err:
            raise UserError(f"the serial link to the emulator on {args.port} failed: {err}") from None
    successes = results.successes()
    for task, count in successes.items():
        print(f"{task:28s} {count}/{args.seeds}")
    total = sum(successes.values())
    print(f"{'overall':28s} {total}/{args.seeds * len(tasks)} ({100 * total / (args.seeds * len(tasks)):.0f}%)")
    merged = results.loops[0]
    merged.records = [r for loop in results.loops for r in loop.records]
    print(format_stage_table(merged.summary("all", 1.0)))
    _write_out(args, "serial" if args.port else "in-process", results.episodes)
    return 0


def _mm_per_unit(safety) -> float:
    """Millimetres of hand motion per action unit, from the bundle's safety settings (Meta-World: 10)."""
    return safety.config.metres_per_unit * 1000.0


def _write_out(args, arm: str, episodes: list[dict]) -> None:
    if not args.out:
        return
    from runtime.atomic_io import write_json_atomic

    write_json_atomic(args.out, {"bundle": str(args.bundle), "arm": arm, "port": args.port, "baud": args.baud,
                                 "episodes": episodes})


cli = CommandLine(
    "python -m runtime",
    "On-robot runtime: the ONNX engine in a fixed-rate control loop with a safety envelope, on the simulator "
    "or a camera and serial arm; the policy server and client of the cloud path.",
    __doc__,
)
_tok = cli.command("tokenizer", "check an action tokenizer file and show its ranges and ids",
                   "python -m runtime tokenizer runs/action_tokenizer.json", cmd_tokenizer,
                   description="Load and validate an action tokenizer JSON; optionally encode one action.")
_tok.add_argument("path", help="action tokenizer JSON (written by `python -m distill tokenizer`)")
_tok.add_argument("--encode", help="comma-separated action to encode and decode back, e.g. 0.1,-0.5,0,1,0")

_run = cli.command("run", "run a bundle in the control loop: on the simulator (--sim) or a camera and arm",
                   "python -m runtime run --bundle bundles/student-int8 --camera 0 --instruction 'open the drawer' "
                   "--port /dev/ttyACM0 --baud 1000000", cmd_run,
                   description="Run a bundle closed-loop at a fixed rate with the safety envelope; prints success "
                               "and the per-stage latency table (p50, p95, p99). With --sim TASKS the simulator is the "
                               "robot, in this process, or in the controller emulator over a serial port (--port and "
                               "--bench); with --camera and --instruction the arm is on --port.")
_run.add_argument("--bundle", required=True, help="bundle folder written by `python -m export`")
_run.add_argument("--sim", help="simulated tasks, comma-separated, or 'default' (needs the train extra)")
_run.add_argument("--camera", action="append",
                  help="camera: device index, video file or GStreamer pipeline; repeat it once per view for a "
                       "bundle whose frames tile several cameras (manifest image.views), in that order")
_run.add_argument("--instruction", help="what to do, e.g. 'open the drawer' (one the model was trained on)")
_run.add_argument("--seeds", type=int, default=5, help="simulated episodes per task (default: %(default)s)")
_run.add_argument("--seed-start", type=int, default=100_000, help="first simulator seed (default: %(default)s)")
_run.add_argument("--rate", type=float, default=20.0, help="control rate in Hz (default: %(default)s)")
_run.add_argument("--max-steps", type=int, default=200, help="steps per episode (default: %(default)s)")
_run.add_argument("--terminate-after", type=int, default=3, help="consecutive terminate actions that stop (default: 3)")
_run.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: %(default)s)")
_run.add_argument("--decode", choices=["auto", "act", "loop"], default="auto",
                  help="act: one session call per action (the bundle's act graph); loop: one decoder call per "
                       "action token; auto: act where the bundle has it (default: %(default)s)")
add_engine_argument(_run)
_run.add_argument("--log", help="append every step to this JSON-lines file")
_run.add_argument("--out", help="write the episodes (task, seed, ended_by, steps) to this JSON file")
_run.add_argument("--deadline-ms", type=float,
                  help="an action ready later than this after its tick is not sent; the arm holds (default: one period)")
_run.add_argument("--port", help="the arm controller's serial port or pyserial URL, e.g. /dev/ttyACM0; with --sim: "
                                 "the emulator's port (see --bench)")
_run.add_argument("--baud", type=int, default=1_000_000, help="serial baud rate (default: %(default)s)")
_run.add_argument("--ack-timeout-ms", type=float,
                  help="wait this long for each ACK before retransmitting (default: derived from --baud)")
_run.add_argument("--bench", help="with --sim and --port: the emulator's bench address HOST:PORT (frames, resets, "
                                  "success), printed by `python -m firmware_bridge emulate --arm metaworld`")

# -- the cloud path: policy server, network emulation, closed loop over the network ----------------
def cmd_serve(args) -> int:
    import logging

    from runtime.policy_server import ServerConfig, bundle_server

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    server = bundle_server(args.bundle, ServerConfig(host=args.host, port=args.port, max_connections=args.max_connections,
                                                     max_message_bytes=args.max_message_bytes),
                           threads=args.threads, engine=args.engine)
    server.serve_forever(announce=lambda: print(f"listening {server.url} (health: {server.health_url})", flush=True))
    return 0


def cmd_netem_proxy(args) -> int:
    import asyncio

    from runtime.net_profiles import PROFILES, get_profile
    from runtime.netem_proxy import NetemProxy, serve_proxy

    if args.list:
        print("\n".join(p.describe() + f"  [{p.note}]" for p in PROFILES.values()))
        print("figures and sources: runtime/net_profiles.py")
        return 0
    if not args.listen or not args.target:
        raise UserError("netem-proxy needs --listen HOST:PORT and --target HOST:PORT (or --list)")
    listen, target = _address(args.listen, "--listen"), _address(args.target, "--target")
    profile = get_profile(args.profile).replace(rtt_ms=args.rtt_ms, jitter_ms=args.jitter_ms, up_mbit=args.up_mbit,
                                                down_mbit=args.down_mbit, loss=args.loss, rto_ms=args.rto_ms)
    proxy = NetemProxy(*target, profile, listen_host=listen[0], listen_port=listen[1], seed=args.seed)

    def announce(port: int) -> None:
        print(f"listening {listen[0]}:{port} -> {target[0]}:{target[1]}, {profile.describe()}", flush=True)

    try:
        asyncio.run(serve_proxy(proxy, announce))
    except OSError as err:
        raise UserError(f"cannot listen on {args.listen} ({err.strerror or err}): choose another port") from None
    return 0


def _address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{flag} '{text}' must be HOST:PORT, e.g. 127.0.0.1:9000")
    return host, int(port)


def cmd_cloud_eval(args) -> int:
    from runtime.cloud_eval import CloudEvalConfig, format_table, run_cloud_eval

    config = CloudEvalConfig(bundle=args.bundle, tasks=args.tasks.split(","), seeds=args.seeds, seed_start=args.seed_start,
                             profiles=args.profiles.split(","), rate_hz=args.rate, timeout_ms=args.timeout_ms,
                             fallback=args.fallback, local_bundle=args.local_bundle, jpeg_quality=args.jpeg_quality,
                             max_steps=args.max_steps, terminate_after=args.terminate_after, server=args.server,
                             threads=args.threads)
    report = run_cloud_eval(config, out=args.out)
    print(format_table(report))
    if args.out:
        print(f"report: {args.out}")
    return 0


_serve = cli.command("serve", "serve a bundle to robots over websockets (the cloud path)",
                     "python -m runtime serve --bundle bundles/teacher-fp32 --host 127.0.0.1 --port 8765", cmd_serve,
                     description="Serve a bundle's policy over websockets with msgpack (runtime/wire.py): a hello "
                                 "with the model, action spec and instructions on connect, one session per robot, "
                                 "the server's timings in every reply, errors as replies, GET /healthz.")
_serve.add_argument("--bundle", required=True, help="bundle folder written by `python -m export`")
_serve.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface "
                                                       "(default: %(default)s)")
_serve.add_argument("--port", type=int, default=8765, help="TCP port; 0 picks a free one (default: %(default)s)")
_serve.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: %(default)s)")
add_engine_argument(_serve)
_serve.add_argument("--max-connections", type=int, default=64, help="robots at once (default: %(default)s)")
_serve.add_argument("--max-message-bytes", type=int, default=4 << 20,
                    help="largest request accepted; larger ones close that connection with code 1009 "
                         "(default: %(default)s)")
_serve.add_argument("--quiet", action="store_true", help="log warnings only, not every connection")

_netem = cli.command("netem-proxy", "a TCP proxy that imposes delay, jitter, bandwidth and loss (user-space netem)",
                     "python -m runtime netem-proxy --listen 127.0.0.1:9000 --target 127.0.0.1:8765 --profile lte",
                     cmd_netem_proxy,
                     description="Forward TCP connections from --listen to --target under a named network profile "
                                 "(loopback, lan, wifi, lte, cloud; --list shows their figures, sourced in "
                                 "runtime/net_profiles.py), each knob overridable.")
_netem.add_argument("--listen", help="HOST:PORT to accept robots on (port 0 picks a free one)")
_netem.add_argument("--target", help="HOST:PORT of the policy server")
_netem.add_argument("--profile", default="loopback", help="network profile (default: %(default)s)")
_netem.add_argument("--rtt-ms", type=float, help="round-trip delay added, ms (half each way); replaces the profile's")
_netem.add_argument("--jitter-ms", type=float, help="standard deviation of each direction's delay, ms")
_netem.add_argument("--up-mbit", type=float, help="robot -> server bandwidth, Mbit/s (0: unlimited)")
_netem.add_argument("--down-mbit", type=float, help="server -> robot bandwidth, Mbit/s (0: unlimited)")
_netem.add_argument("--loss", type=float, help="probability that a TCP segment is lost, e.g. 0.01; each loss delays "
                                               "its bytes by --rto-ms (TCP retransmits, it never drops)")
_netem.add_argument("--rto-ms", type=float, help="what one lost segment costs (default: 200, Linux's minimum RTO)")
_netem.add_argument("--seed", type=int, default=0, help="random seed of jitter and loss (default: %(default)s)")
_netem.add_argument("--list", action="store_true", help="print the named profiles and exit")

_ceval = cli.command("cloud-eval", "closed-loop success of a served bundle under each network profile",
                     "python -m runtime cloud-eval --bundle bundles/teacher-fp32 --tasks default --seeds 20 "
                     "--profiles lan,wifi,lte,cloud --rate 10", cmd_cloud_eval,
                     description="Serve the bundle, put the netem proxy in front of it for each profile, and run the "
                                 "runtime's fixed-rate control loop on the simulator through the cloud client: late "
                                 "replies fall back (hold, or the local student) and cost success as on a robot. "
                                 "Needs the train extra (Meta-World).")
_ceval.add_argument("--bundle", required=True, help="bundle to serve (and whose image spec and safety defaults to use)")
_ceval.add_argument("--tasks", default="default", help="tasks, comma-separated, or 'default' (default: %(default)s)")
_ceval.add_argument("--seeds", type=int, default=20, help="episodes per task and profile (default: %(default)s)")
_ceval.add_argument("--seed-start", type=int, default=100_000, help="first simulator seed (default: %(default)s)")
_ceval.add_argument("--profiles", default="lan,wifi,lte,cloud", help="network profiles, comma-separated, or 'all' "
                                                                     "(default: %(default)s)")
_ceval.add_argument("--rate", type=float, default=10.0, help="control rate in Hz (default: %(default)s)")
_ceval.add_argument("--timeout-ms", type=float, help="longest wait for a reply (default: 80%% of the control period)")
_ceval.add_argument("--fallback", choices=("hold", "local"), default="hold",
                    help="when a reply is late: hold position, or the local student (default: %(default)s)")
_ceval.add_argument("--local-bundle", help="the on-robot student bundle for --fallback local (hybrid mode)")
_ceval.add_argument("--jpeg-quality", type=int, help="send JPEG frames of this quality (default: raw, lossless)")
_ceval.add_argument("--server", help="ws://HOST:PORT of a running policy server serving --bundle (default: start one)")
_ceval.add_argument("--max-steps", type=int, default=200, help="steps per episode (default: %(default)s)")
_ceval.add_argument("--terminate-after", type=int, default=3, help="consecutive terminate actions that stop (default: 3)")
_ceval.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: %(default)s)")
_ceval.add_argument("--out", help="write the JSON report here (atomically, after every profile)")

if __name__ == "__main__":
    sys.exit(cli.run())
