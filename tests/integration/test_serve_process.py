"""The real ``tuneforge serve`` process honours TUNEFORGE_RATE_LIMIT_PER_MINUTE."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_with_rate_limit_1_refuses_the_second_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNEFORGE_RATE_LIMIT_PER_MINUTE": "1"}
    env.pop("TUNEFORGE_CONFIG", None)
    tf = [sys.executable, "-m", "tuneforge"]
    created = subprocess.run(
        [*tf, "keys", "create", "--project", "acme", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen(
        [*tf, "serve", "--port", str(port), "--data-dir", str(data), "--workers", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "tuneforge serve did not start"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        first = httpx.get(f"{url}/v1/files", headers=headers, timeout=30)
        second = httpx.get(f"{url}/v1/files", headers=headers, timeout=30)
        assert first.status_code == 200, first.text
        assert second.status_code == 429, second.text
        assert int(second.headers["retry-after"]) >= 1
        assert "1 requests per minute" in second.json()["error"]["message"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()
