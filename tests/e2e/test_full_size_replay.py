"""Issue 5's done-when, at full size: a simulated one-hour log of 100k users (about 1.2M
location events) replays offline deterministically, and a real worker fed the same log gives
exactly the offline replay's (user, alert) pairs, one card each.

It takes some six to eight minutes on the 2-core development machine, nearly all of it
the worker consuming the 1.2M locations (about 4,000 a second there); the fast, small-log
versions of these checks are in test_offline_replay.py.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.entrypoints.replay import replay_offline
from pipeline.replay.scenario import DEFAULT_SENDER
from pipeline.replay.simulate import simulate_to
from pipeline.settings import MatchSettings, PolicySettings, Settings
from tests.support.kafka import collect
from tests.support.live_replay import card_pairs, replay_to_worker, scrape
from tests.support.worker import WorkerProcess

USERS = 100_000
DURATION_S = 3600
ALERTS = 5  # 15 alert messages: each issued, updated (area 1.6 times as wide), cancelled
SEED = 21
# Longer than the log plus anything this test can take (its timeout), so that the live
# worker, which judges freshness by its wall clock, finds every location of the log fresh.
FRESHNESS_S = 4 * 3600.0


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_a_100k_user_hour_replays_offline_deterministically_and_like_a_real_worker(
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """Time. The log ends now and starts an hour ago, so nothing in it is ahead of the
    live worker's clock (no future-skew rejection) and no alert has expired (they expire
    six hours after issue, by both clocks). The worker judges a location's freshness by its
    wall clock, the offline replay by event time; with the default 30-minute window the live
    worker would drop the first half of the hour as stale while the offline replay matches
    it. Both runs therefore use the same settings with a window of four hours, longer than
    the log plus this test, so neither drops anything as stale (asserted on the worker).

    That choice does not weaken the comparison: every simulated user reports at least every
    7.5 minutes, so offline, where every judgement is in event time, a 30-minute window and
    a 4-hour one see the same users as present and give the same pairs; a third offline
    replay with the production default window checks exactly that. So the live run is
    held to what production, with its default window, would compute for this hour.

    Order. The worker is fed segment by segment (tests/support/live_replay.py): the
    locations before an alert message are all matched before it is applied, as offline.
    """
    base = make_settings(policy=PolicySettings(allowed_senders=[DEFAULT_SENDER]))
    settings = base.model_copy(
        update={"match": base.match.model_copy(update={"freshness_s": FRESHNESS_S})}
    )
    ensure_topics(settings)
    timings: dict[str, float] = {}

    def timed(name: str, began: float) -> None:
        timings[name] = round(time.monotonic() - began, 1)

    began = time.monotonic()
    log = tmp_path / "sim.jsonl.zst"
    now = time.time_ns() // 1_000_000
    simulated = simulate_to(log, USERS, DURATION_S, ALERTS, SEED, now - DURATION_S * 1000)
    timed("simulate", began)
    assert simulated.locations > 1_100_000 and simulated.alert_messages == 3 * ALERTS

    began = time.monotonic()
    first, second = tmp_path / "offline-1.jsonl.zst", tmp_path / "offline-2.jsonl.zst"
    summary = replay_offline(settings, log, first)
    timed("offline replay 1", began)
    began = time.monotonic()
    replay_offline(settings, log, second)
    timed("offline replay 2", began)
    assert first.read_bytes() == second.read_bytes(), "two offline replays differ"
    expected = card_pairs(first)
    assert summary.locations == simulated.locations
    assert summary.produced["lifecycle"] == 3 * ALERTS
    assert summary.produced["interstitials"] == len(expected) > 10_000  # one card per pair

    began = time.monotonic()
    assert base.match.freshness_s == MatchSettings().freshness_s  # the default, 30 minutes
    replay_offline(base, log, tmp_path / "offline-default-window.jsonl.zst")
    timed("offline replay, default window", began)
    assert card_pairs(tmp_path / "offline-default-window.jsonl.zst") == expected

    worker = start_worker(settings)
    live = replay_to_worker(settings, worker, log, stall_timeout_s=120)
    timings.update(
        publish=round(live.publish_s, 1),
        catch_up=round(live.catch_up_s, 1),
        alerts=round(live.alerts_s, 1),
        live_total=round(live.total_s, 1),
    )
    assert (live.locations, live.alerts) == (simulated.locations, simulated.alert_messages)
    value = scrape(worker)
    assert value("alertfeed_locations_ignored_total") == 0  # nothing judged stale
    assert value("alertfeed_events_dead_lettered_total") == 0  # nor in the future
    # Each location matched once: a re-consumption (after a rebalance) would have let the
    # segments overlap, and the pairs below would differ for that reason only.
    assert value("alertfeed_events_in_total", topic="locations") == simulated.locations

    began = time.monotonic()
    produced = value("alertfeed_events_out_total", topic="interstitials")
    cards = collect(
        settings,
        settings.topics.interstitials,
        until=lambda r: len(r) >= max(produced, len(expected)),
        timeout_s=180,
        settle_s=3,
    )
    timed("collect", began)
    print(f"\nfull-size replay: {len(expected)} pairs; seconds: {timings}")
    got = Counter(
        (c["user_id"], c["alert_id"]) for c in map(orjson.loads, (r.value for r in cards))
    )
    assert len(cards) == produced, (len(cards), produced)
    doubled = [pair for pair, n in got.items() if n > 1]
    assert not doubled, f"{len(doubled)} pairs got more than one card, e.g. {doubled[:3]}"
    live_pairs = set(got)
    assert live_pairs == expected, (
        f"live only: {len(live_pairs - expected)} (e.g. {sorted(live_pairs - expected)[:3]}), "
        f"offline only: {len(expected - live_pairs)} (e.g. {sorted(expected - live_pairs)[:3]})"
    )
