"""Scene questions a camera frame can answer, generated from the simulator's state (RT-2's web data
stand-in for co-fine-tuning).

Each question type reads the recorded episode (privileged simulator observation, success flags) and
either answers for a frame or abstains where the answer would be ambiguous (the gripper half open, the
hand level with the target, the drawer half way). Answers are single short phrases.

    rng = np.random.default_rng(0)
    qa = question_for_frame(episode, t, rng)   # ("is the drawer open or closed?", "closed") or None
"""

from __future__ import annotations

import numpy as np

# Meta-World observation layout (39-D): hand xyz [0:3], gripper opening [3], first object xyz [4:7], ...,
# goal xyz [36:39].
HAND = slice(0, 3)
GRIPPER = 3
OBJECT = slice(4, 7)
GOAL = slice(36, 39)

# What the robot works on, per task family (the answer to "what is the robot working on?").
SUBJECT = {
    "button-press-topdown-v3": "the button",
    "button-press-v3": "the button",
    "drawer-open-v3": "the drawer",
    "drawer-close-v3": "the drawer",
    "window-open-v3": "the window",
    "window-close-v3": "the window",
    "push-v3": "the puck",
    "pick-place-v3": "the puck",
    "reach-v3": "the goal",
}
# For tasks that open or close something: (thing, state at the start, state at success).
OPEN_CLOSE = {
    "drawer-open-v3": ("drawer", "closed", "open"),
    "drawer-close-v3": ("drawer", "open", "closed"),
    "window-open-v3": ("window", "closed", "open"),
    "window-close-v3": ("window", "open", "closed"),
}

QUESTION_TYPES = ("subject", "gripper", "side", "success", "open_closed")
QUESTIONS = {
    "subject": "what is the robot working on?",
    "gripper": "is the gripper open or closed?",
    "side": "is the gripper left or right of the target?",
    "success": "has the task succeeded?",
    "open_closed": "is the {thing} open or closed?",
}
ANSWERS = ("the button", "the drawer", "the window", "the puck", "the goal", "open", "closed", "left", "right",
           "yes", "no")


def all_question_texts() -> list[str]:
    """Every question the generator can ask (for the tokenizer's corpus)."""
    texts = [q for k, q in QUESTIONS.items() if k != "open_closed"]
    texts += [QUESTIONS["open_closed"].format(thing=thing) for thing in sorted({v[0] for v in OPEN_CLOSE.values()})]
    return texts


def answer(kind: str, task: str, sim_obs: np.ndarray, t: int, success_step: int | None) -> tuple[str, str] | None:
    """(question, answer) of type `kind` for frame t of an episode, or None where it is ambiguous.

    sim_obs: (T, 39) the episode's simulator observations; success_step: first frame showing success.
    """
    obs = sim_obs[t]
    if kind == "subject":
        return (QUESTIONS["subject"], SUBJECT[task]) if task in SUBJECT else None
    if kind == "gripper":
        opening = float(obs[GRIPPER])
        if opening > 0.8:
            return QUESTIONS["gripper"], "open"
        if opening < 0.5:
            return QUESTIONS["gripper"], "closed"
        return None
    if kind == "side":
        target = obs[GOAL] if task == "reach-v3" else obs[OBJECT]
        dx = float(obs[HAND][0] - target[0])
        if abs(dx) < 0.03:
            return None
        return QUESTIONS["side"], "left" if dx < 0 else "right"
    if kind == "success":
        if success_step is None:
            return QUESTIONS["success"], "no"
        return QUESTIONS["success"], "yes" if t >= success_step else "no"
    if kind == "open_closed":
        if task not in OPEN_CLOSE or success_step is None:
            return None
        thing, start, end = OPEN_CLOSE[task]
        # Progress of the handle from its place at the first step (frame 1: frame 0 is pre-settle)
        # to its place at success.
        p0, p1 = sim_obs[min(1, len(sim_obs) - 1), OBJECT], sim_obs[success_step, OBJECT]
        span = float(np.linalg.norm(p1 - p0))
        if span < 1e-3:
            return None
        progress = float(np.dot(obs[OBJECT] - p0, p1 - p0)) / span**2
        question = QUESTIONS["open_closed"].format(thing=thing)
        if progress < 0.2:
            return question, start
        if progress > 0.8:
            return question, end
        return None
    raise ValueError(f"unknown question type {kind!r}: choose one of {', '.join(QUESTION_TYPES)}")


def question_for_frame(task: str, sim_obs: np.ndarray, t: int, success_step: int | None,
                       rng: np.random.Generator) -> tuple[str, str] | None:
    """A random answerable (question, answer) for frame t, or None if no question type applies."""
    for kind in rng.permutation(QUESTION_TYPES):
        qa = answer(str(kind), task, sim_obs, t, success_step)
        if qa is not None:
            return qa
    return None
