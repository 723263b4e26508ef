"""Bring your own teacher: a tiny random-weight PaliGemma, built from transformers' own config class with
a locally trained tokenizer, saved to a folder and used as a teacher without any download."""

import json

import numpy as np
import pytest

from conftest import needs_sim, run_module

torch = pytest.importorskip("torch")
pytestmark = needs_sim


@pytest.fixture(scope="module")
def paligemma_folder(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GemmaConfig,
        GemmaTokenizerFast,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    from distill.tasks import INSTRUCTIONS

    corpus = list(INSTRUCTIONS.values())
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tokenizer = GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    images = SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    images.image_seq_length = 4
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=16)
    text = GemmaConfig(vocab_size=len(processor.tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
                             projection_dim=16)
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("byo") / "paligemma"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher_actions(paligemma_folder, tiny_dataset, tmp_path_factory):
    """The user's action tokenizer for that model: the dataset's statistics, the last 256 ids of its vocabulary."""
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(paligemma_folder, local_files_only=True))
    path = tmp_path_factory.mktemp("byo") / "teacher_actions.json"
    proc = run_module("distill", "tokenizer", "--dataset", str(tiny_dataset), "--scheme", "last",
                      "--vocab-size", str(vocab), "--out", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


def test_adapter_labels_match_the_model_forward(paligemma_folder, teacher_actions, tiny_dataset):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from distill.hf_teacher import HFTeacher
    from distill.text_tokenizer import build_text_tokenizer
    from runtime.action_tokenizer import ActionTokenizer

    theirs = ActionTokenizer.load(teacher_actions)
    _, table = build_text_tokenizer()
    ours = ActionTokenizer.from_statistics(theirs.names, theirs.low, theirs.high, table, theirs.units)
    teacher = HFTeacher(paligemma_folder, theirs, ours)
    frame = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    forced = torch.tensor([list(theirs.table.ids[:5])])
    logits = teacher.action_logits(frame, ["open the drawer"], forced)  # (1, 5, 256)
    assert logits.shape == (1, 5, 256) and torch.isfinite(logits).all()

    processor = AutoProcessor.from_pretrained(paligemma_folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(paligemma_folder, local_files_only=True).eval()
    inputs = processor(text=["open the drawer"], images=list(frame), return_tensors="pt")
    ids = torch.cat([inputs["input_ids"], forced[:, :4]], dim=1)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits[0, -5:]
    torch.testing.assert_close(logits[0], full[:, list(theirs.table.ids)], rtol=1e-4, atol=1e-4)


def test_student_from_a_huggingface_teacher_offline(paligemma_folder, teacher_actions, tiny_dataset, tmp_path,
                                                    monkeypatch):
    out = tmp_path / "student"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # inherited by the subprocess: any hub access would fail
    proc = run_module("distill", "student", "--teacher", str(paligemma_folder), "--teacher-actions",
                      str(teacher_actions), "--dataset", str(tiny_dataset), "--out", str(out), "--smoke",
                      "--rounds", "0", "--eval-seeds", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"]["kind"] == "huggingface"
    assert 0.0 <= metrics["token_agreement_heldout"] <= 1.0
    assert metrics["parameter_ratio"] > 0


def test_huggingface_teacher_without_action_table_is_refused(paligemma_folder, tiny_dataset, tmp_path):
    proc = run_module("distill", "student", "--teacher", str(paligemma_folder), "--dataset", str(tiny_dataset),
                      "--out", str(tmp_path / "s"), "--smoke")
    assert proc.returncode == 2 and "--teacher-actions" in proc.stderr and proc.stderr.count("\n") == 1
