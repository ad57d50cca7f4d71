"""The job status machine: OpenAI's statuses and the moves between them.

Only ``jobs/store.py`` writes a job's status, and every write is checked against
``TRANSITIONS``; the database column stays a plain string.
"""

from __future__ import annotations

from enum import StrEnum

from tuneforge.errors import TuneforgeError


class JobStatus(StrEnum):
    """A fine-tuning job's status (the values of OpenAI's ``FineTuningJob.status``)."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
UNFINISHED = frozenset(set(JobStatus) - TERMINAL)

# status -> the statuses it may move to (and who moves it):
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # the API, once the files are checked (or not), or a cancel; a restarted server fails it
    JobStatus.VALIDATING_FILES: frozenset(
        {JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    # a worker claims it (or fails it: no attempts left); the API pauses or cancels it
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.PAUSED, JobStatus.CANCELLED}
    ),
    # its worker finishes or requeues it, another worker takes it over (lease expired),
    # the API pauses or cancels it
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.QUEUED,
            JobStatus.PAUSED,
            JobStatus.CANCELLED,
        }
    ),
    # the API resumes (queues) or cancels it
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class InvalidTransition(TuneforgeError):
    """A status change the machine does not allow (a bug, or a race lost)."""


def check_transition(current: str, target: JobStatus) -> JobStatus:
    """``current`` as a JobStatus, after checking it may move to ``target``.

    Raises:
        InvalidTransition: ``TRANSITIONS`` has no such move.
    """
    now = JobStatus(current)
    if target not in TRANSITIONS[now]:
        raise InvalidTransition(f"a job cannot go from {now.value} to {target.value}")
    return now


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """The statuses from which a job may move to ``target``."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)
