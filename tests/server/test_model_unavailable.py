"""A registered model whose bundle no longer loads answers 503 ``model_unavailable``.

The bundle is imported whole, then damaged on disk (as a bad disk, a botched copy or a hand
edit would): every request for it gets 503 with code ``model_unavailable`` and a message
without a server path or a traceback, the cause is logged server-side, and the project's
other models keep answering.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.server.api import ApiServer

from conftest import run_cli, sentiment_rows, write_csv
from tuneforge.server.services.models import import_bundle


@pytest.fixture(scope="module")
def bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unavailable")
    data = write_csv(root / "train.csv", sentiment_rows(40))
    result = run_cli(
        "train", data, "--model", tiny_model, "--epochs", "1", "--patience", "0",
        "--threads", "1", "--quiet", "--export", "none", "--output", root / "bundle",
    )  # fmt: skip
    assert result.code == 0, result
    return root / "bundle"


def imported(api: ApiServer, bundle: Path, name: str) -> Path:
    state = api.state
    return import_bundle(state.layout, state.sessions, state.base_models, bundle, "acme", name)


def _truncate_weights(b: Path) -> None:
    weights = b / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _edit_manifest(**values) -> Callable[[Path], None]:
    def edit(b: Path) -> None:
        manifest = json.loads((b / "tuneforge.json").read_text())
        manifest.update(values)
        (b / "tuneforge.json").write_text(json.dumps(manifest))

    return edit


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated-weights": _truncate_weights,
    "no-model-folder": lambda b: shutil.rmtree(b / "model"),
    "no-manifest": lambda b: (b / "tuneforge.json").unlink(),
    "manifest-not-json": lambda b: (b / "tuneforge.json").write_text("{"),
    "max_length-100000": _edit_manifest(max_length=100000),
    "thresholds-abc": _edit_manifest(thresholds="abc"),
    "three-labels-two-outputs": _edit_manifest(labels=["a", "b", "c"]),
    "pickle-weights": lambda b: (b / "model" / "model.safetensors").rename(
        b / "model" / "pytorch_model.bin"
    ),
}


def _assert_unavailable(response, api: ApiServer) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "model_unavailable" and error["param"] == "model", error
    assert "could not be loaded" in error["message"]
    text = response.text
    assert str(api.state.layout.root) not in text and "/tmp" not in text
    assert "Traceback" not in text and 'File "' not in text
    assert response.headers.get("Retry-After")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_bundle_damaged_after_import_answers_503_model_unavailable(
    damage: str, api: ApiServer, bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = api.key()
    broken = imported(api, bundle, "broken")
    imported(api, bundle, "healthy")
    DAMAGE[damage](broken)
    with caplog.at_level(logging.ERROR), api.http(key) as client:
        for _ in range(2):  # the second answer comes from the remembered failure
            _assert_unavailable(
                client.post("/v1/classify", json={"model": "broken", "input": "good movie"}), api
            )
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "broken", "messages": [{"role": "user", "content": "good movie"}]},
        )
        _assert_unavailable(chat, api)
        healthy = client.post("/v1/classify", json={"model": "healthy", "input": "good movie"})
        assert healthy.status_code == 200, healthy.text
    logged = [r for r in caplog.records if "broken" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, "the cause is not logged server-side"
    assert len(logged) == 1, "the failed load was tried again at once"


def test_a_repaired_bundle_serves_again(api: ApiServer, bundle: Path, monkeypatch) -> None:
    from tuneforge.server import model_cache

    monkeypatch.setattr(model_cache, "RETRY_FAILED_LOAD_SECONDS", 0.0)
    key = api.key()
    dest = imported(api, bundle, "flaky")
    weights = dest / "model" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:1000])
    with api.http(key) as client:
        first = client.post("/v1/classify", json={"model": "flaky", "input": "good movie"})
        assert first.status_code == 503, first.text
        weights.write_bytes(good)
        again = client.post("/v1/classify", json={"model": "flaky", "input": "good movie"})
        assert again.status_code == 200, again.text
