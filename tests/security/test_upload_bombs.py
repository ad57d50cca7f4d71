"""A compression bomb cannot exhaust the server's memory: a ~114 KB Parquet file (zstd +
dictionary encoding) that holds 1,000,000 rows x 1,000 characters (1 GB of text) is refused
with 413 ``file_too_large`` while the server's memory stays flat, and nothing of it is kept;
three at once as well.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.security.hostile import assert_error, tree
from tests.server.live import LiveServer

from tuneforge.server.settings import Settings

pytestmark = [pytest.mark.security, pytest.mark.live]

ROWS = 1_000_000
TEXT = "good movie " * 90 + "0123456789"  # 1,000 characters
GROWTH_LIMIT = 300 * 2**20  # bytes of RSS the upload may add to the server


def parquet_bomb() -> bytes:
    """1,000,000 rows of one 1,000-character text, two labels: ~114 KB on the wire."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.DictionaryArray.from_arrays(pa.array(np.zeros(ROWS, np.int32)), pa.array([TEXT]))
    label = pa.DictionaryArray.from_arrays(
        pa.array((np.arange(ROWS) % 2).astype(np.int32)), pa.array(["negative", "positive"])
    )
    out = io.BytesIO()
    table = pa.table({"text": text, "label": label})
    pq.write_table(table, out, compression="zstd", use_dictionary=True)
    return out.getvalue()


class PeakRss:
    """Samples the resident memory of this process and its children (the live server runs
    here, in a thread; a server that inspects uploads in a child process is counted too)
    every 10 ms while active; ``growth`` is the peak over the value at entry."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        import psutil

        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # it may have ended meanwhile
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def names_a_setting(message: str) -> bool:
    """The message names a server setting (``max_upload_rows`` or its environment variable
    ``TUNEFORGE_MAX_UPLOAD_ROWS``, whatever the cap is called)."""
    names = [n for n in Settings.model_fields if "_" in n]
    return any(n in message or f"TUNEFORGE_{n.upper()}" in message for n in names)


@pytest.mark.parametrize("at_once", [1, 3])
def test_parquet_compression_bomb_is_refused_without_inflating_the_server(
    quiet_server: LiveServer, record_property, at_once: int
) -> None:
    bomb = parquet_bomb()
    assert len(bomb) < 200_000, len(bomb)
    files = quiet_server.state.layout.files
    before = tree(files)
    key = quiet_server.key("acme", "train")

    def upload(_: int) -> httpx.Response:
        with quiet_server.http(key) as client:
            return client.post(
                "/v1/files",
                files={"file": ("reviews.parquet", bomb)},
                data={"purpose": "fine-tune"},
            )

    with PeakRss() as memory, ThreadPoolExecutor(at_once) as pool:
        responses = list(pool.map(upload, range(at_once)))
    with quiet_server.http(key) as client:
        listed = client.get("/v1/files").json()["data"]
    measured = (
        f"{at_once} x {len(bomb)} byte bomb at once: server RSS {memory.start / 2**20:.0f} MiB "
        f"-> peak {memory.peak / 2**20:.0f} MiB (+{memory.growth / 2**20:.0f} MiB); answers "
        f"{[r.status_code for r in responses]}"
    )
    print(measured)
    record_property("parquet_bomb", measured)
    assert memory.growth < GROWTH_LIMIT, measured
    for response in responses:
        error = assert_error(response, 413, "file_too_large", "file")
        assert re.search(r"\d", error["message"]) and names_a_setting(error["message"]), error
    assert listed == [], "a refused upload is listed"
    assert tree(files) == before, "a refused upload left bytes on disk"
