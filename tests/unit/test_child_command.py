"""A worker starts its training child without the database URL on the command line."""

from __future__ import annotations

from pathlib import Path

from tuneforge.jobs.db import DATABASE_URL_ENV, make_engine, migrate, sqlite_url
from tuneforge.jobs.worker import Worker


def test_the_database_url_travels_in_the_environment(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "tuneforge.db"))
    migrate(engine)
    secret_url = "postgresql+psycopg://tuneforge:s3cret-pw@db.internal:5432/tuneforge"
    worker = Worker(engine, secret_url, tmp_path)
    command = worker.child_command("ftjob-abc")
    assert command[1:3] == ["-m", "tuneforge.jobs.child"]
    assert "ftjob-abc" in command
    assert not any("s3cret" in part for part in command), command
    assert worker.child_environment()[DATABASE_URL_ENV] == secret_url


def test_the_child_refuses_to_start_without_the_url(monkeypatch, capsys) -> None:
    import pytest

    from tuneforge.jobs import child

    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        child.main(["--data-dir", "/nonexistent", "--job-id", "ftjob-x"])
    assert exc.value.code == 2
    assert DATABASE_URL_ENV in capsys.readouterr().err
