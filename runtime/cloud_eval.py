"""Closed loop over the cloud path: the policy served by a policy server, reached through the netem
proxy under each network profile, driven by the runtime's own fixed-rate control loop on the simulator.
Late actions cost success as they would on a robot. Needs the simulator (the train extra).

    python -m runtime cloud-eval --bundle bundles/teacher-fp32 --tasks default --seeds 20 \\
        --profiles lan,wifi,lte,cloud --rate 10 --out runs/cloud_eval.json

What happens per profile: a `python -m runtime netem-proxy` process sits between a `CloudPolicy` and
the server (a `python -m runtime serve` process on the bundle, or `--server ws://...`), and every
(task, seed) episode runs in `ControlLoop` at `--rate` Hz with the bundle's safety envelope. The client
waits at most `--timeout-ms` (default: 80% of the control period) and then falls back: "hold" sends a
zero-motion step, "local" hands the step to the on-robot `--local-bundle` (hybrid mode). The simulator
advances one step per control tick, so a held step is a step of the episode's budget spent standing
still; the scene does not move on while the network delays a reply (objects in these tasks are still
unless the arm pushes them, so that is what a robot would see).

The report (JSON, written atomically after every profile, so a crash keeps the profiles done) holds,
per profile: success per task and overall, the steps decided by the cloud and by the fallback, late
and stale replies, control-loop overruns, round-trip percentiles and bytes sent per request.
"""

from __future__ import annotations

import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.atomic_io import write_json_atomic
from runtime.errors import UserError

REPORT_FORMAT = "vla-edge-cloud-eval"
COUNTERS = ("requests", "cloud", "late", "stale", "hold", "local", "server_errors", "disconnected_steps", "bytes_sent")


@dataclass
class CloudEvalConfig:
    bundle: str
    tasks: list[str] = field(default_factory=lambda: ["default"])
    seeds: int = 20
    seed_start: int = 100_000
    profiles: list[str] = field(default_factory=lambda: ["lan", "wifi", "lte", "cloud"])
    rate_hz: float = 10.0
    timeout_ms: float | None = None  # default: 80% of the control period
    fallback: str = "hold"
    local_bundle: str | None = None
    jpeg_quality: int | None = None
    max_steps: int = 200
    terminate_after: int = 3
    server: str | None = None  # ws://host:port of a running server; default: serve --bundle here
    threads: int = 1
    proxy_seed: int = 0

    def check(self) -> "CloudEvalConfig":
        from distill.tasks import resolve_tasks

        from runtime.net_profiles import get_profiles

        self.tasks = resolve_tasks(",".join(self.tasks))
        get_profiles(",".join(self.profiles))
        if self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {self.seeds}")
        if not 0.5 <= self.rate_hz <= 200:
            raise UserError(f"--rate {self.rate_hz} Hz is out of range: use 0.5 to 200")
        if self.timeout_ms is not None and not 0 < self.timeout_ms < 1000 / self.rate_hz:
            raise UserError(f"--timeout-ms {self.timeout_ms} must be above 0 and below the control period "
                            f"({1000 / self.rate_hz:g} ms at {self.rate_hz:g} Hz), or the loop overruns on every late reply")
        if self.fallback == "local" and not self.local_bundle:
            raise UserError("--fallback local needs --local-bundle (the on-robot student bundle)")
        if self.max_steps < 1 or self.terminate_after < 1:
            raise UserError("--max-steps and --terminate-after must be at least 1")
        return self

    @property
    def timeout_s(self) -> float:
        return (self.timeout_ms if self.timeout_ms is not None else 800 / self.rate_hz) / 1000


# -- helper processes ----------------------------------------------------------------------------
def spawn_listening(args: list[str], what: str, timeout_s: float = 120) -> tuple[subprocess.Popen, int]:
    """Start `python -m runtime ARGS` and wait for its first stdout line, `listening HOST:PORT ...`."""
    log = tempfile.TemporaryFile(mode="w+")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                                    os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "runtime", *args], stdout=subprocess.PIPE, stderr=log, text=True,
                            env=env)
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("listening "):
        stop_process(proc)
        log.seek(0)
        tail = log.read().strip().splitlines()[-3:]
        raise UserError(f"the {what} did not start ({' | '.join(tail) or 'no output within ' + str(timeout_s) + ' s'})")
    address = line.split()[1].rsplit("/", 1)[-1]
    return proc, int(address.rsplit(":", 1)[1])


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- evaluation ----------------------------------------------------------------------------------
def run_profile(client, bundle, config: CloudEvalConfig, progress=print) -> dict:
    """Every (task, seed) episode through `client` in the control loop; the profile's row of the report."""
    from runtime.control_loop import LoopConfig
    from runtime.episodes import run_tasks
    from runtime.safety import SafetyConfig, SafetyEnvelope
    from runtime.sim_robot import SimRobot

    safety = SafetyEnvelope(SafetyConfig.from_manifest(bundle.manifest))
    loop_config = LoopConfig(rate_hz=config.rate_hz, max_steps=config.max_steps, terminate_after=config.terminate_after)
    image = bundle.manifest["image"]
    counted = {k: client.stats[k] for k in COUNTERS}

    def on_episode(episode: dict) -> None:  # what the client did during this episode
        episode["success"] = episode["ended_by"] == "success"
        for key in COUNTERS:
            episode[key], counted[key] = client.stats[key] - counted[key], client.stats[key]
        progress(f"  {episode['task']:28s} seed {episode['seed']}: {episode['ended_by']:9s} {episode['steps']:4d} "
                 f"steps, {episode['cloud']} by the cloud, {episode['hold'] + episode['local']} by the fallback")

    results = run_tasks(lambda task: SimRobot(task, image_size=image["height"], camera=image.get("camera")),
                        config.tasks, range(config.seed_start, config.seed_start + config.seeds), client, safety,
                        loop_config, on_episode=on_episode)
    return summarize(results.episodes, list(client.round_trips))


def summarize(episodes: list[dict], round_trips: list[float]) -> dict:
    tasks: dict[str, dict] = {}
    for e in episodes:
        row = tasks.setdefault(e["task"], {"episodes": 0, "successes": 0})
        row["episodes"] += 1
        row["successes"] += e["success"]
    total = {k: sum(e[k] for e in episodes) for k in COUNTERS + ("steps", "overruns")}
    successes = sum(e["success"] for e in episodes)
    rtt = 1000 * np.asarray(round_trips) if round_trips else None
    return {
        "episodes": len(episodes), "successes": successes, "success_rate": successes / len(episodes),
        "tasks": tasks, **total,
        "fallback_steps": total["hold"] + total["local"],
        "late_rate": total["late"] / total["requests"] if total["requests"] else None,
        "bytes_per_request": total["bytes_sent"] / total["requests"] if total["requests"] else None,
        "round_trip_ms": None if rtt is None else {f"p{q}": float(np.percentile(rtt, q)) for q in (50, 90, 95, 99)},
        "episode_log": episodes,
    }


def run_cloud_eval(config: CloudEvalConfig, out: str | os.PathLike | None = None, progress=print) -> dict:
    """Serve the bundle (or use --server), then evaluate every profile through its own proxy."""
    from runtime.bundle import Bundle
    from runtime.cloud_client import ClientConfig, CloudPolicy
    from runtime.net_profiles import get_profiles
    from runtime.onnx_engine import OnnxPolicy

    config.check()
    bundle = Bundle.load(config.bundle)
    local = OnnxPolicy.load(config.local_bundle, threads=config.threads) if config.fallback == "local" else None
    report = {"format": REPORT_FORMAT, "version": 1, "config": asdict(config), "timeout_ms": 1000 * config.timeout_s,
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "model": None, "profiles": {}}
    start = time.perf_counter()
    with ExitStack() as stack:
        if config.server:
            host, port = _host_port(config.server)
        else:
            server, port = spawn_listening(["serve", "--bundle", config.bundle, "--host", "127.0.0.1", "--port", "0",
                                            "--threads", str(config.threads)], "policy server")
            stack.callback(stop_process, server)
            host = "127.0.0.1"
        for profile in get_profiles(",".join(config.profiles)):
            proxy, proxy_port = spawn_listening(["netem-proxy", "--listen", "127.0.0.1:0", "--target", f"{host}:{port}",
                                                 "--profile", profile.name, "--seed", str(config.proxy_seed)],
                                                "netem proxy")
            try:
                client_config = ClientConfig(f"ws://127.0.0.1:{proxy_port}", timeout_s=config.timeout_s,
                                             fallback=config.fallback, jpeg_quality=config.jpeg_quality)
                with CloudPolicy(client_config, local=local) as client:
                    report["model"] = client.hello["model"]
                    progress(f"{profile.describe()}")
                    row = run_profile(client, bundle, config, progress)
            finally:
                stop_process(proxy)
            row["profile"] = profile.describe()
            report["profiles"][profile.name] = row
            report["wall_s"] = time.perf_counter() - start
            if out is not None:
                write_report(report, out)
    return report


def _host_port(url: str) -> tuple[str, int]:
    address = url.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--server '{url}' needs a host and port, e.g. ws://10.0.0.5:8765")
    return host, int(port)


def write_report(report: dict, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    return out


def format_table(report: dict) -> str:
    """One line per profile: success, who decided the steps, lateness, round trip, bytes."""
    lines = [f"timeout {report['timeout_ms']:.0f} ms, fallback {report['config']['fallback']}, "
             f"{report['config']['rate_hz']:g} Hz",
             f"{'profile':9s} {'success':>11s} {'cloud':>7s} {'fallback':>8s} {'late':>6s} {'stale':>6s} "
             f"{'overrun':>7s} {'rtt p50':>8s} {'rtt p95':>8s} {'bytes/req':>9s}"]
    for name, row in report["profiles"].items():
        rtt = row["round_trip_ms"] or {}
        def ms(key):
            return f"{rtt[key]:8.1f}" if key in rtt else f"{'-':>8s}"
        lines.append(f"{name:9s} {row['successes']:>4d}/{row['episodes']:<3d}{100 * row['success_rate']:3.0f}% "
                     f"{row['cloud']:7d} {row['fallback_steps']:8d} {row['late']:6d} {row['stale']:6d} "
                     f"{row['overruns']:7d} {ms('p50')} {ms('p95')} {row['bytes_per_request'] or 0:9.0f}")
    return "\n".join(lines)
