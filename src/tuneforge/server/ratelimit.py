"""Token buckets: ``rate`` requests per minute, bursts up to ``rate``; one bucket per API
key (or, for invalid keys, per client address).

The buckets live in the server process: several ``tuneforge serve`` processes behind one
load balancer each allow the full rate.
"""

from __future__ import annotations

import math
import threading
import time

MAX_BUCKETS = 10_000  # beyond this, refilled buckets are forgotten


class RateLimiter:
    """In-process token buckets keyed by API key id (or client address).

    Args:
        per_minute: Sustained requests per minute per key; 0 disables limiting.
    """

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0: now), without taking one."""
        if self.capacity <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.refill

    def acquire(self, key: str) -> float:
        """Take one token; returns 0 if allowed, else seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_full(now)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.refill

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they equal a new one): memory stays bounded by
        the keys or addresses active in the last minute."""
        self._buckets = {
            k: (tokens, last)
            for k, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.refill < self.capacity
        }

    @staticmethod
    def retry_after(wait: float) -> str:
        """The ``Retry-After`` header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))
