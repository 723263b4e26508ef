"""The serial link under faults, over real pseudo-terminals: duplicated and reordered frames, a cable that
loses 1% of its bytes, a cable pulled mid-episode and plugged back, and the watchdog holding within its
period. Every action is acknowledged or reported lost; no corrupt frame is ever applied."""

import time

import numpy as np
import pytest
import serial

from firmware_bridge.controller import ControllerCore, ControllerLimits, KinematicArm
from firmware_bridge.emulator import Emulator
from firmware_bridge.link import ActionLost, LinkConfig, LinkDown, SerialLink
from firmware_bridge.protocol import (
    ERROR,
    HELLO,
    AckPayload,
    AckStatus,
    ActionPayload,
    ErrorCode,
    Frame,
    FrameDecoder,
    MsgType,
    encode_frame,
)
from pty_proxy import PtyProxy
from runtime.control_loop import ControlLoop, LoopConfig
from runtime.policy import Action
from runtime.safety import SafetyConfig, SafetyEnvelope
from test_control_loop import FakeClock


class RecordingArm(KinematicArm):
    """A kinematic arm that remembers every action it applied, as the bytes it would pack them to."""

    def __init__(self):
        super().__init__()
        self.applied: list[bytes] = []

    def apply(self, action):
        self.applied.append(action.pack())
        super().apply(action)


def _wait(predicate, what, timeout=10.0):
    """Poll until `predicate()` holds (a bound on waiting, not a timing assertion)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.002)


def _open_with(path, wrap):
    return lambda: wrap(serial.serial_for_url(path, baudrate=1_000_000, timeout=0, write_timeout=1.0))


class WrappedPort:
    """A pyserial port whose writes a test can meddle with; everything else passes through."""

    def __init__(self, port):
        self.port = port

    def __getattr__(self, name):
        return getattr(self.port, name)


class DoublingPort(WrappedPort):
    def write(self, data):  # every frame reaches the controller twice
        self.port.write(data)
        self.port.write(data)


class LateOriginalPort(WrappedPort):
    """The first copy of frame `late_seq` is held back and arrives after the next newer frame."""

    def __init__(self, port, late_seq):
        super().__init__(port)
        self.late_seq, self.held = late_seq, None

    def write(self, data):
        frames = FrameDecoder().feed(data)
        if not frames:  # the delimiter a host sends when it opens the port
            return self.port.write(data)
        seq = frames[0].seq
        if seq == self.late_seq and self.held is None:
            self.held = data  # the host times out and retransmits this one
            return
        self.port.write(data)
        if self.held and seq > self.late_seq:
            self.port.write(self.held)
            self.held = b""


@pytest.fixture()
def controller():
    core = ControllerCore(RecordingArm(), ControllerLimits(max_step_mm=20))
    with Emulator.on_pty(core) as emulator:
        yield core, emulator


def _action(i):
    """A distinct action for every i < 1000, inside the controller's limits."""
    return np.array([(i % 100 - 50) / 100, (i // 100) / 10, -0.3, (i % 7) / 10, 0.0], np.float32)


def test_duplicated_frames_are_applied_once(controller):
    core, emulator = controller
    link = SerialLink(LinkConfig(port=emulator.host_path, timeout_s=0.5), open_port=_open_with(emulator.host_path, DoublingPort))
    with link:
        for i in range(20):
            link.send_action(_action(i))
        _wait(lambda: core.counters["duplicates"] == 20, "the controller saw every second copy")
    assert core.arm.applied == [ActionPayload.quantize(_action(i)).pack() for i in range(20)]
    assert link.stats["lost"] == 0


def test_a_late_original_after_its_retransmission_is_refused_as_stale(controller):
    core, emulator = controller
    late = 5  # HELLO is message 1, so this is the fourth action
    link = SerialLink(LinkConfig(port=emulator.host_path, timeout_s=0.05),
                      open_port=_open_with(emulator.host_path, lambda port: LateOriginalPort(port, late)))
    with link:
        for i in range(10):
            link.send_action(_action(i))
        _wait(lambda: core.counters["stale"] == 1, "the late original reached the controller")
    assert link.stats["retransmits"] >= 1 and link.stats["lost"] == 0
    assert core.arm.applied == [ActionPayload.quantize(_action(i)).pack() for i in range(10)]  # once each, in order


def test_reordered_and_repeated_sequence_numbers_on_the_wire(controller):
    core, emulator = controller
    port = serial.serial_for_url(emulator.host_path, baudrate=1_000_000, timeout=0.5)
    decoder = FrameDecoder()

    def send(frame):
        port.write(encode_frame(frame))
        for _ in range(200):  # reads of up to 0.5 s each
            got = decoder.feed(port.read(port.in_waiting or 1))
            if got:
                return got[0]
        raise AssertionError(f"no reply to {frame}")

    try:
        send(Frame(MsgType.HELLO, 9, HELLO.pack(1, 1)))
        first = Frame(MsgType.ACTION, 10, ActionPayload(1.0, 0, 0, 0).pack())
        second = Frame(MsgType.ACTION, 12, ActionPayload(2.0, 0, 0, 0).pack())
        assert AckPayload.unpack(send(first).payload).status == AckStatus.APPLIED
        assert AckPayload.unpack(send(second).payload).status == AckStatus.APPLIED
        stale = send(Frame(MsgType.ACTION, 11, ActionPayload(4.0, 0, 0, 0).pack()))  # arrives after 12
        assert stale.type == MsgType.ERROR and ERROR.unpack(stale.payload)[0] == ErrorCode.STALE_SEQUENCE
        again = AckPayload.unpack(send(second).payload)  # 12 once more
        assert again.status == AckStatus.DUPLICATE and again.applied.dx_mm == 2.0
    finally:
        port.close()
    assert [ActionPayload.unpack(a).dx_mm for a in core.arm.applied] == [1.0, 2.0]
    assert core.arm.hand_um()[0] == 3000


def test_a_cable_losing_one_percent_of_its_bytes(tmp_path):
    core = ControllerCore(RecordingArm(), ControllerLimits(max_step_mm=20))
    with PtyProxy(tmp_path, seed=1234) as proxy, Emulator.on_port(core, proxy.controller_path, 1_000_000) as emulator:
        link = SerialLink(LinkConfig(port=proxy.host_path, timeout_s=0.02, retries=5)).open()  # a clean handshake
        proxy.drop = 0.01
        acked, lost = {}, []
        for i in range(200):
            try:
                acked[i] = link.send_action(_action(i))
            except ActionLost:
                lost.append(i)
        proxy.drop = 0.0
        link.close()
        time.sleep(0.05)  # let the last retransmissions land before reading the controller's record
    expected = {ActionPayload.quantize(_action(i)).pack(): i for i in range(200)}
    applied = [expected.get(payload) for payload in core.arm.applied]
    assert None not in applied  # nothing corrupt was ever applied
    assert applied == sorted(set(applied))  # each action at most once, in order
    assert set(acked) <= set(applied)  # every acknowledged action was applied
    assert len(acked) + len(lost) == 200  # every action acknowledged or reported lost
    for i, sent in acked.items():  # the ACKs' contents arrived intact too
        np.testing.assert_array_equal(sent[:4], np.float32(ActionPayload.quantize(_action(i)).units()))
    corrupted = emulator.decoder.rejected + link.rejected_frames
    assert proxy.dropped > 0 and corrupted > 0 and link.stats["retransmits"] > 0
    print(f"\n1% byte loss: {proxy.dropped} of {proxy.dropped + proxy.carried} bytes dropped, {corrupted} corrupted "
          f"frames rejected, {link.stats['retransmits']} retransmits, {len(acked)} acked, {len(lost)} lost")


class _PullingPolicy:
    """Moves 1 mm per step in x; while deciding step `pull_at` the cable comes out."""

    def __init__(self, proxy, pull_at):
        self.proxy, self.pull_at, self.k = proxy, pull_at, 0

    def reset(self):
        self.k = 0

    def act(self, observation):
        if self.k == self.pull_at:
            self.proxy.pull()
        self.k += 1
        return Action(values=np.array([0.1, 0, 0, 0, 0], np.float32))


class _Camera:
    def read(self):
        return np.zeros((8, 8, 3), np.uint8)


def test_a_cable_pulled_mid_episode_then_plugged_back(tmp_path):
    clock = FakeClock()  # the controller's clock: the watchdog's period is checked without wall-clock timing
    core = ControllerCore(RecordingArm(), ControllerLimits(watchdog_ms=200), clock=clock)
    safety = SafetyEnvelope(SafetyConfig(low=(-1,) * 4 + (0,), high=(1,) * 5, max_delta=(2,) * 5, max_rate_hz=1e6))
    with PtyProxy(tmp_path) as proxy, Emulator.on_port(core, proxy.controller_path, 1_000_000) as emulator:
        link = SerialLink(LinkConfig(port=proxy.host_path, timeout_s=0.2)).open()
        loop = ControlLoop(_PullingPolicy(proxy, pull_at=5), _Camera(), link, safety, "open the drawer",
                           LoopConfig(rate_hz=200, deadline_s=60))
        with pytest.raises(LinkDown, match="reconnect"):
            loop.run()
        assert core.arm.steps == 5 and len(loop.records) == 5

        def ticks_later(n=3):
            start = emulator.ticks
            _wait(lambda: emulator.ticks >= start + n, "the emulator ran its watchdog")

        fed = core.last_fed
        clock.now = fed + 0.199
        ticks_later()
        assert not core.watchdog_hold  # not before its period
        clock.now = fed + 0.2005
        ticks_later()
        assert core.watchdog_hold and core.held_at == pytest.approx(fed + 0.2005)  # at the first tick past it
        assert core.arm.steps == 5  # and nothing moved meanwhile

        proxy.plug()  # the cable is back (a new tty behind the same name)
        link.reconnect()
        sent = link.send_action(np.array([0.1, 0, 0, 0, 0], np.float32))
        assert sent[0] == pytest.approx(0.1) and not core.watchdog_hold and core.arm.steps == 6
        assert link.hand_position()[0] == pytest.approx(0.006)
        link.close()


def test_the_emulator_reopens_its_port_when_it_comes_back(tmp_path):
    core = ControllerCore(RecordingArm())
    action = np.array([0.1, 0, 0, 0, 0], np.float32)
    # Here the emulator holds the cable's replugged end and the host the fixed one.
    with PtyProxy(tmp_path) as cable, Emulator.on_port(core, cable.host_path, 1_000_000) as emulator:
        with SerialLink(LinkConfig(port=cable.controller_path, timeout_s=0.05)) as link:
            link.send_action(action)
            cable.pull()
            _wait(lambda: not emulator.end.is_open, "the emulator saw its port fail")
            with pytest.raises(ActionLost):  # nobody answers while the cable is out
                link.send_action(action)
            cable.plug()
            _wait(lambda: emulator.end.is_open, "the emulator reopened its port")
            link.send_action(action)
    assert emulator.end.failures == 1 and core.arm.steps == 2
