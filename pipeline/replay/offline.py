"""The offline replay: an event log through the worker's own logic, in one process.

The same :class:`~pipeline.service.runtime.WorkerRuntime` as the worker (wired by the
caller: ``pipeline.entrypoints.replay`` puts it on the in-process twins of the Redis
stores, or on Redis), a clock that reads the event time of the record being processed
(:class:`EventClock`), and a sink that appends what the worker would have produced
(interstitials, lifecycle events, dead letters) to an output log (:class:`LogSink`).
Alerts are applied one by one; consecutive locations go in batches of
``settings.match.batch_size``, the clock reading the last ``ts`` of the batch. No wall
clock, no randomness: the same log gives a byte-identical output. The log is read in one
pass, taken to be in event-time order and checked on the way; one that is not after all is
replayed afresh, ordered first (when the wiring cannot start afresh, as Redis's keys
cannot, every log is ordered first).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress, count, islice, repeat
from operator import ge
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.locations import RawLocations
from pipeline.replay.eventlog import EventLogWriter, LoggedRecord
from pipeline.replay.order import LogBlock, NotInOrder, TopicRun, event_time_blocks
from pipeline.replay.topics import TopicNames
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.domain.ports import OutTopic
    from pipeline.service.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class EventClock:
    """The offline replay's clock: the event time of the record being processed."""

    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


class LogSink:
    """A :class:`~pipeline.domain.ports.Sink` that appends to an event log, stamping each
    record with the event clock; acknowledged at once."""

    def __init__(self, writer: EventLogWriter, clock: Callable[[], int]) -> None:
        self._writer = writer
        self._clock = clock
        self.counts: Counter[str] = Counter()

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
        now = self._clock()
        for key, value in records:
            self._writer.write(LoggedRecord(topic, now, key, value))
        self.counts[topic] += len(records)


@dataclass(slots=True)
class OfflineSummary:
    alerts: int = 0
    locations: int = 0
    batches: int = 0
    produced: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0  # from the runtime wired (imports done) to the output closed


@dataclass(slots=True)
class Forgetting:
    """The ``forget_before`` of the in-process stores, which keep memory bounded (none for
    Redis, which expires its keys itself). See :class:`OfflineReplay` for when each runs."""

    dedup: Callable[[int], int] | None = None
    presence: Callable[[int], int] | None = None


# How often (event time) the in-process stores drop expired entries: a full scan, so not at
# every tick. Redis expires them on time; a dedup record may thus outlive its expiry by up
# to this much offline (it only matters for a card whose alert never expires, 24 h on).
FORGET_EVERY_MS = 60_000
# The presence store forgets at one of those times only every so often, or when it could
# show: a scan of every user costs about as much as matching a minute of their locations.
# Forgetting at B drops the users last seen at or before B - window. Only the fan-out reads
# the store, asking for users seen at or after its own time - window: after B, only a
# fan-out at B itself (an alert at B, just after the tick) could miss a user dropped then,
# and forgetting later drops the same users and more, unseen.
PRESENCE_FORGET_EVERY_MS = 600_000


# The runtime on a fresh set of stores, publishing to ``sink`` on ``clock``, and what those
# stores forget: called once per attempt at the log.
RuntimeWiring = Callable[[LogSink, EventClock], tuple["WorkerRuntime", Forgetting]]


def replay_log(
    settings: Settings,
    path: str | Path,
    out: str | Path,
    wiring: RuntimeWiring,
    *,
    topics: TopicNames,
    restartable: bool = True,
    forget_every_ms: int = FORGET_EVERY_MS,
    presence_forget_every_ms: int = PRESENCE_FORGET_EVERY_MS,
) -> OfflineSummary:
    """Run the log's alerts and locations through the runtime ``wiring`` builds and write
    every record it would have produced to ``out``; ``topics`` names the logical topic of
    each log record. ``restartable``: the wiring gives fresh stores each time, so the log
    may be read optimistically (see the module docstring). ``forget_every_ms`` and
    ``presence_forget_every_ms``: how often the in-process stores forget (see
    :class:`OfflineReplay`)."""
    with _fewer_collections():
        return asyncio.run(
            _replay_log(
                settings,
                Path(path),
                Path(out),
                wiring,
                topics=topics,
                restartable=restartable,
                forget_every_ms=forget_every_ms,
                presence_forget_every_ms=presence_forget_every_ms,
            )
        )


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often meanwhile. The replay allocates millions
    of short-lived objects, nearly all freed by reference counting; at the default
    threshold the collector re-scans the long-lived ones (the presence store, the rows
    read ahead) so often that it takes about a sixth of the run. Even at 10,000 it takes
    a twentieth: a sighting replaced in the presence store frees an old object as it adds
    a young one, so the young generation grows while the collector's count stands still,
    to a whole store's worth scanned at every collection."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 100_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


async def _replay_log(
    settings: Settings,
    path: Path,
    out: Path,
    wiring: RuntimeWiring,
    *,
    topics: TopicNames,
    restartable: bool,
    forget_every_ms: int,
    presence_forget_every_ms: int,
) -> OfflineSummary:
    names: dict[str, str] = {}

    def kind(topic: str) -> str:
        if topic not in names:
            names[topic] = topics.logical(topic)
        return names[topic]

    def wanted(topic: str) -> bool:
        return kind(topic) in ("alerts", "locations")

    # The log is read in one pass, taken to be in order as logs mostly are, and checked on
    # the way; if it is not after all, that attempt is dropped and the log read again, with
    # a first pass that orders it. Only in-process stores can start afresh like that.
    started: float | None = None
    for optimistic in (True, False) if restartable else (False,):
        clock = EventClock()
        with EventLogWriter(out) as writer:  # truncates what a dropped attempt wrote
            sink = LogSink(writer, clock)
            runtime, forgetting = wiring(sink, clock)
            replay = OfflineReplay(
                settings,
                runtime,
                clock,
                forgetting,
                forget_every_ms=forget_every_ms,
                presence_forget_every_ms=presence_forget_every_ms,
            )
            if started is None:  # the replay itself, not the imports of the wiring
                started = time.perf_counter()
            blocks = event_time_blocks(path, keep=wanted, optimistic=optimistic)
            try:
                await replay.run(blocks, kind)
            except NotInOrder as exc:
                log.info("log read again in event-time order reason=%s", exc)
                continue
            replay.summary.produced = dict(sorted(sink.counts.items()))
        replay.summary.elapsed_s = time.perf_counter() - started  # the output file closed too
        return replay.summary
    raise AssertionError("the attempt without optimism raises no NotInOrder")


@dataclass(slots=True)
class _Columns:
    """The location batch being filled, as the columns of a RawLocations."""

    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times)


class OfflineReplay:
    """Feeds records, in event-time order, to a runtime the way the worker's agents and
    timers would: alerts one by one; locations in batches of ``match.batch_size``; the
    expiry tick at every ``match.expiry_check_s`` of event time that a record passes (once
    per gap, at the last boundary before the record). At a tick at least ``forget_every_ms``
    (default FORGET_EVERY_MS) after the last such, the in-process stores forget (the
    presence store not always: at most every ``presence_forget_every_ms``, default
    PRESENCE_FORGET_EVERY_MS, unless it could show)."""

    def __init__(
        self,
        settings: Settings,
        runtime: WorkerRuntime,
        clock: EventClock,
        forgetting: Forgetting,
        *,
        forget_every_ms: int = FORGET_EVERY_MS,
        presence_forget_every_ms: int = PRESENCE_FORGET_EVERY_MS,
    ) -> None:
        self._runtime = runtime
        self._forgetting = forgetting
        self._clock = clock
        self._real = settings.topics.by_logical_name()
        self._batch_size = settings.match.batch_size
        self._batch = _Columns()
        self._tick_ms = max(1, int(settings.match.expiry_check_s * 1000))
        self._next_tick: int | None = None
        self._due = -(2**64)  # the ts from which _tick_until has work: the first record's on
        self._forget_every_ms = forget_every_ms
        self._presence_forget_every_ms = presence_forget_every_ms
        self._forgotten_at = self._presence_forgotten_at = 0
        self.summary = OfflineSummary()

    async def run(self, blocks: Iterable[LogBlock], logical: Callable[[str], str]) -> None:
        """Process the rows of ``blocks`` (alerts and locations, in event-time order, as
        :func:`~pipeline.replay.order.event_time_blocks` gives them), ``logical``
        naming the logical topic of each row's topic; then the last batch."""
        real = self._real
        batch_size = self._batch_size
        kinds: dict[str, str] = {}
        for block in blocks:
            if isinstance(block, TopicRun):
                topic = block.topic
                kind = kinds.get(topic) or kinds.setdefault(topic, logical(topic))
                if kind == "locations":
                    await self._locations(block)
                    continue
                block = block.rows()  # noqa: PLW2901 - the same rows, one by one
            for seq, topic, ts, key, value, _headers, partition, offset in block:
                if ts >= self._due:
                    await self._tick_until(ts)
                kind = kinds.get(topic) or kinds.setdefault(topic, logical(topic))
                position = seq if offset is None else offset
                partition_or_0 = 0 if partition is None else partition
                if kind == "locations":
                    batch = self._batch
                    batch.partitions.append(partition_or_0)
                    batch.offsets.append(position)
                    batch.times.append(ts)
                    batch.keys.append(key)
                    batch.values.append(value)
                    if len(batch) >= batch_size:
                        await self._flush()
                    continue
                await self._flush()
                self._clock.now_ms = ts
                await self._runtime.on_alerts(
                    [RawEvent(real[kind], partition_or_0, position, ts, key, value)]
                )
                self.summary.alerts += 1
        await self._flush()

    async def _locations(self, run: TopicRun) -> None:
        """The rows of ``run``, locations, as the row-by-row loop of :meth:`run` would take
        them: into batches, with the ticks due between them, but a stretch between two
        ticks at a time."""
        times = run.times
        start, end = 0, len(times)
        while start < end:
            if times[start] >= self._due:
                await self._tick_until(times[start])
            # The first row from which the next tick is due: the stretch ends there.
            due = map(ge, islice(times, start, None), repeat(self._due))
            stop = next(compress(count(start), due), end)
            while start < stop:  # into the batch, as much as it has room for
                batch = self._batch
                taken = min(stop, start + self._batch_size - len(batch))
                batch.partitions += repeat(0, taken - start)
                batch.offsets += range(run.first_seq + start, run.first_seq + taken)
                batch.times += times[start:taken]
                batch.keys += run.keys[start:taken]
                batch.values += run.values[start:taken]
                if len(batch) >= self._batch_size:
                    await self._flush()
                start = taken

    async def _tick_until(self, ts: int) -> None:
        """The expiry tick (and the stores' forgetting) due before a record at ``ts``."""
        if self._next_tick is None:
            self._next_tick = self._due = ts - ts % self._tick_ms + self._tick_ms
            return
        if ts < self._next_tick:
            return
        await self._flush()
        boundary = ts - ts % self._tick_ms
        self._clock.now_ms = boundary
        await self._runtime.on_tick()
        self._next_tick = self._due = boundary + self._tick_ms
        if boundary - self._forgotten_at >= self._forget_every_ms:
            self._forgotten_at = boundary
            forgetting = self._forgetting
            if forgetting.dedup is not None:
                forgetting.dedup(boundary)
            # The record at ts, or one after it at the same ts, could be an alert at B only
            # if ts is B (see PRESENCE_FORGET_EVERY_MS).
            due = boundary - self._presence_forgotten_at >= self._presence_forget_every_ms
            if forgetting.presence is not None and (ts == boundary or due):
                self._presence_forgotten_at = boundary
                forgetting.presence(boundary)

    async def _flush(self) -> None:
        if not self._batch:
            return
        columns, self._batch = self._batch, _Columns()
        self._clock.now_ms = columns.times[-1]
        batch = RawLocations(
            self._real["locations"],
            columns.partitions,
            columns.offsets,
            columns.times,
            columns.keys,
            columns.values,
        )
        await self._runtime.on_locations(batch)
        self.summary.locations += len(batch)
        self.summary.batches += 1
