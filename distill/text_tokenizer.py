"""The teacher's text tokenizer: byte-level BPE trained locally on the instruction and question corpus,
with 256 ids reserved for action bins the RT-2 way (the least-used ids over that corpus).

    tok, table = build_text_tokenizer()
    tok.encode("act: open the drawer").ids
    table.ids          # the 256 vocabulary ids that stand for action bins, none used by the corpus
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.prompts import SPECIAL_TOKENS, action_prompt, question_prompt
from distill.tasks import INSTRUCTIONS
from distill.vqa import ANSWERS, all_question_texts
from runtime.action_tokenizer import ActionIdTable
from runtime.errors import UserError

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_VOCAB_SIZE = 1024  # requested; BPE stops earlier when the corpus has no more merges


def build_corpus() -> list[str]:
    """Every text the models read or write: action prompts for all tasks, questions, answers."""
    corpus = [action_prompt(text) for text in INSTRUCTIONS.values()]
    corpus += [question_prompt(q) for q in all_question_texts()]
    corpus += list(ANSWERS)
    return corpus


def train_bpe(corpus: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Byte-level BPE over `corpus` with the special tokens first (<pad>=0, <bos>=1, <eos>=2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def reserve_action_ids(tokenizer, corpus: list[str]) -> ActionIdTable:
    """RT-2: the 256 least-used ids over the corpus (never a special token) become the action bins.

    Refuses a table where the corpus itself uses an action id: text and actions must not share ids.
    """
    vocab = tokenizer.get_vocab_size()
    encoded = [tokenizer.encode(text).ids for text in corpus]
    specials = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    table = ActionIdTable.least_used(encoded, vocab_size=vocab, exclude=specials)
    counts = np.bincount(np.concatenate(encoded), minlength=vocab)
    used = [i for i in table.ids if counts[i] > 0]
    if used:
        raise UserError(
            f"the text corpus uses {len(used)} of the ids reserved for actions (e.g. {used[0]}): "
            f"train the tokenizer with a larger vocabulary so that 256 ids stay unused"
        )
    return table


def build_text_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE):
    """(tokenizer, action id table), deterministic for a given corpus and vocab size."""
    corpus = build_corpus()
    tokenizer = train_bpe(corpus, vocab_size)
    return tokenizer, reserve_action_ids(tokenizer, corpus)


def save_text_tokenizer(tokenizer, folder: str | Path) -> Path:
    """Write `tokenizer.json` (the `tokenizers` format; transformers reads it too) into `folder`."""
    from runtime.atomic_io import atomic_open

    path = Path(folder) / TOKENIZER_FILE
    with atomic_open(path, "w") as handle:
        handle.write(tokenizer.to_str(pretty=True))
    return path


def load_text_tokenizer(folder: str | Path):
    from tokenizers import Tokenizer

    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"{folder} has no {TOKENIZER_FILE}: pass a model folder written by `python -m distill train-teacher`")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises its own exception type for bad JSON
        raise UserError(f"{path} is not a valid tokenizer file ({err}): copy it again from the training run") from None
