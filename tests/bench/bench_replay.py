"""Benchmark: offline replay throughput, and the full-size determinism check.

1. Throughput: a simulated log of 20k users over one hour (about 240k location events) is
   replayed offline; the figure is location events per second, beside a same-run baseline:
   merely reading the same log and parsing every line with orjson.
2. The issue's "done when": a simulated one-hour log of 100k users (about 1.2M location
   events) is replayed offline twice; the outputs must be byte-identical (else this raises).
   Its throughput is reported beside the same baseline on that log.

``run(report)`` is the harness entry point; run this file directly to print the figures
(``--quick`` skips the 100k-user run).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from pipeline.entrypoints.replay import replay_offline
from pipeline.replay.eventlog import read_lines
from pipeline.replay.scenario import DEFAULT_SENDER
from pipeline.replay.simulate import simulate_to
from pipeline.settings import PolicySettings, Settings

Report = Callable[[str, float, str, str, float], None]

START_MS = 1795400000000
SETTINGS = Settings(policy=PolicySettings(allowed_senders=[DEFAULT_SENDER]))


def read_and_parse_rate(log: Path) -> float:
    """Location lines per second of reading the log and parsing every line with orjson."""
    started = time.perf_counter()
    locations = 0
    for line in read_lines(log):
        locations += orjson.loads(line)["topic"] == "locations"
    return locations / (time.perf_counter() - started)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def throughput(report: Report, tmp: Path, users: int, label: str, twice: bool) -> None:
    log = tmp / f"sim-{users}.jsonl.zst"
    simulate_to(log, users, 3600, 5, 1, START_MS)
    baseline = read_and_parse_rate(log)
    first = replay_offline(SETTINGS, log, tmp / "out-1.jsonl.zst")
    rate = first.locations / first.elapsed_s
    if twice:
        replay_offline(SETTINGS, log, tmp / "out-2.jsonl.zst")
        if digest(tmp / "out-1.jsonl.zst") != digest(tmp / "out-2.jsonl.zst"):
            raise AssertionError(f"offline replay of {label} is not deterministic")
        label += ", two runs byte-identical"
    report(
        f"offline replay, {label} ({first.locations} locations, "
        f"{first.produced.get('interstitials', 0)} cards)",
        rate,
        "locations/s",
        "read + orjson.loads of the same log",
        baseline,
    )


def run(report: Report, *, full: bool = True) -> None:
    with tempfile.TemporaryDirectory(prefix="alertfeed-bench-replay-") as tmp:
        throughput(report, Path(tmp), 20_000, "20k users x 1 h", twice=False)
        if full:
            throughput(report, Path(tmp), 100_000, "100k users x 1 h", twice=True)


def _print_report(
    name: str, value: float, unit: str, baseline_name: str, baseline_value: float
) -> None:
    print(
        f"{name}: {value:,.0f} {unit} | baseline {baseline_name}: {baseline_value:,.0f} {unit} "
        f"| ratio {value / baseline_value:.2f}"
    )


if __name__ == "__main__":
    run(_print_report, full="--quick" not in sys.argv[1:])
