"""Bad data that a job can only find when it runs fails the job at most once, with a clear
error: a one-class file, a lone surrogate inside a row (of the training or the validation
file), LoRA ``target_modules`` the model
does not have. Not retried (``attempts <= 1``; 0 when the job fails while its files are
validated), a code saying whose fault it is (``invalid_training_file`` / ``invalid_job``),
and no traceback or server path in anything the job's owner reads. A server that refuses
such a job at creation (400 naming the field) is as good.

Jobs run in the live server's local workers, which train in child processes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.security.hostile import assert_clean_message
from tests.server.live import TINY, LiveServer, live_server, server_settings

from conftest import sentiment_rows, write_csv

pytestmark = [pytest.mark.security, pytest.mark.live]

TERMINAL = {"succeeded", "failed", "cancelled"}
LINE_3 = re.compile(r"\b(line|row) 3\b|:3\b")  # "line 3", or "surrogate.jsonl:3: ..."


@dataclass
class Env:
    server: LiveServer
    key: str
    jobs: dict[str, dict]  # case -> the job as created (or the 400 error)


def one_class(tmp: Path) -> tuple[str, bytes]:
    rows = [(text, "positive") for text, _ in sentiment_rows(40)]
    return "one-class.csv", write_csv(tmp / "one-class.csv", rows).read_bytes()


def surrogate_row(tmp: Path) -> tuple[str, bytes]:
    rows = [{"text": text, "label": label} for text, label in sentiment_rows(40)]
    rows[2]["text"] = "good \ud800 movie"  # line 3; json.dumps escapes it: valid JSON
    return "surrogate.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode("ascii")


def honest(tmp: Path) -> tuple[str, bytes]:
    return "train.csv", write_csv(tmp / "train.csv", sentiment_rows(40)).read_bytes()


def validation_surrogate(tmp: Path) -> tuple[str, bytes]:
    name, content = surrogate_row(tmp)
    return f"validation-{name}", content


ONE_EPOCH = {"n_epochs": 1}
CASES = {
    # case: (training file maker, more job fields (a validation_file is a maker too), the code)
    "one-class": (one_class, {"hyperparameters": ONE_EPOCH}, "invalid_training_file"),
    "surrogate-in-row": (surrogate_row, {"hyperparameters": ONE_EPOCH}, "invalid_training_file"),
    "surrogate-in-validation-row": (
        honest,
        {"hyperparameters": ONE_EPOCH, "validation_file": validation_surrogate},
        "invalid_validation_file",
    ),
    "unknown-lora-target": (
        honest,
        {
            "method": {
                "type": "lora",
                "lora": {"target_modules": ["no_such_module"], "hyperparameters": ONE_EPOCH},
            }
        },
        "invalid_job",
    ),
}
PARAMS = {
    "one-class": "training_file",
    "surrogate-in-row": "training_file",
    "surrogate-in-validation-row": "validation_file",
    "unknown-lora-target": "method.lora.target_modules",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    """All the jobs created at once, run side by side by local workers."""
    tmp = tmp_path_factory.mktemp("bad-data")
    with live_server(server_settings(tmp, tiny_model, workers=len(CASES))) as server:
        key = server.key("acme", "train")
        jobs = {}
        with server.http(key) as client:
            for case, (make_file, extra, _code) in CASES.items():
                body = {"model": TINY, **extra, "training_file": make_file}
                for field in ("training_file", "validation_file"):
                    if field in body:  # a file maker: upload what it makes
                        name, content = body[field](tmp)
                        upload = client.post(
                            "/v1/files",
                            files={"file": (name, content)},
                            data={"purpose": "fine-tune"},
                        )
                        assert upload.status_code == 200, upload.text
                        body[field] = upload.json()["id"]
                response = client.post("/v1/fine_tuning/jobs", json=body)
                assert response.status_code in (200, 400), response.text
                jobs[case] = response.json()
        yield Env(server, key, jobs)


@pytest.mark.parametrize("case", list(CASES))
def test_a_job_with_bad_data_fails_once_with_a_clear_error(env: Env, case: str) -> None:
    created = env.jobs[case]
    if "error" in created and "id" not in created:  # refused at creation: as good
        error = created["error"]
        assert error["param"] == PARAMS[case], error
        assert_clean_message(error["message"])
        return
    job = env.server.wait_for_job(env.key, created["id"], TERMINAL, timeout=150)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == CASES[case][2], job["error"]
    assert job["attempts"] <= 1, f"a deterministic failure was retried: {job}"
    assert_clean_message(job["error"]["message"])
    if case.startswith("surrogate"):
        assert LINE_3.search(job["error"]["message"]), job["error"]


@pytest.mark.parametrize("case", list(CASES))
def test_the_failed_jobs_events_carry_no_traceback(env: Env, case: str) -> None:
    created = env.jobs[case]
    if "id" not in created:
        pytest.skip("refused at creation: no job, no events")
    env.server.wait_for_job(env.key, created["id"], TERMINAL, timeout=150)
    with env.server.http(env.key) as client:
        events = client.get(
            f"/v1/fine_tuning/jobs/{created['id']}/events", params={"limit": 100}
        ).json()["data"]
    for event in events:
        assert_clean_message(event["message"])
