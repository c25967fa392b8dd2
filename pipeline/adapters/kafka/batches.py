"""The locations topic, consumed in whole batches by librdkafka, committed only once handled.

Faust hands its agents one event at a time: several tasks, a lock, an Event and a loop
turn per message, which capped the worker at Faust's own rate (about 14,000 messages/s on
the bench machine, whatever the handler did). :class:`BatchConsumer` instead owns a plain
confluent-kafka consumer in a consumer group of its own and hands the event loop one
:class:`~pipeline.domain.targeting.locations.RawLocations` per ``consume()`` call: the
per-message cost on the worker's side is a few attribute reads.

Threads. One thread (``alertfeed-locations``) makes every call on the consumer: consume,
commit, close, and the rebalance callbacks librdkafka runs inside them. It puts each batch
into a small bounded queue on the event loop; the loop's task (:meth:`BatchConsumer.run`)
hands them to the handler, two at a time by default: while one batch's cards wait for the
broker's acknowledgement, the next is parsed and located (the handler keeps the order). A
full queue blocks the thread, so a handler that waits out a Redis or Kafka outage stops
consumption: that is the backpressure.

At least once. A batch's offsets become committable only after the handler returned (its
cards acknowledged by Kafka and recorded). The thread commits them every
``commit_interval_s`` (asynchronously), and synchronously when it gives partitions up:

* assignment is ``cooperative-sticky``: a rebalance revokes only the partitions that move;
* on a revoke, the thread waits until every batch already fetched (queued or being
  handled) is done, commits the revoked partitions' offsets, and only then returns from
  the callback and so lets the partitions go. Messages of a revoked partition that were
  fetched but not yet handed out are discarded by librdkafka and consumed again by the
  new owner, from the committed offset;
* a partition *lost* (this consumer was expelled from the group, e.g. after blocking past
  ``max.poll.interval.ms`` behind an outage) commits nothing more: its new owner starts
  from the last commit, and any duplicate card has the same ``event_id``.

A handler that raises, or a consumer error that is not retriable, ends :meth:`run` with
the exception (the Faust service then crashes the worker): nothing more is committed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.domain.targeting.locations import RawLocations
from pipeline.errors import BrokerUnavailable
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[RawLocations], Awaitable[None]]
_STOP = object()


class BatchConsumer:
    """Consumes ``topic`` in consumer group ``group_id`` and awaits ``handle`` on each batch
    of up to ``batch_size`` messages (fewer when ``batch_within_s`` passes first).

    ``on_assigned(partitions)`` is called on the event loop with the partition numbers this
    consumer owns after every rebalance (readiness, the lag gauge). ``queued_batches``
    bounds the batches fetched ahead of the ``in_flight`` ones being handled.
    ``drain_timeout_s`` bounds how long a revoke or a stop waits for the batches in hand (a
    handler stuck behind an outage): past it the partitions go without their last batches'
    commits, which their next owner consumes again."""

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str,
        group_id: str,
        handle: Handler,
        on_assigned: Callable[[frozenset[int]], None] = lambda _: None,
        batch_size: int,
        batch_within_s: float,
        queued_batches: int = 2,
        in_flight: int = 2,
        drain_timeout_s: float = 30.0,
    ) -> None:
        k = settings.kafka
        self._config: dict[str, Any] = {
            **k.confluent_config(),
            "group.id": group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(k.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(k.session_timeout_s * 200),
            "enable.partition.eof": False,
            "on_commit": self._confirmed,
        }
        self.topic = topic
        self.group_id = group_id
        self._handle = handle
        self._on_assigned = on_assigned
        self._batch_size = batch_size
        self._within_s = batch_within_s
        self._queued = queued_batches
        self._in_flight = in_flight
        self._drain_timeout_s = drain_timeout_s
        self._commit_interval_s = k.commit_interval_s
        # Handled but not yet committed: (partition) -> next offset. Written on the loop,
        # read and cleared by the consumer thread, hence the lock.
        self._done: dict[int, int] = {}
        self._committed: dict[int, int] = {}  # what the broker confirmed, per partition
        self._done_lock = threading.Lock()
        self._owned: set[int] = set()  # the consumer thread's view of its assignment
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._thread: threading.Thread | None = None

    # -- the event loop's side -------------------------------------------------------------
    async def run(self) -> None:
        """Consume and handle batches until :meth:`stop`; raises what a handler or the
        consumer thread raised. Up to ``in_flight`` batches are handled at once (the
        handler keeps them in order, see WorkerRuntime._match); a batch's offsets become
        committable once it and every batch before it are done."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self._queued)
        self._thread = threading.Thread(
            target=self._consume_thread, name="alertfeed-locations", daemon=True
        )
        self._thread.start()
        queue = self._queue
        handling: set[asyncio.Future[None]] = set()
        previous: asyncio.Future[None] | None = None
        taking: asyncio.Future[Any] | None = None
        while True:
            if taking is None and len(handling) < self._in_flight:
                taking = asyncio.ensure_future(queue.get())
            waiting = {*handling, taking} if taking is not None else handling
            finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for future in finished - {taking}:
                handling.discard(future)
                future.result()  # a handler's exception ends the loop
            if taking is None or taking not in finished:
                continue
            item, taking = taking.result(), None
            if item is _STOP:
                await asyncio.gather(*handling)
                queue.task_done()
                return
            if isinstance(item, BaseException):
                queue.task_done()
                raise item
            previous = asyncio.ensure_future(self._handled(item, previous))
            handling.add(previous)

    async def _handled(self, batch: RawLocations, previous: asyncio.Future[None] | None) -> None:
        assert self._queue is not None
        try:
            await self._handle(batch)
            if previous is not None:
                await previous  # committable in order: only after the batch before it
            self._mark_done(batch)
        finally:
            self._queue.task_done()

    def stop(self) -> None:
        """Ask the consumer thread to finish: it leaves the group (revoking, hence draining
        and committing, its partitions), then ends :meth:`run`."""
        self._stopping.set()

    async def join(self, timeout_s: float) -> bool:
        """Wait for the consumer thread to end; False if it did not within ``timeout_s``."""
        thread = self._thread
        if thread is None:
            return True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, thread.join, timeout_s)
        return not thread.is_alive()

    def _mark_done(self, batch: RawLocations) -> None:
        # A partition's messages come in offset order: its last one in the batch is its end.
        ends = dict(zip(batch.partitions, batch.offsets, strict=True))
        with self._done_lock:
            for partition, last in ends.items():
                if last >= self._done.get(partition, 0):
                    self._done[partition] = last + 1

    async def _drain(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    # -- the consumer thread ---------------------------------------------------------------
    def _consume_thread(self) -> None:
        try:
            consumer = Consumer(self._config, logger=log)
            consumer.subscribe(
                [self.topic],
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._lost,
            )
            try:
                self._consume_loop(consumer)
            finally:
                consumer.close()  # leaves the group: revokes (drains and commits) first
            self._to_loop(_STOP)
        except BaseException as exc:  # to the loop's task, which raises it
            self._to_loop(exc)

    def _consume_loop(self, consumer: Consumer) -> None:
        committed_at = time.monotonic()
        while not self._stopping.is_set():
            messages = consumer.consume(self._batch_size, self._within_s)
            batch = self._batch(messages)
            if batch is not None:
                self._to_loop(batch)
            if time.monotonic() - committed_at >= self._commit_interval_s:
                self._commit(consumer, self._owned, asynchronous=True)
                committed_at = time.monotonic()

    def _batch(self, messages: Sequence[Any]) -> RawLocations | None:
        good = [msg for msg in messages if msg.error() is None]
        if len(good) < len(messages):
            for msg in messages:
                if msg.error() is not None:
                    self._consumer_error(msg.error())
        if not good:
            return None
        return RawLocations(
            self.topic,
            [msg.partition() for msg in good],
            [msg.offset() for msg in good],
            [msg.timestamp()[1] for msg in good],
            [msg.key() for msg in good],
            [msg.value() for msg in good],
        )

    @staticmethod
    def _consumer_error(error: KafkaError) -> None:
        if error.fatal():
            raise BrokerUnavailable(f"locations consumer failed: {error}")
        # librdkafka retries the others itself (a broker away, a leader moving).
        log.warning("locations consumer error, retrying error=%s", error)

    def _to_loop(self, item: object) -> None:
        """Put ``item`` on the loop's queue, waiting while it is full (the backpressure)."""
        loop, queue = self._loop, self._queue
        assert loop is not None and queue is not None
        if loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def _commit(self, consumer: Consumer, partitions: set[int], *, asynchronous: bool) -> None:
        """Commit the handled offsets of ``partitions`` that the broker has not confirmed
        yet. Only partitions this consumer still owns: a commit for a partition gone
        elsewhere would move its new owner's offset. An asynchronous commit that fails (a
        rebalance under way, the coordinator moving) is sent again at the next interval."""
        with self._done_lock:
            offsets = [
                TopicPartition(self.topic, p, self._done[p])
                for p in sorted(partitions & self._owned)
                if p in self._done and self._done[p] > self._committed.get(p, -1)
            ]
        if not offsets:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._confirmed(None, consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as exc:
            # Not committed: the next owner consumes these again (identical cards).
            log.warning("locations commit failed partitions=%d error=%s", len(offsets), exc)

    def _confirmed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit callback (and the result of a synchronous commit)."""
        if error is not None:
            log.info("locations commit not confirmed, sent again later error=%s", error)
            return
        with self._done_lock:
            for tp in partitions:
                if tp.error is None and tp.offset > self._committed.get(tp.partition, -1):
                    self._committed[tp.partition] = tp.offset

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        added = {tp.partition for tp in partitions}
        self._clear(added)  # anything left from an earlier ownership is stale
        self._owned |= added
        self._tell_owned()
        log.info("locations partitions assigned added=%d owned=%d", len(added), len(self._owned))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batches in hand, commit, then let ``partitions`` go."""
        gone = {tp.partition for tp in partitions}
        loop = self._loop
        assert loop is not None
        # First tell the worker, so that its fan-outs over ``gone`` stop before the next
        # owner starts carding them (the call runs on the loop before the drain does).
        self._tell_owned(self._owned - gone)
        if not loop.is_closed():
            draining = asyncio.run_coroutine_threadsafe(self._drain(), loop)
            try:
                draining.result(timeout=self._drain_timeout_s)
            except FutureTimeout:
                draining.cancel()
                log.warning(
                    "partitions revoked before their batches finished partitions=%d "
                    "waited_s=%.0f: their next owner consumes them again",
                    len(gone),
                    self._drain_timeout_s,
                )
        self._commit(consumer, gone, asynchronous=False)
        self._forget(gone)
        log.info("locations partitions revoked count=%d", len(gone))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        self._forget(gone)
        log.warning("locations partitions lost count=%d: nothing more committed", len(gone))

    def _forget(self, gone: set[int]) -> None:
        self._owned -= gone
        self._clear(gone)
        self._tell_owned()

    def _clear(self, partitions: set[int]) -> None:
        """Drop what this consumer knew of ``partitions``' handled and committed offsets."""
        with self._done_lock:
            for partition in partitions:
                self._done.pop(partition, None)
                self._committed.pop(partition, None)

    def _tell_owned(self, owned: set[int] | None = None) -> None:
        assert self._loop is not None
        if not self._loop.is_closed():
            now = frozenset(self._owned if owned is None else owned)
            self._loop.call_soon_threadsafe(self._on_assigned, now)
