"""Supervised fine-tuning end to end on the tiny Llama: it memorises short conversations
(replies and when to stop) in both precisions, and what it saves loads back as the same
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.sft_data import conversations, greedy_reply, load_tiny

from conftest import PRECISIONS
from tuneforge.errors import InputError
from tuneforge.training.sft import SftSettings, train_sft
from tuneforge.training.sft_samples import sample_replies
from tuneforge.training.sft_save import save_sft_model

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _settings(**overrides) -> SftSettings:
    values = dict(
        epochs=80,
        batch_size=4,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        device=CPU,
        lora_dropout=0.0,
        max_length=128,
    )
    values.update(overrides)
    return SftSettings(**values)


def _logits(model, tokenizer, conversation) -> torch.Tensor:
    inputs = tokenizer.apply_chat_template(
        conversation.messages(), return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("precision", PRECISIONS)
def test_full_fine_tuning_memorises_replies_and_when_to_stop(tiny_llama: Path, precision: str):
    model, tokenizer = load_tiny(tiny_llama)
    convs = conversations()
    result = train_sft(model, tokenizer, convs, None, _settings(method="full", precision=precision))
    assert (result.autocast_dtype is None) == (precision == "fp32")
    first, last = result.train_history[0]["train_loss"], result.train_history[-1]["train_loss"]
    assert last < 0.5 * first
    assert result.train_history[-1]["train_mean_token_accuracy"] == 1.0
    for conversation in convs:
        reply = conversation.turns[-1].content
        # generation stops at the end-of-turn token: nothing follows it
        assert greedy_reply(result.model, tokenizer, conversation) == reply + "<|im_end|>"
    # what the evaluation events show: the same replies, special tokens removed
    samples = sample_replies(
        result.model, tokenizer, convs[:3], max_new_tokens=30, autocast_dtype=result.autocast_dtype
    )
    assert [s["completion"] for s in samples] == [s["reference"] for s in samples]
    assert [s["line"] for s in samples] == [1, 2, 3]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_lora_learns_the_replies(tiny_llama: Path, precision: str):
    """LoRA leaves the (tied, random, tiny) output layer frozen, so the loss of this tiny
    model cannot fall far; the argmax predictions of the reply tokens still become right,
    the end-of-turn token included: greedy replies stop where the references do."""
    model, tokenizer = load_tiny(tiny_llama)
    settings = _settings(method="lora", epochs=60, precision=precision)
    result = train_sft(model, tokenizer, conversations(), None, settings)
    history = result.train_history
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.3
    assert history[0]["train_mean_token_accuracy"] < 0.2
    assert history[-1]["train_mean_token_accuracy"] > 0.8
    assert result.tokens_per_s > 0
    replies = [greedy_reply(result.model, tokenizer, c) for c in conversations()]
    exact = [
        r == c.turns[-1].content + "<|im_end|>"
        for r, c in zip(replies, conversations(), strict=True)
    ]
    # replies have text and stop (the end-of-turn token was learned); on this random model
    # with its output layer frozen, about half are word for word
    stopped = [r.endswith("<|im_end|>") and len(r) > len("<|im_end|>") for r in replies]
    assert sum(stopped) >= 6, replies
    assert sum(exact) >= 3, replies


def test_a_saved_adapter_reloads_on_the_base_with_the_same_logits(tiny_llama: Path, tmp_path: Path):
    from peft import PeftModel
    from transformers import AutoTokenizer

    model, tokenizer = load_tiny(tiny_llama)
    convs = conversations()
    result = train_sft(model, tokenizer, convs, None, _settings(method="lora", epochs=5))
    out = save_sft_model(result.model, tokenizer, tmp_path / "adapter")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"]) == (16, 32)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary directory left

    base, _ = load_tiny(tiny_llama)
    reloaded = PeftModel.from_pretrained(base, out).eval()
    saved_tokenizer = AutoTokenizer.from_pretrained(out)
    assert saved_tokenizer.chat_template == tokenizer.chat_template
    for conversation in convs[:3]:
        expected = _logits(result.model, tokenizer, conversation)
        assert torch.allclose(_logits(reloaded, saved_tokenizer, conversation), expected, atol=1e-6)
        # and the adapter matters: the plain base answers differently
        plain, _ = load_tiny(tiny_llama)
        assert not torch.allclose(_logits(plain, tokenizer, conversation), expected, atol=1e-4)


def test_full_weights_save_as_safetensors_and_reload(tiny_llama: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_tiny(tiny_llama)
    convs = conversations()
    result = train_sft(model, tokenizer, convs, None, _settings(method="full", epochs=2))
    out = save_sft_model(result.model, tokenizer, tmp_path / "model")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    expected = _logits(result.model, tokenizer, convs[0])
    assert torch.allclose(_logits(reloaded, tokenizer, convs[0]), expected, atol=1e-6)


def test_saving_is_all_or_nothing(tiny_llama: Path, tmp_path: Path, monkeypatch):
    model, tokenizer = load_tiny(tiny_llama)
    result = train_sft(model, tokenizer, conversations(), None, _settings(method="lora", epochs=1))
    output = tmp_path / "adapter"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        save_sft_model(result.model, tokenizer, output)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary directory

    monkeypatch.undo()
    save_sft_model(result.model, tokenizer, output)
    with pytest.raises(InputError, match="not empty"):
        save_sft_model(result.model, tokenizer, output)
    save_sft_model(result.model, tokenizer, output, overwrite=True)
    assert (output / "adapter_model.safetensors").is_file()
