"""What on-call sees, end to end: a real Prometheus scraping a real worker during a replay
of traffic, per-alert reach over HTTP and the CLI, graceful shutdown, and logs free of
personal data.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.adapters.faust.join import locations_group
from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import Settings, child_environment
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json, now_ms
from tests.support.kafka import collect, produce, produce_json, values
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
PROMETHEUS = "/usr/bin/prometheus"
# A square around central Austin, TX: (lat, lon) corners.
SOUTH, NORTH, WEST, EAST = 30.20, 30.30, -97.80, -97.70
SQUARE = [(SOUTH, WEST), (SOUTH, EAST), (NORTH, EAST), (NORTH, WEST)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout_s: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.load(resp)


def crowd(n_inside: int, n_outside: int, seed: int) -> list[dict[str, Any]]:
    """Location events with distinctive user ids and 7-decimal coordinates: clearly inside
    the square (1 km from its edges) or clearly outside it (at least 5 km away)."""
    rng = random.Random(seed)
    tag = f"{seed:x}"
    ts = now_ms()
    events = [
        {
            "user_id": f"obs-in-{tag}-{i:04d}",
            "lat": round(rng.uniform(SOUTH + 0.01, NORTH - 0.01), 7),
            "lon": round(rng.uniform(WEST + 0.01, EAST - 0.01), 7),
            "ts": ts + i,
        }
        for i in range(n_inside)
    ]
    events += [
        {
            "user_id": f"obs-out-{tag}-{i:04d}",
            "lat": round(rng.uniform(NORTH + 0.05, NORTH + 0.3), 7),
            "lon": round(rng.uniform(WEST - 0.3, EAST + 0.3), 7),
            "ts": ts + i,
        }
        for i in range(n_outside)
    ]
    rng.shuffle(events)
    return events


def publish_alert(settings: Settings) -> dict[str, Any]:
    alert = make_alert_json(polygons=[SQUARE], sender=TEST_SENDER)
    produce_json(settings, settings.topics.alerts, [(str(alert["id"]), alert)])
    issued = collect(settings, settings.topics.lifecycle, until=lambda r: len(r) >= 1, settle_s=0)
    assert [v["state"] for v in values(issued)] == ["issued"]
    return alert


def publish_locations(settings: Settings, events: list[dict[str, Any]]) -> None:
    produce_json(settings, settings.topics.locations, [(e["user_id"], e) for e in events])


def cards_for(settings: Settings, expected: int) -> list[dict[str, Any]]:
    return values(
        collect(
            settings,
            settings.topics.interstitials,
            until=lambda r: len(r) >= expected,
            timeout_s=90,
            settle_s=3,
        )
    )


class Prometheus:
    """A real Prometheus server scraping one worker every second, with our alert rules."""

    def __init__(self, tmp: Path, worker: WorkerProcess) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES / "*.yml")],
            "scrape_configs": [
                {
                    "job_name": "alertfeed-worker",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker.settings.metrics.port}"]}],
                }
            ],
        }
        config_path = tmp / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self._log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited at start"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready within {timeout_s}s")

    def query(self, expr: str) -> float | None:
        """The value of a PromQL expression with at most one series, None when empty."""
        body = get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, f"{expr}: {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expectations: dict[str, Callable[[float | None], bool]]) -> dict[str, Any]:
        """Polls until every expression's value satisfies its check (or 60 s pass); returns
        the last values for the assertion messages."""
        deadline = time.monotonic() + 60
        while True:
            seen = {expr: self.query(expr) for expr in expectations}
            if all(check(seen[e]) for e, check in expectations.items()):
                return seen
            if time.monotonic() > deadline:
                return seen
            time.sleep(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[WorkerProcess], Prometheus]]:
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(
            f"{PROMETHEUS} not found: install Debian's prometheus package (.ci/run does it)",
            pytrace=False,
        )
    servers: list[Prometheus] = []

    def start(worker: WorkerProcess) -> Prometheus:
        servers.append(Prometheus(tmp_path / f"prom-{len(servers)}", worker))
        return servers[-1]

    (tmp_path / "prom-0").mkdir()
    yield start
    for server in servers:
        server.stop()


def test_prometheus_sees_the_pipeline_through_a_replay(
    settings: Settings,
    start_worker: Callable[[Settings], WorkerProcess],
    prometheus: Callable[[WorkerProcess], Prometheus],
) -> None:
    ensure_topics(settings)
    worker = start_worker(settings)
    prom = prometheus(worker)
    # Prometheus applies new targets within ~5 s; the replay must start after a first scrape.
    up = 'up{job="alertfeed-worker"}'
    assert prom.wait_for({up: lambda v: v == 1})[up] == 1, "prometheus never scraped the worker"
    alert = publish_alert(settings)
    events = crowd(250, 150, seed=61)
    publish_locations(settings, events)
    produce(settings, settings.topics.locations, [(b"poison", b"{not json")])
    cards = cards_for(settings, 250)
    assert len(cards) == 250
    n = float(len(cards))

    def equals(value: float) -> Callable[[float | None], bool]:
        return lambda v: v == value

    def positive(v: float | None) -> bool:
        return v is not None and v > 0

    expected: dict[str, Callable[[float | None], bool]] = {
        up: equals(1),
        "alertfeed_worker_ready": equals(1),
        'alertfeed_events_in_total{topic="locations"}': equals(len(events) + 1),
        'alertfeed_events_in_total{topic="alerts"}': equals(1),
        'alertfeed_events_out_total{topic="interstitials"}': equals(n),
        'alertfeed_events_out_total{topic="lifecycle"}': equals(1),
        'alertfeed_events_dead_lettered_total{topic="locations",reason="malformed"}': equals(1),
        'alertfeed_active_alerts{status="Actual"}': equals(1),
        "alertfeed_cover_cells": positive,
        "alertfeed_location_to_card_seconds_count": equals(n),
        "alertfeed_alert_first_card_seconds_count": equals(1),
        "alertfeed_alert_expansion_seconds_count": equals(1),
        "alertfeed_redis_roundtrip_seconds_count": positive,
        'alertfeed_consumer_lag_messages{topic="locations"}': equals(0),
        'alertfeed_consumer_lag_messages{topic="alerts"}': equals(0),
        "alertfeed_redis_errors_total": equals(0),
        # what the dashboard's p99 panel computes
        "histogram_quantile(0.99, sum by (le) "
        "(rate(alertfeed_location_to_card_seconds_bucket[5m])))": positive,
    }
    seen = prom.wait_for(expected)
    wrong = {e: seen[e] for e, check in expected.items() if not check(seen[e])}
    assert not wrong, f"series missing or implausible: {wrong}\nworker log:\n{worker.log_tail()}"

    # Every rule of deploy/prometheus loads and evaluates against the live series; none fires.
    groups = get_json(f"{prom.url}/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 10
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
    assert all(r["annotations"]["runbook_url"].startswith("https://") for r in rules)
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert firing == []

    # Per-alert reach, from the worker's HTTP endpoint and from `alertfeed status`.
    reach = get_json(f"{worker.base_url}/alerts/reach")["alerts"]
    assert [(r["alert_id"], r["cards_total"], r["cards_last_5m"]) for r in reach] == [
        (alert["id"], len(cards), len(cards))
    ]
    env = child_environment(settings)
    status = subprocess.run(
        [sys.executable, "-m", "pipeline.entrypoints.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    header, row = status.stdout.strip().splitlines()
    assert header.split()[:3] == ["ALERT", "ID", "STATUS"]
    assert row.split()[:3] == [alert["id"], "Actual", "issued"]
    assert row.split()[-3:] == [str(len(cards))] * 3


def test_sigterm_finishes_commits_and_exits_zero_within_30s(
    settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    ensure_topics(settings)
    worker = start_worker(settings)
    publish_alert(settings)
    events = crowd(100, 100, seed=62)
    publish_locations(settings, events)
    cards_for(settings, 100)

    assert worker.proc is not None
    started = time.monotonic()
    os.killpg(worker.proc.pid, signal.SIGTERM)
    code = worker.proc.wait(60)
    elapsed = time.monotonic() - started
    assert code == 0, f"worker exited with {code}:\n{worker.log_tail()}"
    assert elapsed < 30, f"shutdown took {elapsed:.1f}s (terminationGracePeriodSeconds is 60)"

    # Everything consumed is committed: a successor would start after the last event.
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": locations_group(settings),
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [
            TopicPartition(settings.topics.locations, p) for p in range(settings.topics.partitions)
        ]
        committed = consumer.committed(parts, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == ends
    assert sum(ends) == len(events)


def test_logs_at_info_carry_no_user_ids_or_coordinates(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    settings = make_settings(log_level="INFO")
    ensure_topics(settings)
    worker = start_worker(settings)
    publish_alert(settings)
    events = crowd(40, 40, seed=63)
    publish_locations(settings, events)
    poison = {"user_id": "obs-poison-user", "lat": 123.4567891, "lon": -97.7654321, "ts": 1}
    produce_json(settings, settings.topics.locations, [("obs-poison-user", poison)])
    produce(settings, settings.topics.alerts, [(b"broken", b"<alert><identifier>broken")])
    cards_for(settings, 40)
    collect(settings, settings.topics.dlq, until=lambda r: len(r) >= 2, settle_s=1)
    assert worker.stop() == 0

    log = worker.log_path.read_text(errors="replace")
    assert "alert issued" in log  # the log is really there, at INFO
    leaks = [
        text
        for e in [*events, poison]
        for text in (
            e["user_id"],
            repr(e["lat"]),
            repr(e["lon"]),
            f"{e['lat']:.4f}",
            f"{e['lon']:.4f}",
        )
        if text in log
    ]
    assert leaks == [], f"personal data in the worker log: {leaks[:10]}"
