"""Host link against the emulated controller over a real pseudo-terminal pair (a real tty)."""

import numpy as np
import pytest

from firmware_bridge.controller import ControllerCore, ControllerLimits, KinematicArm
from firmware_bridge.emulator import Emulator
from firmware_bridge.link import ActionLost, EStopped, LinkConfig, LinkDown, SerialLink


@pytest.fixture()
def emulator():
    with Emulator.on_pty(ControllerCore(KinematicArm(), ControllerLimits(max_step_mm=10))) as emu:
        yield emu


def test_actions_round_trip_over_a_pty(emulator):
    with SerialLink(LinkConfig(port=emulator.host_path, baud=1_000_000, timeout_s=0.05)) as link:
        assert link.controller["version"] == 1 and link.controller["watchdog_ms"] == 200
        sent = link.send_action(np.array([0.5, 0.0, -0.2, 1.0, 0.0], np.float32))
        np.testing.assert_allclose(sent, [0.5, 0.0, -0.2, 1.0, 0.0], atol=1e-4)
        np.testing.assert_allclose(link.hand_position(), [0.005, 0.6, 0.198], atol=1e-6)
        clamped = link.send_action(np.array([3.0, 0, 0, 0, 0], np.float32))  # 30 mm > the controller's 10 mm
        assert clamped[0] == pytest.approx(1.0)  # send_action returns what was actually applied
        assert len(link.stats["round_trip_s"]) == 3 and link.stats["lost"] == 0


def test_lost_frames_are_retransmitted(emulator):
    emulator.drop_every = 2  # every second frame vanishes on the wire
    with SerialLink(LinkConfig(port=emulator.host_path, timeout_s=0.03)) as link:
        for _ in range(4):
            link.send_action(np.array([0.1, 0, 0, 0, 0], np.float32))
        assert link.stats["retransmits"] >= 2
        assert emulator.core.arm.steps == 4  # each action applied exactly once


def test_estop_is_reported_and_clears(emulator):
    with SerialLink(LinkConfig(port=emulator.host_path, timeout_s=0.05)) as link:
        link.estop()
        with pytest.raises(EStopped):
            link.send_action(np.zeros(5, np.float32))
        link.clear_estop()
        link.send_action(np.zeros(5, np.float32))


def test_a_silent_controller_is_reported_lost(emulator):
    link = SerialLink(LinkConfig(port=emulator.host_path, timeout_s=0.02, retries=2)).open()
    emulator.drop_every = 1  # the controller hears nothing any more
    with pytest.raises(ActionLost, match="not acknowledged after 3 attempts"):
        link.send_action(np.zeros(5, np.float32))
    assert link.stats["lost"] == 1
    link.close()


def test_a_pulled_cable_is_reported_down(emulator):
    link = SerialLink(LinkConfig(port=emulator.host_path, timeout_s=0.02)).open()
    emulator.stop()  # the controller's end of the pty is gone
    with pytest.raises(LinkDown, match="reconnect"):
        link.send_action(np.zeros(5, np.float32))
    link.close()


def test_a_missing_port_is_a_clear_error():
    from runtime.errors import UserError

    with pytest.raises(UserError, match="cannot open serial port /dev/ttyNOPE"):
        SerialLink(LinkConfig(port="/dev/ttyNOPE")).open()


def test_emulate_serves_an_existing_port(tmp_path):
    """`python -m firmware_bridge emulate --port PATH` on one end of a cable (two ptys joined by a relay)."""
    import subprocess
    import sys

    from conftest import REPO
    from pty_proxy import PtyProxy

    with PtyProxy(tmp_path) as cable:
        proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge", "emulate", "--port", cable.controller_path,
                                 "--baud", "115200"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert f"controller emulator on {cable.controller_path}" in proc.stdout.readline()
            with SerialLink(LinkConfig(port=cable.host_path, baud=115_200, timeout_s=0.5)) as link:
                for _ in range(3):
                    link.send_action(np.array([0.2, 0, 0, 0, 0], np.float32))
                np.testing.assert_allclose(link.hand_position(), [0.006, 0.6, 0.2], atol=1e-6)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "'applied': 3" in out, err
