"""A full disk, for real: ``tuneforge serve`` runs in its own mount namespace with its data
directory and its SQLite database each on a small tmpfs (``unshare --user --map-root-user
--mount``: no root needed where unprivileged user namespaces are allowed), and the test fills
them (``nsenter``) while a job trains. Every write there then fails with ENOSPC: the training
child's checkpoints and events, the worker's lease renewals, the API's cancel."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.server.api import api_server
from tests.server.live import TINY, chat_jsonl, server_settings

from tuneforge.jobs.db import make_engine, migrate, sqlite_url
from tuneforge.jobs.store import JobStore
from tuneforge.server.auth import create_key

DATA_MB, DATABASE_MB = 48, 16  # the two tmpfs
FLOOR_MB = 8  # TUNEFORGE_MIN_FREE_DISK_MB
HYPERPARAMETERS = {  # checkpoints every 5 steps: a write soon after the disk fills
    "n_epochs": 3,
    "batch_size": 8,
    "checkpoint_every": 5,
    "patience": 0,
    "num_threads": 1,
}


def _no_namespaces(tmp: Path) -> str | None:
    """Why a tmpfs in a user namespace cannot be mounted here (None: it can)."""
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return "unshare/nsenter (util-linux) are not installed"
    tmp.mkdir(exist_ok=True)
    probe = subprocess.run(
        [*UNSHARE, "sh", "-c", 'mount -t tmpfs -o size=1m probe "$0"', str(tmp)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"user namespaces are not allowed here: {probe.stderr.strip()}"
    return None


UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]


@dataclass
class SmallDisks:
    """A ``tuneforge serve`` whose data directory and database live on full-able tmpfs."""

    proc: subprocess.Popen
    url: str
    key: str
    log: Path
    data: Path
    database: Path

    def sh(self, script: str) -> None:
        """Run ``script`` in the server's mount namespace (where the tmpfs are)."""
        subprocess.run(
            ["nsenter", "-t", str(self.proc.pid), "-U", "-m", "sh", "-c", script],
            capture_output=True,
            timeout=60,
        )

    def fill(self, where: Path, size_mb: int) -> None:
        """Write zeros until the tmpfs at ``where`` is full (bounded: never more than its
        size, and only where ``where`` is a tmpfs)."""
        self.sh(
            f'[ "$(stat -f -c %T "{where}")" = tmpfs ] && '
            f'head -c {size_mb + 1}M /dev/zero > "{where}/ballast"'
        )

    def free(self, where: Path) -> None:
        self.sh(f'rm -f "{where}/ballast"')

    def logged(self, job_id: str) -> bool:
        """Whether the server logged that ``job_id`` met the full disk."""
        return f"job {job_id}: The data disk is full" in self.log.read_text(errors="replace")

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )

    def create_job(self, client: httpx.Client, training_file: str) -> str:
        body = {"model": TINY, "training_file": training_file, "hyperparameters": HYPERPARAMETERS}
        response = client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def wait(self, what: str, check, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            if check():
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.25)

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.url}/readyz", timeout=30)


@contextmanager
def small_disks(tmp_path: Path, tiny_model: Path) -> Iterator[SmallDisks]:
    """The server with its data directory on a ``DATA_MB`` tmpfs and its SQLite file on a
    ``DATABASE_MB`` one."""
    reason = _no_namespaces(tmp_path / "probe")
    if reason:
        pytest.skip(reason)
    data, db_dir = tmp_path / "data", tmp_path / "db"
    data.mkdir()
    db_dir.mkdir()
    seed = tmp_path / "seed.db"
    engine = make_engine(sqlite_url(seed))
    migrate(engine)
    with JobStore(engine).sessions.begin() as session:
        _, key = create_key(session, "acme", ["train"])
    engine.dispose()  # the last connection: the WAL is folded into the file
    port = _free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TUNEFORGE_DATA_DIR": str(data),
        "TUNEFORGE_DATABASE_URL": sqlite_url(db_dir / "tuneforge.db"),
        "TUNEFORGE_BASE_MODELS": json.dumps({TINY: str(tiny_model)}),
        "TUNEFORGE_MIN_FREE_DISK_MB": str(FLOOR_MB),
        "TUNEFORGE_LEASE_SECONDS": "3",
        "TUNEFORGE_RATE_LIMIT_PER_MINUTE": "0",
    }
    env.pop("TUNEFORGE_CONFIG", None)
    script = (
        f'mount -t tmpfs -o size={DATA_MB}m tuneforge-data "{data}" && '
        f'mount -t tmpfs -o size={DATABASE_MB}m tuneforge-db "{db_dir}" && '
        f'cp "{seed}" "{db_dir}/tuneforge.db" && exec "$@"'
    )
    command = [sys.executable, "-m", "tuneforge", "serve", "--port", str(port)]
    log = tmp_path / "server.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            [*UNSHARE, "sh", "-c", script, "sh", *command],
            env=env,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
    disks = SmallDisks(proc, f"http://127.0.0.1:{port}", key, log, data, db_dir)
    try:
        disks.wait("the server", lambda: _answers(disks.url), timeout=120)
        yield disks
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _job(client: httpx.Client, job_id: str) -> dict:
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_under_the_free_space_floor_no_job_is_taken_and_readyz_says_why(
    tmp_path: Path, tiny_model: Path
):
    """Without filling a disk: a floor above the free space (any machine) is the same state
    for the worker and /readyz."""
    settings = server_settings(tmp_path, tiny_model, workers=1, min_free_disk_mb=2**40)
    with api_server(settings) as server:
        key = server.key("acme", "train")
        client = server.http(key)
        ready = server.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["disk"] == "low" and body["database"] == "ok", body
        assert "under the floor" in body["disk_error"] and body["disk_free_bytes"] > 0
        train = chat_jsonl(tmp_path / "train.jsonl", 40).read_bytes()
        file_id = server.upload(key, "train.jsonl", train)
        job = client.post("/v1/fine_tuning/jobs", json={"model": TINY, "training_file": file_id})
        assert job.status_code == 200, job.text
        job_id = job.json()["id"]
        time.sleep(2.5)  # two polls of the worker
        assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "queued"
        assert server.get("/readyz").json()["live_workers"] == 1  # alive, waiting for room
        cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        client.close()


@pytest.mark.live
@pytest.mark.slow  # ~25 s: CI runs it (make test-slow); the floor test above stays in make test
def test_a_full_disk_fails_the_running_job_keeps_the_server_up_and_says_why(
    tmp_path: Path, tiny_model: Path
):
    with small_disks(tmp_path, tiny_model) as disks, disks.http() as client:
        # job 1 trains (a checkpoint is written); job 2 waits behind it (one worker)
        train = chat_jsonl(tmp_path / "train.jsonl", 400)
        upload = client.post(
            "/v1/files",
            files={"file": ("train.jsonl", train.read_bytes())},
            data={"purpose": "fine-tune"},
        )
        assert upload.status_code == 200, upload.text
        first = disks.create_job(client, upload.json()["id"])
        second = disks.create_job(client, upload.json()["id"])
        checkpoints = f"/v1/fine_tuning/jobs/{first}/checkpoints"
        disks.wait("a checkpoint", lambda: client.get(checkpoints).json()["data"])

        # both disks full: the child dies; the worker knows why but cannot record it
        disks.fill(disks.database, DATABASE_MB)
        disks.fill(disks.data, DATA_MB)
        ready = disks.readyz()
        assert ready.status_code == 503, ready.text
        assert ready.json()["disk"] == "low", ready.json()
        assert "TUNEFORGE_MIN_FREE_DISK_MB" in ready.json()["disk_error"]
        disks.wait("the worker to meet the full disk", lambda: disks.logged(first))
        assert _job(client, first)["status"] == "running"  # reads work; the write waits
        cancel = client.post(f"/v1/fine_tuning/jobs/{second}/cancel")
        assert cancel.status_code == 503, cancel.text  # not 500
        assert cancel.json()["error"]["code"] == "database_unavailable"
        assert "full" in cancel.json()["error"]["message"]
        upload = client.post(
            "/v1/files",
            files={"file": ("more.jsonl", train.read_bytes())},
            data={"purpose": "fine-tune"},
        )
        assert upload.status_code == 507, upload.text
        assert upload.json()["error"]["code"] == "disk_full"
        assert httpx.get(f"{disks.url}/healthz").status_code == 200

        # room for the database (the data disk still full): the failure is recorded once,
        # no job is taken, and cancel works
        disks.free(disks.database)
        disks.wait("job 1 to fail", lambda: _job(client, first)["status"] == "failed")
        job = _job(client, first)
        assert job["error"]["code"] == "disk_full", job
        assert "data disk is full" in job["error"]["message"]
        assert "Traceback" not in job["error"]["message"]
        events = client.get(f"/v1/fine_tuning/jobs/{first}/events", params={"limit": 100})
        errors = [e["message"] for e in events.json()["data"] if e["level"] == "error"]
        assert len(errors) == 1 and "data disk is full" in errors[0], errors
        time.sleep(1.5)  # a poll of the worker: it does not take job 2 on a full disk
        assert _job(client, second)["status"] == "queued"
        cancel = client.post(f"/v1/fine_tuning/jobs/{second}/cancel")
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled", cancel.text
        assert disks.readyz().json()["disk"] == "low"

        # room on the data disk: ready again
        disks.free(disks.data)
        disks.wait("readiness", lambda: disks.readyz().status_code == 200, timeout=30)
