"""A database password never reaches the output of ``tuneforge serve`` / ``worker`` /
``keys``: not in the start line, not in a log line, not in an error message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import run_cli
from tuneforge.jobs import db

SECRET = "s3cret-pw"
URL = f"postgresql+psycopg://tf:{SECRET}@db.internal:5432/tuneforge"


@pytest.fixture()
def sqlite_instead(tmp_path: Path, monkeypatch) -> None:
    """Commands given URL run on a SQLite file: the password-bearing URL is what they print,
    without a Postgres server."""
    real = db.make_engine
    monkeypatch.setattr(db, "make_engine", lambda _url: real(db.sqlite_url(tmp_path / "t.db")))


def test_worker_and_serve_print_the_url_without_its_password(
    tmp_path: Path, sqlite_instead, monkeypatch, caplog
):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    caplog.set_level(logging.DEBUG)
    for command in (["worker", "--max-jobs", "0"], ["serve", "--workers", "0"]):
        result = run_cli(*command, "--database-url", URL, "--data-dir", tmp_path / "data")
        assert result.code == 0, result
        assert "tf:***@db.internal:5432/tuneforge" in result.stderr, result
        assert SECRET not in result.stdout + result.stderr
    assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+pg8000://tf:{SECRET}@db.internal/tuneforge",  # driver not installed
        f"postgresql://tf:{SECRET}@db.internal:port/tuneforge",  # not a valid URL
    ],
)
def test_errors_about_the_url_hide_its_password(tmp_path: Path, url: str):
    for command in (["worker", "--max-jobs", "0"], ["keys", "list"]):
        result = run_cli(*command, "--database-url", url, "--data-dir", tmp_path)
        assert result.code == 2, result
        assert SECRET not in result.stdout + result.stderr, result
        assert "tf:***@db.internal" in result.stderr
