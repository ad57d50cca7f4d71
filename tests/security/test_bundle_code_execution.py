"""A bundle that ships code never runs it: not at import, not when the server loads it, not
when ``tuneforge predict`` is answered "y".

The hostile bundles carry an ``auto_map`` (in ``tokenizer/tokenizer_config.json`` or
``model/config.json``) naming a class in a ``.py`` file of the bundle; importing that file
creates a marker file, so every test also fails if the code ran.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from tests.security.hostile import (
    assert_clean_message,
    assert_error,
    edit_json,
    hostile_copy,
    place_model,
    tree,
)
from tests.server.live import LiveServer

from conftest import run_cli

pytestmark = [pytest.mark.security, pytest.mark.live]

# Where the auto_map goes and what it names.
PLACES = {
    "tokenizer": (
        "tokenizer/tokenizer_config.json",
        {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
        "tokenizer/tokenization_evil.py",
    ),
    "model": (
        "model/config.json",
        {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"},
        "model/modeling_evil.py",
    ),
}


def code_bundle(bundle: Path, target: Path, place: str) -> tuple[Path, Path]:
    """A copy of ``bundle`` whose ``place`` folder names its own Python code; (bundle, the
    marker file the code would create)."""
    config, auto_map, module = PLACES[place]
    copy = hostile_copy(bundle, target)
    marker = target.parent / f"{target.name}.code-ran"
    edit_json(copy / config, auto_map=auto_map)
    (copy / module).write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import BertForSequenceClassification, BertTokenizerFast\n"
        "class EvilTokenizer(BertTokenizerFast): ...\n"
        "class EvilModel(BertForSequenceClassification): ...\n",
        encoding="utf-8",
    )
    return copy, marker


@pytest.mark.parametrize("place", sorted(PLACES))
def test_models_import_refuses_a_bundle_with_code(
    quiet_server: LiveServer, bundle: Path, tmp_path: Path, place: str
) -> None:
    hostile, marker = code_bundle(bundle, tmp_path / f"evil-{place}", place)
    models = quiet_server.state.layout.models
    before = tree(models)
    name = f"evil-{place}-import"
    result = run_cli(
        "models", "import", hostile, "--project", "acme", "--name", name,
        "--data-dir", quiet_server.settings.data_dir,
    )  # fmt: skip
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert "auto_map" in result.stderr or ".py" in result.stderr, result
    assert not marker.exists(), "the bundle's code ran"
    assert tree(models) == before, "a refused import left files in the data directory"
    with quiet_server.http(quiet_server.key("acme")) as client:
        assert client.get(f"/v1/models/{name}").status_code == 404
        response = client.post("/v1/classify", json={"model": name, "input": "good"})
        assert response.status_code == 404, response.text
    assert not marker.exists(), "the bundle's code ran"


@pytest.mark.parametrize("place", sorted(PLACES))
def test_server_refuses_to_load_a_bundle_with_code(
    quiet_server: LiveServer, bundle: Path, tmp_path: Path, place: str
) -> None:
    """A bundle placed in the data directory and registered without ``models import``."""
    hostile, marker = code_bundle(bundle, tmp_path / f"evil-{place}", place)
    model_id = place_model(quiet_server, hostile)
    with quiet_server.http(quiet_server.key("acme")) as client:
        for path, body in (
            ("/v1/classify", {"model": model_id, "input": "good"}),
            (
                "/v1/chat/completions",
                {"model": model_id, "messages": [{"role": "user", "content": "good"}]},
            ),
        ):
            error = assert_error(client.post(path, json=body), 503, "model_unavailable")
            assert "could not be loaded" in error["message"], error
            assert str(quiet_server.settings.data_dir) not in error["message"]
    assert not marker.exists(), "the bundle's code ran"


def test_predict_answered_yes_does_not_run_the_code(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers asks "run the custom code? [y/N]" when trust_remote_code is unset: a
    piped ``yes`` must find no question to answer."""
    hostile, marker = code_bundle(bundle, tmp_path / "evil", "tokenizer")
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))
    result = run_cli("predict", hostile, "good movie")
    assert result.code == 2, result
    assert_clean_message(result.stderr.replace(str(hostile), "BUNDLE"))
    assert not marker.exists(), "the bundle's code ran"
