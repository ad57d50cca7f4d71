"""The job status machine: one enum, one transition table, one writer (the store)."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from tuneforge.jobs.db import make_engine, migrate, sqlite_url
from tuneforge.jobs.status import (
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    JobStatus,
    check_transition,
    sources_of,
)
from tuneforge.jobs.store import JobStore
from tuneforge.jobs.tables import Job

SRC = Path(__file__).resolve().parents[2] / "src" / "tuneforge"
STATUS_MODULE = SRC / "jobs" / "status.py"


def test_values_are_openais():
    assert {s.value for s in JobStatus} == {
        "validating_files",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "paused",
    }
    assert set(TRANSITIONS) == set(JobStatus)
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_api_actions_follow_the_table():
    assert sources_of(JobStatus.CANCELLED) == {
        JobStatus.VALIDATING_FILES,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.PAUSED,
    }
    assert sources_of(JobStatus.PAUSED) == {JobStatus.QUEUED, JobStatus.RUNNING}
    assert check_transition("paused", JobStatus.QUEUED) == JobStatus.PAUSED
    for final in TERMINAL:
        with pytest.raises(InvalidTransition, match=f"from {final.value} to queued"):
            check_transition(final.value, JobStatus.QUEUED)


def _store(tmp_path: Path) -> JobStore:
    engine = make_engine(sqlite_url(tmp_path / "jobs.db"))
    migrate(engine)
    return JobStore(engine)


def _add_job(store: JobStore, status: JobStatus = JobStatus.QUEUED) -> str:
    with store.sessions.begin() as s:
        s.add(
            Job(
                id="ftjob-1",
                project="p",
                model="m",
                training_file="file-1",
                hyperparameters={},
                method={"type": "supervised"},
                seed=0,
                run_config={},
                status=status.value,
                result_files=[],
                created_at=int(time.time()),
                attempts=0,
                max_attempts=2,
                queued_at=0.0,
            )
        )
    return "ftjob-1"


def test_store_transition_checks_and_stamps(tmp_path: Path):
    store = _store(tmp_path)
    job_id = _add_job(store)
    with store.sessions.begin() as s:
        job = s.get(Job, job_id)
        assert store.transition(job, JobStatus.PAUSED) == JobStatus.QUEUED
        with pytest.raises(InvalidTransition):
            store.transition(job, JobStatus.SUCCEEDED)
        assert job.status == "paused"  # a refused move changes nothing
        store.transition(job, JobStatus.QUEUED)
        assert job.queued_at > 0
    claim = store.claim("w1", lease_seconds=60)
    assert claim is not None and store.status(job_id) == "running"
    with pytest.raises(InvalidTransition):
        store.finish(job_id, "w1", JobStatus.VALIDATING_FILES)
    assert store.finish(job_id, "w1", JobStatus.SUCCEEDED)
    with store.sessions() as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded" and job.finished_at is not None
        assert type(job.status) is str  # the column stays a plain string


def _status_literals(path: Path) -> list[str]:
    """``file:line value`` for every string constant in ``path`` that is a job status
    (docstrings and dict keys, such as a queue's ``"queued"`` count, aside)."""
    values = {s.value for s in JobStatus}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    keys = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys}
    return [
        f"{path.name}:{node.lineno} {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in values
        and id(node) not in docstrings | keys
    ]


def test_no_bare_status_strings_outside_the_enum():
    found = [
        hit
        for path in sorted(SRC.rglob("*.py"))
        if path != STATUS_MODULE and "migrations" not in path.parts
        for hit in _status_literals(path)
    ]
    assert not found, "use JobStatus instead of a bare status string:\n" + "\n".join(found)


def test_the_literal_check_sees_a_bare_status(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        '"""Jobs that are "queued"."""\n'
        'counts = {"queued": 1}\n'
        "def finish(job):\n"
        '    """running"""\n'
        '    job.status = "failed"\n'
    )
    assert _status_literals(probe) == ["probe.py:5 'failed'"]
