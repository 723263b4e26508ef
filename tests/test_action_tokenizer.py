"""Tests for runtime/action_tokenizer.py: binning maths, id tables, file format, mismatch checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import action_tokenizer as at
from runtime.action_tokenizer import ActionIdTable, ActionTokenizer, TokenizerError

FAST = settings(max_examples=150, deadline=None)
NAMES5 = ("dx", "dy", "dz", "gripper", "terminate")
VOCAB = 32_000


def make_tokenizer(low=(-0.1, -0.2, -0.05, 0.0, 0.0), high=(0.1, 0.2, 0.05, 1.0, 1.0), table=None, names=NAMES5):
    table = table if table is not None else ActionIdTable.last(VOCAB)
    return ActionTokenizer.from_statistics(names, low, high, table, units=("m", "m", "m", "1", "1")[: len(names)])


# ---- hypothesis strategies -----------------------------------------------------------------------


@st.composite
def tokenizers(draw):
    """Random tokenizer: 1..6 dims, moderate statistics, a few bin counts, contiguous or scattered ids."""
    dim = draw(st.integers(1, 6))
    low = np.array(draw(st.lists(st.floats(-10, 10), min_size=dim, max_size=dim)))  # (D,)
    width = np.array(draw(st.lists(st.floats(0.01, 50), min_size=dim, max_size=dim)))  # (D,)
    n_bins = draw(st.sampled_from([2, 7, 256]))
    if draw(st.booleans()):
        table = ActionIdTable.last(1000, n_bins=n_bins)
    else:
        seed = draw(st.integers(0, 2**32 - 1))  # scattered ids; a seed keeps generation cheap
        ids = np.random.default_rng(seed).choice(1000, size=n_bins, replace=False)  # (n_bins,)
        table = ActionIdTable(tuple(sorted(ids.tolist())), 1000, "explicit", n_bins)
    names = tuple(f"a{i}" for i in range(dim))
    return ActionTokenizer.from_statistics(names, low, low + width, table)


@st.composite
def tokenizer_and_inside_actions(draw):
    tok = draw(tokenizers())
    batch = draw(st.integers(1, 8))
    u = np.array(draw(st.lists(st.floats(0, 1), min_size=batch * tok.dim, max_size=batch * tok.dim)))
    low, high = np.array(tok.low), np.array(tok.high)
    actions = np.clip(low + u.reshape(batch, tok.dim) * (high - low), low, high)  # (B, D)
    return tok, actions


finite_any = st.floats(allow_nan=False, allow_infinity=False)  # includes +-1.8e308 and subnormals


@st.composite
def tokenizer_and_any_actions(draw):
    tok = draw(tokenizers())
    batch = draw(st.integers(1, 8))
    values = draw(st.lists(finite_any, min_size=batch * tok.dim, max_size=batch * tok.dim))
    return tok, np.array(values, dtype=np.float64).reshape(batch, tok.dim)  # (B, D)


# ---- binning properties --------------------------------------------------------------------------


@FAST
@given(tokenizer_and_inside_actions())
def test_round_trip_error_is_at_most_half_a_bin(case):
    tok, actions = case
    back = tok.decode(tok.encode(actions))  # (B, D) float32
    assert back.dtype == np.float32 and back.shape == actions.shape
    half = tok.bin_width() / 2  # (D,)
    # float32 output: allow a few ulps of the value's magnitude on top of the half bin.
    tol = 4 * np.finfo(np.float32).eps * (np.abs(actions) + 1.0)
    assert np.all(np.abs(back.astype(np.float64) - actions) <= half + tol)


@FAST
@given(tokenizer_and_any_actions())
def test_out_of_range_actions_clip(case):
    tok, actions = case
    low, high = np.array(tok.low), np.array(tok.high)
    assert np.array_equal(tok.encode(actions), tok.encode(np.clip(actions, low, high)))
    bins = tok.to_bins(actions)
    assert np.all(bins[actions < low] == 0)
    assert np.all(bins[actions > high] == tok.n_bins - 1)
    normed = tok.normalize(actions)
    assert normed.dtype == np.float32 and np.all((normed >= -1) & (normed <= 1))


@FAST
@given(tokenizers(), st.floats(1e-6, 1e300), st.integers(0, 4))
def test_below_low_is_bin_0_and_above_high_is_last_bin(tok, offset, which):
    which = which % tok.dim
    low, high = np.array(tok.low), np.array(tok.high)
    mid = (low + high) / 2
    below, above = mid.copy(), mid.copy()
    below[which] = low[which] - offset
    above[which] = high[which] + offset
    assert tok.to_bins(below)[which] == 0
    assert tok.to_bins(above)[which] == tok.n_bins - 1
    assert tok.encode(below)[which] == tok.table.ids[0]
    assert tok.encode(above)[which] == tok.table.ids[-1]


@FAST
@given(tokenizer_and_any_actions())
def test_every_encoded_id_is_in_the_table(case):
    tok, actions = case
    ids = tok.encode(actions)
    assert ids.dtype == np.int64 and ids.shape == actions.shape
    assert np.isin(ids, np.array(tok.table.ids)).all()
    bins = tok.to_bins(actions)
    assert np.array_equal(ids, np.array(tok.table.ids)[bins])


def test_normalisation_and_bin_centres_follow_the_formula():
    tok = make_tokenizer()
    low, high = np.array(tok.low), np.array(tok.high)
    assert np.allclose(tok.normalize(low), -1) and np.allclose(tok.normalize(high), 1)
    assert np.allclose(tok.normalize((low + high) / 2), 0, atol=1e-7)
    assert np.allclose(tok.denormalize(np.zeros(5)), (low + high) / 2)
    width = (high - low) / 256
    assert np.allclose(tok.bin_width(), width)
    assert np.allclose(tok.from_bins(np.zeros(5, dtype=np.int64)), low + width / 2)
    assert np.allclose(tok.from_bins(np.full(5, 255)), high - width / 2)
    # A value just inside bin 1 and one just below the 1/256 edge land in bins 1 and 0.
    edge = low + width
    assert np.array_equal(tok.to_bins(edge + width * 1e-6), np.ones(5))
    assert np.array_equal(tok.to_bins(edge - width * 1e-6), np.zeros(5))
    # OpenVLA-style table: bin k is id vocab - 256 + k.
    assert np.array_equal(tok.encode(high), np.full(5, VOCAB - 1))
    assert np.array_equal(tok.encode(low), np.full(5, VOCAB - 256))


def test_batched_shapes_are_kept():
    tok = make_tokenizer()
    actions = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 5))  # (2, 3, D)
    ids = tok.encode(actions)
    assert ids.shape == (2, 3, 5)
    assert tok.decode(ids).shape == (2, 3, 5)
    assert tok.encode(actions[0, 0].tolist()).shape == (5,)
    assert tok.decode(np.zeros((0, 5), dtype=np.int64) + VOCAB - 1).shape == (0, 5)


# ---- input validation ----------------------------------------------------------------------------


def test_decode_of_a_non_action_id_raises():
    tok = make_tokenizer()
    good = tok.encode(np.zeros(5))
    for bad_id in (0, VOCAB - 257, -1, VOCAB, 10**12):
        ids = good.copy()
        ids[2] = bad_id
        with pytest.raises(TokenizerError, match=rf"id {bad_id} .*not an action token"):
            tok.decode(ids)
    with pytest.raises(TokenizerError, match="must be integers"):
        tok.decode(good.astype(np.float64))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise(bad):
    tok = make_tokenizer()
    actions = np.zeros((3, 5))
    actions[1, 3] = bad
    for fn in (tok.encode, tok.to_bins, tok.normalize):
        with pytest.raises(TokenizerError, match=r"non-finite .*index \(1, 3\).*'gripper'"):
            fn(actions)


def test_wrong_action_dimension_raises():
    tok = make_tokenizer()
    with pytest.raises(TokenizerError, match=r"last dimension 5 .*got last dimension 4"):
        tok.encode(np.zeros((2, 4)))
    with pytest.raises(TokenizerError, match=r"last dimension 5 .*got a scalar"):
        tok.encode(0.0)
    with pytest.raises(TokenizerError, match=r"last dimension 5 .*got last dimension 6"):
        tok.decode(np.full(6, VOCAB - 1))
    with pytest.raises(TokenizerError, match="must be numeric"):
        tok.encode(np.array(["a"] * 5))


def test_out_of_range_bins_raise():
    tok = make_tokenizer()
    with pytest.raises(TokenizerError, match=r"bin 256 .*outside \[0, 255\]"):
        tok.from_bins(np.array([0, 1, 256, 3, 4]))
    with pytest.raises(TokenizerError, match=r"bin -1 "):
        tok.from_bins(np.array([0, -1, 2, 3, 4]))


def test_statistics_validation():
    with pytest.raises(TokenizerError, match=r"'dy' has high=.*<= low=.*widen"):
        make_tokenizer(low=(0, 0.5, 0, 0, 0), high=(1, 0.5, 1, 1, 1))
    with pytest.raises(TokenizerError, match="non-finite statistics"):
        make_tokenizer(low=(0, np.nan, 0, 0, 0), high=(1, 1, 1, 1, 1))
    with pytest.raises(TokenizerError, match="got 5 names but 4 low"):
        make_tokenizer(low=(0, 0, 0, 0), high=(1, 1, 1, 1, 1))
    with pytest.raises(TokenizerError, match="distinct"):
        make_tokenizer(names=("dx", "dx", "dz", "gripper", "terminate"))


# ---- id tables -----------------------------------------------------------------------------------


def test_last_gives_the_last_ids():
    assert ActionIdTable.last(VOCAB).ids == tuple(range(VOCAB - 256, VOCAB))
    assert ActionIdTable.last(257_152).ids == tuple(range(257_152 - 256, 257_152))
    assert ActionIdTable.last(10, n_bins=4).ids == (6, 7, 8, 9)
    with pytest.raises(TokenizerError, match="too small"):
        ActionIdTable.last(100)


def _corpus_with_counts(counts, rng):
    """Shuffle ids with the given counts into a few documents of random length."""
    tokens = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(tokens)
    cuts = np.sort(rng.integers(0, len(tokens) + 1, size=3))
    return [doc.tolist() for doc in np.split(tokens, cuts)]


def test_least_used_picks_least_used_excludes_specials_and_breaks_ties_high():
    rng = np.random.default_rng(1)
    #          id: 0  1  2  3  4  5  6  7  8  9
    counts = np.array([5, 0, 3, 1, 1, 2, 7, 1, 4, 0])
    corpus = _corpus_with_counts(counts, rng)
    # Least used: 1 and 9 (0 uses), then 3, 4, 7 tie at 1 use: higher ids win -> 7 first.
    assert ActionIdTable.least_used(corpus, 10, n_bins=3).ids == (1, 7, 9)
    # Excluding the pad id 1 moves the pick to the next tied id, 4.
    table = ActionIdTable.least_used(corpus, 10, n_bins=3, exclude=[1])
    assert table.ids == (4, 7, 9) and table.scheme == "least_used" and table.vocab_size == 10
    assert ActionIdTable.least_used(corpus, 10, n_bins=4, exclude=[1, 9]).ids == (3, 4, 5, 7)


def test_least_used_default_256_bins_on_a_larger_vocabulary():
    rng = np.random.default_rng(2)
    vocab = 1200
    rare = rng.choice(vocab, size=300, replace=False)  # 300 rare ids, 44 of them special
    counts = rng.integers(20, 40, size=vocab)
    counts[rare] = rng.integers(0, 5, size=300)
    specials = rare[:44]
    table = ActionIdTable.least_used(_corpus_with_counts(counts, rng), vocab, exclude=specials.tolist())
    assert table.n_bins == 256
    assert set(table.ids) == set(rare[44:].tolist())
    assert list(table.ids) == sorted(table.ids)


@FAST
@given(st.lists(st.integers(0, 3), min_size=8, max_size=60), st.data())
def test_least_used_matches_brute_force(counts, data):
    vocab = len(counts)
    n_bins = data.draw(st.integers(2, vocab // 2))
    exclude = data.draw(st.sets(st.integers(0, vocab - 1), max_size=vocab - n_bins))
    expected = sorted(
        sorted((i for i in range(vocab) if i not in exclude), key=lambda i: (counts[i], -i))[:n_bins]
    )
    table = ActionIdTable.least_used_from_counts(np.array(counts), n_bins=n_bins, exclude=exclude)
    assert list(table.ids) == expected


def test_least_used_errors():
    corpus = [[0, 1, 2], [3, 4]]
    with pytest.raises(TokenizerError, match=r"only 2 vocabulary ids are available .*3 action bins"):
        ActionIdTable.least_used(corpus, 5, n_bins=3, exclude=[0, 1, 2])
    with pytest.raises(TokenizerError, match=r"document 1 contains id 7 outside the vocabulary \[0, 5\)"):
        ActionIdTable.least_used([[0, 1], [7]], 5, n_bins=2)
    with pytest.raises(TokenizerError, match=r"document 0 contains id -3"):
        ActionIdTable.least_used([[-3]], 5, n_bins=2)
    with pytest.raises(TokenizerError, match="excluded id 9"):
        ActionIdTable.least_used(corpus, 5, n_bins=2, exclude=[9])


def test_table_validation():
    ids = list(range(256))
    with pytest.raises(TokenizerError, match="has 255 ids but n_bins is 256"):
        ActionIdTable(tuple(ids[:255]), 1000, "explicit")
    with pytest.raises(TokenizerError, match=r"duplicate ids \(e.g. 3 "):
        ActionIdTable(tuple(ids[:255] + [3]), 1000, "explicit")
    with pytest.raises(TokenizerError, match=r"id 1000 outside the vocabulary \[0, 1000\)"):
        ActionIdTable(tuple(ids[1:] + [1000]), 1000, "explicit")
    with pytest.raises(TokenizerError, match=r"id -1 outside the vocabulary"):
        ActionIdTable(tuple([-1] + ids[1:]), 1000, "explicit")
    with pytest.raises(TokenizerError, match="unknown id-table scheme"):
        ActionIdTable(tuple(ids), 1000, "random")
    with pytest.raises(TokenizerError, match="n_bins must be an integer >= 2"):
        ActionIdTable((5,), 1000, "explicit", n_bins=1)
    with pytest.raises(TokenizerError, match="must all be integers"):
        ActionIdTable(tuple([0.5] + ids[1:]), 1000, "explicit")
    # A valid table keeps its ids, and the lookup inverts them.
    table = ActionIdTable(tuple(range(500, 756)), 1000, "explicit")
    assert table.bin_of_id[500] == 0 and table.bin_of_id[755] == 255 and table.bin_of_id[499] == -1


def test_table_from_dict_errors():
    d = ActionIdTable.last(1000).to_dict()
    assert ActionIdTable.from_dict(d) == ActionIdTable.last(1000)
    with pytest.raises(TokenizerError, match=r"missing the key\(s\) \['ids'\]"):
        ActionIdTable.from_dict({k: v for k, v in d.items() if k != "ids"})
    with pytest.raises(TokenizerError, match="'ids' must be a list"):
        ActionIdTable.from_dict({**d, "ids": "0,1,2"})
    with pytest.raises(TokenizerError, match="vocab_size must be a positive integer"):
        ActionIdTable.from_dict({**d, "vocab_size": "1000"})


# ---- files ---------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    table = ActionIdTable.least_used([list(range(50)) * 3, list(range(300, 1000))], 1000, exclude=[0, 1, 2])
    tok = make_tokenizer(low=(-0.1234567890123, -0.2, -0.05, 0.0, 0.0), table=table)
    path = tmp_path / "action_tokenizer.json"
    tok.save(path)
    loaded = ActionTokenizer.load(path)
    assert loaded == tok
    loaded.check_matches(tok)
    actions = np.random.default_rng(3).uniform(-0.3, 1.2, size=(10, 5))
    assert np.array_equal(loaded.encode(actions), tok.encode(actions))
    assert json.loads(path.read_text())["format"] == "vla-edge-action-tokenizer"
    assert os.listdir(tmp_path) == ["action_tokenizer.json"]  # no temp file left behind


def _write(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_load_errors(tmp_path):
    tok = make_tokenizer()
    good = tok.to_dict()
    with pytest.raises(TokenizerError, match="does not exist"):
        ActionTokenizer.load(tmp_path / "missing.json")
    text = json.dumps(good)
    with pytest.raises(TokenizerError, match="not valid JSON.*truncated"):
        ActionTokenizer.load(_write(tmp_path / "trunc.json", text[: len(text) // 2]))
    with pytest.raises(TokenizerError, match="format is 'something-else'"):
        ActionTokenizer.load(_write(tmp_path / "fmt.json", {**good, "format": "something-else"}))
    with pytest.raises(TokenizerError, match="version 2 .*newer"):
        ActionTokenizer.load(_write(tmp_path / "ver.json", {**good, "version": 2}))
    short = {**good, "table": {**good["table"], "ids": good["table"]["ids"][:255]}}
    with pytest.raises(TokenizerError, match=r"short.json: the id table has 255 ids but n_bins is 256"):
        ActionTokenizer.load(_write(tmp_path / "short.json", short))
    with pytest.raises(TokenizerError, match="got 5 names but 4 low"):
        ActionTokenizer.load(_write(tmp_path / "sizes.json", {**good, "low": good["low"][:4]}))
    with pytest.raises(TokenizerError, match=r"missing the key\(s\) \['table'\]"):
        ActionTokenizer.load(_write(tmp_path / "notable.json", {k: v for k, v in good.items() if k != "table"}))
    with pytest.raises(TokenizerError, match="must be a JSON object"):
        ActionTokenizer.load(_write(tmp_path / "list.json", [1, 2]))
    with pytest.raises(TokenizerError, match="'high' must hold numbers"):
        ActionTokenizer.load(_write(tmp_path / "types.json", {**good, "high": ["1"] * 5}))


def test_save_is_atomic_when_serialisation_fails(tmp_path, monkeypatch):
    path = tmp_path / "action_tokenizer.json"
    make_tokenizer().save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(at.json, "dump", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        make_tokenizer(high=(1, 1, 1, 1, 1)).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["action_tokenizer.json"]
    monkeypatch.undo()
    assert ActionTokenizer.load(path) == make_tokenizer()
    make_tokenizer().save(tmp_path / "new-folder" / "action_tokenizer.json")  # atomic writes create the folder
    assert ActionTokenizer.load(tmp_path / "new-folder" / "action_tokenizer.json") == make_tokenizer()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TokenizerError, match="cannot write .*writable"):
        make_tokenizer().save(tmp_path / "a-file" / "action_tokenizer.json")  # its "folder" is a file


# ---- mismatch checks -----------------------------------------------------------------------------


def test_check_matches():
    tok = make_tokenizer()
    make_tokenizer().check_matches(tok)  # equal: no error
    with pytest.raises(TokenizerError, match=r"mismatch with the bundle: high statistics differ for \['dz'\]"):
        tok.check_matches(make_tokenizer(high=(0.1, 0.2, 0.06, 1.0, 1.0)), what="bundle")
    other_ids = (5,) + tuple(range(VOCAB - 255, VOCAB))
    ids_differ = r"action ids \(1 bins differ, first bin 0: id 31744 vs 5;.*same tokenizer file"
    with pytest.raises(TokenizerError, match=ids_differ):
        tok.check_matches(make_tokenizer(table=ActionIdTable(other_ids, VOCAB, "explicit")))
    with pytest.raises(TokenizerError, match=r"vocab_size 32000 vs 32064"):
        tok.check_matches(make_tokenizer(table=ActionIdTable.last(32_064)))
    with pytest.raises(TokenizerError, match=r"n_bins 256 vs 128"):
        tok.check_matches(make_tokenizer(table=ActionIdTable.last(VOCAB, n_bins=128)))
    with pytest.raises(TokenizerError, match=r"names .*'gripper'.*'grip'"):
        tok.check_matches(make_tokenizer(names=("dx", "dy", "dz", "grip", "terminate")))


def test_module_never_imports_torch():
    code = "import sys, runtime.action_tokenizer; assert 'torch' not in sys.modules, 'torch was imported'"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
