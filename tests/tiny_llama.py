"""A tiny random Llama chat model built in-process: the generative tests' base model.

The model is a 2-layer, hidden-32 ``LlamaForCausalLM`` with random weights; its tokenizer is
a byte-level BPE trained here on a few sentences (tens of milliseconds, offline). It copies
what matters about SmolLM2-135M-Instruct, the default generative base:

- ChatML turns, ``<|im_start|>role\\ncontent<|im_end|>\\n``, with a default system prompt
  inserted when a conversation has none;
- ``<|endoftext|>`` = 0, bos ``<|im_start|>`` = 1, eos ``<|im_end|>`` = 2 and **pad == eos**;
- tied input/output embeddings; the chat template in ``tokenizer_config.json``.

Two template variants (``markers``): without ``{% generation %}`` markers, like SmolLM2's,
and with them around the assistant content only (the end-of-turn token stays outside the
markers, as in most templates that have them). Both render exactly the same text.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_DEFAULT_SYSTEM_TURN = (
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{% endif %}"
)
_GENERATION_PROMPT = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

# SmolLM2-135M-Instruct's template (no generation markers).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    + _DEFAULT_SYSTEM_TURN
    + "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}" + _GENERATION_PROMPT
)

# The same rendering, with {% generation %} around each assistant message's content.
CHATML_MARKERS_TEMPLATE = (
    "{% for message in messages %}"
    + _DEFAULT_SYSTEM_TURN
    + "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] }}{% endgeneration %}"
    "{{ '<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}" + _GENERATION_PROMPT
)

CORPUS = [
    DEFAULT_SYSTEM,
    "system user assistant",
    "Hello there! How are you today? I am fine, thank you.",
    "What is the capital of France? Paris is the capital of France.",
    "The Eagle is a coffee shop near the river that serves Italian food.",
    "name[The Eagle], eatType[coffee shop], food[Italian], area[riverside]",
    "Tell me a joke. Why did the chicken cross the road? To get to the other side.",
    "Count to five: one two three four five. Good. Thanks, bye.",
]


def build_chat_tokenizer(markers: bool = False):
    """A byte-level BPE tokenizer with ChatML special tokens and a chat template.

    Args:
        markers: Whether the template wraps assistant content in ``{% generation %}``.

    Returns:
        A ``transformers`` fast tokenizer (not saved).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=256,
    )
    tokenizer.chat_template = CHATML_MARKERS_TEMPLATE if markers else CHATML_TEMPLATE
    return tokenizer


def build_tiny_llama(directory: Path, markers: bool = False, seed: int = 0) -> Path:
    """Save a tiny random Llama chat model and its tokenizer to ``directory``.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors``,
    ``tokenizer.json`` and ``tokenizer_config.json`` (with the chat template inside, as
    models on the Hub ship it).

    Args:
        directory: Where to write (created if missing).
        markers: Whether the chat template has ``{% generation %}`` markers.
        seed: Seed of the random weights.

    Returns:
        ``directory``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_chat_tokenizer(markers)
    tokenizer.save_pretrained(directory, save_jinja_files=False)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Llama zeroes the padding row of its embeddings; pad == eos here (as in SmolLM2, whose
    # pretrained row is not zero) and the output layer is tied, so a zero row would leave
    # the end-of-turn token unlearnable for LoRA: give it random values like the others.
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[tokenizer.pad_token_id].normal_(0.0, config.initializer_range)
    model.save_pretrained(directory, safe_serialization=True)
    saved = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "chat_template" in saved, "the chat template must sit in tokenizer_config.json"
    return directory
