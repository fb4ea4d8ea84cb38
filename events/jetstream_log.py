"""The event log on a JetStream stream.

- Appends of more than one message use JetStream's atomic batch publish (nats-server >= 2.12):
  all messages are stored or none, and every `Nats-Expected-Last-Subject-Sequence` guard in the
  batch is checked at commit under the stream's lock.
- A lone message is a plain publish with its guard, which JetStream applies atomically too.
- Appends made while a batch is committing are grouped into the next atomic batch (group commit).
- The writer's reads (the last or first message of a subject) ask the stream leader
  (STREAM.MSG.GET): a decision such as "no such flow" must see every acknowledged append, and a
  direct get answered by a follower may not (a flow acknowledged as created was once reported
  missing by an update that a lagging replica answered).
- Other reads use the direct-get API (no consumer is created): pages of messages after a
  position, for audit, replay and history. Any replica may answer a direct get, and NATS may route
  one to a replica whose server hangs (tests/integration/test_cluster_faults.py saw up to a third
  of them lost while a node was SIGSTOPped), so an unanswered direct get is asked again after a
  short wait, until the log's timeout: a hung replica costs a read a fraction of a second, not
  the whole timeout.
  (events/paging.py reads the next page ahead.)
Every nats-py error is translated into the log's own errors here and nowhere else, connecting
included for the tools that open a connection only to read the log (`open_log`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy

from events.contract.errors import JetStreamRefused, LogUnavailable
from events.contract.subjects import Subjects
from events.group_commit import GroupCommit
from events.jetstream_delivery import Arrivals, BatchReply, delivered, nanosecond_time
from events.log import MAX_APPEND_MESSAGES, AppendMessage, StoredMessage, WrongExpectedPosition
from events.paging import read_ahead
from events.raw_delivery import supports_raw

__all__ = ["JetStreamLog", "StreamSettings", "open_log"]

log = logging.getLogger(__name__)

# A failed `Nats-Expected-Last-Subject-Sequence` guard. A single server says 10071 (with the
# sequence it found); a replicated stream's leader may say 10164, the same refusal without the
# number (nats-py's KV accepts both for the same reason).
_WRONG_LAST_SEQUENCE = (10071, 10164)  # JSStreamWrongLastSequenceErrF, ...ConstantErr
_TOO_MANY_BATCHES = 10210  # JSAtomicPublishTooManyInflight
_STREAM_NOT_FOUND = 10059
_NO_MESSAGE_FOUND = 10037
# Every nats-py error (the JetStream ones derive from it too), and asyncio's timeouts.
_NATS_ERRORS = (NatsError, asyncio.TimeoutError)
# Atomic batches per stream that nats-server accepts at once (ADR-50); above it, wait our turn.
_MAX_BATCHES_IN_FLIGHT = 40
_READ_PAGE = 1000
# The first wait for a direct get's answer (a healthy one takes a millisecond or two); each
# further attempt waits twice as long, all within the log's timeout.
_READ_ATTEMPT_S = 0.5
# A question for the stream leader is asked again at most this far apart: while the replicas
# elect a new leader (4-9 s after the old one stopped answering: nats-server's raft election
# timeout), nobody answers it, and once one is elected the next attempt gets its answer.
_LEADER_ATTEMPT_MAX_S = 1.0

_Answer = TypeVar("_Answer")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    name: str = "FLOWS"
    replicas: int = 1
    duplicate_window_s: float = 120.0


class JetStreamLog:
    """The `EventLog` of the service, over one nats-py connection."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        stream: str,
        timeout_s: float = 5.0,
        pipeline: int = 1,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._stream = stream
        self._timeout = timeout_s
        self._api = "$JS.API"
        self._batch_slots = asyncio.Semaphore(_MAX_BATCHES_IN_FLIGHT)
        self._inbox: str | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._group = GroupCommit(self._append_now, MAX_APPEND_MESSAGES, pipeline)

    @property
    def subjects(self) -> Subjects:
        """The subjects of the stream this log reads and writes."""
        return self._subjects

    @property
    def stream(self) -> str:
        return self._stream

    # -- set-up ------------------------------------------------------------------------------
    async def ensure_stream(self, settings: StreamSettings) -> None:
        """Create the stream, or bring an existing one's settings up to date."""
        config: dict[str, Any] = {
            "name": self._stream,
            "subjects": self._subjects.stream_subjects,
            "retention": "limits",
            "storage": "file",
            "num_replicas": settings.replicas,
            "duplicate_window": int(settings.duplicate_window_s * 1_000_000_000),
            "allow_direct": True,
            "allow_atomic": True,
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msg_size": -1,
            "max_consumers": -1,
        }
        info = await self._api_request(f"STREAM.INFO.{self._stream}", b"", allow_missing=True)
        if info is None:
            await self._api_request(f"STREAM.CREATE.{self._stream}", orjson.dumps(config))
            log.info("created event log stream %s for %s", self._stream, config["subjects"])
            return
        current = info["config"]
        wanted = {**current, **config}
        if wanted != current:
            await self._api_request(f"STREAM.UPDATE.{self._stream}", orjson.dumps(wanted))
            log.info("updated the settings of event log stream %s", self._stream)

    # -- appending ---------------------------------------------------------------------------
    async def append(self, messages: Sequence[AppendMessage]) -> int:
        if not messages:
            raise ValueError("append needs at least one message")
        if len(messages) > MAX_APPEND_MESSAGES:
            raise ValueError(f"an atomic append holds at most {MAX_APPEND_MESSAGES} messages")
        # Concurrent appends share one atomic batch (events/group_commit.py): the server's
        # serialised commit of a batch is the write path's limit, not our round trips.
        return await self._group.append(messages)

    async def _append_now(self, messages: Sequence[AppendMessage]) -> int:
        if len(messages) == 1:
            only = messages[0]
            reply = await self._request(only.subject, only.data, _guard(only))
            return _position_from_ack(reply, self._stream)
        # The server takes a bounded number of atomic batches per stream at once (other
        # service instances count too): past it, wait a little and try again.
        deadline = asyncio.get_running_loop().time() + self._timeout
        delay = 0.002
        while True:
            try:
                async with self._batch_slots:
                    return await self._append_batch(messages)
            except _TooManyBatches:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise LogUnavailable(
                        f"stream {self._stream} kept refusing atomic appends: too many in flight "
                        f"for {self._timeout:.0f}s; retry later"
                    ) from None
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)

    async def _append_batch(self, messages: Sequence[AppendMessage]) -> int:
        batch_id = uuid.uuid4().hex
        futures: list[asyncio.Future[Msg]] = []
        last = len(messages)
        try:
            inbox = await self._ensure_inbox()
            for number, message in enumerate(messages, start=1):
                headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
                headers.update(_guard(message))
                reply = ""
                # The first message of a batch must be a request (the server answers with an
                # empty ack or an error); the commit answers with the PubAck. The messages in
                # between need no answer. All are sent without waiting: one connection keeps
                # their order, so a batch costs one round trip.
                if number in (1, last):
                    token = uuid.uuid4().hex
                    future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
                    self._waiting[token] = future
                    futures.append(future)
                    reply = f"{inbox}.{token}"
                if number == last:
                    headers["Nats-Batch-Commit"] = "1"
                await self._nc.publish(message.subject, message.data, reply=reply, headers=headers)
            replies = await asyncio.wait_for(asyncio.gather(*futures), self._timeout)
        except _NATS_ERRORS as exc:
            raise LogUnavailable(
                f"the event log (stream {self._stream}) did not acknowledge an append: "
                f"{type(exc).__name__}; check that nats-server is up and JetStream is enabled"
            ) from None
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
            for token in [t for t, f in self._waiting.items() if f.done()]:
                self._waiting.pop(token, None)
        if len(replies) > 1 and replies[0].data:
            # The start of the batch was refused; the commit's answer says why as well.
            _position_from_ack(replies[0], self._stream)
        return _position_from_ack(replies[-1], self._stream)

    async def _ensure_inbox(self) -> str:
        if self._inbox is None:
            inbox = self._nc.new_inbox()
            await self._nc.subscribe(f"{inbox}.*", cb=self._on_reply)
            self._inbox = inbox
        return self._inbox

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject.rsplit(".", 1)[-1], None)
        if future is not None and not future.done():
            future.set_result(msg)

    # -- reading -----------------------------------------------------------------------------
    async def last(self, subject: str) -> StoredMessage | None:
        return await self._leader_get({"last_by_subj": subject})

    async def first(self, subject: str) -> StoredMessage | None:
        return await self._leader_get({"seq": 1, "next_by_subj": subject})

    async def last_position(self) -> int:
        """The stream's last sequence, as its leader reports it. A replica that believes the
        stream has no leader (an election under way) answers STREAM.INFO with its own state,
        which may lag the acknowledged end, and names no leader (nats-server
        server/jetstream_api.go, jsStreamInfoRequest: `isGroupLeaderless`): such an answer is
        not taken; the question is asked again, a little later, until the log's timeout."""
        endpoint = f"STREAM.INFO.{self._stream}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        pause = _READ_ATTEMPT_S / 10
        while True:
            info = _api_body(endpoint, await self._ask_leader(endpoint, b""))
            # A stream on a server outside a cluster names that server as its leader too.
            cluster = info.get("cluster")
            if cluster is None or cluster.get("leader"):
                return int(info["state"]["last_seq"])
            if loop.time() + pause > deadline:
                raise LogUnavailable(
                    f"the event log (stream {self._stream}) has no leader: its replicas are "
                    "electing one; retry"
                )
            await asyncio.sleep(pause)  # a retry's pause: an election takes seconds
            pause = min(pause * 2, _READ_ATTEMPT_S)

    async def read(
        self, after: int, limit: int, subject_filter: str | None = None
    ) -> list[StoredMessage]:
        if limit <= _READ_PAGE:
            return await self._read_page(after, limit, subject_filter)
        # A long read in requests of a bounded size, so no reply grows without limit.
        found: list[StoredMessage] = []
        pages = self.pages(after, max_batch=_READ_PAGE, subject_filter=subject_filter)
        async with contextlib.aclosing(pages):
            async for page in pages:
                found.extend(page)
                if len(found) >= limit:
                    break
        return found[:limit]

    def pages(
        self,
        after: int,
        until: int | None = None,
        max_batch: int = _READ_PAGE,
        subject_filter: str | None = None,
    ) -> AsyncGenerator[list[StoredMessage], None]:
        read_page = functools.partial(self._read_page, subject_filter=subject_filter)
        return read_ahead(read_page, after, until, max_batch)

    async def _read_page(
        self, after: int, limit: int, subject_filter: str | None = None
    ) -> list[StoredMessage]:
        """One batched direct get (no consumer is created)."""
        request: dict[str, Any] = {"seq": after + 1, "batch": limit}
        if subject_filter:
            request["next_by_subj"] = subject_filter
        return await self._direct_get_batch(request)

    async def follow(
        self, after: int, max_batch: int = 500
    ) -> AsyncGenerator[list[StoredMessage], None]:
        """Every message after a position, live, in order, as batches of what has arrived.

        Behind the log's end it reads pages (batched direct gets: each asks for what the
        reader can take next); at the end it follows live with an ordered push consumer,
        whose batches are whatever has arrived, up to `max_batch`, so a busy log gives big
        batches and a quiet one a batch as soon as a message comes. A push consumer is not
        for catching up: JetStream pushes a backlog far faster than it is folded, and what
        nats-py cannot queue it drops after counting it delivered, so its ordered consumer
        never notices the gap (a 1M-message backlog read at ~20k messages/s lost ~3% of its
        messages that way). So the live consumer delivers into bounded `Arrivals`; when they
        overflow, the follower has fallen behind: it drops the consumer and reads pages again
        from what it took.
        """
        position = after
        while True:
            pages = self.pages(position, max_batch=max_batch)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    yield page
                    position = page[-1].position
            live = self._live(position, max_batch)
            async with contextlib.aclosing(live):  # its consumer goes when the follower does
                async for batch in live:
                    yield batch
                    position = batch[-1].position

    async def _live(self, after: int, max_batch: int) -> AsyncGenerator[list[StoredMessage], None]:
        """What an ordered consumer delivers after a position, until more arrives than a few
        batches (then it ends, and the caller reads pages)."""
        arrivals = Arrivals(self._nc, limit=4 * max_batch, convert=delivered)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else DeliverPolicy.ALL,
            opt_start_seq=after + 1 if after else None,
        )
        subscribing = asyncio.ensure_future(
            self._nc.jetstream().subscribe(
                f"{self._subjects.prefix}.>",
                stream=self._stream,
                cb=arrivals.add,
                ordered_consumer=True,
                config=config,
                idle_heartbeat=2.0,
                # No limit, so nats-py never drops (unnoticed, see `follow`): the callback
                # never waits, so its queue stays short; `Arrivals` bound what is held.
                pending_msgs_limit=0,
                pending_bytes_limit=0,
            )
        )
        try:
            # In a task of its own, awaited through a shield: creating the consumer is a
            # nats-py request, which waits with asyncio.wait_for, and on Python 3.11 a
            # cancellation meeting wait_for's completion is lost (CPython gh-86296). The
            # follower starts its consumer just as it catches up, which is when a stopping
            # service (or a test that waited for the catch-up) cancels it: it hung there.
            subscription = await asyncio.shield(subscribing)
        except asyncio.CancelledError:
            subscribing.add_done_callback(self._unsubscribe_when_made)
            raise
        except _NATS_ERRORS as exc:
            raise self._unavailable("could not start following", exc) from None
        try:
            while True:
                try:
                    batch = await arrivals.take(max_batch)
                except _NATS_ERRORS as exc:
                    raise self._unavailable("stopped delivering while following", exc) from None
                if not batch:  # overflowed, and all it held was taken
                    return
                yield batch
        finally:
            await _unsubscribe(subscription)

    def _unsubscribe_when_made(self, subscribing: asyncio.Future[Any]) -> None:
        """A consumer made for a follower that was cancelled meanwhile goes at once."""
        if not subscribing.cancelled() and subscribing.exception() is None:
            task = asyncio.ensure_future(_unsubscribe(subscribing.result()))
            self._background.add(task)  # held until done, or it could be collected first
            task.add_done_callback(self._background.discard)

    async def _leader_get(self, request: dict[str, Any]) -> StoredMessage | None:
        """One message, as the stream leader has it: after every acknowledged append."""
        endpoint = f"STREAM.MSG.GET.{self._stream}"
        reply = await self._ask_leader(endpoint, orjson.dumps(request))
        body: dict[str, Any] = orjson.loads(reply.data)
        error = body.get("error")
        if error:
            if error.get("err_code") == _NO_MESSAGE_FOUND:
                return None
            raise JetStreamRefused(
                endpoint, str(error.get("description")), int(error.get("err_code", 0))
            )
        message = body["message"]
        return StoredMessage(
            subject=message["subject"],
            data=base64.b64decode(message.get("data") or ""),
            position=int(message["seq"]),
            time=nanosecond_time(message.get("time")),
        )

    async def _direct_get_batch(self, request: dict[str, Any]) -> list[StoredMessage]:
        subject = f"{self._api}.DIRECT.GET.{self._stream}"
        data = orjson.dumps(request)
        subscriptions: list[Subscription] = []

        async def first(wait: float) -> BatchReply:
            # One replica answers a batch, in order, on the request's inbox; each attempt has
            # its own inbox, so a late answer to an earlier one never mixes in.
            reply = BatchReply()
            inbox = self._nc.new_inbox()
            if supports_raw(self._nc):  # ~15 µs a message less (events/raw_delivery.py)
                subscriptions.append(await self._nc.subscribe_raw(inbox, reply.add_raw))
            else:
                subscriptions.append(await self._nc.subscribe(inbox, cb=reply.add))
            await self._nc.publish(subject, data, reply=subscriptions[-1].subject)
            # asyncio.wait, not wait_for: on Python 3.11 a cancellation that meets wait_for's
            # completion is lost (CPython gh-86296), and a follower reads pages too: a
            # stopping service or worker would wait for ever on a follower that never ends.
            if not (await asyncio.wait({reply.started}, timeout=wait))[0]:
                raise TimeoutError
            return reply

        try:
            reply = await self._read_attempts(subject, first)
            # The rest of the batch follows; give up only when it stops coming.
            while not reply.ended.done():
                received = len(reply.messages)
                await asyncio.wait({reply.ended}, timeout=self._timeout)
                if not reply.ended.done() and len(reply.messages) == received:
                    raise TimeoutError
            status, description = reply.ended.result()
            if status not in {"204", "404"}:  # end of batch / nothing there
                raise LogUnavailable(
                    f"reading stream {self._stream} failed with status {status}: {description}"
                )
            return reply.messages
        except _NATS_ERRORS as exc:
            raise self._unavailable("did not answer a read", exc) from None
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(*_NATS_ERRORS):  # a closed connection has none
                    await subscription.unsubscribe()

    def _unavailable(self, what: str, exc: BaseException) -> LogUnavailable:
        """NATS did not answer (the message names the exception: TimeoutError, ...)."""
        return LogUnavailable(
            f"the event log (stream {self._stream}) {what}: {type(exc).__name__}; "
            "check that nats-server is up"
        )

    def _no_stream(self, subject: str) -> LogUnavailable:
        return LogUnavailable(
            f"no JetStream stream answers on {subject!r}: the stream {self._stream} is "
            "missing or JetStream is disabled on the server"
        )

    # -- plumbing ----------------------------------------------------------------------------
    async def _ask_leader(self, endpoint: str, data: bytes) -> Msg:
        """A JetStream API question only the stream's leader answers (STREAM.MSG.GET,
        STREAM.INFO; asking again is harmless). Every server subscribes to the API and the
        others stay silent, so a question that reached a hung leader, or came while there was
        none, is never answered: it is asked again, at most `_LEADER_ATTEMPT_MAX_S` apart,
        until the log's timeout, and a command waits for an election, not for a timeout."""
        subject = f"{self._api}.{endpoint}"

        async def ask(wait: float) -> Msg:
            return await self._nc.request(subject, data, timeout=wait)

        return await self._read_attempts(subject, ask, max_wait=_LEADER_ATTEMPT_MAX_S)

    async def _read_attempts(
        self,
        subject: str,
        attempt: Callable[[float], Awaitable[_Answer]],
        max_wait: float | None = None,
    ) -> _Answer:
        """`attempt(wait)` sends a read and waits up to `wait` for its answer: sent again
        after each timeout, waiting longer each time (up to `max_wait`), until the log's
        timeout is spent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        wait = _READ_ATTEMPT_S
        while True:
            remaining = deadline - loop.time()
            try:
                return await attempt(min(wait, remaining))
            except NoRespondersError:
                raise self._no_stream(subject) from None
            except (TimeoutError, NatsTimeoutError) as exc:
                if remaining <= wait:
                    raise self._unavailable(f"did not answer on {subject!r}", exc) from None
            except _NATS_ERRORS as exc:
                raise self._unavailable(f"did not answer on {subject!r}", exc) from None
            wait = wait * 2 if max_wait is None else min(wait * 2, max_wait)

    async def _request(self, subject: str, data: bytes, headers: dict[str, str] | None) -> Msg:
        try:
            return await self._nc.request(subject, data, timeout=self._timeout, headers=headers)
        except NoRespondersError:
            raise self._no_stream(subject) from None
        except _NATS_ERRORS as exc:
            raise self._unavailable(f"did not answer on {subject!r}", exc) from None

    async def _api_request(
        self, endpoint: str, data: bytes, *, allow_missing: bool = False
    ) -> dict[str, Any] | None:
        reply = await self._request(f"{self._api}.{endpoint}", data, None)
        try:
            return _api_body(endpoint, reply)
        except JetStreamRefused as refused:
            if allow_missing and refused.code == _STREAM_NOT_FOUND:
                return None
            raise


def _api_body(endpoint: str, reply: Msg) -> dict[str, Any]:
    """A JetStream API answer's body; its error, if any, as JetStreamRefused."""
    body: dict[str, Any] = orjson.loads(reply.data)
    error = body.get("error")
    if error:
        raise JetStreamRefused(
            endpoint, str(error.get("description")), int(error.get("err_code", 0))
        )
    return body


class _TooManyBatches(Exception):
    """The server refused to start another atomic batch on this stream for now."""


def _guard(message: AppendMessage) -> dict[str, str]:
    if message.expect_last is None:
        return {}
    return {"Nats-Expected-Last-Subject-Sequence": str(message.expect_last)}


def _position_from_ack(reply: Msg, stream: str) -> int:
    if reply.headers and reply.headers.get("Status") == "503":
        raise LogUnavailable(
            f"no JetStream stream stores {reply.headers.get('Nats-Subject', 'that subject')}: "
            f"the stream {stream} is missing or JetStream is disabled"
        )
    if not reply.data:
        raise LogUnavailable(f"stream {stream} sent an empty acknowledgement")
    ack: dict[str, Any] = orjson.loads(reply.data)
    error = ack.get("error")
    if error:
        if error.get("err_code") in _WRONG_LAST_SEQUENCE:
            raise WrongExpectedPosition(error.get("description", "wrong last sequence"))
        if error.get("err_code") == _TOO_MANY_BATCHES:
            raise _TooManyBatches()
        raise LogUnavailable(
            f"stream {stream} refused an append: {error.get('description')} "
            f"(code {error.get('err_code')})"
        )
    return int(ack["seq"])


async def _unsubscribe(subscription: Subscription) -> None:
    try:
        await subscription.unsubscribe()
    except Exception:  # the connection may be closing; nothing to clean then
        log.debug("unsubscribe of the log follower failed", exc_info=True)


@contextlib.asynccontextmanager
async def open_log(
    connect: Callable[[], Awaitable[NatsClient]], subjects: Subjects, stream: str, timeout_s: float
) -> AsyncIterator[JetStreamLog]:
    """The log on a connection of its own, closed on exit: for tools that connect only to read
    the log. A connection that cannot be made is LogUnavailable (its message kept as it was:
    it names the server, or says the credentials were refused)."""
    try:
        nc = await connect()
    except (*_NATS_ERRORS, OSError) as exc:
        raise LogUnavailable(str(exc) or type(exc).__name__) from exc
    try:
        yield JetStreamLog(nc, subjects, stream, timeout_s)
    finally:
        # Bounded: nats-py's close waits for the server to see the socket closed, and a tool
        # that was interrupted must exit now (its server-side state is ephemeral).
        await asyncio.wait({asyncio.ensure_future(nc.close())}, timeout=timeout_s)
