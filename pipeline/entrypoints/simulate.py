"""``alertfeed simulate``: write a synthetic scenario as an event log.

The scenario itself is :mod:`pipeline.replay.scenario`; this module streams it to a
``.jsonl``/``.jsonl.gz``/``.jsonl.zst`` file (alerts as CAP XML strings keyed by the alert
identifier as first issued, locations as objects keyed by user id). Same arguments, same
bytes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from pipeline.replay.eventlog import (
    EventLogWriter,
    LoggedRecord,
    json_record,
    parse_duration_ms,
    parse_when,
)
from pipeline.replay.scenario import DEFAULT_SENDER, ScenarioSpec, scenario_events
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    records: int
    locations: int
    alert_messages: int
    first_ts: int | None
    last_ts: int | None


def simulate_to(  # noqa: PLR0917 - the signature the demo calls positionally
    path: str | os.PathLike[str],
    users: int,
    duration_s: float,
    alerts: int,
    seed: int,
    start_ms: int,
    sender: str = DEFAULT_SENDER,
    *,
    report_every_s: float = 300.0,
    progress: bool = False,
) -> SimulationSummary:
    """Write the scenario of these parameters to ``path`` (compression by suffix).

    Deterministic: the same arguments give a byte-identical file. Streams, so any size
    fits in memory. Raises ValueError for impossible parameters.
    """
    spec = ScenarioSpec(
        users=users,
        duration_s=duration_s,
        alerts=alerts,
        seed=seed,
        start_ms=start_ms,
        sender=sender,
        report_every_s=report_every_s,
    )
    locations = alert_messages = 0
    first_ts: int | None = None
    last_ts: int | None = None
    bar = _progress_bar(spec) if progress else None
    with EventLogWriter(path) as writer:
        for topic, ts, key, value in scenario_events(spec):
            if topic == "locations":
                writer.write_line(json_record(topic, ts, key, value))
                locations += 1
            else:
                writer.write(LoggedRecord(topic, ts, key.encode(), value.encode()))
                alert_messages += 1
            if first_ts is None:
                first_ts = ts
            last_ts = ts
            if bar is not None and writer.count % 10_000 == 0:
                bar.update(10_000)
        if bar is not None:
            bar.update(writer.count % 10_000)
            bar.close()
        return SimulationSummary(writer.count, locations, alert_messages, first_ts, last_ts)


def _progress_bar(spec: ScenarioSpec) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]

    expected = int(spec.users * spec.duration_s / spec.report_every_s)
    return tqdm(total=expected, unit="ev", unit_scale=True, file=sys.stderr, desc="simulate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, required=True, help="number of simulated users")
    parser.add_argument("--duration", required=True, help="length of the scenario: 10m, 1h, ...")
    parser.add_argument("--out", required=True, help="output log (.jsonl, .jsonl.gz, .jsonl.zst)")
    parser.add_argument("--alerts", type=int, default=3, help="AMBER Alerts to issue (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--start", default="now", help="event time of the start: now, now-1h, ISO-8601, epoch ms"
    )
    parser.add_argument(
        "--sender",
        default=DEFAULT_SENDER,
        help="CAP sender of the alerts; the worker must allow it (ALERTFEED_POLICY__...)",
    )
    parser.add_argument(
        "--report-every",
        default="300s",
        help="mean interval between two reports of one user (default 300s)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """The ``simulate`` subcommand; prints a one-line summary."""
    now = time.time_ns() // 1_000_000
    try:
        start_ms = parse_when(args.start, now)
        duration_ms = parse_duration_ms(args.duration)
        every_ms = parse_duration_ms(args.report_every)
    except ValueError as exc:
        print(f"alertfeed simulate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    summary = simulate_to(
        args.out,
        args.users,
        duration_ms / 1000,
        args.alerts,
        args.seed,
        start_ms,
        args.sender,
        report_every_s=every_ms / 1000,
        progress=not args.no_progress,
    )
    elapsed = time.perf_counter() - started
    if args.sender not in settings.policy.allowed_senders:
        log.warning("sender is not in ALERTFEED_POLICY__ALLOWED_SENDERS: a worker would reject it")
    print(
        f"wrote {summary.records} records ({summary.locations} locations, "
        f"{summary.alert_messages} alert messages) to {args.out} in {elapsed:.1f}s"
    )
    return 0
