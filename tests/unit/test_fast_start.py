"""Start-up cost of the command line: what it imports, ``--version``, the OpenMP wait policy,
and the bundle tokenizer read without transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import tuneforge
from tuneforge.data.encode import encode_texts
from tuneforge.inference.tokenizer import FileTokenizer, load_inference_tokenizer

HEAVY = ["fastapi", "uvicorn", "sqlalchemy", "onnx", "peft", "matplotlib", "sklearn", "torch"]
ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_importing_the_cli_loads_no_heavy_library():
    code = (
        "import sys, json, tuneforge.cli.main\n"
        f"print(json.dumps([m for m in {[*HEAVY, 'transformers']!r} if m in sys.modules]))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_version_prints_the_package_version_without_loading_libraries():
    code = (
        "import sys, json\n"
        "sys.argv = ['tuneforge', '--version']\n"
        "from tuneforge.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"print(json.dumps([code, [m for m in {[*HEAVY, 'transformers']!r} if m in sys.modules]]))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert first == f"tuneforge {tuneforge.__version__}"
    assert json.loads(last) == [0, []]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert tuneforge.__version__ == pyproject["project"]["version"]


def test_main_makes_openmp_threads_sleep_before_torch_loads():
    code = (
        "import os, sys\n"
        "sys.argv = ['tuneforge', '--version']\n"
        "from tuneforge.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    done = _python(code)
    assert done.stdout.splitlines()[-1] == "PASSIVE False", done.stderr
    mine = _python(code, env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert mine.stdout.splitlines()[-1] == "ACTIVE False", mine.stderr


TEXTS = [
    "the movie was great",
    "Terrible, AWFUL film!!",
    "",
    "café naïve résumé — “quotes” and emoji 😀",
    "word " * 300,  # truncated
    "unknownzzzqqq tokens",
]


def _same_ids(directory: Path) -> None:
    from transformers import AutoTokenizer

    fast = load_inference_tokenizer(directory)
    assert isinstance(fast, FileTokenizer)
    reference = AutoTokenizer.from_pretrained(directory)
    assert fast.pad_token_id == reference.pad_token_id
    for max_length in (8, 128):
        a = encode_texts(fast, TEXTS, max_length)
        b = encode_texts(reference, TEXTS, max_length)
        assert all(np.array_equal(x, y) for x, y in zip(a.ids, b.ids, strict=True))
        assert a.truncated == b.truncated
    # Anything beyond encoding is answered by the transformers tokenizer.
    assert fast(["a b"])["input_ids"] == reference(["a b"])["input_ids"]


def test_file_tokenizer_gives_the_transformers_ids_tiny(tiny_model: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    # A bundle saves the tokenizer the way training does.
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "tokenizer")
    _same_ids(tmp_path / "tokenizer")


def test_file_tokenizer_gives_the_transformers_ids_default_model(tmp_path: Path):
    from tuneforge.errors import InputError
    from tuneforge.models.registry import resolve_base_model

    try:
        base = resolve_base_model("default")
    except InputError:
        pytest.skip("the default model package is not installed")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base.path).save_pretrained(tmp_path / "tokenizer")
    _same_ids(tmp_path / "tokenizer")


def test_unknown_tokenizer_class_falls_back_to_transformers(tiny_model: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    directory = tmp_path / "tokenizer"
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    assert not isinstance(load_inference_tokenizer(directory), FileTokenizer)
