"""The safety envelope: bounds, slew, workspace box, rate limit and non-finite values, each counted."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import UserError
from runtime.safety import SafetyConfig, SafetyEnvelope

CONFIG = SafetyConfig(low=(-1, -1, -1, -1, 0), high=(1, 1, 1, 1, 1), max_delta=(0.5, 0.5, 0.5, 2, 1),
                      max_rate_hz=10.0)
CENTRE = np.array([0.0, 0.6, 0.2])


def test_bounds_and_slew_are_clamped_and_counted():
    env = SafetyEnvelope(CONFIG)
    first = env.apply(np.array([3, 0, 0, 0, 0]), CENTRE, now=0.0)
    assert first.sent[0] == 1.0 and first.clamped == ["bounds"]
    second = env.apply(np.array([-1, 0, 0, 0, 0]), CENTRE, now=1.0)
    assert second.sent[0] == pytest.approx(0.5) and second.clamped == ["max_delta"]  # 1.0 -> at most 0.5 lower
    assert np.array_equal(second.model, [-1, 0, 0, 0, 0])  # the model's action is kept for the log
    assert env.summary()["bounds"] == 1 and env.summary()["max_delta"] == 1


def test_workspace_box_cuts_motion_at_the_wall():
    env = SafetyEnvelope(CONFIG)
    near_wall = np.array([0.495, 0.6, 0.2])  # 5 mm from the +x wall at 0.5 m
    decision = env.apply(np.array([1, 0, 0, 0, 0]), near_wall, now=0.0)
    assert decision.clamped == ["workspace"]
    assert near_wall[0] + decision.sent[0] * 0.01 == pytest.approx(0.5)


def test_rate_limit_refuses_a_flood():
    env = SafetyEnvelope(CONFIG)
    assert env.apply(np.zeros(5), CENTRE, now=0.0).sent is not None
    refused = env.apply(np.zeros(5), CENTRE, now=0.05)  # 20 Hz against a 10 Hz limit
    assert refused.sent is None and refused.clamped == ["rate"]
    assert env.apply(np.zeros(5), CENTRE, now=0.11).sent is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-5, 5)), min_size=5, max_size=5),
       st.lists(st.floats(-0.2, 0.2), min_size=3, max_size=3))
def test_whatever_the_model_says_the_arm_gets_a_safe_action(values, offset):
    env = SafetyEnvelope(CONFIG)
    env.apply(np.array([0.2, -0.2, 0, 0.5, 0]), CENTRE, now=0.0)
    hand = CENTRE + np.array(offset)
    decision = env.apply(np.array(values, dtype=np.float64), hand, now=1.0)
    sent = decision.sent
    assert np.all(np.isfinite(sent))
    assert np.all(sent >= np.array(CONFIG.low) - 1e-6) and np.all(sent <= np.array(CONFIG.high) + 1e-6)
    assert np.all(np.abs(sent - np.array([0.2, -0.2, 0, 0.5, 0])) <= np.array(CONFIG.max_delta) + 1e-6)
    target = hand + sent[:3] * 0.01
    low, high = np.array(CONFIG.workspace_low), np.array(CONFIG.workspace_high)
    inside = (hand >= low) & (hand <= high)
    assert np.all((target >= low - 1e-6)[inside]) and np.all((target <= high + 1e-6)[inside])
    outside_high = hand > high  # a hand past the wall never moves further out
    assert np.all(sent[:3][outside_high] <= 1e-6)
    if not np.all(np.isfinite(values)):
        assert "non_finite" in decision.clamped and np.all(sent[:3] == 0)  # no motion from a broken action


def test_bad_configuration_is_refused():
    with pytest.raises(UserError, match="one value per action dimension"):
        SafetyConfig(low=(-1, -1), high=(1,), max_delta=(1, 1))
    with pytest.raises(UserError, match="high must be >= its low"):
        SafetyConfig(low=(1,), high=(-1,), max_delta=(1,))
