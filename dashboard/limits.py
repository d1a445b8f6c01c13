"""What one client may cost the web process.

- RefusalLimiter: an address that keeps presenting no or invalid credentials is answered 429
  after REFUSALS_PER_MINUTE refusals in a minute, before anything is looked up or written.
- ReadGate: expensive reads (task lists, task pages, depths, history) take a seat: at most
  PER_USER_READS at once per user (more is answered 429 at once) and at most `seats` in the
  whole process, which leaves threads free for everything else (a sign-in, /api/v1/me, an
  action). A read that finds every seat taken waits up to SEAT_WAIT_SECONDS, then gets 503.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from core.errors import DatabaseUnavailable, NotAllowed

REFUSALS_PER_MINUTE = 120
RESERVED_THREADS = 2  # web threads expensive reads may never take (a process has web_threads)
PER_USER_READS = 2
SEAT_WAIT_SECONDS = 2.0
_MAX_TRACKED = 10_000


class TooMany(NotAllowed):
    """Refused for the rate, not the right: answered 429 with Retry-After."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class RefusalLimiter:
    def __init__(self, per_minute: int = REFUSALS_PER_MINUTE):
        self.per_minute = per_minute
        self._counts: dict[str | None, tuple[int, int]] = {}  # address -> (minute, refusals)
        self._lock = threading.Lock()

    def check(self, address: str | None) -> None:
        """TooMany if this address was refused too often this minute."""
        minute = int(time.time() // 60)
        with self._lock:
            seen_minute, count = self._counts.get(address, (minute, 0))
        if seen_minute == minute and count >= self.per_minute:
            raise TooMany(
                "too many requests without valid credentials from your address: try again in a minute",
                60 - time.time() % 60,
            )

    def refused(self, address: str | None) -> None:
        minute = int(time.time() // 60)
        with self._lock:
            if len(self._counts) >= _MAX_TRACKED:
                self._counts = {a: c for a, c in self._counts.items() if c[0] == minute}
            seen_minute, count = self._counts.get(address, (minute, 0))
            self._counts[address] = (minute, count + 1 if seen_minute == minute else 1)


class ReadGate:
    def __init__(self, seats: int, per_user: int = PER_USER_READS):
        self.per_user = per_user
        self._seats = threading.BoundedSemaphore(max(1, seats))
        self._reading: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def seat(self, user: str) -> Iterator[None]:
        with self._lock:
            if self._reading.get(user, 0) >= self.per_user:
                raise TooMany(f"{self.per_user} of your reads are still running: wait for them", 1)
            self._reading[user] = self._reading.get(user, 0) + 1
        try:
            if not self._seats.acquire(timeout=SEAT_WAIT_SECONDS):
                raise DatabaseUnavailable("the console is busy with other reads: try again in a moment")
            try:
                yield
            finally:
                self._seats.release()
        finally:
            with self._lock:
                left = self._reading[user] - 1
                if left:
                    self._reading[user] = left
                else:
                    del self._reading[user]
