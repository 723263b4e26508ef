"""The control loop against a fake clock: fixed rate, stale actions never sent, clean terminate, a log."""

import numpy as np

from runtime.control_loop import ControlLoop, LoopConfig, format_stage_table, read_log
from runtime.policy import Action
from runtime.safety import SafetyConfig, SafetyEnvelope


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.now += seconds


class SlowPolicy:
    """Takes `costs[k]` seconds of fake time at step k; terminates from step `stop_at` on."""

    def __init__(self, clock, costs, stop_at=None):
        self.clock, self.costs, self.stop_at, self.k = clock, costs, stop_at, 0

    def reset(self):
        self.k = 0

    def act(self, observation):
        self.clock.now += self.costs[self.k % len(self.costs)]
        terminate = float(self.stop_at is not None and self.k >= self.stop_at)
        self.k += 1
        return Action(values=np.array([0.3, 0, 0, 0, terminate], np.float32), timings={"decode": 0.001})


class Camera:
    def read(self):
        return np.zeros((8, 8, 3), np.uint8)


class Arm:
    def __init__(self):
        self.sent, self.holds = [], 0

    def hand_position(self):
        return np.array([0.0, 0.6, 0.2])

    def send_action(self, values):
        self.sent.append(values.copy())
        return values

    def hold(self):
        self.holds += 1


def _loop(policy_costs, clock, stop_at=None, **config):
    arm = Arm()
    safety = SafetyEnvelope(SafetyConfig(low=(-1,) * 4 + (0,), high=(1,) * 5, max_delta=(1,) * 5, max_rate_hz=1000))
    loop = ControlLoop(SlowPolicy(clock, policy_costs, stop_at), Camera(), arm, safety, "open the drawer",
                       LoopConfig(**config), clock=clock, sleep=clock.sleep)
    return loop, arm


def test_fixed_rate_and_clean_terminate(tmp_path):
    clock = FakeClock()
    loop, arm = _loop([0.02], clock, stop_at=5, rate_hz=10, log_path=str(tmp_path / "log.jsonl"))
    summary = loop.run()
    assert summary["ended_by"] == "terminate" and summary["steps"] == 8  # terminate at steps 5, 6, 7 -> stop
    assert [round(r.t, 6) for r in loop.records] == [round(0.1 * k, 6) for k in range(8)]  # no drift
    assert len(arm.sent) == 8 and summary["overruns"] == 0
    log = read_log(tmp_path / "log.jsonl")
    assert len(log) == 8 and log[0]["sent_action"][0] == np.float32(0.3)
    assert "decode" in format_stage_table(summary)


def test_late_actions_are_never_sent():
    clock = FakeClock()
    loop, arm = _loop([0.02, 0.25], clock, rate_hz=10, max_steps=6)  # every other step blows its 100 ms deadline
    summary = loop.run()
    overruns = [r for r in loop.records if r.overrun]
    assert summary["overruns"] == len(overruns) == 3
    assert all(r.sent_action is None and r.held for r in overruns)
    assert arm.holds == 3 and len(arm.sent) == 3
    assert [round(r.t, 6) for r in loop.records] == [0.0, 0.1, 0.4, 0.5, 0.8, 0.9]  # missed ticks skipped
