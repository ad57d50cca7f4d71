"""Job workers under failure, with real processes and a real SQLite file.

A worker killed with SIGKILL mid-training loses its lease and another worker resumes the
job from its last complete checkpoint; a killed training child is retried the same way; a
job that always crashes fails after its attempt limit; cancel and pause stop the child
within seconds; four processes claiming from one queue never take a job twice.

Set ``TUNEFORGE_CRASH_TIMINGS=PATH`` to collect the measured times as JSON.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import select
from tests.server.live import TINY, LiveServer, chat_jsonl, live_server, server_settings
from tests.server.workers import (
    ChildSampler,
    claim_until_empty,
    is_alive,
    start_worker,
    stop_process,
    training_children,
    wait_until,
    write_events_until,
)

from tuneforge.jobs.db import make_engine, migrate, sqlite_url
from tuneforge.jobs.status import JobStatus
from tuneforge.jobs.store import JobStore
from tuneforge.jobs.tables import Checkpoint, Job, JobEvent
from tuneforge.jobs.tables import Worker as WorkerRow
from tuneforge.server.services.jobs import change_state

pytestmark = pytest.mark.live  # real processes: a uvicorn server, workers

LEASE = 3.0  # seconds; workers renew every second
# 120 steps (320 training rows, no early stop): seconds of training after the first
# checkpoint. One torch thread: on a busy machine, more than one crawls.
HYPERPARAMETERS = {
    "n_epochs": 3,
    "batch_size": 8,
    "checkpoint_every": 5,
    "patience": 0,
    "num_threads": 1,
}
TERMINAL = {"succeeded", "failed", "cancelled"}


# ---------------------------------------------------------------- helpers


def record_timings(test: str, timings: dict[str, Any]) -> None:
    """Print the timings; merge them into the JSON file ``$TUNEFORGE_CRASH_TIMINGS``."""
    print(f"\n{test}: " + ", ".join(f"{k}={v}" for k, v in timings.items()))
    target = os.environ.get("TUNEFORGE_CRASH_TIMINGS")
    if not target:
        return
    path = Path(target)
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[test] = timings
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def create_job(
    server: LiveServer, key: str, tmp_path: Path, model: str = TINY, rows: int = 400
) -> str:
    """Upload a chat-format training file and start a job on it; returns the job id."""
    train = chat_jsonl(tmp_path / "train.jsonl", rows)
    file_id = server.upload(key, "train.jsonl", train.read_bytes())
    with server.http(key) as client:
        response = client.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": model,
                "training_file": file_id,
                "seed": 3,
                "hyperparameters": HYPERPARAMETERS,
            },
        )
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "queued", job
        return job["id"]


def job_row(server: LiveServer, job_id: str) -> Job:
    with server.state.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def events(server: LiveServer, job_id: str) -> list[JobEvent]:
    """A job's events, oldest first."""
    with server.state.sessions() as s:
        q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
        return list(s.scalars(q))


def messages(server: LiveServer, job_id: str) -> list[str]:
    return [e.message for e in events(server, job_id)]


def checkpoint_steps(server: LiveServer, job_id: str) -> list[int]:
    with server.state.sessions() as s:
        q = select(Checkpoint.step_number).where(Checkpoint.job_id == job_id)
        return sorted(s.scalars(q))


def resumed_step(server: LiveServer, job_id: str) -> int | None:
    """The step of the job's "Resumed from checkpoint" event, if there is one yet."""
    for e in events(server, job_id):
        if e.message.startswith("Resumed from checkpoint at step"):
            return int(e.data["step"])
    return None


def assert_each_step_logged_once(server: LiveServer, job_id: str) -> None:
    """A resumed attempt trains again from its checkpoint but logs no step twice."""
    steps = [
        e.data["step"]
        for e in events(server, job_id)
        if e.type == "metrics" and e.data and "train_loss" in e.data
    ]
    assert steps == list(range(1, len(steps) + 1)), steps


def wait_for_status(server: LiveServer, job_id: str, statuses: set[str], timeout: float) -> Job:
    def reached() -> Job | None:
        job = job_row(server, job_id)
        return job if job.status in statuses else None

    try:
        return wait_until(reached, timeout, f"job {job_id} to become {statuses}")
    except AssertionError:
        job = job_row(server, job_id)
        raise AssertionError(
            f"job {job_id} is {job.status} after {timeout} s; events: {messages(server, job_id)}"
        ) from None


def wait_for_checkpoint(server: LiveServer, job_id: str, timeout: float = 90) -> int:
    """Wait until the running job recorded a checkpoint; returns its newest step."""

    def ready() -> int | None:
        job = job_row(server, job_id)
        assert job.status not in TERMINAL, (job.status, job.error, messages(server, job_id))
        steps = checkpoint_steps(server, job_id)
        return steps[-1] if steps else None

    return wait_until(ready, timeout, f"a checkpoint of {job_id}")


def assert_finished_training(server: LiveServer, job_id: str) -> Job:
    job = job_row(server, job_id)
    assert job.status == "succeeded", (job.error, messages(server, job_id))
    assert job.fine_tuned_model and job.fine_tuned_model.endswith(job_id)
    assert (server.state.layout.bundle(job_id) / "tuneforge.json").is_file()
    return job


def broken_model(tiny_model: Path, directory: Path) -> Path:
    """A copy of the tiny model whose weights file is garbage (loading it raises)."""
    directory.mkdir()
    for item in tiny_model.iterdir():
        (directory / item.name).write_bytes(item.read_bytes())
    (directory / "model.safetensors").write_bytes(b"\xff" * 4096)
    return directory


# ---------------------------------------------------------------- crashes


@pytest.mark.slow  # ~15 s: CI runs it (make test-slow)
def test_killed_worker_job_resumes_on_another_worker(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0, lease_seconds=LEASE)
    with live_server(settings) as server:
        data_dir = server.state.layout.root
        url = settings.resolved_database_url()
        logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
        procs = [start_worker(data_dir, url, LEASE, log) for log in logs]
        try:
            key = server.key()
            job_id = create_job(server, key, tmp_path)
            with ChildSampler(job_id, interval=0.1) as sampler:
                seen_step = wait_for_checkpoint(server, job_id)
                owner = job_row(server, job_id).lease_owner
                with server.state.sessions() as s:
                    owner_pid = s.get(WorkerRow, owner).pid
                victim = next(p for p in procs if p.pid == owner_pid)
                survivor = next(p for p in procs if p is not victim)
                survivor_log = logs[procs.index(survivor)]
                (first_child,) = training_children(job_id)
                # The database URL (it may hold a password) is never on a command line.
                url = server.settings.resolved_database_url()
                assert url not in " ".join(psutil.Process(first_child).cmdline())
                assert psutil.Process(first_child).environ()["TUNEFORGE_DATABASE_URL"] == url
                assert not any(m.startswith("Attempt 2 ") for m in messages(server, job_id))
                lease_expiry = job_row(server, job_id).lease_expires_at

                os.kill(victim.pid, signal.SIGKILL)
                killed_at, killed_wall = time.monotonic(), time.time()
                victim.wait(timeout=10)

                def survivor_alive() -> bool:
                    assert survivor.poll() is None, survivor_log.read_text()
                    return True

                wait_until(lambda: not is_alive(first_child), 10, "the orphaned child to exit")
                orphan_gone = time.monotonic() - killed_at
                wait_until(
                    lambda: survivor_alive() and job_row(server, job_id).attempts == 2,
                    60,
                    "a second claim",
                )
                claimed = time.monotonic() - killed_at
                step = wait_until(
                    lambda: survivor_alive() and resumed_step(server, job_id),
                    90,
                    "the resume event",
                )
                resumed = time.monotonic() - killed_at
                wait_until(
                    lambda: survivor_alive() and job_row(server, job_id).status in TERMINAL,
                    180,
                    "the job to finish",
                )
                succeeded = time.monotonic() - killed_at
        finally:
            for proc in procs:
                stop_process(proc)

        job = assert_finished_training(server, job_id)
        assert job.attempts == 2
        assert step >= seen_step > 0
        log = events(server, job_id)
        text = [e.message for e in log]
        assert any(f"Worker {owner} stopped renewing its lease" in m for m in text), text
        (second_start,) = [e for e in log if e.message.startswith("Attempt 2 of 3 started")]
        assert owner not in second_start.message  # the other worker took it
        # ... after the kill, and not before the dead worker's lease expired
        assert second_start.created_at >= int(killed_wall)
        assert second_start.created_at >= int(lease_expiry)
        assert f"Resumed from checkpoint at step {step}" in "\n".join(text)

        # One training process at a time: the orphan exited before the next one started.
        assert sampler.max_concurrent == 1, sampler.first_seen
        first, second = sampler.pids_in_order()
        assert first == first_child
        assert sampler.last_seen[first] < sampler.first_seen[second]
        assert sampler.first_seen[second] > killed_at
        assert training_children(job_id) == []

    record_timings(
        "killed_worker",
        {
            "lease_seconds": LEASE,
            "resumed_from_step": step,
            "kill_to_orphan_exit_s": round(orphan_gone, 2),
            "kill_to_reclaim_s": round(claimed, 2),
            "kill_to_resumed_s": round(resumed, 2),
            "kill_to_succeeded_s": round(succeeded, 2),
        },
    )


def test_killed_training_child_is_retried_from_checkpoint(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=1, lease_seconds=LEASE)
    with live_server(settings) as server:
        key = server.key()
        job_id = create_job(server, key, tmp_path)
        with ChildSampler(job_id, interval=0.1) as sampler:
            seen_step = wait_for_checkpoint(server, job_id)
            (child,) = training_children(job_id)
            os.kill(child, signal.SIGKILL)
            killed_at = time.monotonic()
            step = wait_until(lambda: resumed_step(server, job_id), 90, "the resume event")
            resumed = time.monotonic() - killed_at
            wait_for_status(server, job_id, TERMINAL, timeout=180)
            succeeded = time.monotonic() - killed_at

        job = assert_finished_training(server, job_id)
        assert job.attempts == 2
        assert step >= seen_step > 0
        assert_each_step_logged_once(server, job_id)
        text = messages(server, job_id)
        failed = [m for m in text if m.startswith("Attempt 1 failed")]
        assert failed and "exited with code -9" in failed[0], text
        assert "resume from its last complete checkpoint" in failed[0]
        assert sampler.max_concurrent == 1
        assert len(sampler.first_seen) == 2

    record_timings(
        "killed_child",
        {
            "resumed_from_step": step,
            "kill_to_resumed_s": round(resumed, 2),
            "kill_to_succeeded_s": round(succeeded, 2),
        },
    )


@pytest.mark.slow  # ~13 s: CI runs it (make test-slow)
def test_job_that_always_crashes_fails_after_max_attempts(tmp_path: Path, tiny_model: Path):
    broken = broken_model(tiny_model, tmp_path / "broken-bert")
    settings = server_settings(
        tmp_path,
        tiny_model,
        workers=1,
        max_attempts=2,
        base_models={TINY: str(tiny_model), "broken-bert": str(broken)},
    )
    with live_server(settings) as server:
        key = server.key()
        job_id = create_job(server, key, tmp_path, model="broken-bert", rows=40)
        server.wait_for_job(key, job_id, TERMINAL, timeout=120)
        with server.http(key) as client:
            job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        assert job["status"] == "failed", job
        assert job["attempts"] == 2
        assert job["error"]["code"] == "training_failed"
        message = job["error"]["message"]
        assert message.startswith("Attempt 2 of 2 failed: the training process exited with code 1")
        assert "SafetensorError" in message  # the exception's name, nothing more
        # The traceback stays in the attempt's log and the server log, never in the API.
        assert "Traceback" not in message and 'File "' not in message, message
        assert str(settings.data_dir) not in message and "site-packages" not in message
        assert "server log" in message
        log = (server.state.layout.job_dir(job_id) / "attempt-2.log").read_text()
        assert "Traceback" in log and "SafetensorError" in log
        assert job["fine_tuned_model"] is None and job["finished_at"]
        text = messages(server, job_id)
        assert any(m.startswith("Attempt 1 failed") and "queued again" in m for m in text)
        assert any(m.startswith("The job failed: Attempt 2 of 2 failed") for m in text)
        assert not any("Traceback" in m or 'File "' in m for m in text), text
        assert training_children(job_id) == []


# ---------------------------------------------------------------- cancel and pause


def test_cancel_stops_the_training_child(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=1, lease_seconds=LEASE)
    with live_server(settings) as server:
        key = server.key()
        job_id = create_job(server, key, tmp_path)
        wait_for_checkpoint(server, job_id)
        (child,) = training_children(job_id)
        with server.http(key) as client:
            started = time.monotonic()
            response = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
            assert response.status_code == 200 and response.json()["status"] == "cancelled"
        wait_until(lambda: not is_alive(child), 10, "the training child to stop")
        gone = time.monotonic() - started
        assert gone < 10
        wait_until(
            lambda: "Training process stopped: the job is cancelled" in messages(server, job_id),
            10,
            "the worker to report the stop",
        )
        job = job_row(server, job_id)
        assert job.status == "cancelled" and job.lease_owner is None
        assert job.fine_tuned_model is None and job.finished_at
        assert "Fine-tuning job cancelled (was running)" in messages(server, job_id)
        assert training_children(job_id) == []
        assert not (server.state.layout.bundle(job_id) / "tuneforge.json").exists()

    record_timings("cancel", {"cancel_to_child_gone_s": round(gone, 2)})


def test_pause_then_resume_continues_from_checkpoint(tmp_path: Path, tiny_model: Path):
    # One attempt allowed: a pause stops the attempt but is no failure, so it must not count.
    settings = server_settings(tmp_path, tiny_model, workers=1, lease_seconds=LEASE, max_attempts=1)
    with live_server(settings) as server:
        key = server.key()
        job_id = create_job(server, key, tmp_path)
        seen_step = wait_for_checkpoint(server, job_id)
        (child,) = training_children(job_id)
        with server.http(key) as client:
            started = time.monotonic()
            response = client.post(f"/v1/fine_tuning/jobs/{job_id}/pause")
            assert response.status_code == 200 and response.json()["status"] == "paused"
            wait_until(lambda: not is_alive(child), 10, "the training child to stop")
            gone = time.monotonic() - started
            wait_until(
                lambda: "Training process stopped: the job is paused" in messages(server, job_id),
                10,
                "the worker to report the pause",
            )
            assert job_row(server, job_id).status == "paused"
            assert training_children(job_id) == []
            response = client.post(f"/v1/fine_tuning/jobs/{job_id}/resume")
            assert response.status_code == 200 and response.json()["status"] == "queued"
        step = wait_until(lambda: resumed_step(server, job_id), 90, "the resume event")
        wait_for_status(server, job_id, TERMINAL, timeout=180)

        job = assert_finished_training(server, job_id)
        assert job.attempts == 1
        assert step >= seen_step > 0
        assert_each_step_logged_once(server, job_id)
        text = messages(server, job_id)
        assert any(m.startswith("Fine-tuning job paused") for m in text)
        assert "Fine-tuning job resumed; queued (was paused)" in text

    record_timings("pause", {"pause_to_child_gone_s": round(gone, 2), "resumed_from_step": step})


# ---------------------------------------------------------------- the queue


def queued_job(job_id: str, i: int = 0) -> Job:
    """A queued job row (its run config is never run)."""
    return Job(
        id=job_id,
        project="acme",
        model=TINY,
        training_file="file-x",
        hyperparameters={},
        method={"type": "supervised"},
        seed=0,
        run_config={"i": i},
        status=JobStatus.QUEUED.value,
        result_files=[],
        created_at=int(time.time()),
        attempts=0,
        max_attempts=3,
        queued_at=float(i),
    )


def test_read_then_write_transactions_survive_a_busy_writer(tmp_path: Path):
    """Heartbeats and API state changes read, then write; while another process writes
    (a training child logging events), SQLite must not refuse them as "database is locked".
    """
    url = sqlite_url(tmp_path / "queue.db")
    engine = make_engine(url)
    migrate(engine)
    store = JobStore(engine)
    with store.sessions.begin() as s:
        s.add(queued_job("ftjob-busy"))
    ctx = multiprocessing.get_context("spawn")
    started, stop = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=write_events_until, args=(url, "ftjob-busy", started, stop))
    writer.start()
    try:
        assert started.wait(60), "the writer process did not start"
        for i in range(200):
            store.heartbeat("worker-a", "host", 1, "ftjob-busy" if i % 2 else None)
            with store.sessions() as session:
                change_state(store, session, "acme", "ftjob-busy", ("pause", "resume")[i % 2])
        store.remove_worker("worker-a")
    finally:
        stop.set()
        writer.join(timeout=30)
    assert writer.exitcode == 0
    assert store.status("ftjob-busy") == "queued"
    assert store.live_workers(60) == 0
    engine.dispose()


def test_four_processes_claim_every_job_exactly_once(tmp_path: Path):
    n_jobs, n_procs = 300, 4
    url = sqlite_url(tmp_path / "queue.db")
    engine = make_engine(url)
    migrate(engine)
    store = JobStore(engine)
    ids = [f"ftjob-{i:04d}" for i in range(n_jobs)]
    with store.sessions.begin() as s:
        s.add_all(queued_job(job_id, i) for i, job_id in enumerate(ids))

    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(n_procs)]
    procs = [
        ctx.Process(target=claim_until_empty, args=(url, f"claimer-{i}", readies[i], go, results))
        for i in range(n_procs)
    ]
    for proc in procs:
        proc.start()
    try:
        for ready in readies:
            assert ready.wait(60), "a claimer process did not start"
        started = time.perf_counter()
        go.set()
        outcomes = [results.get(timeout=120) for _ in procs]
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert [p.exitcode for p in procs] == [0] * n_procs

    owner: dict[str, str] = {}
    twice = []
    for name, claimed, _ in outcomes:
        for job_id in claimed:
            if job_id in owner:
                twice.append((job_id, owner[job_id], name))
            owner[job_id] = name
    assert twice == [], f"claimed twice: {twice[:10]}"
    assert sorted(owner) == ids  # every job claimed exactly once
    with store.sessions() as s:
        rows = list(s.scalars(select(Job)))
    assert all(r.status == "running" and r.attempts == 1 for r in rows)
    assert {r.id: r.lease_owner for r in rows} == owner
    per_process = {name: len(claimed) for name, claimed, _ in outcomes}
    engine.dispose()

    record_timings(
        "claims",
        {
            "jobs": n_jobs,
            "processes": n_procs,
            "seconds": round(elapsed, 2),
            "claims_per_s": round(n_jobs / elapsed, 1),
            "per_process": per_process,
        },
    )
