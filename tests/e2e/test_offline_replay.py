"""Offline replay: deterministic (same log, byte-identical output), faithful to the event
log contracts, and in agreement with a real worker on the set of (user, alert) pairs for
the same simulated log.

The full-size check (100k users, one hour) runs in ``make bench`` (tests/bench/
bench_replay.py); here the logs are small enough for the normal suite.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.eventlog import LoggedRecord, in_event_time_order, read_log
from pipeline.adapters.kafka_tools import DeliveryProducer, ensure_topics
from pipeline.domain.scenario import DEFAULT_SENDER
from pipeline.entrypoints.replay import replay_offline
from pipeline.entrypoints.simulate import simulate_to
from pipeline.settings import PolicySettings, Settings
from tests.support.kafka import collect
from tests.support.schemas import assert_valid
from tests.support.worker import WorkerProcess

START = 1795400000000
SIMULATION = Settings(policy=PolicySettings(allowed_senders=[DEFAULT_SENDER]))


def pairs(path: Path) -> set[tuple[str, str]]:
    return {
        (card["user_id"], card["alert_id"])
        for record in read_log(path)
        if record.topic == "interstitials" and record.value is not None
        for card in [orjson.loads(record.value)]
    }


def test_offline_replay_of_a_simulated_log_is_deterministic_and_follows_the_contracts(
    tmp_path: Path,
) -> None:
    log = tmp_path / "sim.jsonl.zst"
    simulate_to(log, 2000, 600, 3, 7, START, report_every_s=60)
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    summary = replay_offline(SIMULATION, log, first)
    replay_offline(SIMULATION, log, second)
    assert first.read_bytes() == second.read_bytes()
    assert summary.locations > 19_000 and summary.alerts == 9
    assert summary.produced["lifecycle"] == 9
    assert summary.produced["interstitials"] > 50  # the scenario really reaches people

    for line in first.read_bytes().splitlines():
        assert_valid("event_log", orjson.loads(line))
    states = []
    for record in read_log(first):
        assert record.value is not None
        value = orjson.loads(record.value)
        assert_valid({"interstitials": "interstitial"}.get(record.topic, record.topic), value)
        if record.topic == "lifecycle":
            states.append(value["state"])
    assert sorted(states) == ["cancelled"] * 3 + ["issued"] * 3 + ["updated"] * 3
    assert len(pairs(first)) == summary.produced["interstitials"]  # one card per pair


@given(seed=st.integers(min_value=0, max_value=2**32))
@settings(max_examples=5, deadline=None)
def test_offline_replay_is_deterministic_for_any_seed(tmp_path_factory: object, seed: int) -> None:
    tmp = Path(tmp_path_factory.mktemp("seed"))  # type: ignore[attr-defined]
    log = tmp / "sim.jsonl"
    simulate_to(log, 300, 300, 2, seed, START, report_every_s=30)
    replay_offline(SIMULATION, log, tmp / "a.jsonl.gz")
    replay_offline(SIMULATION, log, tmp / "b.jsonl.gz")
    assert (tmp / "a.jsonl.gz").read_bytes() == (tmp / "b.jsonl.gz").read_bytes()


def test_a_shuffled_log_replays_like_the_ordered_one(tmp_path: Path) -> None:
    log, shuffled = tmp_path / "sim.jsonl", tmp_path / "shuffled.jsonl"
    simulate_to(log, 200, 300, 1, 3, START, report_every_s=30)
    lines = log.read_bytes().splitlines(keepends=True)
    shuffled.write_bytes(b"".join(lines[1::2] + lines[0::2]))
    replay_offline(SIMULATION, log, tmp_path / "a.jsonl")
    replay_offline(SIMULATION, shuffled, tmp_path / "b.jsonl")
    assert pairs(tmp_path / "a.jsonl") == pairs(tmp_path / "b.jsonl")


# -- agreement with the live pipeline ----------------------------------------------------------
def metric(worker: WorkerProcess, name: str) -> float:
    """Sum of the samples of ``name`` (any labels) in the worker's /metrics."""
    with urllib.request.urlopen(f"{worker.base_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"worker did not finish {what} within {timeout_s:.0f}s")
        time.sleep(0.1)


@pytest.mark.integration
def test_offline_replay_agrees_with_a_real_worker_on_who_gets_which_alert(
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = make_settings(policy=PolicySettings(allowed_senders=[DEFAULT_SENDER]))
    ensure_topics(settings)
    # The run ends now: nothing is in the future for the live worker, no alert has expired.
    log = tmp_path / "sim.jsonl.zst"
    now = time.time_ns() // 1_000_000
    simulate_to(log, 2000, 600, 3, 21, now - 660_000, report_every_s=60)
    offline = tmp_path / "offline.jsonl"
    summary = replay_offline(settings, log, offline)
    expected = pairs(offline)
    assert summary.produced["lifecycle"] == summary.alerts and len(expected) > 50

    worker = start_worker(settings)
    producer = DeliveryProducer(settings)
    sent = {"locations": 0, "alerts": 0, "fanned_out": 0}

    def publish(records: list[LoggedRecord], topic: str) -> None:
        for record in records:
            producer.send(getattr(settings.topics, topic), record.value, key=record.key)
        producer.flush()
        sent[topic] += len(records)

    def locations_done() -> bool:
        consumed = metric(worker, "alertfeed_events_in_total") - sent["alerts"]
        started = metric(worker, "alertfeed_batch_events_count")
        finished = metric(worker, "alertfeed_batch_duration_seconds_count")
        return consumed >= sent["locations"] and started == finished

    # Same order as offline: every location before an alert is processed before it, and
    # every alert (with its fan-out) before the locations after it.
    pending: list[LoggedRecord] = []
    for item in in_event_time_order(log):
        if item.record.topic == "locations":
            pending.append(item.record)
            continue
        publish(pending, "locations")
        pending = []
        wait_for(locations_done, "locations")
        publish([item.record], "alerts")
        sent["fanned_out"] += b"<msgType>Cancel</msgType>" not in (item.record.value or b"")
        wait_for(
            lambda: (
                metric(worker, "alertfeed_alert_lifecycle_total") >= sent["alerts"]
                and metric(worker, "alertfeed_fanout_duration_seconds_count") >= sent["fanned_out"]
            ),
            "an alert",
        )
    publish(pending, "locations")
    wait_for(locations_done, "locations")

    cards = collect(
        settings,
        settings.topics.interstitials,
        until=lambda r: len(r) >= len(expected),
        timeout_s=60,
        settle_s=3,
    )
    live = {(c["user_id"], c["alert_id"]) for c in map(orjson.loads, (r.value for r in cards))}
    assert live == expected, (len(live - expected), len(expected - live))
