"""Meta-World's scripted expert for a task, speaking the `Policy` protocol.

The expert reads the privileged simulator observation (`Observation.sim_state`), so it runs only in
simulation; it never asks to terminate (the evaluator ends an episode on success).

Example:

    expert = ScriptedExpert("push-v3")
    action = expert.act(sim.observation())   # (5,) dx, dy, dz, gripper, terminate
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from distill.tasks import resolve_task
from runtime.policy import Action, Observation

# Meta-World names the peg-insert expert differently from its environment.
_CLASS_NAME_EXCEPTIONS = {"peg-insert-side-v3": "SawyerPegInsertionSideV3Policy"}


def expert_class_name(task: str) -> str:
    """'drawer-open-v3' -> 'SawyerDrawerOpenV3Policy'."""
    task = resolve_task(task)
    if task in _CLASS_NAME_EXCEPTIONS:
        return _CLASS_NAME_EXCEPTIONS[task]
    words = task[: -len("-v3")].split("-")
    return "Sawyer" + "".join(w.capitalize() for w in words) + "V3Policy"


class ScriptedExpert:
    """Meta-World's hand-written policy for one task."""

    name = "expert"

    def __init__(self, task: str) -> None:
        import metaworld.policies as mw_policies

        self.task = resolve_task(task)
        self._policy = getattr(mw_policies, expert_class_name(self.task))()

    def reset(self) -> None:
        """The scripted experts are stateless."""

    def act(self, observation: Observation) -> Action:
        if observation.sim_state is None:
            raise ValueError("the scripted expert needs Observation.sim_state (it runs in simulation only)")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            move = np.clip(self._policy.get_action(observation.sim_state), -1.0, 1.0)
        values = np.concatenate([move, [0.0]]).astype(np.float32)  # (5,) terminate = 0
        return Action(values=values, timings={"policy": time.perf_counter() - start})
