"""MicroBatcher: batch size and delay bounds, a full queue, timeouts freeing their place."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tuneforge.inference.batching import MicroBatcher, QueueFull, RequestTimeout


def lengths(texts):
    """One row per text: its length and the size of the batch it ran in."""
    return np.array([[len(t), len(texts)] for t in texts], dtype=np.float64)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_bounded_by_size():
    async def main():
        batcher = MicroBatcher(lengths, max_batch_size=8, max_wait_ms=50)
        texts = [f"text number {i}" + "x" * i for i in range(20)]
        results = await asyncio.gather(*(batcher.submit([t]) for t in texts))
        await batcher.close()
        return batcher, texts, results

    batcher, texts, results = run(main())
    for text, rows in zip(texts, results, strict=True):
        assert rows.shape == (1, 2) and rows[0, 0] == len(text)  # each got its own answer
    assert batcher.stats.max_batch == 8  # never more than max_batch_size
    assert batcher.stats.batches == 3  # 8 + 8 + 4: coalesced, not 20 single calls
    assert batcher.stats.texts == 20


def test_a_lone_request_waits_at_most_max_wait():
    async def main():
        batcher = MicroBatcher(lengths, max_batch_size=32, max_wait_ms=30)
        start = time.perf_counter()
        rows = await batcher.submit(["alone"])
        elapsed = time.perf_counter() - start
        await batcher.close()
        return rows, elapsed

    rows, elapsed = run(main())
    assert rows[0, 1] == 1  # ran in a batch of one
    assert 0.025 <= elapsed < 0.5  # waited for company about max_wait, not forever


def test_a_multi_text_request_is_split_across_batches_and_reassembled_in_order():
    async def main():
        batcher = MicroBatcher(lengths, max_batch_size=4, max_wait_ms=1)
        texts = ["a" * n for n in range(1, 11)]
        rows = await batcher.submit(texts)
        await batcher.close()
        return rows, batcher.stats

    rows, stats = run(main())
    assert rows[:, 0].tolist() == list(range(1, 11))
    assert stats.batches == 3 and stats.max_batch == 4


def test_full_queue_is_refused_with_a_retry_time():
    gate = threading.Event()

    def slow(texts):
        gate.wait(5)
        return lengths(texts)

    async def main():
        batcher = MicroBatcher(slow, max_batch_size=2, max_wait_ms=0, max_queue=4)
        first = asyncio.ensure_future(batcher.submit(["a", "b"]))  # starts running, blocks
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit(["c", "d", "e", "f"]))  # fills the queue
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as info:
            await batcher.submit(["g"])
        gate.set()
        done = await asyncio.gather(first, queued)
        await batcher.close()
        return info.value, done, batcher.stats

    error, done, stats = run(main())
    assert error.retry_after >= 1
    assert [len(d) for d in done] == [2, 4]  # the accepted requests still complete
    assert stats.rejected == 1


def test_timeout_gives_up_the_place_in_the_queue():
    gate = threading.Event()

    def slow(texts):
        gate.wait(5)
        return lengths(texts)

    async def main():
        batcher = MicroBatcher(slow, max_batch_size=1, max_wait_ms=0, max_queue=3)
        running = asyncio.ensure_future(batcher.submit(["busy"]))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestTimeout):
            await batcher.submit(["x", "y"], timeout=0.05)
        # the two timed-out texts left the queue: three new ones fit again
        assert batcher.queued == 0
        later = asyncio.ensure_future(batcher.submit(["p", "q", "r"]))
        gate.set()
        await asyncio.gather(running, later)
        await batcher.close()
        return batcher.stats

    stats = run(main())
    assert stats.timed_out == 1
    assert stats.texts == 4  # busy + p, q, r: the timed-out texts never ran


def test_an_error_in_the_model_reaches_every_request_of_the_batch():
    def broken(texts):
        raise RuntimeError("model exploded")

    async def main():
        batcher = MicroBatcher(broken, max_batch_size=4, max_wait_ms=20)
        results = await asyncio.gather(
            batcher.submit(["a"]), batcher.submit(["b"]), return_exceptions=True
        )
        await batcher.close()
        return results

    results = run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


POISON = "\ud800 poisoned"  # a lone surrogate: the real tokenizer raises TypeError on it


def strict(texts):
    """Like ``lengths``, but fails the whole call on a poisoned text, as a tokenizer would."""
    if any("\ud800" in t for t in texts):
        raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
    return lengths(texts)


def test_a_failing_batch_is_retried_request_by_request_so_only_the_bad_request_fails():
    calls: list[list[str]] = []

    def recording(texts):
        calls.append(list(texts))
        return strict(texts)

    async def main():
        batcher = MicroBatcher(recording, max_batch_size=16, max_wait_ms=50)
        honest = [[f"honest {i}"] for i in range(5)] + [["two", "texts"]]
        results = await asyncio.gather(
            *(batcher.submit(t) for t in honest[:3]),
            batcher.submit(["fine", POISON]),  # one bad text fails its whole request
            *(batcher.submit(t) for t in honest[3:]),
            return_exceptions=True,
        )
        await batcher.close()
        return honest, results, batcher.stats

    honest, results, stats = run(main())
    assert len(calls[0]) == 9  # all requests did share one batch, which failed
    poisoned = results[3]
    assert isinstance(poisoned, TypeError)
    good = results[:3] + results[4:]
    for texts, rows in zip(honest, good, strict=True):
        assert not isinstance(rows, BaseException), rows
        assert rows[:, 0].tolist() == [len(t) for t in texts]  # each its own answer
    assert all(len(c) <= 2 for c in calls[1:])  # the retries ran one request at a time
    assert stats.texts == 7  # the honest texts were answered once each


def test_a_failed_request_gives_up_the_rest_of_its_texts():
    calls: list[list[str]] = []

    def recording(texts):
        calls.append(list(texts))
        return strict(texts)

    async def main():
        batcher = MicroBatcher(recording, max_batch_size=2, max_wait_ms=0)
        with pytest.raises(TypeError):
            await batcher.submit([POISON, "b", "c", "d", "e"])
        rows = await batcher.submit(["after"])
        await batcher.close()
        return rows, batcher.queued

    rows, queued = run(main())
    assert rows[0, 0] == len("after") and queued == 0
    ran = [t for call in calls for t in call]
    assert "e" not in ran  # dropped once the request had failed, not computed for nothing


def test_a_request_larger_than_the_queue_is_accepted_when_nothing_waits():
    gate = threading.Event()

    def slow(texts):
        gate.wait(5)
        return lengths(texts)

    async def main():
        batcher = MicroBatcher(slow, max_batch_size=2, max_wait_ms=0, max_queue=4)
        big = asyncio.ensure_future(batcher.submit(["t"] * 10))  # 10 > 4, but the queue is empty
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):  # while its texts wait, the bound holds for others
            await batcher.submit(["x"])
        gate.set()
        rows = await big
        await batcher.close()
        return rows

    assert len(run(main())) == 10
