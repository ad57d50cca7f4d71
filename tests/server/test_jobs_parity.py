"""Fine-tuning jobs can do what ``tuneforge train`` does: named text/label columns,
multi-label data, a held-out test file, checkpoints that answer as models, the metadata
filter on job lists, and a tracker integration that works offline (TensorBoard files).

``busy`` has a worker that trains two jobs (submitted at once, so they train while the
request-level tests run on ``idle``, which has no worker).
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from tests.server.live import TINY, LiveServer, live_server, server_settings

from conftest import multilabel_rows, sentiment_rows, write_csv, write_jsonl

# Real server processes with a worker that trains: the live tier.
pytestmark = pytest.mark.live

TERMINAL = {"succeeded", "failed", "cancelled"}
COLUMNS = {"text_column": "body", "label_column": "verdict"}  # names not auto-detected
FAST = {"num_threads": 1, "precision": "fp32"}


class Env:
    """A server, a key of project ``acme`` and helpers."""

    def __init__(self, server: LiveServer, tmp: Path, project: str = "acme") -> None:
        self.server, self.tmp = server, tmp
        self.key = server.key(project, "train,infer")

    def client(self) -> httpx.Client:
        return self.server.http(self.key)

    def upload(self, name: str, content: bytes) -> str:
        return self.server.upload(self.key, name, content)

    def upload_csv(self, name: str, rows, header=("body", "verdict")) -> str:
        return self.upload(name, write_csv(self.tmp / name, rows, header=header).read_bytes())

    def create(self, **body) -> httpx.Response:
        with self.client() as c:
            return c.post("/v1/fine_tuning/jobs", json={"model": TINY, **body})

    def events(self, job_id: str) -> list[dict]:
        with self.client() as c:
            url = f"/v1/fine_tuning/jobs/{job_id}/events"
            return c.get(url, params={"limit": 1000}).json()["data"]


def _created(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    """A server with a worker; the two training jobs are submitted at once."""
    tmp = tmp_path_factory.mktemp("parity-busy")
    with live_server(server_settings(tmp, tiny_model)) as server:
        env = Env(server, tmp)
        env.train = env.upload_csv("reviews.csv", sentiment_rows(64, seed=0))
        env.test_rows = sentiment_rows(30, seed=5)
        env.test = env.upload_csv("holdout.csv", env.test_rows)
        env.columns_job = _created(
            env.create(
                training_file=env.train,
                test_file=env.test,
                data=COLUMNS,
                integrations=[{"type": "tensorboard"}],
                metadata={"run": "columns"},
                seed=1,
                hyperparameters={
                    "n_epochs": 3,
                    "batch_size": 8,
                    # the tiny random model needs a large rate: 20x the auto one (2.5e-5
                    # at batch 8); learning_rate_multiplier stops at 10, as OpenAI's does
                    "learning_rate": 5e-4,
                    "eval_every": 4,
                    **FAST,
                },
            )
        )
        topics = write_jsonl(tmp / "topics.jsonl", multilabel_rows(90, seed=0))
        env.multi_job = _created(
            env.create(
                training_file=env.upload("topics.jsonl", topics.read_bytes()),
                data={"multi_label": True},
                seed=2,
                hyperparameters={
                    "n_epochs": 2,
                    "batch_size": 8,
                    "patience": 0,
                    **FAST,
                },
            )
        )
        yield env


@pytest.fixture(scope="module", autouse=True)
def _train_meanwhile(busy: Env) -> None:
    """Submit the training jobs with the module's first test."""


@pytest.fixture(scope="module")
def columns_job(busy: Env) -> dict:
    job = busy.server.wait_for_job(busy.key, busy.columns_job["id"], TERMINAL, timeout=240)
    assert job["status"] == "succeeded", (job, busy.events(job["id"])[:5])
    return job


@pytest.fixture(scope="module")
def multi_job(busy: Env) -> dict:
    job = busy.server.wait_for_job(busy.key, busy.multi_job["id"], TERMINAL, timeout=240)
    assert job["status"] == "succeeded", (job, busy.events(job["id"])[:5])
    return job


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    """A server without workers: created jobs stay queued."""
    tmp = tmp_path_factory.mktemp("parity-idle")
    with live_server(server_settings(tmp, tiny_model, workers=0)) as server:
        env = Env(server, tmp)
        env.train = env.upload_csv("plain.csv", sentiment_rows(40), header=("text", "label"))
        yield env


# ------------------------------------------------------------------ columns, test file


def test_named_columns_and_a_test_file_train_and_report_test_metrics(busy: Env, columns_job):
    assert columns_job["data"] == COLUMNS
    assert columns_job["test_file"] == busy.test
    summary = next(e for e in busy.events(columns_job["id"]) if "Training finished" in e["message"])
    test = summary["data"]["test"]
    assert test["n_examples"] == len(busy.test_rows)  # the test split is the given file
    assert 0 <= test["accuracy"] <= 1 and test["log_loss"] > 0
    data = json.loads(
        (busy.server.state.layout.bundle(columns_job["id"]) / "data.json").read_text()
    )
    assert data["text_column"] == "body" and data["label_column"] == "verdict"
    assert data["splits"]["test"]["carved_from_train"] is False


def test_columns_the_reader_cannot_guess_must_be_named(idle: Env):
    file_id = idle.upload_csv("odd.csv", sentiment_rows(20))
    unnamed = _created(idle.create(training_file=file_id))
    assert unnamed["status"] == "failed"
    assert unnamed["error"]["param"] == "training_file"
    named = _created(idle.create(training_file=file_id, data=COLUMNS))
    assert named["status"] == "queued", named["error"]
    wrong = _created(idle.create(training_file=file_id, data={"text_column": "review"}))
    assert wrong["status"] == "failed"
    assert wrong["error"]["code"] == "invalid_training_file"
    message = wrong["error"]["message"]
    assert "'review'" in message and "'body', 'verdict'" in message, message
    assert "data.text_column" in message and "--text-column" not in message  # API words


def test_data_options_are_validated(idle: Env):
    for data, param in (
        ({"label_separator": ""}, "data.label_separator"),
        ({"multi_label": "often"}, "data.multi_label"),
        ({"text_colum": "x"}, "data.text_colum"),
    ):
        response = idle.create(training_file=idle.train, data=data)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param


def test_test_file_is_checked_like_the_validation_file(idle: Env, tmp_path: Path):
    response = idle.create(training_file=idle.train, test_file="file-nope")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["param"] == "test_file"

    test = idle.upload(
        "test.csv", b"text,label\ngood film,positive\nbad film,negative\nso so,neutral\n"
    )
    job = _created(idle.create(training_file=idle.train, test_file=test))
    assert job["status"] == "failed" and job["test_file"] == test
    error = job["error"]
    assert (error["param"], error["code"]) == ("test_file", "invalid_test_file")
    assert f"{test} (test.csv):4:" in error["message"], error
    assert "neutral" in error["message"]
    assert str(idle.server.settings.data_dir) not in error["message"]


def test_a_results_file_is_no_test_file(busy: Env, columns_job: dict):
    response = busy.create(training_file=busy.train, test_file=columns_job["result_files"][0])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_file_purpose", "test_file")


# ------------------------------------------------------------------ multi-label


def test_a_multi_label_job_answers_with_several_labels(busy: Env, multi_job: dict):
    assert multi_job["data"] == {"multi_label": True}
    meta = json.loads(
        (busy.server.state.layout.bundle(multi_job["id"]) / "tuneforge.json").read_text()
    )
    assert meta["task"] == "multi_label" and meta["labels"] == ["money", "sports"]
    thresholds = dict(zip(meta["labels"], meta["thresholds"], strict=True))
    summary = next(e for e in busy.events(multi_job["id"]) if "Training finished" in e["message"])
    assert {"subset_accuracy", "micro_f1"} <= set(summary["data"]["validation"])
    texts = ["the film match bank", "the film was goal team", "it is price market"]
    with busy.client() as c:
        response = c.post(
            "/v1/classify",
            json={"model": multi_job["fine_tuned_model"], "input": texts, "top_k": 2},
        )
    assert response.status_code == 200, response.text
    answers = response.json()["data"]
    for answer in answers:  # every label over its tuned threshold, not just the top one
        scores = {t["label"]: t["score"] for t in answer["top_k"]}
        expected = [label for label in meta["labels"] if scores[label] >= thresholds[label]]
        assert sorted(answer["labels"]) == expected, (answer, thresholds)
    assert sorted(answers[0]["labels"]) == ["money", "sports"]  # both topics: both labels


# ------------------------------------------------------------------ checkpoints as models


def test_the_last_three_checkpoints_answer_as_models(busy: Env, columns_job: dict):
    client = busy.server.openai(busy.key)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(columns_job["id"], limit=100).data
    steps = [c.step_number for c in checkpoints]
    assert len(steps) == 3 and steps == sorted(steps, reverse=True)
    events = busy.events(columns_job["id"])
    saved = {e["data"]["step"] for e in events if e["message"].startswith("Checkpoint saved")}
    assert len(saved) > 3 and steps == sorted(saved, reverse=True)[:3]  # only the last 3
    evals = {e["data"]["step"]: e["data"] for e in events if "validation accuracy" in e["message"]}
    texts = ["a good and happy film", "an awful sad plot"]
    scores = {}
    for ckpt in checkpoints:
        model = ckpt.fine_tuned_model_checkpoint
        assert model == f"{columns_job['fine_tuned_model']}:ckpt-step-{ckpt.step_number}"
        assert ckpt.metrics.valid_loss == evals[ckpt.step_number]["valid_loss"]
        retrieved = client.models.retrieve(model)
        assert retrieved.id == model and retrieved.owned_by == "acme"
        with busy.client() as c:
            response = c.post("/v1/classify", json={"model": model, "input": texts})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model
        scores[ckpt.step_number] = [
            d["score"] if d["label"] == "positive" else 1 - d["score"]
            for d in response.json()["data"]
        ]
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": texts[0]}]
        )
        assert reply.model == model
        assert reply.choices[0].message.content in {"positive", "negative"}
    # each checkpoint answers with its own weights
    assert len({tuple(np.round(s, 6)) for s in scores.values()}) == 3, scores
    best = next(e["data"]["best_step"] for e in events if "Training finished" in e["message"])
    if best in scores:  # the best checkpoint is the fine-tuned model
        with busy.client() as c:
            final = c.post(
                "/v1/classify", json={"model": columns_job["fine_tuned_model"], "input": texts}
            ).json()["data"]
        final_scores = [d["score"] if d["label"] == "positive" else 1 - d["score"] for d in final]
        np.testing.assert_allclose(scores[best], final_scores, atol=1e-5)

    dropped = f"{columns_job['fine_tuned_model']}:ckpt-step-{min(saved)}"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(dropped)
    with busy.client() as c:
        response = c.post("/v1/classify", json={"model": dropped, "input": "good"})
        assert response.status_code == 404, response.text
    # another project cannot use them
    other = busy.server.openai(busy.server.key("other", "train,infer"))
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(checkpoints[0].fine_tuned_model_checkpoint)


# ------------------------------------------------------------------ integrations


def _tfrecords(data: bytes) -> Iterator[bytes]:
    """The records of a TFRecord file: u64 length, u32 crc, payload, u32 crc."""
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        yield data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4


def _scalars(archive: bytes) -> dict[str, list[tuple[int, float]]]:
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            assert member.name.startswith("events.out.tfevents."), member.name
            for record in _tfrecords(tar.extractfile(member).read()):
                event = Event.FromString(record)
                for value in event.summary.value:
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_integration_leaves_event_files_as_a_result_file(busy: Env, columns_job):
    assert columns_job["integrations"] == [{"type": "tensorboard"}]
    assert len(columns_job["result_files"]) == 2
    client = busy.server.openai(busy.key)
    info = client.files.retrieve(columns_job["result_files"][1])
    assert info.filename == "tensorboard.tar.gz" and info.purpose == "fine-tune-results"
    scalars = _scalars(client.files.content(info.id).content)
    events = busy.events(columns_job["id"])
    losses = {
        e["data"]["step"]: e["data"]["train_loss"]
        for e in events
        if e["type"] == "metrics" and "train_loss" in e["data"]
    }
    logged = dict(scalars["train/loss"])
    assert sorted(logged) == sorted(losses)
    for step, loss in losses.items():
        assert logged[step] == pytest.approx(loss, rel=1e-5)
    assert len(scalars["train/learning_rate"]) == len(losses)
    assert scalars["validation/macro_f1"] and scalars["validation/log_loss"]
    assert [v for _s, v in scalars["test/accuracy"]]
    # a job without integrations has only the metrics file
    with busy.client() as c:
        multi = c.get(f"/v1/fine_tuning/jobs/{busy.multi_job['id']}").json()
    assert multi["integrations"] == [] and len(multi["result_files"]) <= 1


def test_wandb_is_accepted_with_a_warning_and_unknown_trackers_are_refused(idle: Env):
    wandb = {"type": "wandb", "wandb": {"project": "reviews", "tags": ["a"]}}
    job = _created(idle.create(training_file=idle.train, integrations=[wandb]))
    assert job["status"] == "queued" and job["integrations"] == [wandb]
    warnings = [e for e in idle.events(job["id"]) if e["level"] == "warn"]
    assert len(warnings) == 1
    assert "not available offline" in warnings[0]["message"]
    assert "TensorBoard" in warnings[0]["message"]

    for integrations, param in (
        ([{"type": "comet"}], "integrations.0.type"),
        ([{"type": "wandb"}], "integrations.0"),  # OpenAI requires wandb.project
        ([{"type": "tensorboard", "tensorboard": {"logdir": "/etc"}}], "integrations.0"),
    ):
        response = idle.create(training_file=idle.train, integrations=integrations)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"].startswith(param), response.text


# ------------------------------------------------------------------ metadata filter


def test_the_metadata_filter_with_the_openai_client(idle: Env):
    env = Env(idle.server, idle.tmp, project="meta")
    train = env.upload_csv("t.csv", sentiment_rows(20), header=("text", "label"))
    client = env.server.openai(env.key)
    tags = [
        {"team": "a", "env": "prod"},
        {"team": "a", "env": "dev"},
        {"team": "b", "env": "prod"},
        {"team": ""},
        None,
    ]
    ids = [
        client.fine_tuning.jobs.create(model=TINY, training_file=train, metadata=m).id for m in tags
    ]

    def listed(metadata, **kw) -> list[str]:
        return [j.id for j in client.fine_tuning.jobs.list(metadata=metadata, **kw).data]

    order = listed({})  # newest first; an empty filter filters nothing
    assert sorted(order) == sorted(ids)

    def newest_first(*indexes: int) -> list[str]:
        return [i for i in order if i in {ids[k] for k in indexes}]

    team_a = listed({"team": "a"})
    assert team_a == newest_first(0, 1)
    assert listed({"team": "a", "env": "prod"}) == [ids[0]]
    assert listed({"env": "prod"}) == newest_first(0, 2)
    assert listed({"team": ""}) == [ids[3]]  # an empty value matches an empty value
    assert listed({"team": "c"}) == []
    page = client.fine_tuning.jobs.list(metadata={"team": "a"}, limit=1)
    assert [j.id for j in page.data] == team_a[:1] and page.has_more
    assert listed({"team": "a"}, after=team_a[0]) == team_a[1:]
    with env.client() as c:
        for bad in ({"metadata": "x"}, {"metadata[]": "x"}, {"metadata[a][b]": "x"}):
            response = c.get("/v1/fine_tuning/jobs", params=bad)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == "metadata"


def test_deleting_the_model_deletes_its_checkpoints(busy: Env, columns_job: dict):
    client = busy.server.openai(busy.key)
    ckpt = client.fine_tuning.jobs.checkpoints.list(columns_job["id"]).data[0]
    model = ckpt.fine_tuned_model_checkpoint
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "good"}])
    assert model in busy.server.state.models.loaded()
    assert client.models.delete(columns_job["fine_tuned_model"]).deleted
    assert model not in busy.server.state.models.loaded()
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "good"}])
