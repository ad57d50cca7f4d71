"""Loss masks for generative SFT, checked against hand-written expectations.

Each expected encoding is written out as the text the chat template must render, cut into
segments marked trained or not; the segments are tokenised one by one here (every cut sits
at a special token or a newline, where byte-level BPE never merges across), so the
expectation does not come from the code under test. The trained text must be the reply plus
its end-of-turn token ``<|im_end|>`` (the model must learn to stop), never the role header
``<|im_start|>assistant\\n`` nor the newline after ``<|im_end|>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.tiny_llama import CHATML_TEMPLATE, DEFAULT_SYSTEM

from tuneforge.data.chat_masking import (
    IGNORE_INDEX,
    ChatTemplateError,
    EncodedConversation,
    encode_conversation,
    has_generation_markers,
    pad_batch,
)
from tuneforge.data.conversations import Conversation, Turn
from tuneforge.errors import InputError

SYSTEM = f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n"


def user(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n"


def conversation(*turns: tuple[str, str] | tuple[str, str, int]) -> Conversation:
    return Conversation(tuple(Turn(*t) for t in turns), line=7)  # type: ignore[arg-type]


def expected(tokenizer, *segments: tuple[str, bool]) -> tuple[list[int], list[int]]:
    """Input ids and labels for a rendering given as (text, trained) segments."""
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments:
        part = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if trained else [IGNORE_INDEX] * len(part)
    return ids, labels


def trained_text(tokenizer, encoded: EncodedConversation) -> list[str]:
    """The trained tokens, decoded run by run."""
    runs: list[list[int]] = []
    previous = False
    for label in encoded.labels:
        now = label != IGNORE_INDEX
        if now and not previous:
            runs.append([])
        if now:
            runs[-1].append(label)
        previous = now
    return [tokenizer.decode(run) for run in runs]


@pytest.fixture(scope="module")
def plain(tiny_llama: Path):
    """The SmolLM2-like tokenizer: ChatML, no generation markers, pad == eos."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def markers(tiny_llama_markers: Path):
    """The same tokenizer whose template has {% generation %} around assistant content."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_markers)


@pytest.fixture(params=["plain", "markers"])
def tokenizer(request, plain, markers):
    return {"plain": plain, "markers": markers}[request.param]


def with_template(tokenizer, template: str):
    """A copy of the tokenizer with another chat template."""
    import copy

    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other


def test_the_two_tiny_templates_are_what_the_tests_assume(plain, markers):
    assert not has_generation_markers(plain)
    assert has_generation_markers(markers)
    assert plain.pad_token_id == plain.eos_token_id == plain.convert_tokens_to_ids("<|im_end|>")
    assert markers.pad_token_id == markers.eos_token_id


def test_single_turn_trains_the_reply_and_its_end_of_turn(tokenizer):
    encoded = encode_conversation(
        tokenizer, conversation(("user", "Hello"), ("assistant", "Hello there")), 128
    )
    ids, labels = expected(
        tokenizer,
        (SYSTEM + user("Hello") + ASSISTANT, False),
        ("Hello there<|im_end|>", True),
        ("\n", False),
    )
    assert encoded.input_ids == ids
    assert encoded.labels == labels
    assert trained_text(tokenizer, encoded) == ["Hello there<|im_end|>"]
    assert encoded.trained_tokens == sum(label != IGNORE_INDEX for label in labels)
    assert not encoded.truncated and not encoded.lost_to_truncation
    assert encoded.full_length == len(ids)


def test_two_trained_assistant_turns_are_both_trained(tokenizer):
    example = conversation(
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "Thanks"),
        ("assistant", "Good, bye."),
    )
    encoded = encode_conversation(tokenizer, example, 256)
    ids, labels = expected(
        tokenizer,
        (SYSTEM + user("What is the capital of France?") + ASSISTANT, False),
        ("Paris.<|im_end|>", True),
        ("\n" + user("Thanks") + ASSISTANT, False),
        ("Good, bye.<|im_end|>", True),
        ("\n", False),
    )
    assert (encoded.input_ids, encoded.labels) == (ids, labels)
    assert trained_text(tokenizer, encoded) == ["Paris.<|im_end|>", "Good, bye.<|im_end|>"]


def test_a_weight_zero_assistant_turn_is_context_not_target(tokenizer):
    example = conversation(
        ("user", "Tell me a joke."),
        ("assistant", "No.", 0),
        ("user", "Please"),
        ("assistant", "To get to the other side.", 1),
    )
    encoded = encode_conversation(tokenizer, example, 256)
    ids, labels = expected(
        tokenizer,
        (SYSTEM + user("Tell me a joke.") + ASSISTANT + "No.<|im_end|>\n", False),
        (user("Please") + ASSISTANT, False),
        ("To get to the other side.<|im_end|>", True),
        ("\n", False),
    )
    assert (encoded.input_ids, encoded.labels) == (ids, labels)
    assert trained_text(tokenizer, encoded) == ["To get to the other side.<|im_end|>"]


def test_a_weight_zero_turn_after_the_trained_one_is_not_trained(tokenizer):
    example = conversation(
        ("user", "Hello"), ("assistant", "Hello there"), ("user", "Bye"), ("assistant", "Bye", 0)
    )
    encoded = encode_conversation(tokenizer, example, 256)
    assert trained_text(tokenizer, encoded) == ["Hello there<|im_end|>"]


def test_a_given_system_prompt_replaces_the_default_and_is_not_trained(tokenizer):
    example = conversation(
        ("system", "Count to five"), ("user", "Go"), ("assistant", "one two three four five")
    )
    encoded = encode_conversation(tokenizer, example, 256)
    ids, labels = expected(
        tokenizer,
        ("<|im_start|>system\nCount to five<|im_end|>\n" + user("Go") + ASSISTANT, False),
        ("one two three four five<|im_end|>", True),
        ("\n", False),
    )
    assert (encoded.input_ids, encoded.labels) == (ids, labels)
    assert DEFAULT_SYSTEM not in tokenizer.decode(encoded.input_ids)


def test_the_default_system_prompt_is_inserted_and_not_trained(tokenizer):
    encoded = encode_conversation(
        tokenizer, conversation(("user", "Go"), ("assistant", "five")), 256
    )
    text = tokenizer.decode(encoded.input_ids)
    assert text.startswith(SYSTEM)
    assert trained_text(tokenizer, encoded) == ["five<|im_end|>"]


def test_both_templates_give_the_same_encoding(plain, markers):
    examples = [
        conversation(("user", "Hello"), ("assistant", "Hello there")),
        conversation(
            ("system", "Be brief"),
            ("user", "Hi"),
            ("assistant", "Hi", 0),
            ("user", "Capital of France?"),
            ("assistant", "Paris is the capital of France."),
        ),
        # whitespace at the header boundary and a literal end-of-turn inside a reply
        conversation(("user", "Hi"), ("assistant", "\n\n  Hello  ")),
        conversation(("user", "Hi"), ("assistant", "a<|im_end|>b")),
        conversation(("user", "café ☕ 你好"), ("assistant", "Grüße ☕ 你好!")),
    ]
    for example in examples:
        a = encode_conversation(plain, example, 256)
        b = encode_conversation(markers, example, 256)
        assert a == b
        assert trained_text(plain, a)[-1].endswith("<|im_end|>")
    assert trained_text(plain, a) == ["Grüße ☕ 你好!<|im_end|>"]


def test_pad_equals_eos_and_the_reply_end_of_turn_is_still_trained(tokenizer):
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos
    encoded = encode_conversation(
        tokenizer, conversation(("user", "Hello"), ("assistant", "Hello there")), 128
    )
    eos_positions = [i for i, t in enumerate(encoded.input_ids) if t == eos]
    assert len(eos_positions) == 3  # system, user, assistant
    # only the assistant's end-of-turn carries loss, although it equals the pad token
    assert [encoded.labels[i] for i in eos_positions] == [IGNORE_INDEX, IGNORE_INDEX, eos]
    assert encoded.labels[eos_positions[-1] - 1] != IGNORE_INDEX


def test_the_end_of_turn_inside_the_markers_is_not_counted_twice(markers):
    inside = CHATML_TEMPLATE.replace(
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}",
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}{% endif %}",
    )
    tokenizer = with_template(markers, inside)
    assert has_generation_markers(tokenizer)
    example = conversation(
        ("user", "Hello"), ("assistant", "Hi"), ("user", "Bye"), ("assistant", "Bye")
    )
    encoded = encode_conversation(tokenizer, example, 256)
    assert trained_text(tokenizer, encoded) == ["Hi<|im_end|>", "Bye<|im_end|>"]
    assert encoded == encode_conversation(markers, example, 256)


def test_a_template_that_is_not_prefix_preserving_is_refused(plain):
    # the header counts the messages: rendering a prefix changes how earlier turns look
    counting = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' of ' + "
        "(messages | length | string) + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    tokenizer = with_template(plain, counting)
    with pytest.raises(ChatTemplateError) as caught:
        encode_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello")), 64)
    message = str(caught.value)
    assert isinstance(caught.value, InputError)
    assert "prefix" in message and "{% generation %}" in message
    assert ":7" in message  # the example's line


def test_a_template_without_a_generation_prompt_is_refused(plain):
    # add_generation_prompt ignored: the assistant header could not be told from the reply
    no_prompt = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    )
    tokenizer = with_template(plain, no_prompt)
    with pytest.raises(ChatTemplateError, match="add_generation_prompt"):
        encode_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello")), 64)


def test_a_template_with_no_end_of_turn_token_is_refused(plain):
    # nothing to learn to stop with
    plain_text = (
        "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    tokenizer = with_template(plain, plain_text)
    with pytest.raises(ChatTemplateError, match="end-of-turn"):
        encode_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello")), 64)


def test_markers_that_miss_an_assistant_turn_are_refused(markers):
    last_only = markers.chat_template.replace(
        "{% generation %}{{ message['content'] }}{% endgeneration %}",
        "{% if loop.last %}{% generation %}{{ message['content'] }}{% endgeneration %}"
        "{% else %}{{ message['content'] }}{% endif %}",
    )
    tokenizer = with_template(markers, last_only)
    example = conversation(
        ("user", "Hello"), ("assistant", "Hi"), ("user", "Bye"), ("assistant", "Bye")
    )
    with pytest.raises(ChatTemplateError, match="generation"):
        encode_conversation(tokenizer, example, 256)


@pytest.mark.parametrize("markers_in_template", [False, True])
def test_an_example_the_template_rejects_is_a_clear_input_error(plain, markers_in_template):
    # like Gemma's: roles must alternate user/assistant
    strict = (
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        + (
            "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}"
            "{% endgeneration %}{% else %}{{ message['content'] }}{% endif %}"
            if markers_in_template
            else "{{ message['content'] }}"
        )
        + "{{ '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    tokenizer = with_template(plain, strict)
    ok = encode_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello")), 64)
    assert trained_text(tokenizer, ok) == ["Hello<|im_end|>"]
    with pytest.raises(InputError, match="roles must alternate") as caught:
        encode_conversation(
            tokenizer, conversation(("user", "Hi"), ("user", "Hi"), ("assistant", "Hello")), 64
        )
    assert ":7" in str(caught.value)


def test_a_tokenizer_without_a_chat_template_is_refused(plain):
    tokenizer = with_template(plain, None)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        encode_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello")), 64)


def test_an_example_without_a_trained_turn_is_refused(tokenizer):
    with pytest.raises(InputError, match="no trained assistant turn"):
        encode_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello", 0)), 64)


def test_a_trained_reply_with_no_prompt_before_it_is_refused_without_markers(plain):
    # the prefix before it would be an empty conversation, which templates cannot render
    with pytest.raises(InputError, match="first message"):
        encode_conversation(plain, conversation(("assistant", "Hello"), ("user", "Hi")), 64)


def test_an_empty_assistant_turn_is_refused(tokenizer):
    with pytest.raises(InputError, match="empty"):
        encode_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "")), 64)


def test_truncation_keeps_the_first_tokens_and_reports_it(tokenizer):
    example = conversation(("user", "Hello"), ("assistant", "Hello there! How are you today?"))
    full = encode_conversation(tokenizer, example, 256)
    prompt_length = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    cut = prompt_length + 3
    short = encode_conversation(tokenizer, example, cut)
    assert short.truncated and not short.lost_to_truncation
    assert short.input_ids == full.input_ids[:cut] and short.labels == full.labels[:cut]
    assert short.trained_tokens == 3
    assert short.full_length == full.full_length == len(full.input_ids)
    # the end-of-turn was cut off: the model sees no stop in this example
    assert tokenizer.eos_token_id not in short.labels


def test_an_example_whose_trained_tokens_all_lie_beyond_max_length_is_flagged(tokenizer):
    example = conversation(("user", "Hello"), ("assistant", "Hello there"))
    full = encode_conversation(tokenizer, example, 256)
    prompt_length = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    lost = encode_conversation(tokenizer, example, prompt_length)
    assert lost.truncated and lost.lost_to_truncation
    assert lost.trained_tokens == 0 and len(lost.input_ids) == prompt_length
    exact = encode_conversation(tokenizer, example, len(full.input_ids))
    assert not exact.truncated and exact == full


def test_pad_batch_pads_right_with_no_loss_and_no_attention_on_padding(plain):
    a = encode_conversation(
        plain, conversation(("user", "Hello"), ("assistant", "Hello there")), 256
    )
    b = encode_conversation(
        plain,
        conversation(("user", "Hello"), ("assistant", "Hello there! How are you today?")),
        256,
    )
    batch = pad_batch([a, b], pad_id=plain.pad_token_id)
    width = len(b.input_ids)
    assert (
        batch["input_ids"].shape
        == batch["labels"].shape
        == batch["attention_mask"].shape
        == (2, width)
    )
    assert batch["input_ids"][0].tolist() == a.input_ids + [plain.pad_token_id] * (
        width - len(a.input_ids)
    )
    assert batch["labels"][0].tolist() == a.labels + [IGNORE_INDEX] * (width - len(a.input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * len(a.input_ids) + [0] * (
        width - len(a.input_ids)
    )
    assert batch["input_ids"][1].tolist() == b.input_ids and batch["labels"][1].tolist() == b.labels
    assert batch["attention_mask"][1].tolist() == [1] * width
    # the trained end-of-turn keeps its label although it equals the pad id
    assert (batch["labels"][0] == plain.pad_token_id).sum().item() == 1
    with pytest.raises(ValueError):
        pad_batch([], pad_id=0)


def test_the_labels_give_a_causal_lm_the_loss_of_the_reply_only(tiny_llama: Path, plain):
    """The loss a Llama computes from these labels is the mean over the trained tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    examples = [
        encode_conversation(
            plain, conversation(("user", "Hello"), ("assistant", "Hello there")), 256
        ),
        encode_conversation(
            plain,
            conversation(
                ("user", "Hi"), ("assistant", "Hi", 0), ("user", "Go"), ("assistant", "five")
            ),
            256,
        ),
    ]
    batch = pad_batch(examples, pad_id=plain.pad_token_id)
    with torch.no_grad():
        out = model(**batch)
    # next-token targets: position i predicts token i + 1, where labels[i + 1] is trained
    logits = out.logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    assert keep.sum().item() == sum(e.trained_tokens for e in examples)
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, manual)
