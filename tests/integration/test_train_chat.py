"""`tuneforge train` fine-tunes a chat model end to end on the tiny Llama: the task is
chosen from the file and said, the bundle is complete (manifest, card, events,
safetensors only), `tuneforge generate BUNDLE` reproduces a memorised reply, and the bundle
reloads as the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.sft_data import QA

from conftest import run_cli, write_jsonl
from tuneforge.bundle import read_bundle


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def chat_rows(pairs=QA) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in pairs
    ]


MEMORISE = (
    "--method", "full", "--epochs", "60", "--batch-size", "4", "--learning-rate", "1e-2",
    "--warmup-ratio", "0", "--patience", "0", "--precision", "fp32", "--threads", "1",
    "--quiet",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path):
    """A full fine-tune that memorises QA (validated on its own training file)."""
    tmp = tmp_path_factory.mktemp("chat-train")
    train = write_jsonl(tmp / "chat.jsonl", chat_rows())
    bundle = tmp / "bundle"
    result = run_cli(
        "train", train, "--model", tiny_llama, "--validation", train, "--output", bundle,
        *MEMORISE,
    )  # fmt: skip
    return result, bundle, tmp


def test_train_picks_generate_and_writes_a_complete_bundle(trained):
    result, bundle, _ = trained
    assert result.code == 0, result
    assert "task: generate" in result.stderr
    assert "8 distinct final replies among 8 examples" in result.stderr
    manifest = read_bundle(bundle).manifest
    assert manifest.task == "generate" and manifest.method == "full"
    assert manifest.labels == () and manifest.generation is not None
    assert manifest.base_model.source == "local" and len(manifest.base_model.sha256) == 64
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert "model/model.safetensors" in files and "tokenizer/tokenizer.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    for name in ("README.md", "events.jsonl", "eval.json", "run_config.json", "data.json"):
        assert name in files
    events = [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]
    task = [e for e in events if e["type"] == "task"]
    assert task and task[0]["task"] == "generate" and "free text" in task[0]["reason"]
    assert any(e["type"] == "eval" for e in events)
    metrics = json.loads((bundle / "eval.json").read_text())
    assert metrics["validation"]["valid_mean_token_accuracy"] == 1.0
    config = json.loads((bundle / "run_config.json").read_text())
    assert config["data"]["task"] == "generate"
    card = (bundle / "README.md").read_text()
    assert "Chat model" in card and "perplexity" in card and "Sample replies" in card
    assert not (bundle.parent / f".{bundle.name}.partial").exists()


def test_generate_on_the_bundle_reproduces_a_memorised_reply(trained):
    result, bundle, tmp = trained
    assert result.code == 0, result
    prompts = write_jsonl(
        tmp / "prompts.jsonl",
        [{"messages": [{"role": "user", "content": q}]} for q, _ in QA[:3]],
    )
    out = tmp / "out.jsonl"
    generated = run_cli(
        "generate", bundle, "--input", prompts, "--output", out, "--max-tokens", "20"
    )
    assert generated.code == 0, generated
    replies = [json.loads(line)["completion"] for line in out.read_text().splitlines()]
    assert replies == [a for _, a in QA[:3]]
    assert f"{bundle} (fine-tuned from " in " ".join(generated.stderr.split())


def test_the_bundle_reloads_with_the_same_logits(trained, tiny_llama: Path):
    from tests.sft_data import load_tiny

    from tuneforge.inference.generator import Generator

    _, bundle, _ = trained
    a = Generator.load(bundle, precision="fp32", threads=1)
    b = Generator.load(bundle, precision="fp32", threads=1)
    ids = torch.tensor([a.tokenizer("Hello there!")["input_ids"]])
    with torch.no_grad():
        la, lb = a.model(input_ids=ids).logits, b.model(input_ids=ids).logits
    assert torch.equal(la, lb)
    base, _ = load_tiny(tiny_llama)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, la)  # the trained weights


def test_lora_bundle_loads_its_base_and_refuses_a_different_one(tmp_path: Path, tiny_llama):
    import shutil

    from tests.tiny_llama import build_tiny_llama

    from tuneforge.errors import InputError
    from tuneforge.inference.generator import Generator

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    train = write_jsonl(tmp_path / "chat.jsonl", chat_rows())
    bundle = tmp_path / "bundle"
    result = run_cli(
        "train", train, "--model", base, "--output", bundle, "--epochs", "1",
        "--batch-size", "4", "--precision", "fp32", "--threads", "1", "--quiet",
    )  # fmt: skip
    assert result.code == 0, result
    method = json.loads((bundle / "run_config.json").read_text())["method"]
    assert (method["name"], method["lora_r"], method["lora_alpha"]) == ("lora", 16, 32)
    files = {p.name for p in (bundle / "adapter").iterdir()}
    assert "adapter_model.safetensors" in files
    manifest = read_bundle(bundle).manifest
    assert manifest.adapter and manifest.base_model.path == str(base.resolve())
    # carved validation: one of 8 examples
    data = json.loads((bundle / "data.json").read_text())
    assert data["splits"]["validation"] == {
        "rows": 1, "source": str(train), "carved_from_train": True
    }  # fmt: skip
    generator = Generator.load(bundle, precision="fp32", threads=1)
    reply = generator.chat([{"role": "user", "content": "Hello there!"}], max_tokens=5)
    assert reply.completion_tokens >= 1
    # the merged model computes what the base with the adapter on top computes
    from peft import PeftModel
    from tests.sft_data import load_tiny

    unmerged = PeftModel.from_pretrained(load_tiny(base)[0], str(bundle / "adapter")).eval()
    ids = torch.tensor([generator.tokenizer("Hello there!")["input_ids"]])
    with torch.no_grad():
        expected, got = unmerged(input_ids=ids).logits, generator.model(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(load_tiny(base)[0](input_ids=ids).logits, got, atol=1e-4)
    shutil.rmtree(base)
    build_tiny_llama(base, seed=1)  # same place, other weights
    with pytest.raises(InputError, match="was trained on base model"):
        Generator.load(bundle, precision="fp32", threads=1)
    generated = run_cli("chat", bundle)
    assert generated.code == 2 and "was trained on base model" in generated.stderr


def test_classifier_commands_refuse_a_chat_bundle(trained):
    _, bundle, _ = trained
    for args in (("predict", bundle, "some text"), ("export", bundle)):
        result = run_cli(*args)
        assert result.code == 2, result
        message = " ".join(result.stderr.split())
        assert "is a chat model (task generate)" in message and "tuneforge chat" in message


def test_an_interrupted_run_resumes_to_the_same_bundle(tmp_path: Path, tiny_llama: Path):
    from tuneforge.config import RunConfig
    from tuneforge.recipes.finetune_chat import finetune_chat

    train = write_jsonl(tmp_path / "chat.jsonl", chat_rows())

    def config(output: Path, resume: bool = False) -> RunConfig:
        return RunConfig.from_dict(
            {
                "data": {"train": str(train), "task": "generate"},
                "model": {"name": str(tiny_llama)},
                "method": {"name": "lora", "lora_dropout": 0.0},
                "train": {"epochs": 3, "batch_size": 2, "precision": "fp32", "num_threads": 1,
                          "checkpoint_every": 1},
                "output": str(output),
                "resume": resume,
            }
        )  # fmt: skip

    straight = finetune_chat(config(tmp_path / "straight"))

    def interrupt(event: dict) -> None:
        if event["type"] == "checkpoint" and event["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_chat(config(tmp_path / "resumed"), listeners=[interrupt])
    assert not (tmp_path / "resumed").exists()
    resumed = finetune_chat(config(tmp_path / "resumed", resume=True))
    assert resumed.metrics["validation"]["valid_loss"] == pytest.approx(
        straight.metrics["validation"]["valid_loss"], rel=1e-5
    )
    events = (tmp_path / "resumed" / "events.jsonl").read_text()
    assert '"type": "resume"' in events and events.count('"type": "task"') == 1


def test_eval_scores_the_bundle_against_its_base(trained, tiny_llama: Path):
    """`tuneforge eval BUNDLE refs.jsonl --compare BASE`: a chat bundle is scored on
    generated text, its memorised replies beating the untrained base."""
    result, bundle, tmp = trained
    assert result.code == 0, result
    refs = write_jsonl(
        tmp / "refs.jsonl",
        [{"messages": [{"role": "user", "content": q}], "references": [a]} for q, a in QA[:4]],
    )
    out = tmp / "eval.json"
    scored = run_cli(
        "eval", bundle, refs, "--compare", tiny_llama, "--json", out, "--max-tokens", "20"
    )
    assert scored.code == 0, scored
    report = json.loads(out.read_text())
    assert report["task"] == "generate"
    assert [e["output"] for e in report["examples"]] == [a for _, a in QA[:4]]
    assert report["metrics"]["bleu"] == pytest.approx(100.0)
    assert report["compare"]["metrics"]["bleu"] < 50
