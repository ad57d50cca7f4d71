"""A database file that is not tuneforge's is refused at start, never replaced by a new
schema; a database that answers with errors makes the server not ready and answers 503."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.server.api import api_server
from tests.server.live import TINY, server_settings

from conftest import run_cli
from tuneforge.errors import InputError

SQLITE_HEADER = b"SQLite format 3\x00"


def _other_sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.execute("INSERT INTO notes VALUES ('mine')")
    con.commit()
    con.close()


NOT_OURS = {
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"these are not the pages you are looking for\n" * 99),
    "another-sqlite-database": _other_sqlite,
}


@pytest.fixture(params=sorted(NOT_OURS))
def foreign_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tuneforge.db"
    NOT_OURS[request.param](db)
    return db


def _unchanged(db: Path, before: bytes) -> None:
    assert db.read_bytes() == before
    assert not any(
        p.name.endswith(("-wal", "-journal")) and p.stat().st_size for p in db.parent.iterdir()
    )


def test_keys_refuses_a_database_file_that_is_not_tuneforges(foreign_db: Path):
    before = foreign_db.read_bytes()
    result = run_cli("keys", "create", "--project", "acme", "--data-dir", foreign_db.parent)
    assert result.code == 2, result
    assert "is not a tuneforge database" in result.stderr and str(foreign_db) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # no key was made
    _unchanged(foreign_db, before)


def test_worker_and_serve_refuse_an_empty_database_file(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tuneforge.db"
    db.write_bytes(b"")
    import uvicorn

    def never(*_args, **_kwargs):
        raise AssertionError("the server started on an empty database file")

    monkeypatch.setattr(uvicorn, "run", never)
    for command in (["worker", "--max-jobs", "0"], ["serve", "--workers", "0"]):
        result = run_cli(*command, "--data-dir", data)
        assert result.code == 2, (command, result)
        assert "empty (0 bytes)" in result.stderr and "is not a tuneforge database" in result.stderr
        assert "Traceback" not in result.stderr
        assert db.read_bytes() == b""


def test_the_app_refuses_an_empty_database_file(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0)
    db = Path(settings.data_dir) / "tuneforge.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")
    with pytest.raises(InputError, match="is not a tuneforge database"), api_server(settings):
        pass
    assert db.read_bytes() == b""


def test_a_new_data_dir_gets_a_new_database(tmp_path: Path):
    data = tmp_path / "new"
    result = run_cli("keys", "create", "--project", "acme", "--data-dir", data)
    assert result.code == 0, result
    assert (data / "tuneforge.db").read_bytes().startswith(SQLITE_HEADER)
    # and the next start opens it as it is
    again = run_cli("keys", "list", "--json", "--data-dir", data)
    assert again.code == 0 and '"project": "acme"' in again.stdout


# ------------------------------------------------------------------ damaged pages


def _corrupt_table(db: Path, table: str) -> None:
    """Overwrite the pages of one table (its root page, inside the file) with garbage, as a
    failing disk or a bad copy would: a real SQLite file, damaged in the middle."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page is in the main file
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    assert 1 < root < pages, (root, pages)  # in the middle of the file
    with db.open("r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(bytes([0xA5]) * page_size)


@pytest.mark.parametrize("table", ["api_keys", "files", "jobs"])
def test_damaged_pages_make_the_server_not_ready_and_answer_503(
    tmp_path: Path, tiny_model: Path, table: str
):
    settings = server_settings(tmp_path, tiny_model, workers=0)
    with api_server(settings) as server:
        key = server.key("acme", "train,infer")
        files = [
            server.upload(key, f"t{i}.csv", b"text,label\ngood,positive\nbad,negative\n")
            for i in range(3)
        ]
        with server.http(key) as client:
            job = {"model": TINY, "training_file": files[0]}
            assert client.post("/v1/fine_tuning/jobs", json=job).status_code == 200
        assert server.get("/readyz").status_code == 200
    _corrupt_table(Path(settings.data_dir) / "tuneforge.db", table)
    with api_server(settings) as server, server.http(key) as client:
        assert server.get("/healthz").status_code == 200  # alive, not ready
        ready = server.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not_ready" and ready.json()["database"] == "error"
        assert "malformed" in ready.json()["database_error"]
        damaged = "/v1/fine_tuning/jobs" if table == "jobs" else "/v1/files"
        response = client.get(damaged)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "database_unavailable" and error["type"] == "server_error"
        assert "SELECT" not in error["message"] and "Traceback" not in error["message"]
        if table != "api_keys":  # the rest of the database still answers
            other = "/v1/files" if table == "jobs" else "/v1/fine_tuning/jobs"
            assert client.get(other).status_code == 200
