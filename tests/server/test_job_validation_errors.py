"""Bad input that training alone used to find: caught when the job is created where it can
be (a one-class file, a text that is not UTF-8, LoRA target modules the model lacks), and
otherwise failed after one attempt, never retried; no job error ever shows a traceback or a
path on the server.

The contract tier checks creation; the live tier runs a real worker and training child on
jobs whose stored run config was changed after creation (the checks at creation are
bypassed, as a job created by an older server would be).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server.api import ApiServer, api_server
from tests.server.live import TINY, LiveServer, live_server, server_settings
from tests.server.workers import start_worker, stop_process

from conftest import sentiment_rows, write_csv
from tuneforge.jobs.tables import Job

TERMINAL = {"succeeded", "failed", "cancelled"}
LEAKS = re.compile(r'Traceback|File "|(?<![\w.:/-])/(?:[^\s/]+/)+')  # a traceback, a path


def assert_no_leak(text: str, data_dir: Path) -> None:
    assert not LEAKS.search(text), text
    assert str(data_dir) not in text, text


def _chat(text: str, label: str) -> str:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    return json.dumps({"messages": messages})  # ensure_ascii: "\ud800" stays an escape


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("job-validation")
    with api_server(server_settings(tmp, tiny_model, workers=0)) as server:
        key = server.key("acme", "train")
        good = write_csv(tmp / "train.csv", sentiment_rows(60)).read_bytes()
        yield {"server": server, "key": key, "train": server.upload(key, "train.csv", good)}


def _create(env: dict, **body) -> dict:
    server: ApiServer = env["server"]
    with server.http(env["key"]) as client:
        response = client.post("/v1/fine_tuning/jobs", json={"model": TINY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _upload(env: dict, name: str, content: bytes) -> str | None:
    """The file id, or None when the upload itself refuses the file (400 naming the line)."""
    server: ApiServer = env["server"]
    with server.http(env["key"]) as client:
        response = client.post(
            "/v1/files", files={"file": (name, content)}, data={"purpose": "fine-tune"}
        )
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["param"] == "file" and "line" in error["message"], error
        return None
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _failed_in_validation(env: dict, job: dict, code: str, param: str) -> str:
    assert job["status"] == "failed", job
    assert job["attempts"] == 0  # never queued, never run
    error = job["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert_no_leak(error["message"], env["server"].settings.data_dir)
    return error["message"]


def test_a_one_class_training_file_fails_at_creation(idle: dict):
    rows = [(text, "positive") for text, _ in sentiment_rows(60)]
    content = "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)
    file_id = _upload(idle, "one.csv", content.encode())
    job = _create(idle, training_file=file_id)
    message = _failed_in_validation(idle, job, "invalid_training_file", "training_file")
    assert f"{file_id} (one.csv)" in message
    assert "at least 2 classes" in message and "'positive'" in message


def test_a_surrogate_in_a_training_row_fails_at_creation_naming_the_line(idle: dict):
    lines = [_chat(text, label) for text, label in sentiment_rows(60)]
    lines[6] = _chat("great film \ud800 truly", "positive")  # line 7: valid JSON, not UTF-8
    file_id = _upload(idle, "chat.jsonl", ("\n".join(lines) + "\n").encode())
    if file_id is None:
        return  # refused at upload, naming the line: it never reaches a job
    job = _create(idle, training_file=file_id)
    message = _failed_in_validation(idle, job, "invalid_training_file", "training_file")
    assert f"{file_id} (chat.jsonl):7:" in message, message


def test_a_surrogate_in_a_validation_row_fails_as_the_validation_file(idle: dict):
    lines = [_chat(text, label) for text, label in sentiment_rows(20, seed=4)]
    lines[2] = _chat("awful \udfff film", "negative")
    file_id = _upload(idle, "valid.jsonl", ("\n".join(lines) + "\n").encode())
    if file_id is None:
        return
    job = _create(idle, training_file=idle["train"], validation_file=file_id)
    message = _failed_in_validation(idle, job, "invalid_validation_file", "validation_file")
    assert f"{file_id} (valid.jsonl):3:" in message, message


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_unknown_target_modules_fail_at_creation(idle: dict, method: str):
    body = {"type": method, method: {"target_modules": ["query", "no_such_layer"]}}
    job = _create(idle, training_file=idle["train"], method=body)
    message = _failed_in_validation(idle, job, "invalid_job", f"method.{method}.target_modules")
    assert "'no_such_layer'" in message and "'query'" not in message
    assert "value" in message  # lists names the model has


def test_known_target_modules_are_accepted(idle: dict):
    body = {"type": "lora", "lora": {"target_modules": ["attention.self.query", "value"]}}
    job = _create(idle, training_file=idle["train"], method=body)
    assert job["status"] == "queued", job


# ---------------------------------------------------------------- a real worker


def _tamper(server: LiveServer, job_id: str, change) -> None:
    """Change a queued job's stored run config (as a job from an older server might be)."""
    with server.state.sessions.begin() as session:
        job = session.get(Job, job_id)
        config = json.loads(json.dumps(job.run_config))
        change(config)
        job.run_config = config


@pytest.mark.live
@pytest.mark.slow  # ~20 s of real training children: CI runs it (make test-slow)
def test_bad_input_found_by_training_fails_once_without_leaks(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0, max_attempts=3)
    with live_server(settings) as server:
        key = server.key()
        one_class = "text,label\n" + "".join(f"{t},positive\n" for t, _ in sentiment_rows(60))
        good = write_csv(tmp_path / "train.csv", sentiment_rows(60)).read_bytes()
        train, bad = server.upload(key, "train.csv", good), server.upload(key, "one.csv", b"x")
        with server.state.sessions() as s:
            from tuneforge.jobs.tables import File

            bad_path = server.state.layout.file_path(s.get(File, bad).storage_name)
        bad_path.write_text(one_class, encoding="utf-8")  # one class: creation would refuse it
        hp = {"n_epochs": 1, "num_threads": 1}
        with server.http(key) as client:
            jobs = [
                client.post(
                    "/v1/fine_tuning/jobs",
                    json={"model": TINY, "training_file": train, "hyperparameters": hp, **extra},
                ).json()
                for extra in ({}, {"method": {"type": "lora"}}, {})
            ]
        assert [j["status"] for j in jobs] == ["queued"] * 3, jobs
        data_file, lora, huge = (j["id"] for j in jobs)
        stored_bad = str(Path("files") / bad_path.name)
        _tamper(server, data_file, lambda c: c["data"].update(train=stored_bad))
        _tamper(server, lora, lambda c: c["method"].update(target_modules=["no_such_layer"]))
        _tamper(server, huge, lambda c: c["train"].update(epochs=1e9))
        with server.state.sessions.begin() as s:
            s.get(Job, data_file).training_file = bad

        worker = start_worker(
            server.state.layout.root, settings.resolved_database_url(), 3.0, tmp_path / "w.log"
        )
        try:
            done = {j: server.wait_for_job(key, j, TERMINAL, 120) for j in (data_file, lora, huge)}
        finally:
            stop_process(worker)

        expected = {data_file: "invalid_training_file", lora: "invalid_job", huge: "invalid_job"}
        for job_id, code in expected.items():
            job = done[job_id]
            assert job["status"] == "failed", job
            assert job["attempts"] == 1, job  # deterministic: not retried
            assert job["error"]["code"] == code, job["error"]
            assert_no_leak(job["error"]["message"], settings.data_dir)
            with server.http(key) as client:
                events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
            for event in events:
                assert_no_leak(event["message"], settings.data_dir)
            assert not any("queued again" in e["message"] for e in events)
        assert f"{bad} (one.csv)" in done[data_file]["error"]["message"]
        assert "at least 2 classes" in done[data_file]["error"]["message"]
        assert "'no_such_layer'" in done[lora]["error"]["message"]
        assert "train.epochs" in done[huge]["error"]["message"]
