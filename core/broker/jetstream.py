"""NATS JetStream: the stream, its consumers, publishing, pulling, deleting, depths.

`TaskBroker` is asyncio; `BrokerThread` runs one on a background event loop for synchronous
callers (the web process, the command line). The facts behind the choices here (no per-message
priority, no-wait pulls through an inbox, delete by sequence without erasing) are in
docs/architecture.md, "JetStream facts".
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import threading
import time
from typing import Any, Callable, Coroutine, Iterable, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NoStreamResponseError, NotFoundError

from core.broker.messages import DOORBELL_SUBJECT, Published, Pulled, TaskMessage, consumer_name
from core.errors import BrokerUnavailable
from core.priority import BUCKETS_IN_ORDER, PHASES, SUBJECT_ROOT, subject_for
from core.settings import Settings

log = logging.getLogger(__name__)

_NO_MESSAGES_STATUSES = {"404", "408"}
_NO_STREAM_STATUS = "503"  # no responders: the stream or the consumer is gone
TOPOLOGY_RECHECK_SECONDS = 2.0

T = TypeVar("T")


def nats_error(error: BaseException) -> BrokerUnavailable:
    text = str(error).strip() or type(error).__name__
    return BrokerUnavailable(f"broker unavailable: {text.splitlines()[0]}")


class TaskBroker:
    """One NATS connection and the JetStream operations Switchyard needs."""

    def __init__(self, settings: Settings, url: str):
        self.settings = settings
        self.url = url
        self.stream = settings.stream_name
        self.nc: NATS | None = None
        self._pull_inbox: str | None = None
        # Created here, bound to the event loop that first uses them (Python 3.10+).
        self._pull_queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._pull_lock = asyncio.Lock()
        self._pull_counter = 0
        self._topology_lock = asyncio.Lock()
        self._topology_checked = 0.0
        # Set when the stream had to be created again (a broker that lost its store): whoever
        # holds the tasks' rows republishes them (the reconciler).
        self.topology_restored = asyncio.Event()

    # -- connection -------------------------------------------------------------------------

    async def connect(
        self,
        *,
        retry_forever: bool = False,
        name: str = "switchyard",
        url_source: Callable[[], str | None] | None = None,
    ) -> None:
        """Connect once (a clear error when the broker is down) or, for daemons, until it works.
        `url_source` says where the broker is now, before every attempt (an embedded broker that
        came back on another port)."""
        delay = 0.2
        while True:
            if url_source is not None:
                self.url = url_source() or self.url
            try:
                self.nc = await nats.connect(
                    [server.strip() for server in self.url.split(",") if server.strip()],
                    name=name,
                    connect_timeout=self.settings.broker_timeout_seconds,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._on_error,
                    reconnected_cb=self._on_reconnected,
                )
                self.js = self.nc.jetstream(timeout=self.settings.broker_timeout_seconds)
                self.jsm = self.nc.jsm(timeout=self.settings.broker_timeout_seconds)
                return
            except Exception as error:  # nats-py raises several unrelated types here
                if not retry_forever:
                    raise nats_error(error) from error
                log.warning("broker at %s unreachable (%s); retrying", self.url, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_error(self, error: Exception) -> None:
        log.debug("nats: %s", error)

    async def _on_reconnected(self) -> None:
        """A broker that restarted may have lost its store: make sure the stream is there."""
        asyncio.ensure_future(self.recover_topology(force=True))

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as error:  # the server is already gone: nothing left to drain
                log.debug("nats: drain on close: %s", error)
                try:
                    await self.nc.close()
                except Exception as error:
                    log.debug("nats: close: %s", error)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def client(self) -> NATS:
        """The connection; BrokerUnavailable before connect()."""
        if self.nc is None:
            raise BrokerUnavailable("broker unavailable: not connected")
        return self.nc

    # -- topology ---------------------------------------------------------------------------

    async def recover_topology(self, *, force: bool = False) -> bool:
        """Create the stream and consumers again if they are gone (after a reconnect, or when a
        call said "stream not found"). At most once every TOPOLOGY_RECHECK_SECONDS unless forced.
        True if the stream had to be created."""
        async with self._topology_lock:
            now = time.monotonic()
            if not force and now - self._topology_checked < TOPOLOGY_RECHECK_SECONDS:
                return False
            self._topology_checked = now
            try:
                created = await self.ensure_topology()
            except BrokerUnavailable as error:
                log.warning("stream and consumers not checked: %s", error)
                return False
        if created:
            log.warning("stream %s was missing and has been created again", self.stream)
            self.topology_restored.set()
        return created

    async def stream_exists(self) -> bool:
        try:
            await self.jsm.stream_info(self.stream)
            return True
        except NotFoundError:
            return False
        except Exception as error:
            raise nats_error(error) from error

    async def ensure_topology(self) -> bool:
        """Create (or bring up to date) the WorkQueue stream and one durable consumer per
        category x phase x bucket. Safe to call from every process at every start. True if the
        stream had to be created."""
        created = False
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{SUBJECT_ROOT}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self.settings.stream_replicas,
            duplicate_window=self.settings.duplicate_window_seconds,
        )
        try:
            try:
                info = await self.jsm.stream_info(self.stream)
            except NotFoundError:
                await self.jsm.add_stream(config)
                created = True
            else:
                if info.config.retention != api.RetentionPolicy.WORK_QUEUE:
                    raise BrokerUnavailable(
                        f"stream {self.stream} exists but is not a WorkQueue stream; "
                        "delete it or set SWITCHYARD_STREAM_NAME"
                    )
                if info.config.duplicate_window != config.duplicate_window:
                    info.config.duplicate_window = config.duplicate_window
                    await self.jsm.update_stream(info.config)
            existing = {c.name for c in await self.jsm.consumers_info(self.stream)}
            for category in self.settings.categories:
                for phase in PHASES:
                    for bucket in BUCKETS_IN_ORDER:
                        name = consumer_name(category, phase, bucket)
                        if name in existing:
                            continue
                        await self.jsm.add_consumer(
                            self.stream,
                            api.ConsumerConfig(
                                durable_name=name,
                                filter_subject=subject_for(category, phase, bucket),
                                ack_policy=api.AckPolicy.EXPLICIT,
                                ack_wait=self.settings.ack_wait_seconds,
                                max_deliver=-1,
                                max_ack_pending=-1,
                                max_waiting=4096,
                            ),
                        )
        except BrokerUnavailable:
            raise
        except Exception as error:
            raise nats_error(error) from error
        return created

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, messages: Iterable[TaskMessage]) -> list[Published | Exception]:
        """Publish pipelined; one result per message, in order. Rings the doorbell once.

        One deadline covers the whole batch: a per-message timer (nats-py's `wait_stall`, or
        wait_for per ack) costs more than the publish itself.
        """
        messages = list(messages)
        if not messages:
            return []
        results = await self._publish_once(messages)
        lost = [i for i, r in enumerate(results) if isinstance(r, NoStreamResponseError)]
        if lost:  # no stream listens on tasks.>: the broker lost it; create it and try once more
            await self.recover_topology(force=True)
            again = await self._publish_once([messages[i] for i in lost])
            for index, result in zip(lost, again):
                results[index] = result
        published = sorted({r.message.subject for r in results if isinstance(r, Published)})
        if published:
            await self.ring(published)
        return results

    async def _publish_once(self, messages: list[TaskMessage]) -> list[Published | Exception]:
        futures: list[asyncio.Future | Exception] = []
        try:
            async with asyncio.timeout(self.settings.broker_timeout_seconds):
                for message in messages:
                    try:
                        futures.append(
                            await self.js.publish_async(
                                message.subject, message.encode(), headers={api.Header.MSG_ID: message.msg_id}
                            )
                        )
                    except Exception as error:  # closed connection, outbound buffer full
                        futures.append(error)
                pending = [f for f in futures if isinstance(f, asyncio.Future)]
                if pending:
                    await asyncio.wait(pending)
        except TimeoutError:
            pass
        results: list[Published | Exception] = []
        for message, future in zip(messages, futures):
            results.append(_publish_result(message, future))
        for message in messages[len(futures) :]:
            results.append(BrokerUnavailable("broker unavailable: no answer in time"))
        return results

    async def ring(self, subjects: Iterable[str] = ()) -> None:
        """Wake idle workers and tell them which subjects have new messages (empty: any).
        Best effort: a worker re-sweeps every few seconds anyway."""
        try:
            await self.client.publish(DOORBELL_SUBJECT, "\n".join(subjects).encode())
        except Exception as error:
            log.debug("doorbell not rung: %s", error)

    async def subscribe_doorbell(self, callback: Callable[[list[str]], None]) -> None:
        """callback(subjects): the subjects a publisher named, or [] for "look everywhere"."""

        async def handler(msg: Msg) -> None:
            callback([s for s in msg.data.decode(errors="replace").split("\n") if s])

        await self.client.subscribe(DOORBELL_SUBJECT, cb=handler)

    # -- removing and checking messages -----------------------------------------------------

    async def delete_message(self, stream_seq: int) -> bool:
        """Delete one message by sequence without erasing its bytes (4-6x faster than
        nats-py's delete_msg). False when it is already gone."""
        reply = await self._api_request(
            f"$JS.API.STREAM.MSG.DELETE.{self.stream}", {"seq": stream_seq, "no_erase": True}
        )
        return bool(reply.get("success"))

    async def discard(self, stream_seqs: Iterable[int]) -> None:
        """Best effort: delete messages that are known to be stale (a stale message left behind
        is dropped unrun by the worker that pulls it; deleting it keeps depths honest)."""
        for seq in stream_seqs:
            try:
                await self.delete_message(seq)
            except BrokerUnavailable as error:
                log.info("stale message %s not deleted (%s); workers will drop it", seq, error)

    async def message_at(self, stream_seq: int) -> TaskMessage | None:
        """The task message stored at this sequence, or None if there is none."""
        reply = await self._api_request(f"$JS.API.STREAM.MSG.GET.{self.stream}", {"seq": stream_seq})
        stored = reply.get("message")
        if not stored:
            return None
        try:
            body = json.loads(base64.b64decode(stored.get("data") or ""))
            return TaskMessage(str(body["task_id"]), int(body["generation"]), stored.get("subject", ""))
        except (ValueError, KeyError, TypeError):
            return None

    async def _api_request(self, subject: str, body: dict) -> dict:
        try:
            msg = await self.client.request(
                subject, json.dumps(body).encode(), timeout=self.settings.broker_timeout_seconds
            )
        except Exception as error:
            raise nats_error(error) from error
        reply = json.loads(msg.data)
        refusal = reply.get("error")
        if refusal and refusal.get("err_code") == 10059:  # stream not found
            asyncio.ensure_future(self.recover_topology())
        if refusal and refusal.get("err_code") not in (10037, 10057):  # "no message found"
            raise BrokerUnavailable(f"broker refused {subject.split('.')[3].lower()}: {refusal.get('description')}")
        return reply

    # -- pulling ----------------------------------------------------------------------------

    async def pull_no_wait(self, consumer: str, batch: int) -> Pulled:
        """Take up to `batch` waiting messages from one consumer without waiting for new ones.
        `exhausted` says the consumer answered that it had no more (not a timeout).

        nc.request() cannot do this (the reply arrives on the message's own subject), so pulls
        go to an inbox subscription of our own; one pull is in flight at a time. While the
        connection is down a pull fails at once (BrokerUnavailable) instead of waiting out its
        timeout: a sweep over every consumer would take minutes.
        """
        if not self.connected:
            raise BrokerUnavailable("broker unavailable: not connected")
        if self._pull_inbox is None:
            self._pull_inbox = self.client.new_inbox()
            await self.client.subscribe(f"{self._pull_inbox}.*", cb=self._pull_queue.put)
        async with self._pull_lock:
            self._pull_counter += 1
            reply_to = f"{self._pull_inbox}.{self._pull_counter}"
            request = json.dumps({"batch": batch, "no_wait": True}).encode()
            try:
                await self.client.publish(
                    f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}", request, reply=reply_to
                )
            except Exception as error:
                raise nats_error(error) from error
            messages: list[Msg] = []
            exhausted = False
            try:
                async with asyncio.timeout(self.settings.broker_timeout_seconds):
                    while len(messages) < batch:
                        msg = await self._pull_queue.get()
                        status = msg.headers.get("Status") if msg.headers else None
                        if status is None and msg.reply:
                            messages.append(msg)  # a late message of an earlier pull is still ours
                        elif msg.subject == reply_to and status in _NO_MESSAGES_STATUSES:
                            exhausted = True
                            break
                        elif msg.subject == reply_to:  # 409, 503: refused or not ready; try again later
                            if status == _NO_STREAM_STATUS:
                                asyncio.ensure_future(self.recover_topology())
                            break
            except TimeoutError:
                pass
            return Pulled(messages, exhausted)

    # -- depths -----------------------------------------------------------------------------

    async def subject_counts(self) -> dict[str, int]:
        """Messages waiting per subject (one stream_info call)."""
        try:
            info = await self.jsm.stream_info(self.stream, subjects_filter=f"{SUBJECT_ROOT}.>")
        except NotFoundError:
            await self.recover_topology(force=True)
            try:
                info = await self.jsm.stream_info(self.stream, subjects_filter=f"{SUBJECT_ROOT}.>")
            except Exception as error:
                raise BrokerUnavailable(f"broker unavailable: stream {self.stream} not found ({error})") from None
        except Exception as error:
            raise nats_error(error) from error
        return dict(info.state.subjects or {})


def _publish_result(message: TaskMessage, future: asyncio.Future | Exception) -> Published | Exception:
    if isinstance(future, Exception):
        return future
    if not future.done():
        future.cancel()
        return BrokerUnavailable("broker unavailable: no publish acknowledgement in time")
    if future.cancelled():
        return BrokerUnavailable("broker unavailable: publish cancelled")
    error = future.exception()
    if error is not None:
        return error if isinstance(error, Exception) else BrokerUnavailable(f"broker unavailable: {error}")
    return Published(message, future.result().seq)


class BrokerThread:
    """A TaskBroker on its own event loop thread, for synchronous code."""

    def __init__(self, settings: Settings, url: str, *, name: str = "switchyard"):
        self.broker = TaskBroker(settings, url)
        self._timeout = settings.broker_timeout_seconds * 3
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-loop", daemon=True)
        self._thread.start()
        self._name = name

    def connect(self, *, ensure_topology: bool = True) -> "BrokerThread":
        self.run(self.broker.connect(name=self._name))
        if ensure_topology:
            self.run(self.broker.ensure_topology())
        return self

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self._timeout)
        except TimeoutError:
            future.cancel()
            raise BrokerUnavailable("broker unavailable: no answer in time") from None

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Start a coroutine on the broker's loop without waiting for it."""
        asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def close(self) -> None:
        try:
            self.run(self.broker.close())
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
