"""The runtime's token selection and decode modes: masked action decoding whatever the logits hold,
text mode, plan-then-act, seeded sampling (mock models), and the same modes on a real bundle."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from runtime.decoding import (
    NonFiniteLogits,
    choose,
    decode_action,
    decode_plan_then_act,
    decode_text,
    text_ids,
)

VOCAB = 300
ACTION_IDS = np.arange(40, 40 + 256)  # text ids on both sides, some larger than every action id

any_float = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=300, deadline=None)
@given(logits=arrays(np.float32, VOCAB, elements=any_float), seed=st.integers(0, 2**31 - 1))
def test_an_action_position_yields_an_action_id_or_fails_safe(logits, seed):
    rng = np.random.default_rng(seed)
    for temperature, generator in ((0.0, None), (0.7, rng)):
        try:
            token = choose(logits, ACTION_IDS, temperature, generator)
        except NonFiniteLogits:
            assert not np.all(np.isfinite(logits[ACTION_IDS]))
            continue
        assert token in set(ACTION_IDS.tolist())
        if temperature == 0.0:  # greedy: the best allowed id, the first of any tie
            best = logits[ACTION_IDS].max()
            assert token == ACTION_IDS[np.flatnonzero(logits[ACTION_IDS] == best)[0]]


def test_text_ids_outside_the_mask_never_win():
    logits = np.zeros(VOCAB, np.float32)
    logits[VOCAB - 1] = 1e9  # a text id larger than every action id holds the unmasked argmax
    logits[5] = 1e8
    logits[100] = 3.0
    assert choose(logits, ACTION_IDS) == 100
    assert choose(logits) == VOCAB - 1  # unmasked, for contrast


class ScriptedModel:
    """A mock model: the logits after each fed token put all mass on the next scripted token."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.fed = list(script), []

    def logits_for(self, position: int) -> np.ndarray:
        out = np.full(VOCAB, -5.0, np.float32)
        out[3 + position % 5] = 0.0  # a text runner-up, for when the scripted token is not allowed
        if position < len(self.script):
            out[self.script[position]] = 5.0
        return out

    def first(self) -> np.ndarray:
        return self.logits_for(0)

    def step(self, token: int) -> np.ndarray:
        self.fed.append(token)
        return self.logits_for(len(self.fed))


def test_action_mode_feeds_back_what_it_chose():
    model = ScriptedModel([41, 290, 60, 61, 62])  # 290 is an action id; 41..62 too
    ids = decode_action(model.step, model.first(), 5, ACTION_IDS)
    assert ids.tolist() == [41, 290, 60, 61, 62] and model.fed == [41, 290, 60, 61]


def test_text_mode_stops_at_eos_and_at_the_limit_and_never_emits_action_ids():
    allowed = text_ids(VOCAB, ACTION_IDS, banned=(0, 1))
    model = ScriptedModel([7, 8, 2, 9])
    assert decode_text(model.step, model.first(), allowed, eos_id=2, max_tokens=10) == [7, 8]
    model = ScriptedModel([7, 100, 8])  # the model wants an action id in the middle of text
    out = decode_text(model.step, model.first(), allowed, eos_id=2, max_tokens=3)
    assert out == [7, 4, 8] and not set(out) & set(ACTION_IDS.tolist())  # the runner-up replaced 100


def test_plan_then_act_reads_the_plan_until_the_marker():
    marker = [20, 21]
    allowed = text_ids(VOCAB, ACTION_IDS, banned=(0, 1))
    model = ScriptedModel([7, 8, 20, 21, 50, 51, 52, 53, 54])
    plan, ids = decode_plan_then_act(model.step, model.first(), 5, ACTION_IDS, marker, allowed)
    assert plan == [7, 8] and ids.tolist() == [50, 51, 52, 53, 54]


def test_plan_then_act_forces_the_marker_when_the_plan_runs_long():
    marker = [20, 21]
    allowed = text_ids(VOCAB, ACTION_IDS, banned=(0, 1))
    model = ScriptedModel([7, 7, 7, 20])  # ends its budget half way into the marker
    plan, ids = decode_plan_then_act(model.step, model.first(), 5, ACTION_IDS, marker, allowed, max_plan=4)
    assert plan == [7, 7, 7] and model.fed[:5] == [7, 7, 7, 20, 21]  # the marker completed, not restarted
    assert len(ids) == 5 and set(ids.tolist()) <= set(ACTION_IDS.tolist())


def test_sampling_is_reproducible_from_an_explicit_generator():
    logits = np.zeros(VOCAB, np.float32)
    logits[ACTION_IDS[:8]] = 12.0
    def draws(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [choose(logits, ACTION_IDS, 1.0, rng) for _ in range(50)]

    a, b = draws(3), draws(3)
    assert a == b and len(set(a)) > 1 and set(a) <= set(ACTION_IDS[:8].tolist())
    with pytest.raises(ValueError, match="explicit numpy Generator"):
        choose(logits, ACTION_IDS, temperature=1.0)


def test_byte_level_decoder_matches_the_tokenizers_library():
    tokenizers = pytest.importorskip("tokenizers")
    from pathlib import Path

    from runtime.text_ids import IdDecoder

    path = Path(__file__).resolve().parents[1] / "models" / "teacher" / "tokenizer.json"
    reference = tokenizers.Tokenizer.from_file(str(path))
    ours = IdDecoder.load(path)
    for text in ("is the drawer open or closed?", "open", "the gripper is left of the puck", "ünïcode ok"):
        ids = reference.encode(text).ids
        assert ours.decode(ids) == reference.decode(ids)
    with pytest.raises(ValueError, match="not in the tokenizer"):
        ours.decode([10**6])


# -- the same modes on a real bundle (ONNX Runtime) -----------------------------------------------
@pytest.fixture(scope="module")
def text_mode(smoke_bundle):
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla, TextMode

    return TextMode(OnnxVla(Bundle.load(smoke_bundle)))


def test_bundle_answers_questions_and_plans(text_mode, smoke_bundle):
    from runtime.errors import UserError

    manifest = json.loads((smoke_bundle / "manifest.json").read_text())
    question = sorted(manifest["prompt"]["questions"])[0]
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    answer = text_mode.answer(frame, question)
    assert isinstance(answer, str)
    with pytest.raises(UserError, match="unknown question"):
        text_mode.answer(frame, "what is the meaning of life?")
    plan, ids = text_mode.plan_then_act(frame, "open the drawer", max_plan=6)
    assert isinstance(plan, str) and len(ids) == 5
    assert set(ids.tolist()) <= set(manifest["action"]["token_ids"])


def test_bundle_sampling_is_seeded(smoke_bundle):
    from runtime.bundle import Bundle
    from runtime.onnx_engine import OnnxVla

    bundle = Bundle.load(smoke_bundle)
    frame = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    runs = []
    for _ in range(2):
        engine = OnnxVla(bundle, temperature=1.5, rng=np.random.default_rng(42))
        assert engine.decode_mode == "loop"  # the act graph is greedy
        runs.append([engine.decode_actions(frame, "open the drawer")[0].tolist() for _ in range(10)])
    assert runs[0] == runs[1]
    assert len({tuple(r) for r in runs[0]}) > 1  # it really samples
    with pytest.raises(ValueError, match="explicit generator"):
        OnnxVla(bundle, temperature=1.0)
