"""Offline replay: deterministic (same log, byte-identical output), faithful to the event
log contracts, and in agreement with a real worker on the set of (user, alert) pairs for
the same simulated log.

The logs here are small, for fast feedback; test_full_size_replay.py makes the same
checks on a simulated hour of 100k users.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.entrypoints.replay import replay_offline
from pipeline.replay import offline as offline_replay
from pipeline.replay.eventlog import encode_record, json_record, read_log
from pipeline.replay.retime import retime_record
from pipeline.replay.scenario import DEFAULT_SENDER
from pipeline.replay.simulate import simulate_to
from pipeline.settings import PolicySettings, Settings
from tests.support.kafka import collect
from tests.support.live_replay import card_pairs, replay_to_worker
from tests.support.schemas import assert_valid
from tests.support.worker import WorkerProcess

START = 1795400000000
SIMULATION = Settings(policy=PolicySettings(allowed_senders=[DEFAULT_SENDER]))


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
    assert len(card_pairs(first)) == summary.produced["interstitials"]  # one card per pair


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
    assert card_pairs(tmp_path / "a.jsonl") == card_pairs(tmp_path / "b.jsonl")


def test_a_log_found_out_of_order_late_replays_byte_for_byte_like_the_ordered_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The replay reads a log in one pass, taking it to be in order; a record out of order
    near the end makes it start over, ordering the log first: the output must not show it."""
    log, moved = tmp_path / "sim.jsonl", tmp_path / "moved.jsonl"
    simulate_to(log, 300, 600, 2, 5, START, report_every_s=20)
    lines = log.read_bytes().splitlines(keepends=True)
    times = [orjson.loads(line)["ts"] for line in lines]
    # A location alone at its ts, moved near the end: sorted, it is back in its place.
    middle = next(
        i
        for i in range(len(lines) // 2, len(lines))
        if times.count(times[i]) == 1 and b'"topic":"locations"' in lines[i]
    )
    moved.write_bytes(
        b"".join(lines[:middle] + lines[middle + 1 : -5] + [lines[middle]] + lines[-5:])
    )
    first = replay_offline(SIMULATION, log, tmp_path / "a.jsonl.zst")
    with caplog.at_level(logging.INFO, logger="pipeline.replay.offline"):
        second = replay_offline(SIMULATION, moved, tmp_path / "b.jsonl.zst")
    assert "read again in event-time order" in caplog.text  # after a first, dropped output
    assert (tmp_path / "a.jsonl.zst").read_bytes() == (tmp_path / "b.jsonl.zst").read_bytes()
    assert (first.locations, first.alerts, first.batches, first.produced) == (
        second.locations,
        second.alerts,
        second.batches,
        second.produced,
    )
    assert first.produced["interstitials"] > 0


def edge_of_the_window(sim: Path, path: Path, window_ms: int) -> str:
    """A log where a user is last seen exactly ``window_ms`` before an alert that comes at
    a time the in-process stores forget (the one case where forgetting could show), made
    from the simulated log ``sim``; returns that user."""
    records = list(read_log(sim))
    alert = next(r for r in records if r.topic == "alerts")
    replay_offline(SIMULATION, sim, path)  # whom the first alert's fan-out cards, and where
    cards = [orjson.loads(r.value or b"") for r in read_log(path) if r.topic == "interstitials"]
    user = min(c["user_id"] for c in cards if c["created_ms"] == alert.ts)
    seen = [r for r in records if r.topic == "locations" and r.key == user.encode()]
    where = orjson.loads(next(r for r in reversed(seen) if r.ts < alert.ts).value or b"")
    at = START + 2 * window_ms  # a tick; the first is 5 s after the log starts, then 60 s on
    start = at - window_ms - 65_000
    lines = [
        json_record("locations", t, "far", {"user_id": "far", "lat": 1.5, "lon": 1.5, "ts": t})
        for t in range(start, at + 10_000, 1000)
        if t != at
    ]
    seen_at = at - window_ms
    lines.insert(
        (seen_at - start) // 1000,
        json_record("locations", seen_at, user, {**where, "ts": seen_at, "user_id": user}),
    )
    lines.insert((at - start) // 1000, encode_record(retime_record(alert, at - alert.ts, "alerts")))
    path.write_bytes(b"".join(lines))
    return user


def test_when_the_presence_store_forgets_never_shows_in_the_output(tmp_path: Path) -> None:
    """The in-process presence store forgets less often than the dedup store (a scan of
    every user), but whenever that could change a card; as often, the output is the same."""
    sim, edge = tmp_path / "sim.jsonl", tmp_path / "edge.jsonl"
    simulate_to(sim, 300, 300, 2, 1, START, report_every_s=30)
    user = edge_of_the_window(sim, edge, int(SIMULATION.match.freshness_s * 1000))
    outputs = []
    for every in (offline_replay.FORGET_EVERY_MS, offline_replay.PRESENCE_FORGET_EVERY_MS):
        for log in (sim, edge):
            replay_offline(SIMULATION, log, tmp_path / "out.jsonl", presence_forget_every_ms=every)
            outputs.append((tmp_path / "out.jsonl").read_bytes())
    assert outputs[:2] == outputs[2:]
    assert card_pairs(tmp_path / "out.jsonl") == set()  # forgotten at the alert's very time
    replay_offline(SIMULATION, edge, tmp_path / "out.jsonl", forget_every_ms=10**15)
    assert {u for u, _ in card_pairs(tmp_path / "out.jsonl")} == {user}  # never forgotten


# -- agreement with the live pipeline ----------------------------------------------------------
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
    expected = card_pairs(offline)
    assert summary.produced["lifecycle"] == summary.alerts and len(expected) > 50

    worker = start_worker(settings)
    fed = replay_to_worker(settings, worker, log)
    assert (fed.locations, fed.alerts) == (summary.locations, summary.alerts)

    cards = collect(
        settings,
        settings.topics.interstitials,
        until=lambda r: len(r) >= len(expected),
        timeout_s=60,
        settle_s=3,
    )
    live = {(c["user_id"], c["alert_id"]) for c in map(orjson.loads, (r.value for r in cards))}
    assert live == expected, (len(live - expected), len(expected - live))
    assert len(cards) == len(live), "some pair got more than one card"
