"""The prompt layout the teacher and student are trained with, and that the runtime must reproduce.

RT-2 selects the mode with a task prefix. Sequence layout (text first, so that the runtime can compute
the instruction's KV cache once per episode and prefill only the image at each step):

    [<bos> "act: open the drawer"] [image tokens x N] [action id x 5]            robot action mode
    [<bos> "ask: is the drawer open or closed?"] [image tokens x N] [answer <eos>]  question mode
"""

from __future__ import annotations

ACTION_PREFIX = "act: "
QUESTION_PREFIX = "ask: "
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
PROMPT_LAYOUT = "text_then_image"


def action_prompt(instruction: str) -> str:
    """'open the drawer' -> 'act: open the drawer'."""
    return ACTION_PREFIX + instruction.strip().lower()


def question_prompt(question: str) -> str:
    """'is the drawer open or closed?' -> 'ask: is the drawer open or closed?'."""
    return QUESTION_PREFIX + question.strip().lower()
