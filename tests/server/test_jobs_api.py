"""``/v1/fine_tuning/jobs``: validation that fails jobs (with the line), request errors, the
state machine, pagination, and a LoRA job end to end.

Two servers per module: ``idle`` is the app in process (``TestClient``) without a worker, so
jobs stay where the tests put them; ``busy`` is a live server with a worker that trains the
LoRA job (the ``live`` tier).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.server.api import api_server
from tests.server.live import TINY, LiveServer, live_server, server_settings

from conftest import NEGATIVE, POSITIVE, sentiment_rows, write_csv
from tuneforge.jobs.status import JobStatus
from tuneforge.jobs.tables import Job

TERMINAL = {"succeeded", "failed", "cancelled"}
LORA = {"type": "lora", "lora": {"hyperparameters": {"n_epochs": 2}, "lora_r": 4}}


def assert_error(response: httpx.Response, status: int, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error", error
    if code is not None:
        assert error["code"] == code, error
    return error


@dataclass
class Env:
    server: LiveServer
    key: str
    train: str  # a good training file
    tmp: Path

    def client(self) -> httpx.Client:
        return self.server.http(self.key)

    def upload(self, name: str, content: bytes) -> str:
        return self.server.upload(self.key, name, content)

    def create(self, **body) -> httpx.Response:
        with self.client() as c:
            return c.post("/v1/fine_tuning/jobs", json={"model": TINY, **body})

    def job_count(self) -> int:
        with self.server.state.sessions() as session:
            return session.query(Job).count()


def _env(server: LiveServer, tmp: Path, project: str = "acme") -> Env:
    key = server.key(project, "train,infer")
    env = Env(server, key, "", tmp)
    env.train = env.upload(
        "train.csv", write_csv(tmp / "train.csv", sentiment_rows(60)).read_bytes()
    )
    return env


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    """A server with a worker; the LoRA job is submitted at once and trains meanwhile."""
    tmp = tmp_path_factory.mktemp("jobs-busy")
    with live_server(server_settings(tmp, tiny_model)) as server:
        env = _env(server, tmp)
        response = env.create(training_file=env.train, seed=3, suffix="lora-run", method=LORA)
        assert response.status_code == 200, response.text
        env.lora_job = response.json()
        yield env


@pytest.fixture(scope="module")
def lora(busy: Env) -> dict:
    """The finished LoRA job."""
    return busy.server.wait_for_job(busy.key, busy.lora_job["id"], TERMINAL, timeout=240)


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    """The app in process without workers: queued jobs stay queued."""
    tmp = tmp_path_factory.mktemp("jobs-idle")
    with api_server(server_settings(tmp, tiny_model, workers=0)) as server:
        yield _env(server, tmp)


def events(env: Env, job_id: str, **params) -> dict:
    with env.client() as c:
        response = c.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------ validation fails the job


def _chat(text: str, label: str) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}]}
    )


BAD_FILES = {
    "chat JSONL, invalid JSON on line 3": (
        "bad.jsonl",
        "\n".join([_chat("good film", "positive"), _chat("bad film", "negative"), "{not json"])
        + "\n"
        + "\n".join(_chat(f"{w} film", "positive") for w in POSITIVE)
        + "\n",
        3,
        "invalid JSON",
    ),
    "CSV, empty label on line 5": (
        "bad.csv",
        "text,label\n"
        + "".join(f"{w} film,positive\n" for w in POSITIVE[:3])
        + "meh film,\n"
        + "".join(f"{w} film,negative\n" for w in NEGATIVE),
        5,
        "empty label",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_a_malformed_training_file_fails_the_job_in_validation(idle: Env, case: str):
    name, content, line, what = BAD_FILES[case]
    file_id = idle.upload(name, content.encode())
    response = idle.create(training_file=file_id)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "failed"
    assert job["finished_at"] is not None and job["fine_tuned_model"] is None
    error = job["error"]
    assert error["param"] == "training_file"
    assert error["code"] == "invalid_training_file"
    assert f"{file_id} ({name}):{line}:" in error["message"], error
    assert what in error["message"]
    assert str(idle.server.settings.data_dir) not in error["message"], "no server paths"
    # the job never reaches the queue; its log says why
    with idle.client() as c:
        assert c.get(f"/v1/fine_tuning/jobs/{job['id']}").json() == job
    log = events(idle, job["id"])["data"]
    assert log[0]["level"] == "error" and log[0]["message"].startswith("Validation failed")
    assert f":{line}:" in log[0]["message"]


def test_validation_labels_missing_from_training_fail_the_job(idle: Env, tmp_path: Path):
    valid = idle.upload(
        "valid.csv", b"text,label\ngood film,positive\nbad film,negative\nso so,neutral\n"
    )
    job = idle.create(training_file=idle.train, validation_file=valid).json()
    assert job["status"] == "failed", job
    assert job["validation_file"] == valid
    error = job["error"]
    assert error["param"] == "validation_file"
    assert error["code"] == "invalid_validation_file"
    assert f"{valid} (valid.csv):4:" in error["message"], error
    assert "neutral" in error["message"]
    # the message names the training file by id, not by its path on the server
    assert str(idle.server.settings.data_dir) not in error["message"], error
    assert "/files/" not in error["message"], error


def test_request_errors_create_no_job(idle: Env):
    before = idle.job_count()
    error = assert_error(idle.create(model="no-such-model", training_file=idle.train), 400)
    assert (error["param"], error["code"]) == ("model", "model_not_available")
    assert TINY in error["message"]  # lists what is available

    error = assert_error(idle.create(training_file="file-doesnotexist"), 404, "not_found")
    assert error["param"] == "training_file"
    error = assert_error(
        idle.create(training_file=idle.train, validation_file="file-nope"), 404, "not_found"
    )
    assert error["param"] == "validation_file"
    error = assert_error(
        idle.create(training_file=idle.train, integrations=[{"type": "comet"}]), 400
    )
    assert error["param"].startswith("integrations")
    error = assert_error(idle.create(training_file=idle.train, test_file="file-nope"), 404)
    assert error["param"] == "test_file"
    assert idle.job_count() == before


BAD_BODIES = {
    "wrong types": ({"model": 3, "training_file": []}, "model"),
    "missing training_file": ({"model": TINY}, "training_file"),
    "extra hyperparameter": (
        {"hyperparameters": {"n_epochs": 2, "epochs": 3}},
        "hyperparameters.epochs",
    ),
    "negative n_epochs": ({"hyperparameters": {"n_epochs": -1}}, "hyperparameters.n_epochs"),
    "zero n_epochs": ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    "n_epochs not a number": (
        {"hyperparameters": {"n_epochs": "many"}},
        "hyperparameters.n_epochs",
    ),
    "zero batch size": ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size"),
    "negative lr multiplier": (
        {"hyperparameters": {"learning_rate_multiplier": -2}},
        "hyperparameters.learning_rate_multiplier",
    ),
    "suffix with spaces": ({"suffix": "my model"}, "suffix"),
    "suffix too long": ({"suffix": "x" * 65}, "suffix"),
    "negative seed": ({"seed": -1}, "seed"),
    "unknown method": ({"method": {"type": "rlhf"}}, "method.type"),
    "bad lora rank": ({"method": {"type": "lora", "lora": {"lora_r": 0}}}, "method.lora.lora_r"),
    "extra method key": ({"method": {"type": "lora", "lora": {"rank": 4}}}, "method.lora.rank"),
    "metadata too big": ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    "metadata not strings": ({"metadata": {"a": 1}}, "metadata.a"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES), ids=list(BAD_BODIES))
def test_invalid_bodies_are_400_with_the_envelope(idle: Env, case: str):
    before = idle.job_count()
    body, param = BAD_BODIES[case]
    body = {"model": TINY, "training_file": idle.train, **body}
    if case == "missing training_file":
        body.pop("training_file")
    with idle.client() as c:
        response = c.post("/v1/fine_tuning/jobs", json=body)
    error = assert_error(response, 400, "invalid_request")
    assert error["param"] == param or error["param"].startswith(param + "."), error
    assert param.split(".")[-1] in error["message"]
    assert idle.job_count() == before


@pytest.mark.parametrize(
    "content", [b"{not json", b"[1, 2]", b'"a string"', b"", "caf\u00e9".encode("latin-1")]
)
def test_bodies_that_are_not_a_json_object_are_refused(idle: Env, content: bytes):
    before = idle.job_count()
    with idle.client() as c:
        response = c.post(
            "/v1/fine_tuning/jobs", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None or not error["param"][0].isdigit(), error
    assert idle.job_count() == before


# ------------------------------------------------------------------ the state machine


def _job(env: Env, **body) -> dict:
    response = env.create(training_file=env.train, **body)
    assert response.status_code == 200, response.text
    return response.json()


def _action(env: Env, job_id: str, action: str) -> httpx.Response:
    with env.client() as c:
        return c.post(f"/v1/fine_tuning/jobs/{job_id}/{action}")


def _refused(env: Env, job_id: str, action: str, status: str) -> None:
    """``action`` answers 409 invalid_state and changes nothing."""
    log_before = events(env, job_id, limit=1000)["data"]
    error = assert_error(_action(env, job_id, action), 409, "invalid_state")
    assert error["param"] == "fine_tuning_job_id"
    assert status in error["message"] and action in error["message"]
    with env.client() as c:
        assert c.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == status
    assert events(env, job_id, limit=1000)["data"] == log_before


def _set_status(env: Env, job_id: str, *statuses: str) -> None:
    """Move a job through statuses only a worker reaches (no worker on ``idle``), through the
    store as a worker would."""
    store = env.server.state.store
    with store.sessions.begin() as session:
        for status in statuses:
            store.transition(session.get(Job, job_id), JobStatus(status))


def test_transitions_from_queued_and_paused(idle: Env):
    job = _job(idle)
    assert job["status"] == "queued"
    _refused(idle, job["id"], "resume", "queued")
    assert _action(idle, job["id"], "pause").json()["status"] == "paused"
    _refused(idle, job["id"], "pause", "paused")
    resumed = _action(idle, job["id"], "resume").json()
    assert resumed["status"] == "queued" and resumed["finished_at"] is None
    cancelled = _action(idle, job["id"], "cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    for action in ("pause", "resume", "cancel"):
        _refused(idle, job["id"], action, "cancelled")
    messages = [e["message"] for e in events(idle, job["id"], limit=100)["data"]]
    assert messages[0].startswith("Fine-tuning job cancelled (was queued)")
    assert any("paused" in m for m in messages) and any("resumed" in m for m in messages)


def test_a_running_job_cannot_be_resumed(idle: Env):
    job = _job(idle)
    _set_status(idle, job["id"], "running")
    _refused(idle, job["id"], "resume", "running")
    assert _action(idle, job["id"], "pause").json()["status"] == "paused"
    assert _action(idle, job["id"], "resume").json()["status"] == "queued"
    _set_status(idle, job["id"], "running")
    assert _action(idle, job["id"], "cancel").json()["status"] == "cancelled"


@pytest.mark.parametrize("final", ["succeeded", "failed"])
def test_finished_jobs_refuse_every_transition(idle: Env, final: str):
    job = _job(idle)
    _set_status(idle, job["id"], "running", final)
    for action in ("cancel", "pause", "resume"):
        _refused(idle, job["id"], action, final)


def test_transitions_of_unknown_jobs_are_404(idle: Env):
    for action in ("cancel", "pause", "resume"):
        error = assert_error(_action(idle, "ftjob-nope", action), 404, "not_found")
        assert error["param"] == "fine_tuning_job_id"


# ------------------------------------------------------------------ pagination


def test_job_list_pagination(idle: Env):
    env = _env(idle.server, idle.tmp, project="pager")
    created = [_job(env)["id"] for _ in range(5)]
    with env.client() as c:
        full = c.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()
        assert sorted(j["id"] for j in full["data"]) == sorted(created)
        assert full["has_more"] is False
        order = [j["id"] for j in full["data"]]
        stamps = [j["created_at"] for j in full["data"]]
        assert stamps == sorted(stamps, reverse=True)  # newest first

        pages, after = [], None
        while True:
            params = {"limit": 2, **({"after": after} if after else {})}
            page = c.get("/v1/fine_tuning/jobs", params=params).json()
            pages.append(page)
            after = page["data"][-1]["id"] if page["data"] else None
            if not page["has_more"]:
                break
        assert [len(p["data"]) for p in pages] == [2, 2, 1]
        assert [p["has_more"] for p in pages] == [True, True, False]
        assert [j["id"] for p in pages for j in p["data"]] == order
        assert c.get("/v1/fine_tuning/jobs", params={"limit": 5}).json()["has_more"] is False
        assert c.get("/v1/fine_tuning/jobs", params={"limit": 4}).json()["has_more"] is True
        # a cursor that is not one of ours gives nothing rather than someone else's page
        for after in ("ftjob-nope", idle.create(training_file=idle.train).json()["id"]):
            page = c.get("/v1/fine_tuning/jobs", params={"after": after}).json()
            assert page == {"object": "list", "data": [], "has_more": False}
        for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}):
            assert_error(c.get("/v1/fine_tuning/jobs", params=bad), 400, "invalid_request")


def test_event_pagination_returns_strictly_older_events(idle: Env):
    job = _job(idle)
    for _ in range(3):
        _action(idle, job["id"], "pause")
        _action(idle, job["id"], "resume")
    full = events(idle, job["id"], limit=1000)
    ids = [e["id"] for e in full["data"]]
    assert len(ids) == len(set(ids)) == 9 and full["has_more"] is False
    assert full["data"][0]["message"].startswith("Fine-tuning job resumed")  # newest first
    assert full["data"][-1]["message"].startswith("Created fine-tuning job")
    stamps = [e["created_at"] for e in full["data"]]
    assert stamps == sorted(stamps, reverse=True)
    for e in full["data"]:
        assert e["object"] == "fine_tuning.job.event" and e["level"] in ("info", "warn", "error")

    first = events(idle, job["id"], limit=4)
    assert [e["id"] for e in first["data"]] == ids[:4] and first["has_more"] is True
    second = events(idle, job["id"], limit=4, after=first["data"][-1]["id"])
    assert [e["id"] for e in second["data"]] == ids[4:8] and second["has_more"] is True
    third = events(idle, job["id"], limit=4, after=second["data"][-1]["id"])
    assert [e["id"] for e in third["data"]] == ids[8:] and third["has_more"] is False
    # after the oldest event there is nothing; an unknown cursor gives nothing
    assert events(idle, job["id"], after=ids[-1])["data"] == []
    assert events(idle, job["id"], after="ftevent-nope")["data"] == []
    # another job's event is no cursor for this one
    other = _job(idle)
    other_event = events(idle, other["id"])["data"][0]["id"]
    assert events(idle, job["id"], after=other_event)["data"] == []
    with idle.client() as c:
        error = assert_error(c.get("/v1/fine_tuning/jobs/ftjob-nope/events"), 404, "not_found")
        assert error["param"] == "fine_tuning_job_id"
        params = {"limit": 1001}
        assert_error(c.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params=params), 400)


# ------------------------------------------------------------------ a LoRA job end to end


@pytest.mark.live
def test_lora_method_job_trains_and_classifies(busy: Env, lora: dict):
    assert lora["status"] == "succeeded", lora
    assert lora["method"]["type"] == "lora"
    assert lora["method"]["lora"]["lora_r"] == 4
    assert lora["method"]["lora"]["hyperparameters"]["n_epochs"] == 2
    assert lora["hyperparameters"]["n_epochs"] == 2
    assert lora["fine_tuned_model"] == f"ft:{TINY}:acme:lora-run:{lora['id']}"
    assert lora["seed"] == 3 and lora["trained_tokens"] > 0 and lora["error"] is None
    bundle = busy.server.state.layout.bundle(lora["id"])
    meta = json.loads((bundle / "tuneforge.json").read_text())
    assert meta["method"] == "lora" and meta["adapter"] is True
    assert meta["labels"] == ["negative", "positive"]

    with busy.server.http(busy.key) as c:
        texts = [f"a {POSITIVE[0]} film", f"a {NEGATIVE[0]} film"]
        response = c.post("/v1/classify", json={"model": lora["fine_tuned_model"], "input": texts})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert [d["index"] for d in data] == [0, 1]
        for d in data:
            assert d["label"] in ("negative", "positive") and 0.5 <= d["score"] <= 1
        models = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert lora["fine_tuned_model"] in models


@pytest.mark.live
def test_a_finished_job_refuses_transitions_and_keeps_its_result(busy: Env, lora: dict):
    for action in ("cancel", "pause", "resume"):
        _refused(busy, lora["id"], action, "succeeded")
    with busy.client() as c:
        assert c.get(f"/v1/fine_tuning/jobs/{lora['id']}").json() == lora
        # a result file is not training data
        error = assert_error(busy.create(training_file=lora["result_files"][0]), 400)
        assert (error["code"], error["param"]) == ("invalid_file_purpose", "training_file")
        metrics = c.get(f"/v1/files/{lora['result_files'][0]}/content").text
        assert metrics.startswith("step,epoch,train_loss")


@pytest.mark.live
def test_training_events_and_checkpoints_page_newest_first(busy: Env, lora: dict):
    full = events(busy, lora["id"], limit=1000)["data"]
    assert full[0]["message"].startswith("The job has successfully completed")
    assert full[0]["data"] == {"fine_tuned_model": lora["fine_tuned_model"]}
    steps = [
        e["data"]["step"] for e in full if e["type"] == "metrics" and "train_loss" in e["data"]
    ]
    assert steps and steps == sorted(steps, reverse=True)
    page = events(busy, lora["id"], limit=3, after=full[2]["id"])["data"]
    assert [e["id"] for e in page] == [e["id"] for e in full[3:6]]

    with busy.client() as c:
        url = f"/v1/fine_tuning/jobs/{lora['id']}/checkpoints"
        all_ckpts = c.get(url, params={"limit": 100}).json()
        numbers = [ck["step_number"] for ck in all_ckpts["data"]]
        assert len(numbers) >= 2 and numbers == sorted(numbers, reverse=True)
        first = c.get(url, params={"limit": 1}).json()
        assert first["has_more"] is True and first["first_id"] == first["last_id"]
        rest = c.get(url, params={"limit": 100, "after": first["last_id"]}).json()
        assert [ck["step_number"] for ck in rest["data"]] == numbers[1:]
        assert rest["has_more"] is False
