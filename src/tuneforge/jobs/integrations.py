"""A job's ``integrations``: metrics trackers that run beside its training.

``tensorboard`` writes TensorBoard event files into the job's directory; ``wandb`` (OpenAI's
tracker) needs the network, which this server does not have, so it gets the same event
files (and a warning event when the job is created). When the job succeeds the files are
packed into a ``tensorboard.tar.gz`` result file.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tuneforge.jobs.store import JobStore
from tuneforge.jobs.tables import Job

TENSORBOARD_DIR = "tensorboard"
TRACKED = {"tensorboard", "wandb"}


def tensorboard_dir(work: Path) -> Path:
    """Where a job's TensorBoard event files go (under the job's directory)."""
    return work / TENSORBOARD_DIR


def tracker_listeners(store: JobStore, job_id: str, work: Path, resume: bool) -> list[Any]:
    """Training-event listeners for the job's integrations (a fresh attempt starts its
    event files over; a resumed one adds to them)."""
    with store.read() as session:
        integrations = session.scalar(select(Job.integrations).where(Job.id == job_id)) or []
    if not any(i.get("type") in TRACKED for i in integrations):
        return []
    from tuneforge.training.tensorboard import TensorBoardListener

    logdir = tensorboard_dir(work)
    if not resume:
        shutil.rmtree(logdir, ignore_errors=True)
    return [TensorBoardListener(logdir)]


def tensorboard_archive(work: Path) -> bytes | None:
    """The job's event files as a tar.gz (paths relative to the log directory), or None."""
    logdir = tensorboard_dir(work)
    files = sorted(p for p in logdir.rglob("events.out.tfevents.*") if p.is_file())
    if not files:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(logdir)))
    return buffer.getvalue()
