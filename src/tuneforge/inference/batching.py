"""Micro-batching: concurrent requests for one model are coalesced into batches.

A request (one or more texts) waits at most ``max_wait_ms`` for others to join; a batch holds
at most ``max_batch_size`` texts (inside it, the backend sorts by length so padding stays
small). The queue is bounded: when ``max_queue`` texts are waiting, new requests are refused
at once (the server answers 503 with ``Retry-After``) instead of piling up; a request that
arrives when no text is waiting is always taken, however many texts it has, so the largest
request the caller allows gets in on an idle model. A request that times out gives up its
place: texts not yet started are dropped from the queue.

A batch that fails is run again request by request, so one request whose texts break the
model (say, text the tokenizer refuses) fails alone instead of taking the others of its batch
down with it; a failed request gives up its texts still waiting.

Batches run one at a time per model in a worker thread, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import numpy as np


class QueueFull(Exception):
    """The model's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"queue full; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class RequestTimeout(Exception):
    """The request waited longer than its timeout."""


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future
    rows: list[np.ndarray | None] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False


@dataclass
class BatchStats:
    """Counters for tests and metrics."""

    batches: int = 0
    texts: int = 0
    max_batch: int = 0
    rejected: int = 0
    timed_out: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class MicroBatcher:
    """Coalesces ``submit`` calls into batches for ``run``.

    Args:
        run: Computes one output row per text (``texts -> array of shape (n, ...)``); it is
            called in a worker thread.
        max_batch_size: Most texts per batch.
        max_wait_ms: Longest a request waits for others before its batch starts.
        max_queue: Most texts waiting; more are refused with ``QueueFull`` (a request that
            finds no text waiting is taken whatever its size).
        executor: Threads that run batches (shared by many models); one batch of this
            model runs at a time either way. Default: a thread of its own.
        idle_seconds: The batching task ends after this long without requests (it starts
            again on the next one), so a dropped model leaves nothing running.
    """

    def __init__(
        self,
        run: Callable[[Sequence[str]], np.ndarray],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        executor: ThreadPoolExecutor | None = None,
        idle_seconds: float = 30.0,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.idle_seconds = idle_seconds
        self.stats = BatchStats()
        self._items: deque[tuple[_Request, int]] = deque()
        self._queued = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="tuneforge-batch")
        self._batch_seconds = 0.05  # running estimate, for Retry-After

    async def submit(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        """Output rows for ``texts`` (in order), computed in shared batches.

        Raises:
            QueueFull: Too many texts are waiting.
            RequestTimeout: Not done within ``timeout`` seconds.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("no texts")
        self._ensure_task()
        if self._queued and self._queued + len(texts) > self.max_queue:
            self.stats.rejected += 1
            batches_ahead = max(1, self._queued // self.max_batch_size)
            raise QueueFull(retry_after=max(1.0, batches_ahead * self._batch_seconds))
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future(), [None] * len(texts), len(texts))
        for i in range(len(texts)):
            self._items.append((request, i))
        self._queued += len(texts)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except TimeoutError:
            request.cancelled = True
            self._drop_cancelled()
            self.stats.timed_out += 1
            raise RequestTimeout(f"no answer within {timeout:.1f}s") from None

    def _drop_cancelled(self) -> None:
        kept = deque(item for item in self._items if not item[0].cancelled)
        self._queued -= len(self._items) - len(kept)
        self._items = kept

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.idle_seconds)
                except TimeoutError:
                    if not self._items:
                        return  # idle: submit() starts a new task when needed
                continue
            # Wait for more texts to join, up to max_wait after the oldest arrived.
            deadline = time.monotonic() + self.max_wait
            while len(self._items) < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            batch: list[tuple[_Request, int]] = []
            while self._items and len(batch) < self.max_batch_size:
                item = self._items.popleft()
                self._queued -= 1
                if not item[0].cancelled:
                    batch.append(item)
            if not batch:
                continue
            texts = [req.texts[i] for req, i in batch]
            started = time.perf_counter()
            try:
                rows = await loop.run_in_executor(self._executor, self.run, texts)
            except Exception as exc:
                await self._run_alone(batch, exc)
                continue
            elapsed = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            self._deliver(batch, rows)

    async def _run_alone(self, batch: list[tuple[_Request, int]], error: Exception) -> None:
        """Run a failed batch again one request at a time: only the requests that fail on
        their own get the error (a batch of one request gets ``error`` without a rerun)."""
        loop = asyncio.get_running_loop()
        groups: dict[int, list[tuple[_Request, int]]] = {}
        for item in batch:
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            request = items[0][0]
            if request.cancelled or request.future.done():
                continue
            if len(groups) == 1:
                self._fail(request, error)
                continue
            texts = [request.texts[i] for _, i in items]
            try:
                rows = await loop.run_in_executor(self._executor, self.run, texts)
            except Exception as exc:
                self._fail(request, exc)
                continue
            self._deliver(items, rows)

    def _fail(self, request: _Request, error: Exception) -> None:
        """Give the request its error; its texts still waiting leave the queue."""
        if not request.future.done():
            request.future.set_exception(error)
        request.cancelled = True
        self._drop_cancelled()

    def _deliver(self, batch: list[tuple[_Request, int]], rows: np.ndarray) -> None:
        """Hand out a batch's rows; a request whose last row arrives is answered."""
        self.stats.batches += 1
        self.stats.texts += len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        self.stats.batch_sizes.append(len(batch))
        del self.stats.batch_sizes[:-1000]
        for (req, i), row in zip(batch, rows, strict=True):
            req.rows[i] = row
            req.remaining -= 1
            if req.remaining == 0 and not req.future.done():
                req.future.set_result(np.stack(cast(list[np.ndarray], req.rows)))  # all filled

    @property
    def queued(self) -> int:
        """Texts waiting (not yet in a running batch)."""
        return self._queued

    async def close(self) -> None:
        """Stop the batching task and its thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
