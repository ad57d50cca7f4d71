"""A compression bomb costs the real ``tuneforge serve`` process no memory: with the default
caps, a 113 KB Parquet file holding 1,000,000 rows x 1,000 characters (1 GB of text) is
refused with 413 quickly, three at once, while the server's peak RSS stays flat."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

GROWTH_LIMIT = 200 * 1024 * 1024  # bytes of peak RSS the refusals may add


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bomb(rows: int = 1_000_000, chars: int = 1_000) -> bytes:
    text = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * chars]))
    label = pa.DictionaryArray.from_arrays(
        pa.array([i % 2 for i in range(rows)], pa.int32()), pa.array(["pos", "neg"])
    )
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": text, "label": label}), buffer, compression="zstd")
    return buffer.getvalue()


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.mark.live
@pytest.mark.slow  # a real serve process: CI runs it; tests/security has the in-process case
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_three_parquet_bombs_are_refused_without_the_server_growing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TUNEFORGE_CONFIG", None)
    for name in [n for n in env if n.startswith("TUNEFORGE_MAX_UPLOAD")]:
        env.pop(name)  # the default caps
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
    bomb = _bomb()
    assert len(bomb) < 200_000
    port = _free_port()
    server = subprocess.Popen(
        [*tf, "serve", "--port", str(port), "--data-dir", str(data), "--workers", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
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
        # warm the upload path (imports, first request) with a small valid file, then reset
        # the peak so that it measures the bombs alone
        small = httpx.post(
            f"{url}/v1/files",
            headers=headers,
            files={"file": ("ok.csv", b"text,label\ngood,pos\nbad,neg\n")},
            data={"purpose": "fine-tune"},
            timeout=60,
        )
        assert small.status_code == 200, small.text
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")
        before = _memory(server.pid)

        def send(i: int) -> httpx.Response:
            return httpx.post(
                f"{url}/v1/files",
                headers=headers,
                files={"file": (f"bomb{i}.parquet", bomb)},
                data={"purpose": "fine-tune"},
                timeout=120,
            )

        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(send, range(3)))
        elapsed = time.monotonic() - started
        after = _memory(server.pid)
        for response in responses:
            assert response.status_code == 413, response.text
            assert response.json()["error"]["code"] == "file_too_large"
            assert "max_upload_decompressed_bytes" in response.json()["error"]["message"]
        growth = after["VmHWM"] - before["VmRSS"]
        assert growth < GROWTH_LIMIT, f"peak RSS grew by {growth / 2**20:.0f} MiB"
        assert elapsed < 30, f"three refusals took {elapsed:.1f} s"
        listed = httpx.get(f"{url}/v1/files", headers=headers, timeout=30).json()["data"]
        assert [f["filename"] for f in listed] == ["ok.csv"]
        stored = sorted(p.name for p in (data / "files").iterdir())
        assert stored == [f"{listed[0]['id']}.csv"], stored
        print(f"3 bombs: {elapsed:.2f} s, peak RSS growth {growth / 2**20:.0f} MiB")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()
