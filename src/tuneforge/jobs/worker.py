"""A job worker: claims jobs, runs each attempt in a child process, keeps the lease.

The worker never trains in its own process: a child (``tuneforge.jobs.child``) does, so a
cancel or pause kills the child within a second or two and a crash of the training code
never takes the worker down. While the child runs, the worker renews the job's lease; a
renewal that fails (cancelled, paused, or the lease was taken by another worker) stops the
child at once. A child that dies is retried from its last complete checkpoint until the
job's attempt limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tuneforge.jobs.db import DATABASE_URL_ENV
from tuneforge.jobs.disk import describe_low, free_bytes, is_disk_full
from tuneforge.jobs.ids import new_id
from tuneforge.jobs.layout import DataDir
from tuneforge.jobs.messages import crash_cause, scrub_paths
from tuneforge.jobs.results import record_success
from tuneforge.jobs.status import JobStatus
from tuneforge.jobs.store import Claim, JobStore
from tuneforge.jobs.tables import Job

log = logging.getLogger("tuneforge.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs.

    Attributes:
        lease_seconds: A claim lasts this long without renewal; another worker may take the
            job after it expires (the worker renews every third of it).
        poll_seconds: Idle wait between claim attempts.
        stop_grace_seconds: After SIGTERM, how long the child has before SIGKILL.
        min_free_bytes: Free space the data disk needs: below it the worker takes no job,
            and an attempt that dies fails its job with ``disk_full`` (0: no floor).
    """

    lease_seconds: float = 30.0
    poll_seconds: float = 1.0
    stop_grace_seconds: float = 5.0
    min_free_bytes: int = 0


class Worker:
    """Runs jobs from the store until ``stop()``.

    Args:
        engine: Database engine (schema migrated).
        database_url: The same database, for the child process.
        data_dir: The data directory shared with the API.
        settings: Lease and polling intervals.
    """

    def __init__(
        self,
        engine: Engine,
        database_url: str,
        data_dir: Path,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.store = JobStore(engine)
        self.database_url = database_url
        self.layout = DataDir(Path(data_dir))
        self.settings = settings or WorkerSettings()
        self.id = new_id("worker-", 12)
        self.hostname = socket.gethostname()
        self._stop = threading.Event()
        self._child: subprocess.Popen | None = None
        # Outcomes the database refused to record (its disk full too): retried, in order,
        # before the worker takes another job.
        self._unrecorded: list[Callable[[], None]] = []
        self._disk_warned = False

    def stop(self) -> None:
        """Ask the loop to finish: the running job is handed back to the queue."""
        self._stop.set()

    def run(self, max_jobs: int | None = None) -> int:
        """Claim and run jobs until stopped (or ``max_jobs`` done); returns jobs run."""
        self.layout.create()
        done = 0
        try:
            while not self._stop.is_set() and (max_jobs is None or done < max_jobs):
                if not self._record_unrecorded() or self._disk_low():
                    with contextlib.suppress(SQLAlchemyError):
                        self.store.heartbeat(self.id, self.hostname, os.getpid(), None)
                    self._stop.wait(self.settings.poll_seconds)
                    continue
                try:
                    self.store.heartbeat(self.id, self.hostname, os.getpid(), None)
                    claim = self.store.claim(self.id, self.settings.lease_seconds)
                except SQLAlchemyError as exc:  # database briefly unreachable: keep going
                    log.warning("worker %s: database error, retrying: %s", self.id, exc)
                    self._stop.wait(self.settings.poll_seconds)
                    continue
                if claim is None:
                    self._stop.wait(self.settings.poll_seconds)
                    continue
                try:
                    self.run_claim(claim)
                except SQLAlchemyError as exc:
                    # The lease runs out and the job is taken again (and resumed) later.
                    log.warning("worker %s: database error on %s: %s", self.id, claim.job_id, exc)
                    self._kill_child()
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    self._kill_child()
                    self._child = None
                    self._fail_disk_full(claim, f"a write failed: {exc.strerror}")
                done += 1
        finally:
            if self._unrecorded:
                log.error(
                    "worker %s: stopping with %d job end(s) the database would not record; "
                    "those jobs are taken again when their lease expires",
                    self.id,
                    len(self._unrecorded),
                )
            with contextlib.suppress(SQLAlchemyError):
                self.store.remove_worker(self.id)
        return done

    # ------------------------------------------------------------ one attempt

    def run_claim(self, claim: Claim) -> None:
        """Run one attempt of a claimed job in a child and record how it ended."""
        job_id = claim.job_id
        work = self.layout.job_dir(job_id)
        work.mkdir(parents=True, exist_ok=True)
        for name in ("result.json", "error.json"):
            (work / name).unlink(missing_ok=True)
        self.store.heartbeat(self.id, self.hostname, os.getpid(), job_id)
        self.store.add_event(
            job_id,
            f"Attempt {claim.attempt} of {claim.max_attempts} started on worker {self.id} "
            f"({self.hostname})",
            data={"attempt": claim.attempt, "worker": self.id},
        )
        log_path = work / f"attempt-{claim.attempt}.log"
        with log_path.open("ab") as log_fh:
            self._child = subprocess.Popen(
                self.child_command(job_id),
                env=self.child_environment(),
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            code, stopped_by = self._supervise(job_id)
        self._child = None
        if code != 0 and stopped_by is None and self._disk_low():
            self._fail_disk_full(claim, f"the training process exited with code {code}")
            return
        self.store.heartbeat(self.id, self.hostname, os.getpid(), None)
        self._record_end(claim, code, stopped_by, log_path)

    def child_command(self, job_id: str) -> list[str]:
        """The training child's command line: no secret on it (``ps`` shows it to every
        user of the machine); the database URL travels in the environment."""
        return [
            sys.executable,
            "-m",
            "tuneforge.jobs.child",
            "--data-dir",
            str(self.layout.root),
            "--job-id",
            job_id,
        ]

    def child_environment(self) -> dict[str, str]:
        """The child's environment: this process's, with the database URL (which may hold a
        password) in ``TUNEFORGE_DATABASE_URL``."""
        return {**os.environ, DATABASE_URL_ENV: self.database_url}

    def _supervise(self, job_id: str) -> tuple[int, str | None]:
        """Wait for the child, renewing the lease; stop it when the job is no longer ours."""
        assert self._child is not None
        interval = max(0.2, min(1.0, self.settings.lease_seconds / 3))
        while True:
            try:
                return self._child.wait(timeout=interval), None
            except subprocess.TimeoutExpired:
                pass
            if self._stop.is_set():
                self._kill_child()
                return self._child.wait(), "shutdown"
            try:
                renewed = self.store.renew(job_id, self.id, self.settings.lease_seconds)
                if renewed:
                    self.store.heartbeat(self.id, self.hostname, os.getpid(), job_id)
            except SQLAlchemyError as exc:  # keep training; renewal is tried again shortly
                log.warning("worker %s: could not renew the lease of %s: %s", self.id, job_id, exc)
                continue
            if not renewed:
                self._kill_child()
                return self._child.wait(), "lost"

    def _kill_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        try:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=self.settings.stop_grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _record_end(self, claim: Claim, code: int, stopped_by: str | None, log_path: Path) -> None:
        job_id = claim.job_id
        work = self.layout.job_dir(job_id)
        if stopped_by == "lost":
            status = self.store.status(job_id)
            self.store.release(job_id, self.id)
            self.store.add_event(
                job_id,
                f"Training process stopped: the job is {status}",
                data={"status": status},
            )
            return
        if stopped_by == "shutdown":
            self.store.finish(job_id, self.id, JobStatus.QUEUED, attempts=claim.attempt - 1)
            self.store.add_event(
                job_id, f"Worker {self.id} shut down; the job is queued again", level="warn"
            )
            return
        if code == 0:
            result = json.loads((work / "result.json").read_text(encoding="utf-8"))
            self._succeed(job_id, result.get("trained_tokens"))
            return
        if code == 2 and (work / "error.json").is_file():
            # Bad input (data, options): the same every time, so one attempt and no retry.
            error = json.loads((work / "error.json").read_text(encoding="utf-8"))
            message = "; ".join(error.get("problems") or []) or error["message"]
            self._fail(job_id, error.get("code", "invalid_job"), message)
            return
        # A crash: its output (the traceback) goes to this worker's log and stays in the
        # attempt's log file; the job's error says only the exception's name.
        tail = _log_tail(log_path)
        log.warning("job %s attempt %d exited with code %d%s", job_id, claim.attempt, code, tail)
        cause = crash_cause(tail)
        reason = (
            f"the training process exited with code {code}"
            + (f" ({cause})" if cause else "")
            + "; details are in the server log"
        )
        if claim.attempt < claim.max_attempts:
            if self.store.finish(job_id, self.id, JobStatus.QUEUED):
                self.store.add_event(
                    job_id,
                    f"Attempt {claim.attempt} failed ({reason}); the job is queued again "
                    "and will resume from its last complete checkpoint",
                    level="warn",
                )
        else:
            self._fail(
                job_id,
                "training_failed",
                f"Attempt {claim.attempt} of {claim.max_attempts} failed: {reason}",
            )

    def _succeed(self, job_id: str, trained_tokens: int | None) -> None:
        with self.store.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobStatus.RUNNING or job.lease_owner != self.id:
                return  # cancelled at the last moment: keep the cancellation
            record_success(s, job, self.layout, trained_tokens)
            self.store.transition(
                job,
                JobStatus.SUCCEEDED,
                lease_owner=None,
                lease_expires_at=None,
                estimated_finish=None,
            )
            self.store.add_event(
                job_id,
                f"The job has successfully completed; new model: {job.fine_tuned_model}",
                data={"fine_tuned_model": job.fine_tuned_model},
                session=s,
            )

    def _fail(self, job_id: str, code: str, message: str) -> None:
        message = scrub_paths(message)  # never a traceback line or a server path
        error = {"code": code, "message": message, "param": None}
        if self.store.finish(job_id, self.id, JobStatus.FAILED, error=error, estimated_finish=None):
            self.store.add_event(job_id, f"The job failed: {message}", level="error")

    # ------------------------------------------------------------ a full data disk

    def _disk_low(self) -> bool:
        """Whether the data disk is under its free-space floor (logged once per episode)."""
        floor = self.settings.min_free_bytes
        if floor <= 0:
            return False
        free = free_bytes(self.layout.root)
        low = free < floor
        if low and not self._disk_warned:
            log.warning(
                "worker %s: %s; taking no job until there is room",
                self.id,
                describe_low(free, floor),
            )
        elif not low and self._disk_warned:
            log.warning("worker %s: the data disk has room again", self.id)
        self._disk_warned = low
        return low

    def _fail_disk_full(self, claim: Claim, what: str) -> None:
        """Fail the job with ``disk_full`` (not retried: a retry would die the same way);
        when the database cannot record it (its disk is full too), keep it until it can."""
        floor, free = self.settings.min_free_bytes, free_bytes(self.layout.root)
        low = describe_low(free, floor) if free < floor else f"{free / 2**20:.0f} MiB free now"
        message = (
            f"The data disk is full: {what} ({low}). Free space on the server, then create "
            "the job again."
        )
        job_id, worker_id = claim.job_id, self.id

        def record() -> None:
            self.store.finish(
                job_id,
                worker_id,
                JobStatus.FAILED,
                error={"code": "disk_full", "message": message, "param": None},
                estimated_finish=None,
                event=("error", f"The job failed: {message}"),
            )

        log.error("worker %s: job %s: %s", self.id, job_id, message)
        self._unrecorded.append(record)
        self._record_unrecorded()

    def _record_unrecorded(self) -> bool:
        """Record the outcomes the database refused earlier; True when none is left."""
        while self._unrecorded:
            try:
                self._unrecorded[0]()
            except SQLAlchemyError as exc:
                log.warning(
                    "worker %s: cannot record a job's end yet (%s); retrying",
                    self.id,
                    str(getattr(exc, "orig", exc)),
                )
                return False
            self._unrecorded.pop(0)
        return True


def _log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of an attempt's log, for the worker's own log only."""
    try:
        tail = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (":\n" + "\n".join(tail)) if tail else ""
