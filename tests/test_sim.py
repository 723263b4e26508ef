"""The simulator adapter: seeded resets, fast headless rendering, success, and input checks."""

import numpy as np
import pytest

from conftest import needs_sim
from distill.tasks import DEFAULT_TASKS, HARD_FROM_PIXELS, INSTRUCTIONS, UnknownTaskError, resolve_task, resolve_tasks

pytestmark = needs_sim


def test_task_table_and_default_set():
    assert len(DEFAULT_TASKS) >= 8
    assert len(HARD_FROM_PIXELS & set(DEFAULT_TASKS)) >= 2
    assert all(t in INSTRUCTIONS for t in DEFAULT_TASKS)
    assert len(set(INSTRUCTIONS[t] for t in DEFAULT_TASKS)) == len(DEFAULT_TASKS)  # instructions tell tasks apart
    assert resolve_task("drawer-open") == "drawer-open-v3"
    assert resolve_tasks("push, reach-v3") == ["push-v3", "reach-v3"]


def test_unknown_task_suggests_a_fix():
    with pytest.raises(UnknownTaskError, match="did you mean drawer-open-v3"):
        resolve_task("drawer-opn")


def test_every_listed_task_has_an_expert():
    import metaworld.policies as mw_policies

    from distill.expert import expert_class_name

    for task in INSTRUCTIONS:
        assert hasattr(mw_policies, expert_class_name(task)), task


def test_reset_is_reproducible_from_the_seed():
    from distill.sim import MetaWorldSim

    with MetaWorldSim("push", image_size=32) as sim:
        a = sim.reset(7).sim_obs.copy()
        frame_a = sim.render()
        b = sim.reset(8).sim_obs.copy()
        c = sim.reset(7).sim_obs.copy()
        frame_c = sim.render()
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(frame_a, frame_c)
    assert not np.allclose(a[36:], b[36:])  # goal drawn anew from another seed


def test_render_shape_and_motion():
    from distill.sim import MetaWorldSim

    with MetaWorldSim("reach", image_size=48, camera="corner4") as sim:
        sim.reset(1)
        first = sim.render()
        assert first.shape == (48, 48, 3) and first.dtype == np.uint8
        for _ in range(10):
            sim.step(np.array([1.0, 0.0, 0.0, 0.0]))
        moved = sim.render()
    assert np.abs(first.astype(int) - moved.astype(int)).mean() > 0.5  # the arm moved in the picture


def test_expert_reaches_success_and_state_is_proprioception():
    from distill.expert import ScriptedExpert
    from distill.sim import MetaWorldSim

    with MetaWorldSim("drawer-close", image_size=32) as sim:
        expert = ScriptedExpert("drawer-close")
        sim.reset(100_001)
        success = False
        for _ in range(200):
            obs = sim.observation()
            np.testing.assert_allclose(obs.state[:3], obs.sim_state[:3], atol=1e-6)
            step = sim.step(expert.act(obs).values[:4])
            if step.success:
                success = True
                break
    assert success


def test_bad_actions_and_settings_are_refused():
    from distill.sim import MetaWorldSim

    with pytest.raises(ValueError, match="unknown camera"):
        MetaWorldSim("reach", camera="ceiling")
    with MetaWorldSim("reach", image_size=32) as sim:
        with pytest.raises(RuntimeError, match="reset"):
            sim.step(np.zeros(4))
        sim.reset(0)
        with pytest.raises(ValueError, match="4-D"):
            sim.step(np.zeros(5))
        with pytest.raises(ValueError, match="non-finite"):
            sim.step(np.array([np.nan, 0, 0, 0]))
