"""Generative fine-tuning's loss and loop rules on the tiny Llama: the loss covers assistant
tokens only and is what the events report, the weights that learn are the method's, a
non-finite loss stops at once, early stopping keeps the best weights, the metrics are
OpenAI's."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tests.sft_data import QA, conversations, load_tiny

from tuneforge.data.chat_masking import IGNORE_INDEX, pad_batch
from tuneforge.data.conversations import Conversation, Turn
from tuneforge.errors import InputError
from tuneforge.training.events import (
    EventLog,
    MetricsEvent,
    SamplesEvent,
    parse_event,
    read_events,
)
from tuneforge.training.loop import TrainingDivergedError
from tuneforge.training.sft import (
    SftSettings,
    encode_conversations,
    evaluate_sft,
    head_on_trained_only_is_exact,
    token_stats,
    train_sft,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _settings(**overrides) -> SftSettings:
    values = dict(
        method="full",
        epochs=1,
        batch_size=8,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        precision="fp32",
        device=CPU,
        lora_dropout=0.0,
        max_length=128,
    )
    values.update(overrides)
    return SftSettings(**values)


def test_changing_a_user_turn_changes_no_trained_token(tiny_llama: Path):
    _, tokenizer = load_tiny(tiny_llama)
    base = conversations()[1]
    # Same number of tokens in the user turn, different words.
    other = Conversation((Turn("user", "What is the capital of France!"), base.turns[1]), 1)
    a, b = encode_conversations(tokenizer, [base, other], 128)
    assert len(a.input_ids) == len(b.input_ids)
    assert a.input_ids != b.input_ids
    assert [i for i, x in enumerate(a.labels) if x != IGNORE_INDEX] == [
        i for i, x in enumerate(b.labels) if x != IGNORE_INDEX
    ]
    trained = [x for x in a.labels if x != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "Paris.<|im_end|>"


@pytest.mark.parametrize("base", ["tiny_llama", "tiny_llama_markers"])
def test_the_loss_is_cross_entropy_over_trained_tokens_only(base: str, request):
    model, tokenizer = load_tiny(request.getfixturevalue(base))
    batch = pad_batch(encode_conversations(tokenizer, conversations(), 128), 2)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = batch["labels"][:, 1:]
    mask = shifted != IGNORE_INDEX
    expected = F.cross_entropy(logits[:, :-1][mask], shifted[mask])
    # the output layer on the trained positions only, or on all of them: the same loss
    for head_on_trained_only in (True, False):
        with torch.no_grad():
            stats = token_stats(model, batch, head_on_trained_only=head_on_trained_only)
        assert stats.tokens == int(mask.sum())
        assert float(stats.loss_sum) / stats.tokens == pytest.approx(float(expected), rel=1e-5)
    # Everything trained is an assistant reply plus its end-of-turn token.
    replies = tokenizer.decode(shifted[mask].tolist())
    assert replies == "".join(a + "<|im_end|>" for _, a in QA)


@pytest.mark.parametrize("accumulation", [1, 3])
def test_the_reported_train_loss_equals_the_hand_computed_one(
    tiny_llama: Path, tmp_path: Path, accumulation: int
):
    """One step over all eight conversations (in one batch, or three accumulated ones): the
    reported train_loss and accuracy are the token-weighted ones of the model before it."""
    model, tokenizer = load_tiny(tiny_llama)
    convs = conversations()
    batch = pad_batch(encode_conversations(tokenizer, convs, 128), 2)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = batch["labels"][:, 1:]
    mask = shifted != IGNORE_INDEX
    picked = logits[:, :-1][mask]
    expected_loss = float(F.cross_entropy(picked, shifted[mask]))
    expected_acc = float((picked.argmax(-1) == shifted[mask]).float().mean())

    events = EventLog(tmp_path / "events.jsonl")
    settings = _settings(
        method="lora", batch_size=8 // accumulation + 1, gradient_accumulation=accumulation
    )
    result = train_sft(model, tokenizer, convs, None, settings, events=events)
    events.close()
    assert result.steps == 1
    row = result.train_history[0]
    assert row["train_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert row["train_mean_token_accuracy"] == pytest.approx(expected_acc)
    assert row["trained_tokens"] == int(mask.sum())
    lines = read_events(tmp_path / "events.jsonl")
    (metrics,) = [e for e in lines if e["type"] == "metrics"]
    assert isinstance(parse_event(metrics), MetricsEvent)
    assert metrics["train_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert [e["type"] for e in lines] == ["start", "metrics", "summary"]


def test_lora_trains_only_the_adapters(tiny_llama: Path):
    model, tokenizer = load_tiny(tiny_llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_sft(model, tokenizer, conversations(), None, _settings(method="lora", epochs=3))
    trained = {n: p for n, p in result.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    # every linear layer of every block is adapted (peft's all-linear), not just attention
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert any(
        n.endswith("lora_B.default.weight") and p.abs().sum() > 0 for n, p in trained.items()
    )
    base = result.model.get_base_model()
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        original = before[name.replace(".base_layer", "")]
        assert torch.equal(tensor, original), f"{name} changed"


def test_full_changes_the_base_weights(tiny_llama: Path):
    model, tokenizer = load_tiny(tiny_llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_sft(model, tokenizer, conversations(), None, _settings(method="full"))
    after = result.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert "model.embed_tokens.weight" in changed
    assert len(changed) == len(before)


def test_a_non_finite_loss_stops_at_the_first_step(tiny_llama: Path):
    model, tokenizer = load_tiny(tiny_llama)
    with torch.no_grad():
        model.model.norm.weight[0] = math.inf
    before = model.model.layers[0].mlp.up_proj.weight.clone()
    with pytest.raises(TrainingDivergedError, match=r"step 1 .*Lower the learning rate") as info:
        train_sft(model, tokenizer, conversations(), None, _settings())
    assert info.value.job_error_code == "training_diverged"
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, before)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_early_stopping_fires_on_a_rising_valid_loss_and_keeps_the_best(
    tiny_llama: Path, tmp_path: Path, method: str
):
    """The validation replies contradict the training ones: memorising the training set
    makes the validation loss rise, so training stops and the best weights come back."""
    model, tokenizer = load_tiny(tiny_llama)
    train = conversations()
    answers = [a for _, a in QA]
    shuffled = answers[3:] + answers[:3]
    valid = conversations([(q, a) for (q, _), a in zip(QA, shuffled, strict=True)])
    events = EventLog(tmp_path / "events.jsonl")
    settings = _settings(
        method=method, epochs=60, batch_size=4, eval_every=1, patience=3, sample_max_new_tokens=8
    )
    result = train_sft(model, tokenizer, train, valid, settings, events=events)
    events.close()
    assert result.stopped_early
    assert result.steps < 120
    losses = [row["valid_loss"] for row in result.valid_history]
    assert result.best_step == result.valid_history[losses.index(min(losses))]["step"]
    assert result.steps == result.best_step + 3
    assert result.best_metrics["valid_loss"] == min(losses) < losses[-1]
    assert result.best_metrics["perplexity"] == pytest.approx(math.exp(min(losses)))
    # the model holds the best weights again
    again = evaluate_sft(
        result.model, encode_conversations(tokenizer, valid, 128), pad_id=2, batch_size=3
    )
    assert again["valid_loss"] == pytest.approx(min(losses), rel=1e-5)
    lines = read_events(tmp_path / "events.jsonl")
    assert [e["step"] for e in lines if e["type"] == "early_stop"] == [result.steps]
    # each evaluation shows greedy replies to the first three validation prompts
    samples = [e for e in lines if e["type"] == "samples"]
    assert [e["step"] for e in samples] == [row["step"] for row in result.valid_history]
    first = samples[0]["samples"]
    assert [x["line"] for x in first] == [1, 2, 3]
    assert first[1]["prompt"] == [{"role": "user", "content": QA[1][0]}]
    assert first[1]["reference"] == shuffled[1]
    assert all(isinstance(x["completion"], str) and "<|im_" not in x["completion"] for x in first)
    assert isinstance(parse_event(samples[0]), SamplesEvent)
    evals = [e for e in lines if e["type"] == "eval"]
    assert set(evals[0]["metrics"]) == {
        "valid_loss",
        "valid_mean_token_accuracy",
        "perplexity",
        "valid_tokens",
    }


def test_validation_runs_every_n_steps_and_at_each_epoch_end(tiny_llama: Path):
    model, tokenizer = load_tiny(tiny_llama)
    # 8 conversations in batches of 3: 3 steps per epoch; eval every 2 steps and at epoch ends
    settings = _settings(epochs=2, batch_size=3, eval_every=2)
    result = train_sft(model, tokenizer, conversations(), conversations()[:2], settings)
    assert [row["step"] for row in result.valid_history] == [2, 3, 4, 6]
    assert result.steps == 6
    assert result.epochs == pytest.approx(2.0)


def test_learning_rate_warms_up_then_decays_by_cosine(tiny_llama: Path):
    model, tokenizer = load_tiny(tiny_llama)
    settings = _settings(method="lora", epochs=10, batch_size=4, warmup_ratio=0.1)
    result = train_sft(model, tokenizer, conversations(), None, settings)
    lrs = [row["lr"] for row in result.train_history]
    assert len(lrs) == 20
    assert lrs[0] == pytest.approx(1e-2 / 2)  # two warmup steps
    assert lrs[1] == pytest.approx(1e-2)
    assert lrs[2] == pytest.approx(1e-2)  # cosine starts at the peak
    middle = 2 + 9  # halfway through the 18 decay steps
    assert lrs[middle] == pytest.approx(0.5e-2)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_a_conversation_cut_before_its_reply_is_left_out(tiny_llama: Path, tmp_path: Path):
    model, tokenizer = load_tiny(tiny_llama)
    long_prompt = Conversation(
        (Turn("user", "Hello there! " * 40), Turn("assistant", "Paris.")), line=9
    )
    events = EventLog(tmp_path / "events.jsonl")
    settings = _settings(max_length=80)  # the others have 54 to 72 tokens
    result = train_sft(
        model, tokenizer, [*conversations(), long_prompt], None, settings, events=events
    )
    events.close()
    assert (result.truncated, result.dropped) == (1, 1)
    (warning,) = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "warning"]
    assert warning["code"] == "truncated" and warning["count"] == 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match="method"):
        SftSettings(method="ia3")
    with pytest.raises(ValueError, match="precision"):
        SftSettings(precision="fp16")
    with pytest.raises(ValueError, match="batch_size"):
        SftSettings(batch_size=0)
    with pytest.raises(ValueError, match="sample_prompts"):
        SftSettings(sample_prompts=-1)
    assert dataclasses.replace(SftSettings(), epochs=2).epochs == 2


def test_a_tokenizer_without_a_pad_token_is_refused(tiny_llama: Path):
    model, tokenizer = load_tiny(tiny_llama)
    tokenizer.pad_token = None
    with pytest.raises(InputError, match="no pad token"):
        train_sft(model, tokenizer, conversations(), None, _settings())


@pytest.mark.parametrize("softcapping", [None, 30.0])
def test_the_output_layer_on_trained_positions_only_gives_the_same_loss_on_gemma3(
    softcapping: float | None,
):
    """gemma-3-270m is an opt-in base: its loss must not depend on the shortcut, and the
    shortcut is refused where the model soft-caps its logits."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        final_logit_softcapping=softcapping,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    assert head_on_trained_only_is_exact(config) == (softcapping is None)
    ids = torch.randint(1, 64, (2, 12))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 7:] = ids[:, 7:]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        full = token_stats(model, batch, head_on_trained_only=False)
        auto = token_stats(model, batch)
    assert float(auto.loss_sum) == pytest.approx(float(full.loss_sum), rel=1e-5)
    assert auto.tokens == full.tokens == 10
