"""The job queue over SQL: atomic claims with leases, heartbeats, events, state changes.

A job is claimable when it is ``queued``, or ``running`` with an expired lease (its worker
died). Claiming happens inside one write transaction (SQLite: ``BEGIN IMMEDIATE``, taken by
the engine; Postgres: ``FOR UPDATE SKIP LOCKED``), so two workers can never claim the same
job. A worker keeps its claim by renewing the lease; a renewal that matches no row means the
job was cancelled, paused or taken over, and the worker must stop its child at once.

Every status change goes through this store and is checked against the status machine
(``jobs/status.py``): ``claim``, ``finish`` and ``transition``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.jobs.db import READ_ONLY, session_factory
from tuneforge.jobs.ids import new_id
from tuneforge.jobs.status import TERMINAL, JobStatus, check_transition
from tuneforge.jobs.tables import Checkpoint, Job, JobEvent, Worker


@dataclass(frozen=True)
class Claim:
    """A job a worker now owns, with what it needs to run it."""

    job_id: str
    attempt: int
    max_attempts: int
    run_config: dict[str, Any]
    taken_over: bool  # the previous owner's lease expired (it died)


class JobStore:
    """Queue operations shared by the API and the workers.

    Args:
        engine: The database engine (schema already migrated).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = session_factory(engine)
        self._skip_locked = engine.dialect.name == "postgresql"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for lookups only: it never takes (or waits for) the write lock."""
        with self.sessions() as session:
            session.connection(execution_options={READ_ONLY: True})
            yield session

    # ------------------------------------------------------------ events

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type_: str = "message",
        data: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        """Append one event to a job's log."""
        event = JobEvent(
            id=new_id("ftevent-"),
            job_id=job_id,
            created_at=int(time.time()),
            level=level,
            message=message,
            type=type_,
            data=data,
        )
        if session is not None:
            session.add(event)
            return
        with self.sessions.begin() as s:
            s.add(event)

    def add_events(self, job_id: str, events: list[dict[str, Any]]) -> None:
        """Append several events (``message``, ``level``, ``type``, ``data``) in one commit."""
        if not events:
            return
        with self.sessions.begin() as s:
            for e in events:
                s.add(
                    JobEvent(
                        id=new_id("ftevent-"),
                        job_id=job_id,
                        created_at=int(e.get("time", time.time())),
                        level=e.get("level", "info"),
                        message=e["message"],
                        type=e.get("type", "message"),
                        data=e.get("data"),
                    )
                )

    def add_checkpoint(self, job_id: str, step: int, metrics: dict[str, Any]) -> None:
        """Record a complete, resumable checkpoint of a job."""
        with self.sessions.begin() as s:
            s.add(
                Checkpoint(
                    id=new_id("ftckpt-"),
                    job_id=job_id,
                    step_number=step,
                    created_at=int(time.time()),
                    metrics=metrics,
                )
            )

    # ------------------------------------------------------------ status changes

    @staticmethod
    def transition(job: Job, target: JobStatus, **fields: Any) -> JobStatus:
        """Move ``job`` (a row of the caller's session) to ``target``; returns its previous
        status. A final status stamps ``finished_at``, ``queued`` stamps ``queued_at``;
        ``fields`` are set after (and may override those).

        Raises:
            InvalidTransition: The status machine has no such move.
        """
        previous = check_transition(job.status, target)
        now = time.time()
        job.status = target.value
        if target in TERMINAL:
            job.finished_at = int(now)
        if target == JobStatus.QUEUED:
            job.queued_at = now
        for name, value in fields.items():
            setattr(job, name, value)
        return previous

    # ------------------------------------------------------------ claims and leases

    def claim(self, worker_id: str, lease_seconds: float) -> Claim | None:
        """Atomically take the oldest claimable job, or None.

        A job whose lease expired after its last allowed attempt is failed here, with the
        reason, instead of being run again.
        """
        now = time.time()
        while True:
            with self.sessions.begin() as s:
                query = (
                    select(Job)
                    .where(
                        # queued, and any previous owner has let go (or died)
                        (
                            (Job.status == JobStatus.QUEUED)
                            & (Job.lease_owner.is_(None) | (Job.lease_expires_at < now))
                        )
                        # running on a worker that stopped renewing its lease
                        | ((Job.status == JobStatus.RUNNING) & (Job.lease_expires_at < now))
                    )
                    .order_by(Job.queued_at)
                    .limit(1)
                )
                if self._skip_locked:
                    query = query.with_for_update(skip_locked=True)
                job = s.scalars(query).first()
                if job is None:
                    return None
                taken_over = job.status == JobStatus.RUNNING
                if taken_over:
                    self.add_event(
                        job.id,
                        f"Worker {job.lease_owner} stopped renewing its lease "
                        f"(attempt {job.attempts} of {job.max_attempts} lost).",
                        level="warn",
                        session=s,
                    )
                if job.attempts >= job.max_attempts:
                    reason = (
                        f"The job failed {job.attempts} times (limit {job.max_attempts}); "
                        "the last attempt lost its worker."
                    )
                    self.transition(
                        job,
                        JobStatus.FAILED,
                        error={"code": "too_many_attempts", "message": reason, "param": None},
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                    self.add_event(job.id, reason, level="error", session=s)
                    continue  # commit, then look for another job
                self.transition(
                    job,
                    JobStatus.RUNNING,
                    attempts=job.attempts + 1,
                    lease_owner=worker_id,
                    lease_expires_at=now + lease_seconds,
                    started_at=job.started_at or int(now),
                )
                return Claim(
                    job_id=job.id,
                    attempt=job.attempts,
                    max_attempts=job.max_attempts,
                    run_config=dict(job.run_config),
                    taken_over=taken_over,
                )

    def renew(self, job_id: str, worker_id: str, lease_seconds: float, **fields: Any) -> bool:
        """Extend the lease (and set ``fields``); False means stop: the job is no longer ours."""
        with self.sessions.begin() as s:
            result = s.execute(
                update(Job)
                .where(
                    Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING
                )
                .values(lease_expires_at=time.time() + lease_seconds, **fields)
            )
            return _rowcount(result) == 1

    def finish(
        self,
        job_id: str,
        worker_id: str,
        status: JobStatus,
        *,
        event: tuple[str, str] | None = None,
        **fields: Any,
    ) -> bool:
        """Move our running job to a final or queued state; False if it was not ours anymore.
        ``event`` (level, message) is added in the same transaction when the move happens.

        Raises:
            InvalidTransition: ``status`` is not a move a running job may make.
        """
        check_transition(JobStatus.RUNNING, status)
        values: dict[str, Any] = {
            "status": status.value,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if status in TERMINAL:
            values["finished_at"] = int(time.time())
        if status == JobStatus.QUEUED:
            values["queued_at"] = time.time()
        values.update(fields)
        with self.sessions.begin() as s:
            result = s.execute(
                update(Job)
                .where(
                    Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING
                )
                .values(**values)
            )
            moved = _rowcount(result) == 1
            if moved and event is not None:
                self.add_event(job_id, event[1], level=event[0], session=s)
            return moved

    def release(self, job_id: str, worker_id: str) -> None:
        """Drop our lease on a job that left ``running`` (cancelled or paused through the API)."""
        with self.sessions.begin() as s:
            s.execute(
                update(Job)
                .where(
                    Job.id == job_id, Job.lease_owner == worker_id, Job.status != JobStatus.RUNNING
                )
                .values(lease_owner=None, lease_expires_at=None)
            )

    def run_config(self, job_id: str) -> dict[str, Any] | None:
        """A job's stored run config."""
        with self.sessions() as s:
            return s.scalar(select(Job.run_config).where(Job.id == job_id))

    def set_fields(self, job_id: str, **fields: Any) -> None:
        """Set informational fields of a job (``estimated_finish``); no state change."""
        with self.sessions.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**fields))

    def status(self, job_id: str) -> str | None:
        """A job's current status."""
        with self.sessions() as s:
            return s.scalar(select(Job.status).where(Job.id == job_id))

    # ------------------------------------------------------------ workers

    def heartbeat(self, worker_id: str, hostname: str, pid: int, current_job: str | None) -> None:
        """Register or refresh a worker's heartbeat."""
        now = time.time()
        with self.sessions.begin() as s:
            worker = s.get(Worker, worker_id)
            if worker is None:
                worker = Worker(
                    id=worker_id, hostname=hostname, pid=pid, started_at=int(now), heartbeat_at=now
                )
                s.add(worker)
            worker.heartbeat_at = now
            worker.current_job = current_job

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that shut down cleanly."""
        with self.sessions.begin() as s:
            worker = s.get(Worker, worker_id)
            if worker is not None:
                s.delete(worker)

    def live_workers(self, within_seconds: float) -> int:
        """How many workers sent a heartbeat in the last ``within_seconds``."""
        with self.sessions() as s:
            rows = s.scalars(
                select(Worker.id).where(Worker.heartbeat_at >= time.time() - within_seconds)
            )
            return len(list(rows))


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched (``Session.execute`` is typed as returning a plain Result)."""
    return cast(CursorResult[Any], result).rowcount
