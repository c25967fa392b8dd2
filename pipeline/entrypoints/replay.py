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
byte-identical output.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.adapters.eventlog import (
    LOGICAL_TOPICS,
    EventLogWriter,
    LoggedRecord,
    in_event_time_order,
    parse_topic_map,
    parse_when,
    read_lines,
    retime_record,
)
from pipeline.domain.deadletter import RawEvent
from pipeline.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module to build its parser: keep that light
    from pipeline.adapters.eventorder import LogRow
    from pipeline.adapters.runtime import OutTopic, WorkerRuntime
    from pipeline.domain.ports import CellIndex, DedupStore, PresenceStore

log = logging.getLogger(__name__)


# -- offline ----------------------------------------------------------------------------------
class EventClock:
    """The offline replay's clock: the event time of the record being processed."""

    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


class LogSink:
    """A :class:`~pipeline.adapters.runtime.Sink` that appends to an event log, stamping each
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
    read ahead) so often that it takes about a sixth of the run."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 10_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


async def _replay_offline(
    settings: Settings, path: Path, out: Path, topic_map: dict[str, str], use_redis: bool
) -> OfflineSummary:
    from pipeline.adapters.eventorder import event_time_blocks

    clock = EventClock()
    with EventLogWriter(out) as writer:
        sink = LogSink(writer, clock)
        runtime, forgetful = _offline_runtime(settings, sink, clock, use_redis)
        replay = OfflineReplay(settings, runtime, clock, forgetful)
        started = time.perf_counter()  # the replay itself, not the imports of the wiring
        names: dict[str, str] = {}

        def kind(topic: str) -> str:
            if topic not in names:
                names[topic] = logical_name(topic, settings, topic_map)
            return names[topic]

        wanted = ("alerts", "locations")
        await replay.run(event_time_blocks(path, keep=lambda t: kind(t) in wanted), kind)
        replay.summary.produced = dict(sorted(sink.counts.items()))
    replay.summary.elapsed_s = time.perf_counter() - started  # the output file closed too
    return replay.summary


def _offline_runtime(
    settings: Settings, sink: LogSink, clock: EventClock, use_redis: bool
) -> tuple[WorkerRuntime, list[Callable[[int], int]]]:
    """The worker's runtime (as ``pipeline.entrypoints.worker`` wires it) on the event clock,
    with the in-process stores, or the configured Redis with ``use_redis``; and the
    ``forget_before`` of the in-process stores, which keep memory bounded."""
    from pipeline.adapters.memory import MemoryCellIndex, MemoryDedupStore, MemoryPresenceStore
    from pipeline.adapters.metrics import Metrics
    from pipeline.adapters.runtime import WorkerRuntime
    from pipeline.entrypoints.wiring import make_services

    freshness_ms = int(settings.match.freshness_s * 1000)
    index: CellIndex
    dedup: DedupStore
    presence: PresenceStore
    if use_redis:
        from pipeline.adapters.redis_presence import RedisPresenceStore
        from pipeline.entrypoints.wiring import make_index, make_redis

        redis = make_redis(settings)
        index, dedup = make_index(settings, redis)
        presence = RedisPresenceStore(
            redis, prefix=settings.redis.key_prefix, window_ms=freshness_ms
        )
        forgetful: list[Callable[[int], int]] = []
    else:
        index = MemoryCellIndex(resolution=settings.match.resolution)
        memory_dedup = MemoryDedupStore()
        memory_presence = MemoryPresenceStore(window_ms=freshness_ms)
        dedup, presence = memory_dedup, memory_presence
        forgetful = [memory_dedup.forget_before, memory_presence.forget_before]
    matcher, ingest = make_services(settings, index, dedup, presence, clock)
    return WorkerRuntime(matcher, ingest, Metrics(), sink, clock_ms=clock), forgetful


# RawEvent is frozen, so its __init__ sets every field through object.__setattr__: a third of
# the cost of reading a location. The replay fills the slots with their own descriptors
# instead, which builds the same object in half the time.
_new = object.__new__
_set_topic, _set_partition, _set_offset, _set_ts, _set_key, _set_value = (
    RawEvent.__dict__[name].__set__ for name in RawEvent.__slots__
)


def _raw_event(  # noqa: PLR0917 - the field order of RawEvent itself
    topic: str, partition: int, offset: int, ts: int, key: bytes | None, value: bytes | None
) -> RawEvent:
    """``RawEvent(topic, partition, offset, ts, key, value)``, faster."""
    raw = _new(RawEvent)
    _set_topic(raw, topic)
    _set_partition(raw, partition)
    _set_offset(raw, offset)
    _set_ts(raw, ts)
    _set_key(raw, key)
    _set_value(raw, value)
    return raw


# How often (event time) the in-process stores drop expired entries: a full scan, so not at
# every tick. Redis expires them on time; a dedup record may thus outlive its expiry by up
# to this much offline (it only matters for a card whose alert never expires, 24 h on).
FORGET_EVERY_MS = 60_000


class OfflineReplay:
    """Feeds records, in event-time order, to a runtime the way the worker's agents and
    timers would: alerts one by one; locations in batches of ``match.batch_size``; the
    expiry tick at every ``match.expiry_check_s`` of event time that a record passes (once
    per gap, at the last boundary before the record)."""

    def __init__(
        self,
        settings: Settings,
        runtime: WorkerRuntime,
        clock: EventClock,
        forgetful: list[Callable[[int], int]],
    ) -> None:
        self._runtime = runtime
        self._forgetful = forgetful
        self._clock = clock
        self._real = settings.topics.by_logical_name()
        self._batch_size = settings.match.batch_size
        self._tick_ms = max(1, int(settings.match.expiry_check_s * 1000))
        self._next_tick: int | None = None
        self._forgotten_at = 0
        self._batch: list[RawEvent] = []
        self.summary = OfflineSummary()

    async def run(self, blocks: Iterable[Iterable[LogRow]], logical: Callable[[str], str]) -> None:
        """Process the rows of ``blocks`` (alerts and locations, in event-time order, as
        :func:`~pipeline.adapters.eventorder.event_time_blocks` gives them), ``logical``
        naming the logical topic of each row's topic; then the last batch."""
        real = self._real
        batch_size = self._batch_size
        kinds: dict[str, str] = {}
        next_tick = -(2**64)  # the first record sets the clock going
        for block in blocks:
            for seq, topic, ts, key, value, _headers, partition, offset in block:
                if ts >= next_tick:
                    await self._tick_until(ts)
                    next_tick = self._next_tick or 0
                kind = kinds.get(topic) or kinds.setdefault(topic, logical(topic))
                raw = _raw_event(
                    real[kind],
                    0 if partition is None else partition,
                    seq if offset is None else offset,
                    ts,
                    key,
                    value,
                )
                if kind == "locations":
                    self._batch.append(raw)
                    if len(self._batch) >= batch_size:
                        await self._flush()
                    continue
                await self._flush()
                self._clock.now_ms = ts
                await self._runtime.on_alerts([raw])
                self.summary.alerts += 1
        await self._flush()

    async def _tick_until(self, ts: int) -> None:
        """The expiry tick (and the stores' forgetting) due before a record at ``ts``."""
        if self._next_tick is None:
            self._next_tick = ts - ts % self._tick_ms + self._tick_ms
            return
        if ts < self._next_tick:
            return
        await self._flush()
        boundary = ts - ts % self._tick_ms
        self._clock.now_ms = boundary
        await self._runtime.on_tick()
        self._next_tick = boundary + self._tick_ms
        if boundary - self._forgotten_at >= FORGET_EVERY_MS:
            self._forgotten_at = boundary
            for forget in self._forgetful:
                forget(boundary)

    async def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._clock.now_ms = batch[-1].timestamp_ms
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
    from pipeline.adapters.kafka_tools import DeliveryProducer

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
