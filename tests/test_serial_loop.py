"""The closed loop through the serial link: runtime -> serial -> emulator -> Meta-World -> camera frame
(from the emulator's bench) -> runtime. It gives the same episodes as the in-process loop, step for step
(the in-process arm quantizes as the link does: firmware_bridge/PROTOCOL.md, "The emulated Meta-World
arm"); the Meta-World arm behind the controller; the real-robot branch of `runtime run` over a pty."""

import json
import os
import re
import subprocess
import sys
from contextlib import closing

import numpy as np
import pytest

from conftest import REPO, needs_sim, run_module
from firmware_bridge.bench import BenchClient, BenchServer
from firmware_bridge.controller import ControllerCore, ControllerLimits, KinematicArm
from firmware_bridge.emulator import Emulator
from firmware_bridge.protocol import HELLO, AckPayload, AckStatus, ActionPayload, Frame, MsgType, metres_to_um
from test_control_loop import FakeClock  # time passes only when the loop sleeps: no step is ever late

pytestmark = needs_sim
TASKS = ["drawer-open", "reach"]


@pytest.fixture(scope="module")
def metaworld_emulator(tmp_path_factory):
    """`python -m firmware_bridge emulate --pty --arm metaworld` in its own process: (pty path, bench address)."""
    log = tmp_path_factory.mktemp("emulator") / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge", "emulate", "--pty", "--arm", "metaworld",
                                 "--task", "reach", "--image-size", "32"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        banner = proc.stdout.readline() + proc.stdout.readline()
        port, bench = re.search(r"emulator on (\S+) ", banner), re.search(r"bench on (\S+) ", banner)
        assert port and bench, banner + log.read_text()[-2000:]
        yield port.group(1), bench.group(1)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "served:" in out, log.read_text()[-2000:]


def _policy_and_safety(bundle_path):
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxPolicy, OnnxVla
    from runtime.safety import SafetyConfig, SafetyEnvelope

    bundle = Bundle.load(bundle_path)
    return bundle, OnnxPolicy(OnnxVla(bundle)), SafetyEnvelope(SafetyConfig.from_manifest(bundle.manifest))


def test_the_serial_loop_gives_the_in_process_episodes(smoke_bundle, metaworld_emulator):
    from runtime.control_loop import LoopConfig
    from runtime.episodes import run_tasks
    from runtime.serial_robot import BenchRobot, open_link
    from runtime.sim_robot import SimRobot

    bundle, policy, safety = _policy_and_safety(smoke_bundle)
    size, camera = bundle.manifest["image"]["height"], bundle.manifest["image"].get("camera")
    config, seeds = LoopConfig(rate_hz=20, max_steps=20), [100000, 100001]
    clock = FakeClock()
    local = run_tasks(lambda task: SimRobot(task, image_size=size, camera=camera), TASKS, seeds, policy, safety,
                      config, clock=clock, sleep=clock.sleep)
    port, address = metaworld_emulator
    clock = FakeClock()
    with closing(open_link(port, 1_000_000, ack_timeout_ms=2000)) as link, BenchClient(address) as bench:
        remote = run_tasks(lambda task: BenchRobot(link, bench, task, size, camera), TASKS, seeds, policy, safety,
                           config, clock=clock, sleep=clock.sleep)
        moved = bench.status()["steps"]

    def outline(results):
        return [(e["task"], e["seed"], e["ended_by"], e["steps"], e["held"]) for e in results.episodes]

    assert outline(remote) == outline(local) and len(remote.episodes) == 4
    for near, far in zip(local.loops, remote.loops):
        assert [r.model_action for r in far.records] == [r.model_action for r in near.records]
        assert [r.sent_action for r in far.records] == [r.sent_action for r in near.records]  # bit for bit
    assert moved == remote.episodes[-1]["steps"]  # every action crossed the link and stepped the simulator once
    assert link.stats["lost"] == 0


def test_runtime_run_through_the_emulator_matches_the_in_process_run(smoke_bundle, metaworld_emulator, tmp_path):
    port, address = metaworld_emulator
    common = ["runtime", "run", "--bundle", str(smoke_bundle), "--sim", "reach", "--seeds", "1", "--max-steps", "6",
              "--rate", "5", "--deadline-ms", "10000"]
    serial = run_module(*common, "--port", port, "--bench", address, "--ack-timeout-ms", "2000",
                        "--out", str(tmp_path / "serial.json"), "--log", str(tmp_path / "serial.jsonl"))
    assert serial.returncode == 0, serial.stderr[-2000:]
    local = run_module(*common, "--out", str(tmp_path / "local.json"), "--log", str(tmp_path / "local.jsonl"))
    assert local.returncode == 0, local.stderr[-2000:]
    assert "reach-v3" in serial.stdout and "overall" in serial.stdout
    episodes = [json.loads((tmp_path / f"{name}.json").read_text())["episodes"] for name in ("serial", "local")]
    assert [(e["task"], e["seed"], e["ended_by"], e["steps"]) for e in episodes[0]] == \
           [(e["task"], e["seed"], e["ended_by"], e["steps"]) for e in episodes[1]]
    logs = [[json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
            for name in ("serial", "local")]
    assert [r["sent_action"] for r in logs[0]] == [r["sent_action"] for r in logs[1]]
    assert json.loads((tmp_path / "serial.json").read_text())["arm"] == "serial"


def test_the_real_robot_branch_drives_the_arm_over_a_pty(smoke_bundle, tmp_path):
    """Camera (a video file) -> bundle -> safety -> serial link -> controller emulator, run as on a robot:
    torch, transformers, Meta-World and the workstation packages cannot be imported in that process."""
    import cv2

    from test_packaging import run_robot_side

    video = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for k in range(10):
        writer.write(np.full((32, 32, 3), 20 * k, np.uint8))
    writer.release()
    core = ControllerCore(KinematicArm())
    with Emulator.on_pty(core) as emulator:
        args = ["run", "--bundle", str(smoke_bundle), "--camera", str(video), "--instruction",
                "open the drawer", "--port", emulator.host_path, "--rate", "5", "--deadline-ms", "10000",
                "--ack-timeout-ms", "2000"]
        proc = run_robot_side(*args, "--max-steps", "4", "--out", str(tmp_path / "out.json"))
        core.estop = True  # someone pressed the e-stop: the next run refuses to start
        refused = run_robot_side(*args, "--max-steps", "1")
    assert refused.returncode == 2 and "e-stop latched" in refused.stderr and refused.stderr.count("\n") == 1
    assert proc.returncode == 0, proc.stderr[-2000:]
    episode = json.loads((tmp_path / "out.json").read_text())["episodes"][0]
    assert episode["steps"] >= 1 and "ended by" in proc.stdout
    assert core.counters["applied"] + core.counters["clamped"] == episode["steps"] - episode["held"]
    assert core.arm.steps == core.counters["applied"] + core.counters["clamped"]


# -- the Meta-World arm behind the controller ----------------------------------------------------------
def _ack(replies):
    assert replies[0].type == MsgType.ACK, replies
    return AckPayload.unpack(replies[0].payload)


def test_the_metaworld_arm_steps_on_actions_and_heartbeats_and_reports_success(monkeypatch):
    from firmware_bridge.sim_arm import MAX_STEP_MM, MetaWorldArm

    clock = FakeClock()
    arm = MetaWorldArm("reach", image_size=32, seed=100000)
    core = ControllerCore(arm, ControllerLimits(max_step_mm=MAX_STEP_MM), clock=clock)
    bench = BenchServer(arm)  # requests handled directly, without a socket
    try:
        core.handle(Frame(MsgType.HELLO, 1, HELLO.pack(1, 1)))
        ack = _ack(core.handle(Frame(MsgType.ACTION, 2, ActionPayload(25.0, 0, 0, 0).pack())))
        assert ack.status == AckStatus.CLAMPED and ack.applied.dx_mm == 10.0  # Meta-World's own limit: 1 cm
        assert arm.steps == 1 and ack.hand_um == metres_to_um(arm.sim._last.state[:3])
        _ack(core.handle(Frame(MsgType.HEARTBEAT, 3)))
        assert arm.steps == 2  # a held control period passes in the simulator too
        clock.now += 1.0
        core.tick()
        assert core.watchdog_hold and arm.steps == 2  # the watchdog holds without stepping

        seq = 4
        while not arm.success and seq < 150:  # fly to the goal (privileged, test only: obs[36:39])
            delta = (arm.sim._last.sim_obs[36:39] - arm.sim._last.state[:3]) * 1000  # mm
            step = np.clip(delta, -MAX_STEP_MM, MAX_STEP_MM)
            _ack(core.handle(Frame(MsgType.ACTION, seq, ActionPayload(*step, 0.0).pack())))
            seq += 1
        assert arm.success and bench.handle({"type": "status"})["success"] is True

        import distill.sim

        monkeypatch.setattr(distill.sim, "METAWORLD_MAX_PATH_LENGTH", arm.steps + 1)
        for _ in range(2):  # one more step is allowed, then Meta-World's limit: refused without a crash
            _ack(core.handle(Frame(MsgType.ACTION, seq, ActionPayload(1.0, 0, 0, 0).pack())))
            seq += 1
        assert arm.truncated and arm.steps == distill.sim.METAWORLD_MAX_PATH_LENGTH

        state = bench.handle({"type": "reset", "seed": 3, "task": "drawer-open", "image_size": 32})
        assert state["ok"] and state["instruction"] == "open the drawer" and state["steps"] == 0
        assert not state["success"] and not state["truncated"]
        refused = bench.handle({"type": "reset", "seed": 3, "task": "drawer-opn"})
        assert not refused["ok"] and "did you mean drawer-open-v3" in refused["error"]
    finally:
        bench.stop()
        arm.close()
