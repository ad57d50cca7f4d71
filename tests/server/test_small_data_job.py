"""A 200-row, 5-class chat file through the official ``openai`` client: the job trains past
the noise of a tiny validation split, says what it planned and what it trained, reports
test macro-F1 and calibration, warns about data problems, and (with quality checks as
errors) fails before training."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
from tests.server.live import TINY, LiveServer, live_server, server_settings

from conftest import NEUTRAL

SYSTEM = "Sort the message into one of five topics."
CLASSES = {
    "praise": ["good", "great", "excellent", "love"],
    "cheer": ["wonderful", "happy", "fine", "nice"],
    "complaint": ["bad", "awful", "terrible", "hate"],
    "sports": ["match", "team", "goal"],
    "money": ["bank", "price", "market"],
}


def five_class_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Texts of 1-3 filler words and two cue words of their class (balanced classes)."""
    rng = random.Random(seed)
    names = sorted(CLASSES)
    rows = []
    for i in range(n):
        label = names[i % len(names)]
        words = rng.sample(NEUTRAL, rng.randint(1, 3)) + rng.sample(CLASSES[label], 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def chat_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for text, label in rows:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ]
            fh.write(json.dumps({"messages": messages}) + "\n")
    return path


def _wait(client, job_id: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    job = client.fine_tuning.jobs.retrieve(job_id)
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job did not finish: {job}"
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job_id)
    return job


def test_200_row_five_class_job_trains_for_real(server: LiveServer, tmp_path: Path):
    client = server.openai(server.key())
    rows = five_class_rows(200, seed=0)
    rows[199] = rows[0]  # one duplicate: the data checks warn, the job still trains
    upload = client.files.create(
        file=chat_file(tmp_path / "train.jsonl", rows).open("rb"), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=upload.id,
        # auto epochs and batch size; the tiny random model needs a large learning rate:
        # 120x the auto one (3.54e-5 at batch 16), beyond learning_rate_multiplier's 10
        hyperparameters={"learning_rate": 4.24e-3, "num_threads": 1},
        # A fixed seed (the split and the initialisation): the tiny random model's score
        # varies with it (test accuracy 0.6-0.9 over seeds 0-3 on 20 test rows).
        seed=0,
    )
    job = _wait(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.hyperparameters.n_epochs == 20  # planned (auto for 160 training rows)

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=1000))[::-1]
    messages = [e.message for e in events]
    plan = next(e for e in events if e.message.startswith("Plan: "))
    start = next(i for i, m in enumerate(messages) if m.startswith("Training started"))
    assert events.index(plan) < start
    assert plan.data["total_steps"] == 200 and plan.data["threads"] == 1
    assert plan.data["estimated_seconds"] > 0 and "measured on this machine" in plan.message
    assert plan.data["patience"] == 14 and plan.data["min_steps_before_stopping"] == 100

    warns = [e for e in events if e.level == "warn"]
    # the duplicate pair is in train, or split across train and a carved split
    assert {e.data["code"] for e in warns if e.data} & {"duplicates", "leakage"}
    assert not any(e.data and e.data.get("code") == "barely_moved" for e in warns)

    summary = next(e for e in events if e.message.startswith("Training finished after "))
    data = summary.data
    assert data["steps"] >= 100 and data["epochs_planned"] == 20
    assert f"after {data['epochs_trained']} of 20 epochs" in summary.message
    test = data["test"]
    assert {"accuracy", "macro_f1", "ece"} <= set(test)
    assert test["accuracy"] >= 0.6 and test["macro_f1"] >= 0.5  # chance is 0.2
    assert 0 <= test["ece"] <= 0.5

    # The model answers unseen texts well above chance through chat completions.
    unseen = five_class_rows(25, seed=99)
    right = 0
    for text, label in unseen:
        reply = client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        )
        right += reply.choices[0].message.content == label
    assert right / len(unseen) >= 0.6


@pytest.mark.live
def test_job_with_quality_checks_as_errors_fails_before_training(tmp_path: Path, tiny_model):
    from sqlalchemy import select

    from tuneforge.jobs.tables import Job
    from tuneforge.jobs.worker import Worker, WorkerSettings

    settings = server_settings(tmp_path, tiny_model, workers=0)
    with live_server(settings) as live:
        client = live.openai(live.key())
        rows = five_class_rows(60, seed=1)
        rows += rows[:3]  # three exact duplicates
        upload = client.files.create(
            file=chat_file(tmp_path / "train.jsonl", rows).open("rb"), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(model=TINY, training_file=upload.id)
        with live.state.sessions.begin() as session:  # the stored run config's option
            row = session.scalars(select(Job).where(Job.id == job.id)).one()
            raw = json.loads(json.dumps(row.run_config))
            raw["data"]["quality_checks"] = "error"
            row.run_config = raw
        state = live.state
        worker = Worker(
            state.engine,
            settings.resolved_database_url(),
            state.layout.root,
            WorkerSettings(lease_seconds=settings.lease_seconds),
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        state.workers.append(worker)  # stopped with the server
        state.threads.append(thread)
        job = _wait(client, job.id, timeout=120)
        assert job.status == "failed"
        assert job.error.code == "invalid_training_file"
        assert "duplicate row(s)" in job.error.message or "also occur in" in job.error.message
        assert "data/files" not in job.error.message  # no server paths in the API
        assert job.fine_tuned_model is None and not job.result_files
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert not any(m.startswith(("Plan: ", "Training started")) for m in messages)
