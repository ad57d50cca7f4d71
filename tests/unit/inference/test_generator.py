"""Generator: greedy and sampled decoding on a tiny Llama, and the text contract (stop
strings, end of turn, characters split across tokens, streaming) on a scripted model whose
next token is known, so each rule is checked on exactly the text that exercises it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.lively_llama import build_lively_llama
from tests.tiny_llama import build_chat_tokenizer

from tuneforge.errors import InputError
from tuneforge.inference.generator import Completion, Generator
from tuneforge.models.registry import GenerativeBase

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CONVERSATIONS = [
    QUESTION,
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Count"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "Why?"},
    ],
    [{"role": "user", "content": "The Eagle is a coffee shop near the river"}],
]


@pytest.fixture(scope="module")
def lively(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lively_llama(tmp_path_factory.mktemp("lively") / "model")


@pytest.fixture(scope="module")
def generator(lively: Path) -> Generator:
    return Generator.load(str(lively), threads=1)


# ------------------------------------------------------------------ a scripted model


class ScriptedLM:
    """A stand-in causal LM that writes ``script`` (token ids), one token a step, in every
    row; it has the interface the decoding loop uses (config, parameters, forward)."""

    def __init__(self, script: list[int], eos: int, context: int = 256) -> None:
        import torch

        self.script = script
        self.step = 0
        self.vocab = 512
        self.weight = torch.zeros(1)
        self.config = SimpleNamespace(max_position_embeddings=context, eos_token_id=eos)
        self.generation_config = SimpleNamespace(eos_token_id=eos)

    def parameters(self):
        return iter([self.weight])

    def __call__(self, input_ids, **kwargs):
        import torch

        token = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        logits[:, -1, token] = 10.0
        return SimpleNamespace(logits=logits, past_key_values=None)


@pytest.fixture(scope="module")
def tokenizer():
    return build_chat_tokenizer()


def char_tokens(tokenizer, text: str) -> list[int]:
    """``text`` as tokens, at least one per character (so strings straddle tokens)."""
    return [t for ch in text for t in tokenizer.encode(ch, add_special_tokens=False)]


def scripted(tokenizer, text: str, then_eos: bool = True) -> Generator:
    script = char_tokens(tokenizer, text) + ([tokenizer.eos_token_id] if then_eos else [])
    model = ScriptedLM(script, tokenizer.eos_token_id)
    return Generator(model, tokenizer, GenerativeBase("scripted", Path("."), None, "local"))


def deltas_and_completion(gen: Generator, **kwargs) -> tuple[list[str], Completion]:
    items = list(gen.stream(QUESTION, **kwargs))
    *deltas, completion = items
    assert isinstance(completion, Completion)
    assert all(isinstance(d, str) and d for d in deltas)
    return deltas, completion


# ------------------------------------------------------------------ the text contract


def test_the_end_of_turn_token_ends_the_reply_and_is_not_in_it(tokenizer) -> None:
    gen = scripted(tokenizer, "Paris.")
    completion = gen.chat(QUESTION, max_tokens=50)
    assert completion.text == "Paris."
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == len(char_tokens(tokenizer, "Paris.")) + 1
    assert completion.prompt_tokens == gen.prompt_tokens(QUESTION) > 10


def test_max_tokens_reached_is_finish_reason_length(tokenizer) -> None:
    completion = scripted(tokenizer, "Paris is the capital.").chat(QUESTION, max_tokens=3)
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 3
    assert completion.text == "Par"


def test_a_stop_string_cuts_the_reply_and_is_not_returned(tokenizer) -> None:
    gen = scripted(tokenizer, "Paris.\nQuestion: and Spain?")
    completion = gen.chat(QUESTION, max_tokens=60, stop=["\nQuestion:", "zzz"])
    assert completion.text == "Paris."
    assert completion.finish_reason == "stop"
    # the first of several stop strings in the text wins
    gen = scripted(tokenizer, "one, two; three")
    assert gen.chat(QUESTION, stop=[";", ","]).text == "one"


def test_streamed_text_never_leaks_a_stop_string_split_across_deltas(tokenizer) -> None:
    gen = scripted(tokenizer, "Paris. END of answer")
    deltas, completion = deltas_and_completion(gen, stop="END", max_tokens=60)
    assert "".join(deltas) == completion.text == "Paris. "
    assert not any("E" in d for d in deltas), deltas
    assert len(deltas) > 3, "each character is its own token, so text streams piece by piece"


def test_text_held_back_as_a_possible_stop_string_is_released_when_it_is_not(tokenizer) -> None:
    gen = scripted(tokenizer, "an ENTRY, not the END")
    deltas, completion = deltas_and_completion(gen, stop="END", max_tokens=60)
    assert "".join(deltas) == completion.text == "an ENTRY, not the "
    assert "ENT" in deltas, "'E' and 'EN' may begin the stop string: held until 'T' came"


def test_a_possible_stop_string_at_the_end_of_the_reply_is_returned(tokenizer) -> None:
    gen = scripted(tokenizer, "Paris EN")
    deltas, completion = deltas_and_completion(gen, stop="END", max_tokens=60)
    assert completion.text == "Paris EN" == "".join(deltas)
    assert completion.finish_reason == "stop"


def test_characters_split_across_tokens_stream_whole(tokenizer) -> None:
    text = "Crème brûlée 😀 in Zürich, 東京"
    tokens = char_tokens(tokenizer, text)
    assert len(tokens) > len(text), "the tiny tokenizer splits these characters into bytes"
    gen = scripted(tokenizer, text)
    deltas, completion = deltas_and_completion(gen, max_tokens=100)
    assert completion.text == text
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas), deltas


def test_a_reply_cut_by_length_mid_character_keeps_what_decoded(tokenizer) -> None:
    tokens = char_tokens(tokenizer, "ab😀")
    gen = scripted(tokenizer, "ab😀")
    deltas, completion = deltas_and_completion(gen, max_tokens=len(tokens) - 1)
    assert completion.finish_reason == "length"
    assert completion.text.startswith("ab") and "".join(deltas) == completion.text


# ------------------------------------------------------------------ a real (tiny) model


def test_greedy_is_deterministic_and_varied(generator: Generator) -> None:
    first = generator.chat(QUESTION, max_tokens=24)
    again = generator.chat(QUESTION, max_tokens=24)
    assert first == again
    assert first.finish_reason == "length" and first.completion_tokens == 24
    assert len(set(first.text)) > 3, "a reply of one repeated token tests nothing"
    assert generator.chat(CONVERSATIONS[1], max_tokens=24).text != first.text


def test_streaming_deltas_join_to_the_reply(generator: Generator) -> None:
    for messages in CONVERSATIONS:
        *deltas, completion = list(generator.stream(messages, max_tokens=20))
        assert completion == generator.chat(messages, max_tokens=20)
        assert "".join(deltas) == completion.text  # type: ignore[arg-type]


def test_a_batch_answers_like_one_at_a_time_in_input_order(generator: Generator) -> None:
    batch = generator.chat_batch(CONVERSATIONS, max_tokens=20)
    single = [generator.chat(m, max_tokens=20) for m in CONVERSATIONS]
    assert batch == single
    assert len({c.prompt_tokens for c in batch}) > 1, "the batch needs padding to test it"
    assert generator.chat_batch(list(reversed(CONVERSATIONS)), max_tokens=20) == single[::-1]


def test_a_batch_with_a_stop_string_stops_each_row_on_its_own(generator: Generator) -> None:
    single = [generator.chat(m, max_tokens=20) for m in CONVERSATIONS]
    stop = single[0].text[5:7]
    batch = generator.chat_batch(CONVERSATIONS, max_tokens=20, stop=stop)
    assert batch[0].text == single[0].text[: single[0].text.index(stop)]
    assert batch[0].finish_reason == "stop"
    assert batch == [generator.chat(m, max_tokens=20, stop=stop) for m in CONVERSATIONS]


def test_a_seed_makes_sampling_reproducible(generator: Generator) -> None:
    a = generator.chat(QUESTION, max_tokens=20, temperature=1.0, seed=7)
    b = generator.chat(QUESTION, max_tokens=20, temperature=1.0, seed=7)
    c = generator.chat(QUESTION, max_tokens=20, temperature=1.0, seed=8)
    greedy = generator.chat(QUESTION, max_tokens=20)
    assert a == b
    assert a.text != c.text and a.text != greedy.text
    nucleus = generator.chat(QUESTION, max_tokens=20, temperature=1.0, top_p=0.5, seed=7)
    assert nucleus == generator.chat(QUESTION, max_tokens=20, temperature=1.0, top_p=0.5, seed=7)
    # top_p so small that only the most probable token is left: greedy
    assert generator.chat(QUESTION, max_tokens=20, temperature=1.0, top_p=1e-6, seed=7) == greedy
    # a seeded batch row samples what the same seed samples alone
    rows = generator.chat_batch(CONVERSATIONS[:2], max_tokens=20, temperature=1.0, seed=7)
    assert rows[0] == a


def test_the_default_max_tokens_stops_at_the_context(generator: Generator) -> None:
    completion = generator.chat(QUESTION)
    assert completion.prompt_tokens + completion.completion_tokens <= generator.context
    assert completion.completion_tokens == min(256, generator.context - completion.prompt_tokens)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": 1.5}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": 250}, "exceed the model's context of 256 tokens; use max_tokens <="),
        ({"temperature": -0.1}, "temperature must be between 0 and 2"),
        ({"temperature": 2.5}, "temperature must be between 0 and 2"),
        ({"temperature": float("nan")}, "temperature must be between 0 and 2"),
        ({"top_p": 0}, "top_p must be greater than 0 and at most 1"),
        ({"top_p": 1.1}, "top_p must be greater than 0 and at most 1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop takes at most 4 strings"),
        ({"stop": [""]}, "stop strings must not be empty"),
        ({"stop": 3}, "stop must be a string or a list of strings"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_bad_settings_are_input_errors(generator: Generator, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        generator.chat(QUESTION, **kwargs)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        generator.stream(QUESTION, **kwargs)  # checked before the first token


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must be a non-empty list"),
        ([{"role": "robot", "content": "hi"}], r"messages\[0\].role: unknown role \('robot'\)"),
        ([{"role": "user", "content": 3}], r"messages\[0\].content: content is not a string"),
        (["hi"], r"messages\[0\]: message 1 is not an object"),
    ],
)
def test_bad_messages_are_input_errors(generator: Generator, messages, message: str) -> None:
    with pytest.raises(InputError, match=message):
        generator.chat(messages)
    with pytest.raises(InputError, match="conversation 2: " + message):
        generator.chat_batch([QUESTION, messages])


def test_a_conversation_longer_than_the_context_says_so(generator: Generator) -> None:
    long = [{"role": "user", "content": "Paris is the capital of France. " * 60}]
    with pytest.raises(InputError, match="model's context is 256: no room for a reply"):
        generator.chat(long)


def test_a_model_without_a_chat_template_is_refused(lively: Path, tmp_path: Path) -> None:
    import json
    import shutil

    copy = shutil.copytree(lively, tmp_path / "plain")
    config_file = copy / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template")
    config_file.write_text(json.dumps(config))
    with pytest.raises(InputError, match="has no chat template"):
        Generator.load(str(copy), threads=1)


def test_load_reports_its_threads_and_runs_in_fp32_on_cpu(generator: Generator) -> None:
    import torch

    assert generator.threads is not None and generator.threads.threads == 1
    assert generator.dtype == torch.float32
    assert not generator.model.training
