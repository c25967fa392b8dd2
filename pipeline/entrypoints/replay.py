"""``alertfeed replay``: put an event log back on the live topics, or run it offline.

The engines are in the replay room: :mod:`pipeline.replay.live` publishes a log with its
timing, :mod:`pipeline.replay.offline` runs it through the worker's own logic in one
process. This module parses the arguments and wires them: a delivery-checked producer for
the live replay; for the offline one, the worker's runtime as
:mod:`pipeline.entrypoints.wiring` builds it, on the in-process twins of the Redis stores
(or on Redis with ``--redis``).

Caveat of ``--redis``: the Redis index expires alert records at their ``expires`` time by
the wall clock, so an old log replayed against Redis without ``--retime``-style shifting
finds its alerts already gone; and its keys outlive the run (use a fresh key prefix).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.entrypoints.replay_args import parse_topic_map, parse_when
from pipeline.replay.topics import TopicNames
from pipeline.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module to build its parser: keep that light
    from pipeline.replay.live import LiveSummary
    from pipeline.replay.offline import EventClock, Forgetting, LogSink, OfflineSummary
    from pipeline.service.runtime import WorkerRuntime


def topic_names(settings: Settings, topic_map: dict[str, str] | None = None) -> TopicNames:
    """The settings' topic names, with the renames of ``--topic-map``."""
    return TopicNames(settings.topics.by_logical_name(), topic_map)


def replay_offline(
    settings: Settings,
    path: str | Path,
    out: str | Path,
    *,
    topic_map: dict[str, str] | None = None,
    use_redis: bool = False,
    forget_every_ms: int | None = None,
    presence_forget_every_ms: int | None = None,
) -> OfflineSummary:
    """Run the log's alerts and locations through the worker's logic in one process and
    write every record it would have produced to ``out``
    (:func:`pipeline.replay.offline.replay_log`): on the in-process stores, or on the
    configured Redis with ``use_redis``. ``forget_every_ms`` and
    ``presence_forget_every_ms``: how often the in-process stores forget (None: the
    defaults of :mod:`pipeline.replay.offline`)."""
    from pipeline.replay import offline

    wiring = partial(offline_runtime, settings, use_redis=use_redis)
    topics = topic_names(settings, topic_map)
    return offline.replay_log(
        settings,
        path,
        out,
        wiring,
        topics=topics,
        restartable=not use_redis,
        forget_every_ms=offline.FORGET_EVERY_MS if forget_every_ms is None else forget_every_ms,
        presence_forget_every_ms=(
            offline.PRESENCE_FORGET_EVERY_MS
            if presence_forget_every_ms is None
            else presence_forget_every_ms
        ),
    )


def offline_runtime(
    settings: Settings, sink: LogSink, clock: EventClock, *, use_redis: bool
) -> tuple[WorkerRuntime, Forgetting]:
    """The worker's runtime (as ``pipeline.entrypoints.worker`` wires it) on the event clock,
    with fresh in-process stores, or the configured Redis with ``use_redis``; and what the
    in-process stores forget."""
    from pipeline.adapters.memory.dedup import MemoryDedupStore
    from pipeline.adapters.memory.index import MemoryCellIndex
    from pipeline.adapters.memory.presence import MemoryPresenceStore
    from pipeline.adapters.metrics import Metrics
    from pipeline.domain.ports import CellIndex, DedupStore, PresenceStore
    from pipeline.entrypoints.wiring import freshness_ms, make_runtime, make_services
    from pipeline.replay.offline import Forgetting

    index: CellIndex
    dedup: DedupStore
    presence: PresenceStore
    if use_redis:
        from pipeline.entrypoints.wiring import make_redis, make_redis_stores

        index, dedup, presence = make_redis_stores(settings, make_redis(settings))
        forgetting = Forgetting()
    else:
        index = MemoryCellIndex(resolution=settings.match.resolution)
        memory_dedup = MemoryDedupStore()
        memory_presence = MemoryPresenceStore(window_ms=freshness_ms(settings))
        dedup, presence = memory_dedup, memory_presence
        forgetting = Forgetting(memory_dedup.forget_before, memory_presence.forget_before)
    services = make_services(settings, index, dedup, presence, clock)
    return make_runtime(settings, services, Metrics(), sink, clock_ms=clock), forgetting


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
    """Publish the log to the live topics (:func:`pipeline.replay.live.publish_log`).
    Raises ValueError for a speed or rate that is not positive, BrokerUnavailable if the
    broker did not acknowledge every record."""
    from pipeline.adapters.kafka.tools import DeliveryProducer
    from pipeline.replay.live import publish_log

    return publish_log(
        path,
        DeliveryProducer(settings),
        topic_names(settings, topic_map),
        speed=speed,
        max_rate=max_rate,
        as_fast_as_possible=as_fast_as_possible,
        retime_to_ms=retime_to_ms,
        progress=progress,
    )


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
