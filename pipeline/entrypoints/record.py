"""``alertfeed record``: capture topic traffic into an event log.

The recorder itself is :mod:`pipeline.replay.record` (when recording stops, what a record
keeps); this module parses the arguments and wires it to a
:class:`~pipeline.adapters.kafka.consumer.PartitionReader` of the named topics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.entrypoints.replay_args import parse_when
from pipeline.replay.topics import TopicNames
from pipeline.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module to build its parser: keep that light
    from pipeline.replay.record import RecordSummary


def record_topics(
    settings: Settings,
    topics: list[str],
    out: str | Path,
    *,
    from_beginning: bool = False,
    since_ms: int | None = None,
    until_ms: int | None = None,
    count: int | None = None,
    idle_timeout_s: float | None = None,
    progress: bool = True,
) -> RecordSummary:
    """Record ``topics`` (logical or real names) into ``out``, every partition read from the
    start (``from_beginning``), from the first record at or after ``since_ms``, or from the
    end; see :func:`pipeline.replay.record.record_log` for when it stops.

    Raises ConfigurationError for a topic that does not exist, BrokerUnavailable when the
    broker fails.
    """
    from pipeline.adapters.kafka.consumer import PartitionReader
    from pipeline.replay.record import record_log

    names = TopicNames(settings.topics.by_logical_name())
    real = [names.real(topic) for topic in topics]
    with PartitionReader(
        settings, real, from_beginning=from_beginning, since_ms=since_ms
    ) as reader:
        return record_log(
            reader,
            names,
            out,
            until_ms=until_ms,
            count=count,
            idle_timeout_s=idle_timeout_s,
            progress=progress,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic",
        nargs="+",
        required=True,
        help="logical names (alerts, locations, interstitials, lifecycle, dlq) or real topics",
    )
    parser.add_argument("--out", required=True, help="output log (.jsonl, .jsonl.gz, .jsonl.zst)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true")
    start.add_argument("--since", default=None, metavar="TIME", help="now-1h, ISO-8601, epoch ms")
    parser.add_argument("--until", default=None, metavar="TIME", help="stop at this broker time")
    parser.add_argument("--count", type=int, default=None, help="stop after N records")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--no-progress", action="store_true")


def run_record(args: argparse.Namespace, settings: Settings) -> int:
    """The ``record`` subcommand; prints a summary on stdout."""
    now = time.time_ns() // 1_000_000
    try:
        since = parse_when(args.since, now) if args.since else None
        until = parse_when(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"alertfeed record: {exc}", file=sys.stderr)
        return 2
    summary = record_topics(
        settings,
        args.topic,
        args.out,
        from_beginning=args.from_beginning,
        since_ms=since,
        until_ms=until,
        count=args.count,
        idle_timeout_s=args.idle_timeout,
        progress=not args.no_progress,
    )
    rate = summary.records / summary.elapsed_s if summary.elapsed_s else 0.0
    print(f"recorded {summary.records} records in {summary.elapsed_s:.1f}s ({rate:,.0f}/s)")
    for topic, n in summary.per_topic.items():
        print(f"  {topic}: {n}")
    return 0
