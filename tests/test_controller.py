"""The controller's protocol logic against a fake clock: handshake, acks, duplicates, stale frames,
its own limits, the watchdog and the e-stop latch."""

from firmware_bridge.controller import ControllerCore, ControllerLimits, KinematicArm
from firmware_bridge.protocol import (
    ERROR,
    HELLO,
    STATE_ESTOP,
    STATE_WATCHDOG_HOLD,
    AckPayload,
    AckStatus,
    ActionPayload,
    ErrorCode,
    Frame,
    MsgType,
)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _core():
    clock = Clock()
    core = ControllerCore(KinematicArm(), ControllerLimits(max_step_mm=10, watchdog_ms=200), clock=clock)
    return core, clock


def _action(seq, dx=5.0):
    return Frame(MsgType.ACTION, seq, ActionPayload(dx, 0.0, 0.0, 0.0).pack())


def _ack(replies):
    assert len(replies) == 1 and replies[0].type == MsgType.ACK
    return AckPayload.unpack(replies[0].payload)


def _error(replies):
    assert len(replies) == 1 and replies[0].type == MsgType.ERROR
    return ERROR.unpack(replies[0].payload)[0]


def _connect(core):
    reply = core.handle(Frame(MsgType.HELLO, 0, HELLO.pack(1, 3)))
    assert reply[0].type == MsgType.HELLO_ACK


def test_actions_need_the_handshake_then_apply_once():
    core, _ = _core()
    assert _error(core.handle(_action(1))) == ErrorCode.NOT_CONNECTED
    _connect(core)
    ack = _ack(core.handle(_action(1)))
    assert ack.status == AckStatus.APPLIED and ack.applied.dx_mm == 5.0 and ack.hand_um[0] == 5000
    again = _ack(core.handle(_action(1)))  # a retransmission
    assert again.status == AckStatus.DUPLICATE and again.hand_um[0] == 5000  # not applied twice
    assert _error(core.handle(_action(0))) == ErrorCode.STALE_SEQUENCE
    assert core.arm.steps == 1


def test_controller_limits_clamp_and_say_so():
    core, _ = _core()
    _connect(core)
    ack = _ack(core.handle(_action(1, dx=25.0)))
    assert ack.status == AckStatus.CLAMPED and ack.applied.dx_mm == 10.0


def test_watchdog_holds_then_an_action_releases_it():
    core, clock = _core()
    _connect(core)
    core.handle(_action(1))
    clock.now += 0.15
    core.tick()
    assert not core.watchdog_hold
    core.handle(Frame(MsgType.HEARTBEAT, 2))  # fed at 0.15 s
    clock.now += 0.19
    core.tick()
    assert not core.watchdog_hold
    clock.now += 0.02  # 210 ms since the heartbeat
    core.tick()
    assert core.watchdog_hold
    assert _ack(core.handle(Frame(MsgType.HEARTBEAT, 3))).state_flags == 0  # fed again: released
    clock.now += 0.3
    core.tick()
    ack = _ack(core.handle(_action(4)))
    assert ack.status == AckStatus.APPLIED and ack.state_flags == 0


def test_estop_latches_until_cleared():
    core, clock = _core()
    _connect(core)
    assert _ack(core.handle(Frame(MsgType.ESTOP, 1, b"\x01"))).state_flags & STATE_ESTOP
    refused = _ack(core.handle(_action(2)))
    assert refused.status == AckStatus.ESTOPPED and refused.applied is None and core.arm.steps == 0
    clock.now += 1.0
    core.tick()
    assert core.estop and _ack(core.handle(_action(3))).status == AckStatus.ESTOPPED  # survives the watchdog
    _ack(core.handle(Frame(MsgType.ESTOP_CLEAR, 4)))
    assert _ack(core.handle(_action(5))).status == AckStatus.APPLIED


def test_bad_version_type_and_payload_are_errors():
    core, _ = _core()
    assert _error(core.handle(Frame(MsgType.HELLO, 0, HELLO.pack(2, 3)))) == ErrorCode.BAD_VERSION
    _connect(core)
    assert _error(core.handle(Frame(0x55, 1))) == ErrorCode.BAD_TYPE
    assert _error(core.handle(Frame(MsgType.ACTION, 1, b"\x01\x02"))) == ErrorCode.BAD_PAYLOAD
    assert _error(core.handle(Frame(MsgType.ACTION, 1, _action(1).payload, version=2))) == ErrorCode.BAD_VERSION
    assert core.arm.steps == 0 and STATE_WATCHDOG_HOLD == 1
