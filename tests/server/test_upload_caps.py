"""Uploads are inspected under caps on rows and decompressed bytes: a file over either cap,
however small on the wire (a Parquet compression bomb), is refused with 413 naming the cap and
the setting that raises it, and nothing of it is kept (no bytes on disk, no database row)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from tests.server.api import ApiServer, api_server
from tests.server.live import server_settings

from tuneforge.jobs.tables import File

ROWS = 100
BYTES = 64 * 1024
MEMORY = 1024 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("caps")
    settings = server_settings(
        root,
        tiny_model,
        workers=0,
        max_upload_rows=ROWS,
        max_upload_decompressed_bytes=BYTES,
        max_upload_memory_bytes=MEMORY,
    )
    with api_server(settings) as app:
        yield app


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with api.http(api.key("acme", "train")) as c:
        yield c


def parquet_bomb(rows: int, chars: int) -> bytes:
    """rows x chars of text in a few KB: one dictionary entry, zstd-compressed run lengths."""
    text = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * chars]))
    label = pa.DictionaryArray.from_arrays(
        pa.array([i % 2 for i in range(rows)], pa.int32()), pa.array(["pos", "neg"])
    )
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": text, "label": label}), buffer, compression="zstd")
    return buffer.getvalue()


def csv_rows(n: int) -> bytes:
    return b"text,label\n" + b"".join(
        b"film %d,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(n)
    )


def everything_stored(api: ApiServer) -> tuple[set[str], int]:
    """The files in the upload directory (partial ones included) and the file rows."""
    folder = api.state.layout.files
    names = {p.name for p in folder.iterdir()} if folder.exists() else set()
    with api.state.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(File))
    return names, int(rows or 0)


def upload(client: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return client.post("/v1/files", files={"file": (name, content)}, data={"purpose": "fine-tune"})


def assert_refused(response: httpx.Response, cap: int, setting: str) -> str:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "file_too_large" and error["param"] == "file", error
    assert error["type"] == "invalid_request_error"
    message = error["message"]
    assert f"{cap:,}" in message, message
    assert setting in message and f"TUNEFORGE_{setting.upper()}" in message, message
    assert "/" not in message.replace("TUNEFORGE_", ""), "no server path in the message"
    return message


def test_a_parquet_bomb_is_refused_and_nothing_is_kept(api: ApiServer, client):
    bomb = parquet_bomb(ROWS, 5_000)  # 500 KB of text once decoded
    assert len(bomb) < BYTES // 4
    before = everything_stored(api)
    message = assert_refused(
        upload(client, "bomb.parquet", bomb), BYTES, "max_upload_decompressed_bytes"
    )
    assert "bomb.parquet" in message
    assert everything_stored(api) == before


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("many.csv", csv_rows(ROWS + 1)),
        ("many.tsv", csv_rows(ROWS + 1).replace(b",", b"\t")),
        (
            "many.jsonl",
            b"".join(
                json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}).encode() + b"\n"
                for i in range(ROWS + 1)
            ),
        ),
        ("many.parquet", None),
    ],
)
def test_rows_over_the_cap_are_refused_in_every_format(api: ApiServer, client, name, content):
    if content is None:
        table = pa.table(
            {"text": [f"t{i}" for i in range(ROWS + 1)], "label": ["a", "b"] * 50 + ["a"]}
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        content = buffer.getvalue()
    before = everything_stored(api)
    message = assert_refused(upload(client, name, content), ROWS, "max_upload_rows")
    assert f"{ROWS + 1:,}" in message
    assert everything_stored(api) == before


def test_a_plain_file_over_the_decompressed_cap_is_refused(api: ApiServer, client):
    big = b"text,label\n" + b"".join(b"%s %d,a\nother,b\n" % (b"w" * 2000, i) for i in range(40))
    assert BYTES < len(big) < api.settings.max_upload_bytes
    before = everything_stored(api)
    assert_refused(upload(client, "big.csv", big), BYTES, "max_upload_decompressed_bytes")
    assert everything_stored(api) == before


def test_a_file_that_would_amplify_in_memory_is_refused(api: ApiServer, client):
    # 60 KB of "[]," parse into 20,000 lists of 56 bytes each
    amplifier = b'{"text": "good", "label": [' + b"[]," * 20_000 + b"[]]}\n"
    assert len(amplifier) < BYTES
    before = everything_stored(api)
    message = assert_refused(
        upload(client, "amp.jsonl", amplifier), MEMORY, "max_upload_memory_bytes"
    )
    assert "memory" in message
    assert everything_stored(api) == before


def test_files_at_the_caps_are_accepted(api: ApiServer, client):
    for name, content in (("ok.csv", csv_rows(ROWS)), ("ok.parquet", parquet_bomb(ROWS, 100))):
        response = upload(client, name, content)
        assert response.status_code == 200, response.text
        assert response.json()["tuneforge"]["rows"] == ROWS
