"""The reference C firmware: compiled with the machine's gcc, checked against the same golden frames as
the Python side, fuzzed with 100,000 corrupted frames, and driven by the Python host over a pty."""

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_protocol import GOLDEN, _corrupt

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware_bridge" / "firmware"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    out = tmp_path_factory.mktemp("firmware")
    subprocess.run(["gcc", *FLAGS, "-o", str(out / "golden_check"), str(FIRMWARE / "golden_check.c"),
                    str(FIRMWARE / "vla_proto.c")], check=True)
    subprocess.run(["gcc", *[f for f in FLAGS if f != "-pedantic"], "-o", str(out / "vla_controller"),
                    str(FIRMWARE / "host_pty.c"), str(FIRMWARE / "vla_proto.c")], check=True)
    return out


def _run(binary, lines, *args):
    proc = subprocess.run([str(binary), *args], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          check=True, timeout=120)
    return proc.stdout.splitlines(), proc.stderr


def test_c_decoder_reads_every_golden_frame(binaries):
    frames = GOLDEN["frames"]
    out, _ = _run(binaries / "golden_check", [f"{n} {f['wire']}" for n, f in frames.items()])
    for line in out:
        name, msg_type, seq, payload = (line.split() + [""])[:4]
        golden = frames[name]
        assert (int(msg_type), int(seq), payload) == (golden["type"], golden["seq"], golden["payload"]), name


def test_c_encoder_is_byte_exact(binaries):
    frames = GOLDEN["frames"]
    out, _ = _run(binaries / "golden_check", [f"{n} {f['wire']}" for n, f in frames.items()], "-b")
    assert dict(line.split() for line in out) == {n: f["wire"] for n, f in frames.items()}


def test_c_decoder_refuses_a_hundred_thousand_corrupted_frames(binaries):
    rng = random.Random(4321)
    valid = [bytes.fromhex(g["wire"]) for g in GOLDEN["frames"].values()]
    lines = []
    while len(lines) < 100_000:
        original = rng.choice(valid)
        corrupted = _corrupt(rng, original)
        if corrupted != original[:-1] and corrupted:
            lines.append(f"f{len(lines)} {corrupted.hex()}")
    out, err = _run(binaries / "golden_check", lines)
    assert len(out) == 100_000 and all(line.endswith("REJECT") for line in out)
    assert "accepted 0 of 100000" in err


def test_python_host_drives_the_c_controller_over_a_pty(binaries):
    from firmware_bridge.link import LinkConfig, SerialLink

    proc = subprocess.Popen([str(binaries / "vla_controller")], stdout=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        with SerialLink(LinkConfig(port=path, baud=1_000_000, timeout_s=0.05)) as link:
            assert link.controller == {"version": 1, "action_dims": 5, "control_period_ms": 50, "watchdog_ms": 200}
            sent = link.send_action(np.array([0.5, 0, 0, 0.5, 0], np.float32))
            np.testing.assert_allclose(sent[:4], [0.5, 0, 0, 0.5], atol=1e-4)
            assert link.hand_position()[0] == pytest.approx(0.005)
            clamped = link.send_action(np.array([2.5, 0, 0, 0, 0], np.float32))  # 25 mm > the firmware's 10 mm
            assert clamped[0] == pytest.approx(1.0)
            link.estop()
            from firmware_bridge.link import EStopped

            with pytest.raises(EStopped):
                link.send_action(np.zeros(5, np.float32))
            link.clear_estop()
            link.send_action(np.zeros(5, np.float32))
    finally:
        proc.kill()
        proc.wait()
