"""A failed upload leaves nothing behind: content problems (a JSONL line nested past the
parser's depth) are described by line, and any exception between writing the bytes and
committing the row removes the bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tests.server.api import BASE_URL, ApiServer, api_server
from tests.server.live import server_settings

from tuneforge.jobs.tables import File
from tuneforge.server.services import files as service

GOOD = json.dumps({"text": "good film", "label": "positive"})
OTHER = json.dumps({"text": "bad film", "label": "negative"})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[ApiServer]:
    with api_server(server_settings(tmp_path_factory.mktemp("fail"), tiny_model, workers=0)) as a:
        yield a


@pytest.fixture(scope="module")
def key(api: ApiServer) -> str:
    return api.key("acme", "train")


@pytest.fixture()
def client(api: ApiServer, key: str) -> Iterator[TestClient]:
    """A client that answers server errors as responses (500) instead of raising them."""
    c = TestClient(
        api.app,
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {key}"},
        raise_server_exceptions=False,
    )
    c.portal = api.main.portal  # the lifespan's event loop, where the state lives
    yield c


def upload(client, name: str, content: bytes) -> httpx.Response:
    return client.post("/v1/files", files={"file": (name, content)}, data={"purpose": "fine-tune"})


def everything_stored(api: ApiServer) -> tuple[set[str], int]:
    folder = api.state.layout.files
    names = {p.name for p in folder.iterdir()} if folder.exists() else set()
    with api.state.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(File))
    return names, int(rows or 0)


@pytest.mark.parametrize("depth", [1_000, 200_000])
def test_a_jsonl_line_nested_too_deep_is_described_by_its_line(api, client, depth):
    deep = '{"text": ' + "[" * depth + "]" * depth + ', "label": "negative"}'
    response = upload(client, "deep.jsonl", "\n".join([GOOD, OTHER, deep]).encode())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tuneforge"] == {"valid": False}
    assert "deep.jsonl:3:" in body["status_details"], body["status_details"]
    assert "nested too deeply" in body["status_details"]
    # the bytes are stored under the id, with their row
    assert f"{body['id']}.jsonl" in everything_stored(api)[0]
    assert client.get(f"/v1/files/{body['id']}").status_code == 200


def test_a_lone_surrogate_in_a_row_is_described_by_its_line(client):
    bad = json.dumps({"text": "bad \ud800 film", "label": "negative"})
    body = upload(client, "s.jsonl", f"{GOOD}\n{bad}\n".encode()).json()
    assert "s.jsonl:2:" in body["status_details"] and "surrogate" in body["status_details"]


@pytest.mark.parametrize("where", ["inspection", "commit"])
def test_any_failure_after_the_bytes_are_written_removes_them(
    api, client, monkeypatch: pytest.MonkeyPatch, where: str
):
    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    real_commit = Session.commit

    def commit_failing_on_a_new_file(self: Session) -> None:
        if any(isinstance(row, File) for row in self.new):
            boom()
        real_commit(self)

    if where == "inspection":
        monkeypatch.setattr(service, "read_table", boom)
    else:
        monkeypatch.setattr(Session, "commit", commit_failing_on_a_new_file)
    before = everything_stored(api)
    response = upload(client, "train.jsonl", f"{GOOD}\n{OTHER}\n".encode())
    assert response.status_code == 500, response.text
    assert "injected" not in response.text and "Traceback" not in response.text
    monkeypatch.undo()
    assert everything_stored(api) == before


def test_a_name_over_255_characters_keeps_its_extension(client):
    name = "r" * 300 + ".csv"
    response = upload(client, name, b"text,label\ngood,positive\nbad,negative\n")
    assert response.status_code == 200, response.text
    shown = response.json()["filename"]
    assert shown.endswith(".csv") and len(shown) == 255, shown
    assert shown.startswith("rrrr")
    # the extension decides the format: a long .jsonl name is read as JSON lines
    long_jsonl = upload(client, "j" * 400 + ".jsonl", f"{GOOD}\n{OTHER}\n".encode()).json()
    assert long_jsonl["filename"].endswith(".jsonl") and long_jsonl["tuneforge"]["rows"] == 2


def test_a_server_start_removes_uploads_left_half_written_by_a_killed_server(
    tmp_path: Path, tiny_model: Path
):
    """A request removes its staging file on any error, but a killed process cannot: the
    next start removes those older than an hour and keeps a fresh one (another server on
    the same data directory may be receiving it)."""
    import os
    import time

    settings = server_settings(tmp_path, tiny_model, workers=0)
    folder = settings.data_dir / "files"
    folder.mkdir(parents=True)
    stale = folder / ".file-abc.partial.csv"
    fresh = folder / ".file-def.partial.jsonl"
    stored = folder / "file-ghi.csv"  # a stored upload: never touched
    for path in (stale, fresh, stored):
        path.write_text("text,label\n")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(stored, (hours_ago, hours_ago))
    with api_server(settings):
        assert sorted(p.name for p in folder.iterdir()) == [fresh.name, stored.name]
