"""Helpers for the worker reliability tests: worker processes, training children, the queue.

Kept free of torch/transformers imports: ``claim_until_empty`` runs in spawned processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHILD_MODULE = "tuneforge.jobs.child"


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- processes


def start_worker(
    data_dir: Path, database_url: str, lease_seconds: float, log_path: Path
) -> subprocess.Popen:
    """``tuneforge worker`` as a real process (its output goes to ``log_path``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("TUNEFORGE_DEBUG", None)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuneforge",
                "worker",
                "--data-dir",
                str(data_dir),
                "--database-url",
                database_url,
                "--lease-seconds",
                str(lease_seconds),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM (a worker hands its job back), then SIGKILL after ``grace``; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def training_children(job_id: str) -> list[int]:
    """Pids of live (not zombie) ``tuneforge.jobs.child`` processes training ``job_id``."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if CHILD_MODULE in cmdline and job_id in cmdline:
            pids.append(proc.pid)
    return pids


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ChildSampler:
    """Samples a job's training children every ``interval`` s in a thread.

    Attributes:
        max_concurrent: The most children seen at one sample.
        first_seen / last_seen: Per pid, the monotonic times it was first and last seen.
    """

    def __init__(self, job_id: str, interval: float = 0.05) -> None:
        self.job_id = job_id
        self.interval = interval
        self.max_concurrent = 0
        self.samples = 0
        self.first_seen: dict[int, float] = {}
        self.last_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            # Listing every process takes a while on a loaded machine: a killed child seen
            # alive early in the listing may be reaped, and its successor started, before the
            # listing reaches the new pid. Only children still alive once the listing is done
            # count as running together.
            pids = [pid for pid in training_children(self.job_id) if is_alive(pid)]
            now = time.monotonic()
            self.samples += 1
            self.max_concurrent = max(self.max_concurrent, len(pids))
            for pid in pids:
                self.first_seen.setdefault(pid, now)
                self.last_seen[pid] = now
            self._stop.wait(self.interval)

    def pids_in_order(self) -> list[int]:
        """The children seen, in the order they appeared."""
        return sorted(self.first_seen, key=self.first_seen.__getitem__)


# ---------------------------------------------------------------- the queue, many processes


def claim_until_empty(database_url: str, name: str, ready, go, results) -> None:
    """Claim jobs until none is left; put ``(name, [job ids], seconds)`` on ``results``.

    Runs in a spawned process: signals ``ready`` once its engine is open, then waits for
    ``go`` so that all claimers start together.
    """
    from tuneforge.jobs.db import make_engine
    from tuneforge.jobs.store import JobStore

    store = JobStore(make_engine(database_url))
    with store.engine.connect():  # open the connection (and its pragmas) before the race
        pass
    ready.set()
    go.wait(60)
    started = time.perf_counter()
    claimed = []
    try:
        while (claim := store.claim(name, lease_seconds=600)) is not None:
            claimed.append(claim.job_id)
    finally:
        results.put((name, claimed, time.perf_counter() - started))
        store.engine.dispose()


def write_events_until(database_url: str, job_id: str, started, stop) -> None:
    """Append events to a job as fast as possible until ``stop`` (a training child's load)."""
    from tuneforge.jobs.db import make_engine
    from tuneforge.jobs.store import JobStore

    store = JobStore(make_engine(database_url))
    store.add_events(job_id, [{"message": "first"}])
    started.set()
    while not stop.is_set():
        store.add_events(job_id, [{"message": "Step"}])
    store.engine.dispose()
