"""A resumed job logs each training step and evaluation once.

An attempt that dies after its last checkpoint has already logged the steps after it; the
next attempt trains them again from the checkpoint. The job's event log (what
``GET /events`` shows) must still hold each step once. The real recipe, loop, checkpoints and
job store (SQLite) run here; the crash is an exception raised by a listener, as a kill
arrives between two steps.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import sentiment_rows, write_csv
from tuneforge import DataConfig, ModelConfig, RunConfig, TrainConfig, finetune_classifier
from tuneforge.jobs.child import EventForwarder, logged_steps
from tuneforge.jobs.db import make_engine, migrate, sqlite_url
from tuneforge.jobs.status import JobStatus
from tuneforge.jobs.store import JobStore
from tuneforge.jobs.tables import Job, JobEvent

CHECKPOINT_EVERY = 5
CRASH_AT = 8  # steps 6-8 are logged after the checkpoint at step 5, then the attempt dies


class Crash(Exception):
    """Stands in for the kill of a training child."""


def _crash_at(step: int):
    def listener(event: dict) -> None:
        if event["type"] == "step" and event["step"] == step:
            raise Crash

    return listener


def _store(tmp_path: Path) -> JobStore:
    engine = make_engine(sqlite_url(tmp_path / "jobs.db"))
    migrate(engine)
    store = JobStore(engine)
    with store.sessions.begin() as s:
        s.add(
            Job(
                id="ftjob-resume",
                project="acme",
                model="tiny-bert",
                training_file="file-x",
                hyperparameters={},
                method={"type": "supervised"},
                seed=7,
                run_config={},
                status=JobStatus.RUNNING.value,
                result_files=[],
                created_at=int(time.time()),
                attempts=1,
                max_attempts=3,
                queued_at=0.0,
            )
        )
    return store


def _metrics(store: JobStore) -> list[dict]:
    with store.sessions() as s:
        q = select(JobEvent.data).where(JobEvent.type == "metrics").order_by(JobEvent.seq)
        return [d for d in s.scalars(q) if d]


@pytest.mark.parametrize("eval_every", [None, 3], ids=["eval at checkpoints", "eval every 3"])
def test_a_resumed_job_logs_each_step_once(
    tiny_model: Path, tmp_path: Path, eval_every: int | None
):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(120))
    config = RunConfig(
        data=DataConfig(train=str(train)),
        output=str(tmp_path / "bundle"),
        model=ModelConfig(name=str(tiny_model)),
        train=TrainConfig(
            epochs=2,
            batch_size=16,
            seed=7,
            patience=0,
            num_threads=1,
            precision="fp32",
            checkpoint_every=CHECKPOINT_EVERY,
            eval_every=eval_every,
        ),
    )
    store = _store(tmp_path)
    first = EventForwarder(store, "ftjob-resume", flush_seconds=0)
    with pytest.raises(Crash):
        finetune_classifier(config, listeners=[first, _crash_at(CRASH_AT)])
    first.flush()
    logged = [d["step"] for d in _metrics(store) if "train_loss" in d]
    assert logged == list(range(1, CRASH_AT + 1))  # what the dead attempt left behind

    assert logged_steps(store, "ftjob-resume")[0] == CRASH_AT
    again = EventForwarder(
        store, "ftjob-resume", flush_seconds=0, logged=logged_steps(store, "ftjob-resume")
    )
    resumed = RunConfig.from_dict({**config.to_dict(), "resume": True})
    finetune_classifier(resumed, listeners=[again])
    again.flush()

    metrics = _metrics(store)
    steps = [d["step"] for d in metrics if "train_loss" in d]
    evals = [d["step"] for d in metrics if "train_loss" not in d]
    assert [s for s, n in Counter(steps).items() if n > 1] == []
    assert [s for s, n in Counter(evals).items() if n > 1] == []
    assert steps == list(range(1, max(steps) + 1))  # each step once, in order, none lost
    assert max(steps) > CRASH_AT and evals
