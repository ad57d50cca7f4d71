"""/readyz follows the workers within seconds: a killed worker (no clean deregistration) stops
counting as live shortly after its last heartbeat, not a minute and a half later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.server.api import api_server
from tests.server.live import server_settings

from tuneforge.server.settings import Settings


def _live_workers(server) -> int:
    return server.get("/readyz").json()["live_workers"]


@pytest.mark.live
@pytest.mark.slow  # ~13 s (waits out the timeout): CI runs it (make test-slow)
def test_a_killed_worker_stops_counting_as_live_within_seconds(tmp_path: Path, tiny_model: Path):
    timeout = Settings.model_fields["worker_timeout_seconds"].default
    assert timeout <= 15  # a few heartbeats (one a second), not 90 s
    settings = server_settings(tmp_path, tiny_model, workers=0)
    with api_server(settings) as server:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("TUNEFORGE_CONFIG", None)
        worker = subprocess.Popen(
            [sys.executable, "-m", "tuneforge", "worker", "--data-dir", str(settings.data_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while _live_workers(server) != 1:
                assert worker.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(2)  # it keeps beating: still live
            assert _live_workers(server) == 1
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            killed = time.monotonic()
            while _live_workers(server) == 1:
                assert time.monotonic() - killed < timeout + 2, "the dead worker is still live"
                time.sleep(0.2)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
