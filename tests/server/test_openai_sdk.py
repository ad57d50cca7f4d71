"""The official ``openai`` client against a real server: the whole fine-tuning flow."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from tests.server.live import TINY, LiveServer, chat_jsonl

from conftest import NEGATIVE, POSITIVE

pytestmark = pytest.mark.live  # real processes: a uvicorn server, workers


def test_openai_client_fine_tunes_and_serves_a_classifier(server: LiveServer, tmp_path: Path):
    client = server.openai(server.key())

    # files.create with a chat-format classification file
    train = client.files.create(
        file=chat_jsonl(tmp_path / "train.jsonl", 80).open("rb"), purpose="fine-tune"
    )
    assert train.id.startswith("file-") and train.purpose == "fine-tune"
    assert train.filename == "train.jsonl" and train.bytes > 0
    valid = client.files.create(
        file=chat_jsonl(tmp_path / "valid.jsonl", 24, seed=1).open("rb"), purpose="fine-tune"
    )

    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=train.id,
        validation_file=valid.id,
        suffix="reviews",
        seed=7,
        hyperparameters={"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 10},
        metadata={"team": "support"},
    )
    assert job.status == "queued" and job.model == TINY and job.seed == 7
    assert job.hyperparameters.n_epochs == 3 and job.metadata == {"team": "support"}

    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=10)
    messages = [e.message for e in events.data]
    assert any("Validating training file" in m for m in messages)
    assert events.data[0].object == "fine_tuning.job.event"

    deadline = time.monotonic() + 180
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job did not finish: {job}"
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 8
    assert job.fine_tuned_model == f"ft:{TINY}:acme:reviews:{job.id}"
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.finished_at >= job.created_at
    assert len(job.result_files) == 1

    metrics_csv = client.files.content(job.result_files[0]).text
    header, *rows = metrics_csv.strip().splitlines()
    assert header.startswith("step,epoch,train_loss")
    assert len(rows) >= 3

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoints.data, "a finished job has checkpoints"
    ckpt = checkpoints.data[0]
    assert ckpt.fine_tuning_job_id == job.id and ckpt.step_number > 0
    assert ckpt.fine_tuned_model_checkpoint.startswith(job.fine_tuned_model + ":ckpt-step-")
    steps = [c.step_number for c in checkpoints.data]
    assert steps == sorted(steps, reverse=True)

    model_ids = [m.id for m in client.models.list().data]
    assert job.fine_tuned_model in model_ids and TINY in model_ids

    reply = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[
            {"role": "system", "content": "Classify the sentiment of the review."},
            {"role": "user", "content": f"the movie was {POSITIVE[0]} and {POSITIVE[1]}"},
        ],
        logprobs=True,
        top_logprobs=2,
    )
    answer = reply.choices[0].message.content
    assert answer in {"positive", "negative"}
    assert reply.choices[0].finish_reason == "stop"
    top = reply.choices[0].logprobs.content[0].top_logprobs
    assert {t.token for t in top} == {"positive", "negative"}
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens == 1
    negative = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": f"{NEGATIVE[0]} {NEGATIVE[2]} film"}],
    )
    assert negative.choices[0].message.content in {"positive", "negative"}

    # A second job, cancelled while queued or running.
    second = client.fine_tuning.jobs.create(
        model=TINY, training_file=train.id, hyperparameters={"n_epochs": 50}
    )
    cancelled = client.fine_tuning.jobs.cancel(second.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError) as info:
        client.fine_tuning.jobs.cancel(second.id)
    assert info.value.body["code"] == "invalid_state"

    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [second.id] and listed.has_more

    deleted = client.models.delete(job.fine_tuned_model)
    assert deleted.deleted
    assert job.fine_tuned_model not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "good"}]
        )
