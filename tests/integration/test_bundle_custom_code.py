"""A bundle that names custom code (``auto_map`` -> a ``.py`` file in the bundle) never runs it.

The ``.py`` files here write a marker file when imported. ``tuneforge predict``, ``eval`` and
``export`` and ``Predictor.load`` refuse such a bundle with exit 2 (an ``InputError``) before
transformers opens anything, even with ``y`` answers waiting on stdin (``yes | tuneforge ...``):
no "run the custom code? [y/N]" prompt, no marker.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli, sentiment_rows, write_csv
from tuneforge.errors import InputError

# folder in the bundle -> (config file, auto_map, module file)
PLACES = {
    "tokenizer": (
        "tokenizer_config.json",
        {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
        "tokenization_evil.py",
    ),
    "model": (
        "config.json",
        {
            "AutoConfig": "modeling_evil.EvilConfig",
            "AutoModelForSequenceClassification": "modeling_evil.EvilModel",
        },
        "modeling_evil.py",
    ),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("code-data") / "train.csv", sentiment_rows(40))


@pytest.fixture(scope="module")
def bundle(tiny_model: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("code-bundle") / "bundle"
    result = run_cli(
        "train", data, "--model", tiny_model, "--epochs", "1", "--patience", "0",
        "--threads", "1", "--quiet", "--output", out,
    )  # fmt: skip
    assert result.code == 0, result
    return out


def booby_trap(bundle: Path, target: Path, place: str, *, with_module: bool = True) -> Path:
    """A copy of ``bundle`` whose ``place`` folder maps its classes to a module that writes
    a marker when imported; returns the marker's path."""
    shutil.copytree(bundle, target)
    config_name, auto_map, module = PLACES[place]
    config_path = target / place / config_name
    config = json.loads(config_path.read_text())
    config["auto_map"] = auto_map
    if place == "tokenizer":  # only the custom class can build it
        config["tokenizer_class"] = "EvilTokenizer"
    else:
        config["architectures"] = ["EvilModel"]
    config_path.write_text(json.dumps(config))
    marker = target.parent / f"{target.name}.ran"
    if with_module:
        (target / place / module).write_text(
            f"open({str(marker)!r}, 'w').close()\nclass EvilConfig: pass\n"
            "class EvilModel: pass\nclass EvilTokenizer: pass\n"
        )
    return marker


@pytest.fixture()
def yes_on_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """``yes | ...``: any prompt that reads stdin gets ``y``."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 100))


def _assert_refused(result, marker: Path) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert "[y/N]" not in result.stdout + result.stderr
    assert "trust_remote_code" in result.stderr or "Python code" in result.stderr, result
    assert not marker.exists(), "the bundle's code ran"


@pytest.mark.parametrize("with_module", [True, False], ids=["module", "auto_map-only"])
@pytest.mark.parametrize("place", sorted(PLACES))
def test_predict_eval_export_and_predictor_refuse_custom_code(
    place: str, with_module: bool, bundle: Path, data: Path, tmp_path: Path, yes_on_stdin: None
) -> None:
    from tuneforge import Predictor

    copy = tmp_path / "bundle"
    marker = booby_trap(bundle, copy, place, with_module=with_module)
    _assert_refused(run_cli("predict", copy, "good movie"), marker)
    _assert_refused(run_cli("eval", copy, data, "--json", tmp_path / "eval.json"), marker)
    assert not (tmp_path / "eval.json").exists()
    report = (copy / "onnx" / "export.json").read_bytes()
    _assert_refused(run_cli("export", copy, "--validation", data), marker)
    assert (copy / "onnx" / "export.json").read_bytes() == report
    with pytest.raises(InputError, match=r"auto_map|Python code"):
        Predictor.load(copy)
    assert not marker.exists()


def test_yes_piped_into_a_fresh_process_runs_no_code(bundle: Path, tmp_path: Path) -> None:
    """The real shell case: ``yes | python -m tuneforge predict BUNDLE TEXT``."""
    copy = tmp_path / "bundle"
    marker = booby_trap(bundle, copy, "model")
    yes = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tuneforge", "predict", str(copy), "good movie"],
            stdin=yes.stdout,
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
    finally:
        yes.kill()
        yes.wait()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "[y/N]" not in proc.stdout + proc.stderr
    assert not marker.exists(), "the bundle's code ran"


# ---------------------------------------------------------------- base-model directories


def test_a_base_model_directory_with_custom_code_is_never_run(
    tiny_model: Path, data: Path, tmp_path: Path, yes_on_stdin: None
) -> None:
    """The server's base models too: an adapter over a base directory that gained an
    ``auto_map`` is refused by ``models import`` and answers 503 when served; no code runs."""
    from tests.server.api import api_server
    from tests.server.live import TINY, server_settings

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    adapter = tmp_path / "adapter"
    result = run_cli(
        "train", data, "--model", base, "--method", "lora", "--epochs", "1", "--patience", "0",
        "--threads", "1", "--quiet", "--export", "none", "--output", adapter,
    )  # fmt: skip
    assert result.code == 0, result
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (base / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (base / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    settings = server_settings(tmp_path, base, workers=0)
    server_config = tmp_path / "server.json"
    server_config.write_text(json.dumps({"base_models": {TINY: str(base)}}))
    imported = run_cli(
        "models", "import", adapter, "--project", "acme", "--data-dir", settings.data_dir,
        "--config", server_config,
    )  # fmt: skip
    _assert_refused(imported, marker)

    with api_server(settings) as api:
        shutil.copytree(adapter, api.state.layout.models / "ftjob-adapter")
        model_id = api.add_model("ftjob-adapter", "models/ftjob-adapter")
        with api.http(api.key()) as client:
            answer = client.post("/v1/classify", json={"model": model_id, "input": "good movie"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "model_unavailable"
    assert not marker.exists(), "the base model's code ran"
