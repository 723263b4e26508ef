"""The emulator's test bench (loopback side channel): requests over a real TCP socket against a fake arm,
and everything malformed, truncated or oversized refused with a reason; the bench robot's success flag."""

import socket

import numpy as np
import pytest

from firmware_bridge.bench import BenchClient, BenchServer
from firmware_bridge.bench_wire import (
    LENGTH,
    MAX_MESSAGE,
    BenchError,
    decode_image,
    encode_image,
    parse_address,
    recv_message,
)
from runtime.control_loop import ControlLoop, LoopConfig
from runtime.errors import UserError
from runtime.policy import Action
from runtime.safety import SafetyConfig, SafetyEnvelope
from runtime.serial_robot import BenchRobot
from conftest import needs_sim


class FakeArm:
    """What the bench asks of a MetaWorldArm, without the simulator: frames filled with the seed."""

    def __init__(self):
        self.task, self.size, self.seed, self.steps, self.success = "reach-v3", 8, 0, 0, False

    def describe(self):
        return {"task": self.task, "instruction": "reach to the goal", "image_size": self.size, "camera": "corner4",
                "steps": self.steps, "success": self.success, "truncated": False, "hand_um": [1, 600_000, 200_000],
                "gripper": 1.0}

    def configure(self, task, image_size, camera):
        if task == "nope":
            raise UserError("unknown task 'nope': run `python -m distill tasks` to list the tasks")
        self.task, self.size = f"{task}-v3", image_size

    def reset(self, seed):
        self.seed, self.steps, self.success = seed, 0, False

    def render(self):
        return np.full((self.size, self.size, 3), self.seed % 256, np.uint8)


@pytest.fixture()
def bench():
    arm = FakeArm()
    with BenchServer(arm) as server:
        yield arm, f"127.0.0.1:{server.address[1]}", server


def test_reset_frame_and_status_round_trip(bench):
    arm, address, _ = bench
    with BenchClient(address) as client:
        state = client.reset(seed=7, task="drawer-open", image_size=16)
        assert state["task"] == "drawer-open-v3" and state["hand_um"] == [1, 600_000, 200_000]
        image, success = client.frame()
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and (image == 7).all() and not success
        arm.success = True
        assert client.status()["success"] is True and client.hello()["version"] == 1


def test_refused_requests_say_why_and_keep_the_connection(bench):
    _, address, server = bench
    with BenchClient(address) as client:
        with pytest.raises(BenchError, match="unknown request type 'jump'"):
            client.call("jump")
        with pytest.raises(BenchError, match="integer seed"):
            client.call("reset", seed="seven")
        with pytest.raises(BenchError, match="unknown task 'nope'"):
            client.reset(seed=1, task="nope")
        assert client.frame()[0].shape == (8, 8, 3)  # still connected
    assert server.refused == 3


def _raw(address):
    host, port = parse_address(address)
    return socket.create_connection((host, port), timeout=10)


@pytest.mark.parametrize("payload, needle", [
    (LENGTH.pack(3) + b"\xc1\xc1\xc1", "malformed bench message"),  # not msgpack
    (LENGTH.pack(2) + b"\x92\x01", "malformed bench message"),  # msgpack, not a map
    (LENGTH.pack(MAX_MESSAGE + 1), "limit"),  # an announced size past the limit: never read
])
def test_malformed_messages_are_answered_then_the_connection_closes(bench, payload, needle):
    _, address, server = bench
    with _raw(address) as sock:
        sock.sendall(payload)
        reply = recv_message(sock)
        assert reply["ok"] is False and needle in reply["error"]
        assert recv_message(sock) is None  # the server hung up
    assert server.refused == 1


def test_a_truncated_message_is_an_error():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(LENGTH.pack(100) + b"\x81" + b"x" * 9)
        left.close()
        with pytest.raises(BenchError, match="truncated bench message: the connection closed after 10 of 100 bytes"):
            recv_message(right)


def test_frames_are_checked_when_decoded():
    frame = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(decode_image(encode_image(frame)), frame)
    bad = [
        {**encode_image(frame), "data": b"\x00" * 47},  # a byte short
        encode_image(np.zeros((4, 4, 3), np.float32)),  # not uint8
        encode_image(np.zeros((4, 4), np.uint8)),  # not colour
        {**encode_image(frame), "dtype": "|O"},  # objects never travel
        {"dtype": "|u1", "shape": [1]},  # no data
    ]
    for value in bad:
        with pytest.raises(BenchError, match="malformed frame"):
            decode_image(value)


def test_a_bench_that_is_not_there_is_a_clear_error():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach the bench .* emulate --pty --arm metaworld"):
        BenchClient(f"127.0.0.1:{port}")
    for text in ("localhost", "127.0.0.1:port", "127.0.0.1:70000"):
        with pytest.raises(UserError, match="not HOST:PORT"):
            parse_address(text)
    assert parse_address("5000") == ("127.0.0.1", 5000)


class _FakeLink:
    """A serial link whose controller moves the hand 1 mm per action."""

    def __init__(self):
        self.x = 0.0

    def send_action(self, values):
        self.x += 0.001
        return values

    def hold(self):
        pass

    def hand_position(self):
        return np.array([self.x, 0.6, 0.2])


class _Policy:
    def reset(self):
        pass

    def act(self, observation):
        return Action(values=np.array([0.1, 0, 0, 0, 0], np.float32))


def test_the_bench_robot_stops_the_episode_when_the_simulator_reports_success(bench):
    arm, address, _ = bench
    with BenchClient(address) as client:
        robot = BenchRobot(_FakeLink(), client, "reach", image_size=8)
        robot.reset(5)
        assert robot.instruction == "reach to the goal" and robot.hand_position()[1] == pytest.approx(0.6)

        class Counting(_Policy):  # the third action succeeds, as the simulator would report
            k = 0

            def act(self, observation):
                Counting.k += 1
                arm.success = Counting.k >= 3
                return super().act(observation)

        safety = SafetyEnvelope(SafetyConfig(low=(-1,) * 4 + (0,), high=(1,) * 5, max_delta=(2,) * 5, max_rate_hz=1e6))
        summary = ControlLoop(Counting(), robot.camera, robot, safety, robot.instruction,
                              LoopConfig(rate_hz=1000, deadline_s=60, max_steps=10)).run()
    assert summary["ended_by"] == "success" and summary["steps"] == 3
    assert robot.hand_position()[0] == pytest.approx(0.003)  # the hand position followed the link's ACKs


def test_the_metaworld_arm_without_the_simulator_says_how_to_install_it(monkeypatch):
    import sys

    from firmware_bridge.sim_arm import MetaWorldArm

    monkeypatch.setitem(sys.modules, "distill", None)  # as on the robot: the train extra is not installed
    with pytest.raises(UserError, match=r"--arm metaworld needs the simulator: pip install '\.\[train\]'"):
        MetaWorldArm("reach")


@needs_sim
def test_holding_keeps_the_gripper_closed_in_both_simulated_arms():
    """A hold is no hand motion with the last gripper command: a grasp must not loosen while the loop waits."""
    from firmware_bridge.protocol import ActionPayload
    from firmware_bridge.sim_arm import MM_PER_UNIT, MetaWorldArm
    from runtime.sim_robot import SimRobot

    close = np.array([0.0, 0.0, 0.0, 1.0, 0.0], np.float32)
    robot, reference = SimRobot("pick-place", image_size=32), SimRobot("pick-place", image_size=32)
    arm = MetaWorldArm("pick-place", image_size=32)
    try:
        for sim in (robot, reference):
            sim.reset(5)
        arm.reset(5)
        for _ in range(6):
            robot.send_action(close)
            reference.send_action(close)
            arm.apply(ActionPayload.quantize(close, MM_PER_UNIT))
        for _ in range(6):
            robot.hold()
            reference.send_action(close)  # what a held grasp must look like
            arm.idle_step()
        fingers = reference.sim._last.state[3]
        assert robot.sim._last.state[3] == fingers
        assert arm.sim._last.state[3] == pytest.approx(fingers, abs=1e-6)
        assert robot.gripper_command == arm.gripper_command == 1.0
    finally:
        for sim in (robot, reference, arm):
            sim.close()
