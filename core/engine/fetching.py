"""Which message a worker runs next (docs/architecture.md, "JetStream facts").

Priority comes from the worker: it pulls (no-wait) from the high bucket's consumers first,
then normal, then low, and takes the first hit; inside a bucket it rotates the starting
consumer so categories and phases share the bucket, each consumer being FIFO.

Two things keep that cheap:
- QueueHints remembers which consumers were empty, so a busy worker does not pull every
  consumer in scope for every task. Publishers ring the doorbell naming the subjects they
  published to, which marks those consumers non-empty again; every few seconds all are.
- MessageSource pulls several messages at once when tasks are short (as many as fit in about
  PREFETCH_WINDOW of run time), and holds them for the worker's slots. Held messages never
  jump a higher bucket: before one is handed out, the buckets above it are checked. A held
  message that waited HOLD_SECONDS (its slot got a long task) is handed back to the stream
  (nak) for another worker. It is not claimed yet, so holding it changes nothing in the
  database; if it was upgraded or cancelled meanwhile, its claim fails and it is dropped.
  A slot takes the held messages of one bucket together, as many as will start within
  CLAIM_AHEAD_SECONDS, and claims them in one transaction (core.engine.worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from core.broker.jetstream import TaskBroker
from core.broker.messages import Msg, subject_of_consumer

log = logging.getLogger(__name__)

PREFETCH_WINDOW_SECONDS = 0.05
CLAIM_AHEAD_SECONDS = 0.005
HOLD_SECONDS = 1.0


class QueueHints:
    """Which consumers may hold messages, so a sweep skips the ones known to be empty.

    A consumer is marked empty when a pull finds nothing, and non-empty again when a publisher
    rings the doorbell naming its subject, or at the next full sweep (every few seconds: a
    redelivery after ack_wait or a nak, or a doorbell that was lost, never waits longer).
    A doorbell that arrives while a pull is in flight wins over that pull's "empty" answer.
    """

    def __init__(self, consumers_by_bucket: list[list[str]], full_sweep_seconds: float):
        self._all = [name for names in consumers_by_bucket for name in names]
        self._by_subject = {subject_of_consumer(name): name for name in self._all}
        self._empty: set[str] = set()
        self._rings: dict[str, int] = dict.fromkeys(self._all, 0)
        self._interval = full_sweep_seconds
        self._next_full = 0.0

    def maybe_full_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_full:
            self._empty.clear()
            self._next_full = now + self._interval

    def seconds_to_full_sweep(self) -> float:
        return max(self._next_full - time.monotonic(), 0.0)

    def may_have_messages(self, consumer: str) -> bool:
        return consumer not in self._empty

    def rung(self, consumer: str) -> int:
        return self._rings[consumer]

    def emptied(self, consumer: str, rung_before_pull: int) -> None:
        if self._rings[consumer] == rung_before_pull:
            self._empty.add(consumer)

    def refilled(self, consumer: str) -> None:
        self._rings[consumer] += 1
        self._empty.discard(consumer)

    def rang(self, subjects: list[str]) -> bool:
        """A doorbell; True if it concerns a consumer in scope ([] means every consumer)."""
        names = [self._by_subject[s] for s in subjects if s in self._by_subject] if subjects else self._all
        for name in names:
            self.refilled(name)
        return bool(names)


@dataclass
class Held:
    msg: Msg
    bucket: int  # position in the worker's bucket order: 0 is its highest
    consumer: str
    since: float


class MessageSource:
    """Hands the worker's slots their next message, highest bucket first."""

    def __init__(
        self,
        broker: TaskBroker,
        consumers_by_bucket: list[list[str]],
        full_sweep_seconds: float,
        max_prefetch: int,
    ):
        self._broker = broker
        self._consumers = consumers_by_bucket
        self._rotation = [0] * len(consumers_by_bucket)
        self.hints = QueueHints(consumers_by_bucket, full_sweep_seconds)
        self._max_prefetch = max(1, max_prefetch)
        self._held: list[Held] = []  # by bucket, then arrival
        self._lock = asyncio.Lock()
        self._run_seconds = 1.0  # recent task run time; assume slow until tasks show otherwise
        self._rings = 0
        self._wake = asyncio.Event()

    async def next(self, most: int = 1) -> tuple[list[Msg], int]:
        """The next messages to run: the first held one and up to `most - 1` more of its bucket,
        in arrival order; none when every queue in scope is empty. The ticket goes to wait(): a
        doorbell rung after it was issued ends the wait at once."""
        async with self._lock:
            ticket = self._rings
            self.hints.maybe_full_sweep()
            while True:
                above = self._held[0].bucket if self._held else len(self._consumers)
                if await self._pull_above(above):
                    continue  # found work above everything held: look above that, then take it
                if not self._held:
                    return [], ticket
                bucket = self._held[0].bucket
                count = 1
                while count < min(most, len(self._held)) and self._held[count].bucket == bucket:
                    count += 1
                taken, self._held = self._held[:count], self._held[count:]
                return [held.msg for held in taken], ticket

    def claim_ahead(self) -> int:
        """How many messages a slot may claim at once: as many as recent run times say it will
        start within CLAIM_AHEAD_SECONDS (1 while tasks are slow or unknown)."""
        return max(1, min(int(CLAIM_AHEAD_SECONDS / max(self._run_seconds, 1e-6)), self._max_prefetch))

    async def wait(self, ticket: int, stop: asyncio.Event) -> None:
        """Idle until a doorbell rings, the next full sweep is due, or the worker stops."""
        wake = self._wake
        if self._rings != ticket:
            return
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.hints.seconds_to_full_sweep(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def doorbell(self, subjects: list[str]) -> None:
        if self.hints.rang(subjects):
            self._rings += 1
            self._wake.set()
            self._wake = asyncio.Event()

    def observe_run(self, seconds: float) -> None:
        self._run_seconds = 0.8 * self._run_seconds + 0.2 * seconds

    async def release(self, older_than: float = HOLD_SECONDS) -> int:
        """Hand back held messages that waited too long (all of them with older_than=0)."""
        cutoff = time.monotonic() - older_than
        stale = [h for h in self._held if h.since <= cutoff]
        if not stale:
            return 0
        self._held = [h for h in self._held if h.since > cutoff]
        for held in stale:
            self.hints.refilled(held.consumer)
            try:
                await held.msg.nak()
            except Exception as error:  # it comes back after ack_wait anyway
                log.info("held message not handed back: %s", error)
        return len(stale)

    def _batch(self) -> int:
        fits = int(PREFETCH_WINDOW_SECONDS / max(self._run_seconds, 1e-6))
        return max(1, min(fits, self._max_prefetch - len(self._held)))

    async def _pull_above(self, limit: int) -> bool:
        """Pull from the first consumer with messages in the buckets above `limit`; True if any."""
        for index in range(limit):
            consumers = self._consumers[index]
            start = self._rotation[index]
            for offset in range(len(consumers)):
                position = (start + offset) % len(consumers)
                consumer = consumers[position]
                if not self.hints.may_have_messages(consumer):
                    continue
                rung = self.hints.rung(consumer)
                pulled = await self._broker.pull_no_wait(consumer, self._batch())
                if pulled.exhausted:
                    self.hints.emptied(consumer, rung)
                if pulled.messages:
                    self._rotation[index] = (position + 1) % len(consumers)
                    now = time.monotonic()
                    self._held.extend(Held(m, index, consumer, now) for m in pulled.messages)
                    self._held.sort(key=lambda held: held.bucket)  # stable: arrival order within a bucket
                    return True
        return False
