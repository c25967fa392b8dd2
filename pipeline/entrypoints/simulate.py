"""``alertfeed simulate``: write a synthetic scenario as an event log.

The scenario is :mod:`pipeline.replay.scenario`, written to a log by
:func:`pipeline.replay.simulate.simulate_to`; this module parses the arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from pipeline.entrypoints.replay_args import parse_duration_ms, parse_when
from pipeline.replay.scenario import DEFAULT_SENDER
from pipeline.replay.simulate import simulate_to
from pipeline.settings import Settings

log = logging.getLogger(__name__)


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
