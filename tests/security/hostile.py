"""Helpers of the hostile-tenant suite: tampering with bundles, raw requests, assertions
that nothing leaks and nothing is left behind."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import httpx
from tests.server.live import TINY, LiveServer

# What must never reach a client: a traceback, a source line of one, or a server path.
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "')
SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:tmp|home|root|work|usr|var|etc|opt|proc)/")


def hostile_copy(source: Path, target: Path) -> Path:
    """A copy of ``source`` to tamper with."""
    shutil.copytree(source, target, symlinks=True)
    return target


def edit_json(path: Path, **changes) -> None:
    """Set keys of a JSON object file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def place_model(
    server: LiveServer,
    bundle_dir: Path,
    project: str = "acme",
    job_id: str | None = None,
    suffix: str = "",
) -> str:
    """Put a bundle straight into the server's data directory and register it as a model of
    ``project`` (no import checks: what a model written by a job, or a restored backup, is).
    Returns the model id, ``ft:tiny-bert:PROJECT:SUFFIX:JOB``."""
    from tuneforge.jobs.tables import FineTunedModel

    job_id = job_id or f"ftjob-{bundle_dir.name}-{time.monotonic_ns()}"
    dest = server.state.layout.models / job_id
    shutil.copytree(bundle_dir, dest, symlinks=True)
    model_id = f"ft:{TINY}:{project}:{suffix}:{job_id}"
    with server.state.sessions.begin() as session:
        session.add(
            FineTunedModel(
                id=model_id,
                project=project,
                base_model=TINY,
                job_id=job_id,
                bundle=str(dest.relative_to(server.state.layout.root)),
                created_at=int(time.time()),
            )
        )
    return model_id


# ---------------------------------------------------------------- requests and assertions


def raw_post(client: httpx.Client, path: str, body: object) -> httpx.Response:
    """POST ``body`` as ASCII-escaped JSON: lone surrogates travel as ``\\ud800`` escapes
    (valid JSON), which ``httpx``'s ``json=`` cannot encode."""
    content = json.dumps(body, ensure_ascii=True).encode("ascii")
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


def assert_clean_message(message: str) -> None:
    """No traceback and no server path in a message a client (or job owner) sees."""
    for mark in TRACEBACK_MARKS:
        assert mark not in message, f"traceback in message: {message!r}"
    assert not SERVER_PATH.search(message), f"server path in message: {message!r}"


def assert_error(
    response: httpx.Response, status: int, code: str, param: str | type | None = ...
) -> dict:
    """The OpenAI error envelope with ``status`` and ``code`` (and ``param`` unless ``...``);
    its message leaks nothing. Returns the error object."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == code, error
    if param is not ...:
        assert error["param"] == param, error
    assert_clean_message(error["message"])
    return error


def tree(directory: Path) -> set[str]:
    """Every path under ``directory`` (relative), hidden ones included; empty if absent."""
    if not directory.exists():
        return set()
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}
