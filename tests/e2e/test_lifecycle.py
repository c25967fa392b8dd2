"""Targeting lifecycle end to end, on the real broker and Redis with real worker processes:
updates, cancellations, out-of-order messages, expiry, presence fan-out, index rebuild,
crash recovery, and the sender and status policy."""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.domain.records import RawEvent
from pipeline.settings import MatchSettings, Settings
from tests.conftest import TEST_SENDER, TEST_USERS
from tests.support.factories import make_alert_json, now_ms
from tests.support.kafka import collect, produce_json, values
from tests.support.live_replay import metric, scrape, wait_for
from tests.support.schemas import assert_valid
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

StartWorker = Callable[[Settings], WorkerProcess]

# Two nested squares near Austin, TX (lat, lon): SMALL lies well inside BIG.
SMALL = [(30.25, -97.78), (30.25, -97.72), (30.29, -97.72), (30.29, -97.78)]
BIG = [(30.20, -97.85), (30.20, -97.65), (30.34, -97.65), (30.34, -97.85)]
IN_SMALL = (30.27, -97.75)
IN_BIG_ONLY = (30.22, -97.68)
OUTSIDE = (30.50, -97.40)


def loc(user: str, where: tuple[float, float], ts: int | None = None) -> tuple[str, dict[str, Any]]:
    return user, {"user_id": user, "lat": where[0], "lon": where[1], "ts": ts or now_ms()}


def publish_alerts(settings: Settings, *alerts: dict[str, Any], key: str | None = None) -> None:
    produce_json(settings, settings.topics.alerts, [(key or str(a["id"]), a) for a in alerts])


def lifecycle(settings: Settings, count: int, settle_s: float = 1.0) -> list[dict[str, Any]]:
    events = values(
        collect(
            settings, settings.topics.lifecycle, until=lambda r: len(r) >= count, settle_s=settle_s
        )
    )
    for event in events:
        assert_valid("lifecycle", event)
    return events


def cards(
    settings: Settings, count: int, settle_s: float = 3.0, timeout_s: float = 60
) -> list[dict[str, Any]]:
    found = values(
        collect(
            settings,
            settings.topics.interstitials,
            until=lambda r: len(r) >= count,
            settle_s=settle_s,
            timeout_s=timeout_s,
        )
    )
    for card in found:
        assert_valid("interstitial", card)
    return found


def users_of(found: list[dict[str, Any]]) -> list[str]:
    return sorted(c["user_id"] for c in found)


def wait_until_matched(worker: WorkerProcess, count: int) -> None:
    """Until ``worker`` has matched (and so recorded as present) ``count`` location events
    and has no location batch in progress, by its /metrics."""

    def state() -> tuple[bool, tuple[float, float]]:
        value = scrape(worker)
        consumed = value("alertfeed_events_in_total", topic="locations")
        begun = value("alertfeed_batch_events_count", topic="locations")
        finished = value("alertfeed_batch_duration_seconds_count", topic="locations")
        return consumed >= count and begun == finished, (consumed, finished)

    wait_for(state, f"matching {count} locations", worker=worker)


def fan_outs_done(worker: WorkerProcess) -> float:
    """Fan-outs ended (done or stopped): one per alert version and owned partition."""
    return metric(worker, "alertfeed_fanouts_total")


@pytest.fixture
def worker_settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(
        match=MatchSettings(batch_size=200, batch_within_s=0.05, expiry_check_s=0.5)
    )
    ensure_topics(settings)
    return settings


def test_update_grows_the_area_new_users_get_the_card_and_nobody_twice(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    start_worker(s)
    original = make_alert_json(polygons=[SMALL], sender=TEST_SENDER)
    publish_alerts(s, original)
    lifecycle(s, 1)
    produce_json(s, s.topics.locations, [loc("small", IN_SMALL), loc("big", IN_BIG_ONLY)])
    assert users_of(cards(s, 1)) == ["small"]

    sent = datetime.now(UTC) + timedelta(seconds=1)
    update = make_alert_json(
        polygons=[BIG],
        sender=TEST_SENDER,
        msg_type="Update",
        sent=sent,
        references=[(TEST_SENDER, original["id"], original["sent"])],
    )
    publish_alerts(s, update, key=original["id"])
    states = [e["state"] for e in lifecycle(s, 2)]
    assert states == ["issued", "updated"]
    # "big" never reports again: the fan-out on the grown area reaches them.
    both = cards(s, 2)
    assert users_of(both) == ["big", "small"]
    big_card = next(c for c in both if c["user_id"] == "big")
    assert (big_card["alert_id"], big_card["message_id"]) == (original["id"], update["id"])

    produce_json(s, s.topics.locations, [loc("small", IN_SMALL), loc("big", IN_BIG_ONLY)])
    assert Counter(users_of(cards(s, 2, settle_s=4))) == {"small": 1, "big": 1}


def test_cancel_stops_the_cards_at_once_and_is_announced(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    start_worker(s)
    original = make_alert_json(polygons=[BIG], sender=TEST_SENDER)
    publish_alerts(s, original)
    lifecycle(s, 1)
    produce_json(s, s.topics.locations, [loc("before", IN_SMALL)])
    assert users_of(cards(s, 1)) == ["before"]

    cancel = make_alert_json(
        polygons=[BIG],
        sender=TEST_SENDER,
        msg_type="Cancel",
        sent=datetime.now(UTC) + timedelta(seconds=1),
        references=[(TEST_SENDER, original["id"], original["sent"])],
    )
    publish_alerts(s, cancel, key=original["id"])
    events = lifecycle(s, 2)
    assert [e["state"] for e in events] == ["issued", "cancelled"]
    assert events[1]["alert_id"] == original["id"]
    assert events[1]["message_id"] == cancel["id"]

    produce_json(s, s.topics.locations, [loc("after", IN_SMALL), loc("before", IN_SMALL)])
    assert users_of(cards(s, 2, settle_s=4, timeout_s=8)) == ["before"]


def test_update_and_cancel_that_arrive_before_their_alert(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    start_worker(s)
    t0 = datetime.now(UTC)
    grown_first = make_alert_json(polygons=[SMALL], sender=TEST_SENDER, sent=t0)
    update = make_alert_json(
        polygons=[BIG],
        sender=TEST_SENDER,
        msg_type="Update",
        sent=t0 + timedelta(seconds=5),
        references=[(TEST_SENDER, grown_first["id"], grown_first["sent"])],
    )
    cancelled_first = make_alert_json(polygons=[BIG], sender=TEST_SENDER, sent=t0)
    cancel = make_alert_json(
        polygons=[BIG],
        sender=TEST_SENDER,
        msg_type="Cancel",
        sent=t0 + timedelta(seconds=5),
        references=[(TEST_SENDER, cancelled_first["id"], cancelled_first["sent"])],
    )
    # Each later message overtakes its alert.
    publish_alerts(s, update, key=grown_first["id"])
    publish_alerts(s, cancel, key=cancelled_first["id"])
    publish_alerts(s, grown_first, cancelled_first)
    events = lifecycle(s, 1, settle_s=3)
    assert [(e["alert_id"], e["state"], e["message_id"]) for e in events] == [
        (grown_first["id"], "issued", update["id"])
    ]

    produce_json(s, s.topics.locations, [loc("big", IN_BIG_ONLY)])
    found = cards(s, 1, settle_s=4)
    assert [(c["user_id"], c["alert_id"]) for c in found] == [("big", grown_first["id"])]


def test_expiry_stops_matching_and_is_announced(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    start_worker(s)
    alert = make_alert_json(polygons=[BIG], sender=TEST_SENDER, expires_in=timedelta(seconds=6))
    publish_alerts(s, alert)
    produce_json(s, s.topics.locations, [loc("early", IN_SMALL)])
    assert users_of(cards(s, 1)) == ["early"]
    events = lifecycle(s, 2, settle_s=0)
    assert [e["state"] for e in events] == ["issued", "expired"]
    produce_json(s, s.topics.locations, [loc("late", IN_SMALL)])
    assert users_of(cards(s, 2, settle_s=4, timeout_s=8)) == ["early"]


def test_presence_fan_out_reaches_users_who_never_report_again(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    worker = start_worker(s)
    homebodies = [loc(f"home-{i}", (IN_SMALL[0] + i * 1e-4, IN_SMALL[1])) for i in range(50)]
    produce_json(s, s.topics.locations, [*homebodies, loc("away", OUTSIDE)])
    wait_until_matched(worker, len(homebodies) + 1)  # they are present; no alert exists yet
    assert cards(s, 0, settle_s=2, timeout_s=3) == []

    publish_alerts(s, make_alert_json(polygons=[BIG], sender=TEST_SENDER))
    found = cards(s, 50)
    assert users_of(found) == sorted(u for u, _ in homebodies)


def test_index_is_rebuilt_after_redis_is_flushed(
    worker_settings: Settings, start_worker: StartWorker, services: Any
) -> None:
    s = worker_settings
    worker = start_worker(s)
    publish_alerts(s, make_alert_json(polygons=[SMALL], sender=TEST_SENDER))
    lifecycle(s, 1)
    produce_json(s, s.topics.locations, [loc("before", IN_SMALL)])
    assert users_of(cards(s, 1)) == ["before"]

    redis.Redis.from_url(services.redis_url).flushdb()
    produce_json(s, s.topics.locations, [loc("after", IN_SMALL), loc("outside", IN_BIG_ONLY)])
    found = users_of(cards(s, 2, settle_s=3))
    assert "after" in found and "outside" not in found
    # One rebuild for the fresh, empty Redis the worker found at start, one after the flush.
    assert "alertfeed_index_rebuilds_total 2.0" in worker.metrics_text()


def test_sigkill_mid_stream_loses_no_pair_and_duplicates_are_identical(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    first = start_worker(s)
    alert = make_alert_json(polygons=[BIG], sender=TEST_SENDER)
    publish_alerts(s, alert)
    lifecycle(s, 1)
    crowd = [
        loc(f"u{i:05d}", (30.21 + (i % 100) * 0.0012, -97.84 + (i // 100) * 0.006))
        for i in range(3000)
    ]
    produce_json(s, s.topics.locations, crowd[:1500])
    cards(s, 200, settle_s=0)  # the worker is mid-stream
    produce_json(s, s.topics.locations, crowd[1500:])
    first.kill()

    start_worker(s)
    records: list[RawEvent] = collect(
        s,
        s.topics.interstitials,
        until=lambda r: len({orjson.loads(x.value)["user_id"] for x in r}) >= len(crowd),
        timeout_s=120,
        settle_s=3,
    )
    by_user: dict[str, set[bytes]] = defaultdict(set)
    for record in records:
        assert record.value is not None
        by_user[orjson.loads(record.value)["user_id"]].add(record.value)
    assert set(by_user) == {u for u, _ in crowd}, "a (user, alert) pair was lost"
    assert all(len(v) == 1 for v in by_user.values()), "a duplicate differs from its original"


def test_test_alert_reaches_only_test_users_and_unknown_sender_is_rejected(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    start_worker(s)
    drill = make_alert_json(polygons=[BIG], sender=TEST_SENDER, status="Test")
    rogue = make_alert_json(polygons=[BIG], sender="prankster@example.com")
    publish_alerts(s, drill, rogue)
    dead = values(collect(s, s.topics.dlq, until=lambda r: len(r) >= 1, settle_s=1))
    assert len(dead) == 1
    assert "prankster@example.com" in dead[0]["reason"] and "allow-list" in dead[0]["reason"]
    assert dead[0]["reason_class"] == "policy"
    assert orjson.loads(base64.b64decode(dead[0]["value_b64"]))["id"] == rogue["id"]

    produce_json(s, s.topics.locations, [loc("public", IN_SMALL), loc(TEST_USERS[0], IN_SMALL)])
    found = cards(s, 1, settle_s=4)
    assert [(c["user_id"], c["status"]) for c in found] == [(TEST_USERS[0], "Test")]


def test_fan_out_racing_the_same_users_locations_cards_each_user_once(
    worker_settings: Settings, start_worker: StartWorker
) -> None:
    s = worker_settings
    worker = start_worker(s)
    crowd = [
        loc(f"r{i:05d}", (30.205 + (i % 100) * 0.0013, -97.845 + (i // 100) * 0.0038))
        for i in range(5000)
    ]
    produce_json(s, s.topics.locations, crowd)
    wait_until_matched(worker, len(crowd))  # all present; no alert yet
    publish_alerts(s, make_alert_json(polygons=[BIG], sender=TEST_SENDER))
    # While the fan-out runs, a third of the users keep reporting (at least once, and at
    # most 30 rounds of them however slowly the alert is taken up).
    for _ in range(30):
        produce_json(s, s.topics.locations, [loc(u, (v["lat"], v["lon"])) for u, v in crowd[::3]])
        if fan_outs_done(worker) >= s.topics.partitions:
            break
    found = cards(s, len(crowd), settle_s=5, timeout_s=120)
    per_user = Counter(c["user_id"] for c in found)
    assert set(per_user) == {u for u, _ in crowd}
    assert max(per_user.values()) == 1, "a user got two cards"
