"""``alertfeed replay``: put an event log back on the live topics, or run it offline.

Live (:func:`replay_live`): records go out in event-time order (``ts``; alerts first at
equal ``ts``; then file order) through a :class:`DeliveryProducer`, paced to keep their
original relative timing (``speed`` times faster), optionally capped at ``max_rate``
events/s, or as fast as possible. Keys, values and headers are sent exactly as logged.
Without ``retime_to_ms`` the producer stamps records with the time they are sent; with it,
every record and the times inside alerts and locations are shifted by one offset (whole
seconds) that moves the first record to ``retime_to_ms``, and the shifted ``ts`` becomes
the Kafka timestamp.

Offline (:func:`replay_offline`): the same :class:`WorkerRuntime` as the worker, with the
in-process index and dedup store (or Redis), a clock that reads the event time of the
record being processed, and a sink that appends what the worker would have produced
(interstitials, lifecycle events, dead letters) to an output log. Alerts are applied one
by one; consecutive locations go in batches of ``settings.match.batch_size``, the clock
reading the last ``ts`` of the batch. No wall clock, no randomness: the same log gives a
byte-identical output. The log is read in one pass, taken to be in event-time order and
checked on the way; one that is not after all is replayed afresh, ordered first (with
``--redis``, whose keys cannot start afresh, every log is ordered first).

Caveat of ``--redis``: the Redis index expires alert records at their ``expires`` time by
the wall clock, so an old log replayed against Redis without ``--retime``-style shifting
finds its alerts already gone; and its keys outlive the run (use a fresh key prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress, count, islice, repeat
from operator import ge
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.domain.targeting.deadletter import RawEvent
from pipeline.domain.targeting.locations import RawLocations
from pipeline.replay.eventlog import (
    LOGICAL_TOPICS,
    EventLogWriter,
    LoggedRecord,
    in_event_time_order,
    parse_topic_map,
    parse_when,
    read_lines,
    retime_record,
)
from pipeline.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module to build its parser: keep that light
    from pipeline.domain.ports import CellIndex, DedupStore, PresenceStore
    from pipeline.replay.order import LogBlock, TopicRun
    from pipeline.service.runtime import OutTopic, WorkerRuntime

log = logging.getLogger(__name__)


# -- offline ----------------------------------------------------------------------------------
class EventClock:
    """The offline replay's clock: the event time of the record being processed."""

    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


class LogSink:
    """A :class:`~pipeline.service.runtime.Sink` that appends to an event log, stamping each
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


def logical_name(name: str, settings: Settings, topic_map: dict[str, str]) -> str:
    """The logical topic a log record of topic ``name`` belongs to (after ``topic_map``), or
    ``name`` itself when it is none of ours."""
    name = topic_map.get(name, name)
    if name in LOGICAL_TOPICS:
        return name
    for logical, real in settings.topics.by_logical_name().items():
        if real == name:
            return logical
    return name


def replay_offline(
    settings: Settings,
    path: str | Path,
    out: str | Path,
    *,
    topic_map: dict[str, str] | None = None,
    use_redis: bool = False,
) -> OfflineSummary:
    """Run the log's alerts and locations through the worker's logic in one process and
    write every record it would have produced to ``out``. See the module docstring."""
    with _fewer_collections():
        return asyncio.run(
            _replay_offline(settings, Path(path), Path(out), topic_map or {}, use_redis)
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


async def _replay_offline(
    settings: Settings, path: Path, out: Path, topic_map: dict[str, str], use_redis: bool
) -> OfflineSummary:
    from pipeline.replay.order import NotInOrder, event_time_blocks

    names: dict[str, str] = {}

    def kind(topic: str) -> str:
        if topic not in names:
            names[topic] = logical_name(topic, settings, topic_map)
        return names[topic]

    def wanted(topic: str) -> bool:
        return kind(topic) in ("alerts", "locations")

    # The log is read in one pass, taken to be in order as logs mostly are, and checked on
    # the way; if it is not after all, that attempt is dropped and the log read again, with
    # a first pass that orders it. Only in-process stores can start afresh like that.
    started: float | None = None
    for optimistic in (False,) if use_redis else (True, False):
        clock = EventClock()
        with EventLogWriter(out) as writer:  # truncates what a dropped attempt wrote
            sink = LogSink(writer, clock)
            runtime, forgetting = _offline_runtime(settings, sink, clock, use_redis)
            replay = OfflineReplay(settings, runtime, clock, forgetting)
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
class Forgetting:
    """The ``forget_before`` of the in-process stores, which keep memory bounded (none for
    Redis, which expires its keys itself). See :class:`OfflineReplay` for when each runs."""

    dedup: Callable[[int], int] | None = None
    presence: Callable[[int], int] | None = None


def _offline_runtime(
    settings: Settings, sink: LogSink, clock: EventClock, use_redis: bool
) -> tuple[WorkerRuntime, Forgetting]:
    """The worker's runtime (as ``pipeline.entrypoints.worker`` wires it) on the event clock,
    with the in-process stores, or the configured Redis with ``use_redis``; and what the
    in-process stores forget."""
    from pipeline.adapters.memory.stores import (
        MemoryCellIndex,
        MemoryDedupStore,
        MemoryPresenceStore,
    )
    from pipeline.adapters.metrics import Metrics
    from pipeline.entrypoints.wiring import make_services
    from pipeline.service.runtime import WorkerRuntime

    freshness_ms = int(settings.match.freshness_s * 1000)
    index: CellIndex
    dedup: DedupStore
    presence: PresenceStore
    if use_redis:
        from pipeline.adapters.redis.presence import RedisPresenceStore
        from pipeline.entrypoints.wiring import make_index, make_redis

        redis = make_redis(settings)
        index, dedup = make_index(settings, redis)
        presence = RedisPresenceStore(
            redis, prefix=settings.redis.key_prefix, window_ms=freshness_ms
        )
        forgetting = Forgetting()
    else:
        index = MemoryCellIndex(resolution=settings.match.resolution)
        memory_dedup = MemoryDedupStore()
        memory_presence = MemoryPresenceStore(window_ms=freshness_ms)
        dedup, presence = memory_dedup, memory_presence
        forgetting = Forgetting(memory_dedup.forget_before, memory_presence.forget_before)
    matcher, ingest = make_services(settings, index, dedup, presence, clock)
    return WorkerRuntime(matcher, ingest, Metrics(), sink, clock_ms=clock), forgetting


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


class OfflineReplay:
    """Feeds records, in event-time order, to a runtime the way the worker's agents and
    timers would: alerts one by one; locations in batches of ``match.batch_size``; the
    expiry tick at every ``match.expiry_check_s`` of event time that a record passes (once
    per gap, at the last boundary before the record). At a tick at least FORGET_EVERY_MS
    after the last such, the in-process stores forget (the presence store not always, see
    PRESENCE_FORGET_EVERY_MS)."""

    def __init__(
        self,
        settings: Settings,
        runtime: WorkerRuntime,
        clock: EventClock,
        forgetting: Forgetting,
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
        self._forgotten_at = self._presence_forgotten_at = 0
        self.summary = OfflineSummary()

    async def run(self, blocks: Iterable[LogBlock], logical: Callable[[str], str]) -> None:
        """Process the rows of ``blocks`` (alerts and locations, in event-time order, as
        :func:`~pipeline.replay.order.event_time_blocks` gives them), ``logical``
        naming the logical topic of each row's topic; then the last batch."""
        from pipeline.replay.order import TopicRun

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
        if boundary - self._forgotten_at >= FORGET_EVERY_MS:
            self._forgotten_at = boundary
            forgetting = self._forgetting
            if forgetting.dedup is not None:
                forgetting.dedup(boundary)
            # The record at ts, or one after it at the same ts, could be an alert at B only
            # if ts is B (see PRESENCE_FORGET_EVERY_MS).
            due = boundary - self._presence_forgotten_at >= PRESENCE_FORGET_EVERY_MS
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


# -- live -------------------------------------------------------------------------------------
@dataclass(slots=True)
class LiveSummary:
    per_topic: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    duration_s: float = 0.0
    rate: float = 0.0
    mean_lateness_ms: float = 0.0
    max_lateness_ms: float = 0.0
    retime_delta_ms: int = 0


def target_topic(name: str, settings: Settings, topic_map: dict[str, str]) -> str:
    """The real topic a record logged under ``name`` goes to: ``topic_map`` first (its
    values may be logical or real names), then logical names through ``settings.topics``."""
    name = topic_map.get(name, name)
    return settings.topics.by_logical_name().get(name, name)


def replay_live(
    settings: Settings,
    path: str | Path,
    *,
    speed: float = 1.0,
    max_rate: float | None = None,
    as_fast_as_possible: bool = False,
    topic_map: dict[str, str] | None = None,
    retime_to_ms: int | None = None,
    progress: bool = True,
) -> LiveSummary:
    """Publish the log to the live topics (see the module docstring). Raises
    BrokerUnavailable if the broker did not acknowledge every record."""
    from pipeline.adapters.kafka.tools import DeliveryProducer

    if speed <= 0 or (max_rate is not None and max_rate <= 0):
        raise ValueError("speed and max-rate must be positive")
    mapping = topic_map or {}
    producer = DeliveryProducer(settings)
    summary = LiveSummary()
    per_topic: Counter[str] = Counter()
    bar = _bar(sum(1 for _ in read_lines(path)), "replay") if progress else None
    first_ts: int | None = None
    delta = 0
    previous_due = 0.0
    lateness_total = 0.0
    started = time.monotonic()
    for item in in_event_time_order(path):
        record = item.record
        if first_ts is None:
            first_ts = record.ts
            if retime_to_ms is not None:
                delta = round((retime_to_ms - first_ts) / 1000) * 1000
                summary.retime_delta_ms = delta
        due = 0.0 if as_fast_as_possible else (record.ts - first_ts) / 1000 / speed
        if max_rate is not None and summary.sent:
            due = max(due, previous_due + 1 / max_rate)
        previous_due = due
        wait = started + due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if retime_to_ms is not None:
            record = retime_record(record, delta, logical_name(record.topic, settings, mapping))
        topic = target_topic(record.topic, settings, mapping)
        producer.send(
            topic,
            record.value,
            key=record.key,
            headers=list(record.headers),  # type: ignore[arg-type]  # None values are valid
            timestamp_ms=record.ts if retime_to_ms is not None else None,
        )
        lateness = max(0.0, time.monotonic() - started - due) * 1000
        lateness_total += lateness
        summary.max_lateness_ms = max(summary.max_lateness_ms, lateness)
        summary.sent += 1
        per_topic[topic] += 1
        if bar is not None:
            bar.update(1)
    producer.flush()
    if bar is not None:
        bar.close()
    summary.duration_s = time.monotonic() - started
    summary.rate = summary.sent / summary.duration_s if summary.duration_s > 0 else 0.0
    summary.mean_lateness_ms = lateness_total / summary.sent if summary.sent else 0.0
    summary.per_topic = dict(sorted(per_topic.items()))
    log.info("replay done sent=%d duration_s=%.1f", summary.sent, summary.duration_s)
    return summary


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, unit="ev", unit_scale=True, file=sys.stderr, desc=desc)


# -- command line -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="event log (.jsonl, .jsonl.gz, .jsonl.zst)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="60 plays an hour in a minute")
    pace.add_argument("--as-fast-as-possible", action="store_true")
    parser.add_argument("--max-rate", type=float, default=None, help="cap, events per second")
    parser.add_argument(
        "--topic-map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="send records logged under OLD to NEW (logical or real names); repeatable",
    )
    parser.add_argument(
        "--retime",
        default=None,
        metavar="TIME",
        help="shift every time so the first record is at TIME (now, now-1h, ISO-8601, epoch ms)",
    )
    parser.add_argument("--offline", action="store_true", help="run in-process, without Kafka")
    parser.add_argument("--out", default=None, help="offline: output log of what was produced")
    parser.add_argument("--redis", action="store_true", help="offline: use the configured Redis")
    parser.add_argument("--no-progress", action="store_true")


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """The ``replay`` subcommand; prints a summary on stdout."""
    try:
        topic_map = parse_topic_map(args.topic_map)
        retime = parse_when(args.retime, time.time_ns() // 1_000_000) if args.retime else None
    except ValueError as exc:
        print(f"alertfeed replay: {exc}", file=sys.stderr)
        return 2
    if args.offline:
        if not args.out or retime is not None:
            print("alertfeed replay: --offline needs --out and takes no --retime", file=sys.stderr)
            return 2
        result = replay_offline(
            settings, args.file, args.out, topic_map=topic_map, use_redis=args.redis
        )
        rate = result.locations / result.elapsed_s if result.elapsed_s else 0.0
        print(
            f"offline replay: {result.alerts} alert messages, {result.locations} locations in "
            f"{result.batches} batches, {result.elapsed_s:.1f}s ({rate:,.0f} locations/s)"
        )
        for topic, count in result.produced.items():
            print(f"  produced {topic}: {count}")
        return 0
    summary = replay_live(
        settings,
        args.file,
        speed=args.speed,
        max_rate=args.max_rate,
        as_fast_as_possible=args.as_fast_as_possible,
        topic_map=topic_map,
        retime_to_ms=retime,
        progress=not args.no_progress,
    )
    print(
        f"replayed {summary.sent} records in {summary.duration_s:.1f}s "
        f"({summary.rate:,.0f}/s); timing drift mean {summary.mean_lateness_ms:.1f} ms, "
        f"max {summary.max_lateness_ms:.1f} ms"
        + (f"; retimed by {summary.retime_delta_ms} ms" if args.retime else "")
    )
    for topic, count in summary.per_topic.items():
        print(f"  {topic}: {count}")
    return 0
