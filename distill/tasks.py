"""Which Meta-World tasks vla-edge uses, and the instruction a person would give for each.

The default task set: eight tasks whose scripted expert succeeds on at least 95% of seeds
(measured with `python -m distill evaluate --policy expert --seeds 50`; figures in README.md), chosen so
that models can be told apart:

- easy from pixels (a large handle or button, a fixed motion): button-press-topdown, drawer-open,
  drawer-close, window-open, window-close;
- hard from pixels (a small object or goal drawn anywhere on the table, a few pixels wide at 64 px):
  reach, push, pick-place.

Two pairs share a scene (drawer open/close, window open/close), so the instruction, not the picture,
decides what to do: a policy that ignores language cannot do better than half on them.
"""

from __future__ import annotations

from runtime.errors import UserError

# Meta-World v3 task name -> natural instruction. Every task with a scripted expert is listed, so users
# can record any of them; the instruction is what the model reads.
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "push the button in",
    "button-press-wall-v3": "push the button in behind the wall",
    "coffee-button-v3": "press the coffee machine button",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door",
    "hand-insert-v3": "put your hand into the hole",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "hammer-v3": "hammer the nail in",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate sideways out of the goal",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "push the thermos with the stick",
    "stick-pull-v3": "pull the thermos with the stick",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach to the goal",
    "reach-wall-v3": "reach over the wall to the goal",
    "shelf-place-v3": "put the block on the shelf",
    "sweep-into-v3": "sweep the cube into the hole",
    "sweep-v3": "sweep the cube off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

DEFAULT_TASKS: tuple[str, ...] = (
    "button-press-topdown-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "window-open-v3",
    "window-close-v3",
    "reach-v3",
    "push-v3",
    "pick-place-v3",
)

# Tasks whose targets are a few pixels wide in the camera frame: where model size, resolution and data matter.
HARD_FROM_PIXELS: frozenset[str] = frozenset({"reach-v3", "push-v3", "pick-place-v3"})


class UnknownTaskError(UserError, ValueError):
    """A task name that vla-edge does not know."""


def resolve_task(name: str) -> str:
    """Return the canonical Meta-World v3 name for `name` ('drawer-open' or 'drawer-open-v3').

    >>> resolve_task("drawer-open")
    'drawer-open-v3'
    """
    canonical = name if name.endswith("-v3") else f"{name}-v3"
    if canonical not in INSTRUCTIONS:
        import difflib

        close = difflib.get_close_matches(canonical, INSTRUCTIONS, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownTaskError(
            f"unknown task '{name}': {hint}run `python -m distill tasks` to list the {len(INSTRUCTIONS)} tasks"
        )
    return canonical


def resolve_tasks(names: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Parse a comma-separated list (or 'default' / None) into canonical task names, checked."""
    if names is None or names == "default":
        return list(DEFAULT_TASKS)
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    if not names:
        raise UnknownTaskError("no task given: pass --tasks drawer-open,push or --tasks default")
    return [resolve_task(n) for n in names]


def instruction_for(task: str) -> str:
    """The instruction the model reads for a task."""
    return INSTRUCTIONS[resolve_task(task)]
