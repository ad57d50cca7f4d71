"""A real tuneforge server on loopback (uvicorn in a thread), API keys, upload helpers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from conftest import sentiment_rows
from tuneforge.server.app import create_app
from tuneforge.server.auth import create_key
from tuneforge.server.settings import Settings
from tuneforge.server.state import AppState

TINY = "tiny-bert"

# Set per test by tests/server/conftest.py: False while a test without the ``live`` marker
# sets up (None outside pytest).
LIVE_TIER_ALLOWED: bool | None = None


@dataclass
class LiveServer:
    """A running server: its URL, settings and state (database, data directory)."""

    url: str
    settings: Settings
    state: AppState

    def key(self, project: str = "acme", scopes: str = "train,infer,admin") -> str:
        """Create an API key directly in the server's database."""
        with self.state.sessions.begin() as session:
            _, secret = create_key(session, project, scopes.split(","))
        return secret

    def http(self, key: str | None) -> httpx.Client:
        """An HTTP client with the key as bearer token."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def upload(self, key: str, name: str, content: bytes) -> str:
        """Upload a fine-tuning file over HTTP; returns its id."""
        with self.http(key) as client:
            response = client.post(
                "/v1/files", files={"file": (name, content)}, data={"purpose": "fine-tune"}
            )
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def add_model(self, job_id: str, bundle: str, project: str = "acme") -> str:
        """Record a fine-tuned model row (bundle relative to the data dir); returns its id."""
        from tuneforge.jobs.tables import FineTunedModel

        model_id = f"ft:{TINY}:{project}::{job_id}"
        with self.state.sessions.begin() as session:
            session.add(
                FineTunedModel(
                    id=model_id,
                    project=project,
                    base_model=TINY,
                    job_id=job_id,
                    bundle=bundle,
                    created_at=int(time.time()),
                )
            )
        return model_id

    def openai(self, key: str):
        """The official ``openai`` client pointed at this server."""
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def wait_for_job(self, key: str, job_id: str, statuses: set[str], timeout: float = 120):
        """Poll until the job reaches one of ``statuses``; returns the job JSON."""
        deadline = time.monotonic() + timeout
        with self.http(key) as client:
            while True:
                job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
                if job["status"] in statuses:
                    return job
                if time.monotonic() > deadline:
                    events = client.get(
                        f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 50}
                    ).json()
                    raise AssertionError(f"job stuck in {job['status']}: {job} {events}")
                time.sleep(0.25)


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """Start the app under uvicorn on a free loopback port; stop it afterwards."""
    if LIVE_TIER_ALLOWED is False:
        raise RuntimeError(
            "a live server was started by a test without @pytest.mark.live: mark the test "
            "(it is in the live tier), or use the in-process app (tests.server.api.api_server)"
        )
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings, app.state.tf)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def server_settings(tmp_path: Path, tiny_model: Path, **overrides) -> Settings:
    """Settings for a test server: a fresh data directory, the tiny model as a base."""
    values = {
        "data_dir": tmp_path / "data",
        "workers": 1,
        "base_models": {TINY: str(tiny_model)},
        "lease_seconds": 3.0,
        "rate_limit_per_minute": 0,
    }
    values.update(overrides)
    return Settings(**values)


def chat_jsonl(path: Path, n: int = 60, seed: int = 0) -> Path:
    """An OpenAI chat-format classification file (user text -> assistant label)."""
    lines = []
    for text, label in sentiment_rows(n, seed):
        record = {
            "messages": [
                {"role": "system", "content": "Classify the sentiment of the review."},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ]
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
