"""The tiny Llama chat model the generative tests build on: what they may rely on."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.tiny_llama import DEFAULT_SYSTEM, build_chat_tokenizer


def test_the_tokenizer_trains_in_well_under_a_second():
    build_chat_tokenizer()  # the first call pays the imports
    start = time.perf_counter()
    build_chat_tokenizer(markers=True)
    assert time.perf_counter() - start < 1.0


def test_the_directory_is_a_smollm2_like_hf_causal_lm(tiny_llama: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in tiny_llama.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(name.endswith((".bin", ".pt")) for name in names)
    assert "chat_template" in json.loads((tiny_llama / "tokenizer_config.json").read_text())

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    ]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert model.config.tie_word_embeddings and model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == model.generation_config.pad_token_id == 2
    prompt = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= prompt["input_ids"].shape[1] + 4


def test_both_variants_render_the_same_text(tiny_llama: Path, tiny_llama_markers: Path):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_llama)
    markers = AutoTokenizer.from_pretrained(tiny_llama_markers)
    assert "{% generation %}" in markers.chat_template
    assert "{% generation %}" not in plain.chat_template
    messages = [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"},
    ]
    for prompt in (False, True):
        assert plain.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=prompt
        ) == markers.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
