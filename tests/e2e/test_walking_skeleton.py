"""End to end on the real broker and Redis: one alert polygon, a crowd of users inside and
outside it, a real worker process in between.

Insideness is decided independently with shapely on the published polygon, and users
within ``MARGIN_M`` of its edge are left out of the assertions: the cover may overshoot by
up to one resolution-10 cell (about 75 m across), never more.
"""

from __future__ import annotations

import base64
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import RedisSettings, Settings
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json, now_ms
from tests.support.kafka import collect, produce, produce_json, values
from tests.support.schemas import assert_valid
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

# A concave pentagon around central Austin, TX, as (lat, lon).
AUSTIN = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]
MARGIN_M = 250.0


def metres_to_boundary(poly: ShapelyPolygon, lat: float, lon: float) -> float:
    # Degrees to metres near this latitude: good to well under 1% over a few km.
    scale = ShapelyPolygon(
        [(x * math.cos(math.radians(lat)) * 111_320, y * 110_574) for x, y in poly.exterior.coords]
    )
    point = Point(lon * math.cos(math.radians(lat)) * 111_320, lat * 110_574)
    return float(scale.exterior.distance(point))


def crowd(n: int, seed: int) -> list[tuple[str, float, float]]:
    rng = random.Random(seed)
    lats = [p[0] for p in AUSTIN]
    lons = [p[1] for p in AUSTIN]
    return [
        (
            f"user-{i:05d}",
            rng.uniform(min(lats) - 0.03, max(lats) + 0.03),
            rng.uniform(min(lons) - 0.03, max(lons) + 0.03),
        )
        for i in range(n)
    ]


def locations_consumed(worker: WorkerProcess) -> float:
    """Location events the worker has finished matching (and recorded as present): those
    consumed, once every batch it started has finished."""
    text = worker.metrics_text()

    def sample(name: str) -> float:
        pattern = rf'^{name}\{{topic="locations"\}} (\S+)$'
        return sum(float(v) for v in re.findall(pattern, text, flags=re.M))

    started = sample("alertfeed_batch_events_count")
    finished = sample("alertfeed_batch_duration_seconds_count")
    return sample("alertfeed_events_in_total") if started == finished else 0.0


def start(settings: Settings, start_worker: Callable[[Settings], WorkerProcess]) -> WorkerProcess:
    ensure_topics(settings)
    return start_worker(settings)


def publish_alert(settings: Settings, alert: dict[str, object]) -> None:
    produce_json(settings, settings.topics.alerts, [(str(alert["id"]), alert)])
    issued = collect(settings, settings.topics.lifecycle, until=lambda r: len(r) >= 1, settle_s=0)
    assert [v["state"] for v in values(issued)] == ["issued"]
    assert_valid("lifecycle", values(issued)[0])


def test_every_user_inside_gets_exactly_one_card_and_nobody_outside(
    settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    start(settings, start_worker)
    alert = make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER)
    publish_alert(settings, alert)

    shape = ShapelyPolygon([(lon, lat) for lat, lon in AUSTIN])
    users = crowd(2000, seed=20261123)
    inside, outside = set(), set()
    for user, lat, lon in users:
        if metres_to_boundary(shape, lat, lon) < MARGIN_M:
            continue
        (inside if shape.contains(Point(lon, lat)) else outside).add(user)
    assert len(inside) > 300 and len(outside) > 300  # the crowd really straddles the edge

    ts = now_ms()
    # Every user reports twice: the second report must not produce a second card.
    events = [
        (u, {"user_id": u, "lat": lat, "lon": lon, "ts": ts + k})
        for k in (0, 1)
        for u, lat, lon in users
    ]
    produce_json(settings, settings.topics.locations, events)

    cards = values(
        collect(
            settings,
            settings.topics.interstitials,
            until=lambda r: (
                len({orjson.loads(x.value)["user_id"] for x in r} & inside) == len(inside)
            ),
            timeout_s=90,
            settle_s=5,
        )
    )
    per_user = Counter(c["user_id"] for c in cards)
    assert set(per_user) >= inside, f"{len(inside - set(per_user))} users inside got no card"
    assert not set(per_user) & outside, "users outside the area got a card"
    assert max(per_user.values()) == 1, "some user got more than one card"
    for card in cards:
        assert_valid("interstitial", card)
        assert card["alert_id"] == alert["id"]
        assert card["card"]["actions"][0]["uri"] == "tel:911"


def test_malformed_events_are_dead_lettered_and_good_events_still_flow(
    settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    worker = start(settings, start_worker)
    bad_alert = b"<alert><identifier>broken"
    bad_location = b'{"user_id": "user-bad", "lat": 200.0, "lon": -97.7, "ts": 1795400000000}'
    produce(settings, settings.topics.alerts, [(b"broken", bad_alert)])
    produce(
        settings,
        settings.topics.locations,
        [(b"user-bad", bad_location), (b"x", b"\xff\xfe not json")],
    )

    dead = values(collect(settings, settings.topics.dlq, until=lambda r: len(r) >= 3, settle_s=1))
    assert len(dead) == 3
    by_value = {base64.b64decode(d["value_b64"]): d for d in dead}
    assert set(by_value) == {bad_alert, bad_location, b"\xff\xfe not json"}
    assert by_value[bad_alert]["source"]["topic"] == settings.topics.alerts
    assert by_value[bad_location]["source"]["topic"] == settings.topics.locations
    assert "latitude 200.0 out of range in location" in by_value[bad_location]["reason"]
    assert "not valid JSON" in by_value[b"\xff\xfe not json"]["reason"]
    assert by_value[bad_alert]["reason"]
    for d in dead:
        assert_valid("dead_letter", d)
        assert d["source"]["offset"] >= 0

    # The worker kept going: a good alert and a user inside it still produce a card.
    publish_alert(settings, make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER))
    produce_json(
        settings,
        settings.topics.locations,
        [("user-good", {"user_id": "user-good", "lat": 30.25, "lon": -97.75, "ts": now_ms()})],
    )
    cards = values(
        collect(settings, settings.topics.interstitials, until=lambda r: len(r) >= 1, settle_s=1)
    )
    assert [c["user_id"] for c in cards] == ["user-good"]

    expected = [
        'alertfeed_events_dead_lettered_total{reason="malformed",topic="locations"} 2.0',
        'alertfeed_events_dead_lettered_total{reason="malformed",topic="alerts"} 1.0',
        'alertfeed_events_out_total{topic="interstitials"} 1.0',
    ]
    deadline = time.monotonic() + 10
    while (
        not all(line in worker.metrics_text() for line in expected) and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    text = worker.metrics_text()
    for line in expected:
        assert line in text


def test_the_worker_runs_unchanged_on_a_redis_cluster(
    make_settings: Callable[..., Settings],
    redis_cluster: str,
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """Every key names one slot: the same worker on a three-master Redis Cluster cards the
    users already present (fan-out) and those who report later, each exactly once."""
    base = make_settings()
    settings = make_settings(
        redis=RedisSettings(url=redis_cluster, cluster=True, key_prefix=base.redis.key_prefix)
    )
    worker = start(settings, start_worker)
    shape = ShapelyPolygon([(lon, lat) for lat, lon in AUSTIN])
    users = crowd(600, seed=7)
    inside = {
        u
        for u, lat, lon in users
        if shape.contains(Point(lon, lat)) and metres_to_boundary(shape, lat, lon) >= MARGIN_M
    }
    early, late = users[:300], users[300:]
    ts = now_ms()
    produce_json(
        settings,
        settings.topics.locations,
        [(u, {"user_id": u, "lat": lat, "lon": lon, "ts": ts}) for u, lat, lon in early],
    )
    # The worker has recorded them as present before the alert comes.
    deadline = time.monotonic() + 60
    while locations_consumed(worker) < len(early):
        assert time.monotonic() < deadline, "the worker did not consume the early locations"
        time.sleep(0.2)
    publish_alert(settings, make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER))
    produce_json(
        settings,
        settings.topics.locations,
        [(u, {"user_id": u, "lat": lat, "lon": lon, "ts": ts + 1}) for u, lat, lon in late],
    )
    cards = values(
        collect(
            settings,
            settings.topics.interstitials,
            until=lambda r: inside <= {orjson.loads(x.value)["user_id"] for x in r},
            timeout_s=90,
            settle_s=3,
        )
    )
    per_user = Counter(c["user_id"] for c in cards)
    assert set(per_user) >= inside and max(per_user.values()) == 1
    early_inside = inside & {u for u, _, _ in early}
    assert early_inside and early_inside <= set(per_user)  # reached without reporting again
