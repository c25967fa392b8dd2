"""``alertfeed demo``: the whole pipeline on a sample, against running Kafka and Redis.

Starts a worker process, publishes an AMBER Alert for an area of Austin, TX and a crowd
of synthetic users walking around it, then reports who got the card.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Consumer
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon

from pipeline.adapters.kafka_tools import DeliveryProducer, ensure_topics
from pipeline.settings import Settings

DEMO_SENDER = "amber@demo.alertfeed.example"
# A concave area around central Austin, TX, as (lat, lon).
AREA = [
    (30.20, -97.82),
    (30.21, -97.70),
    (30.30, -97.66),
    (30.26, -97.74),
    (30.34, -97.80),
    (30.20, -97.82),
]


def demo_alert(sent: datetime) -> dict[str, Any]:
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "id": f"DEMO-AMBER-{sent.strftime('%Y%m%d%H%M%S')}",
        "sender": DEMO_SENDER,
        "sent": sent.strftime(iso),
        "status": "Actual",
        "msg_type": "Alert",
        "expires": (sent + timedelta(hours=4)).strftime(iso),
        "event": "Child Abduction Emergency",
        "event_codes": [{"name": "SAME", "value": "CAE"}],
        "severity": "Severe",
        "urgency": "Immediate",
        "headline": "AMBER Alert: Austin, TX - silver Honda Civic, TX plate DEMO123",
        "description": "Demo Child, 7, last seen near Zilker Park wearing a pink jacket.",
        "instruction": "If you see the child or the vehicle, call 911.",
        "web": "https://www.missingkids.org/",
        "sender_name": "alertfeed demo",
        "child": {"name": "Demo Child", "age": "7", "hair": "Brown"},
        "vehicle": {
            "make": "Honda",
            "model": "Civic",
            "color": "Silver",
            "license_plate": "DEMO123",
        },
        "areas": [{"description": "Central Austin", "polygons": [[list(p) for p in AREA]]}],
    }


def run_demo(settings: Settings, *, users: int, seed: int) -> int:
    ensure_topics(settings)
    settings = settings.model_copy(update={"app_id": f"alertfeed-demo-{int(time.time())}"})
    worker = _start_worker(settings)
    try:
        return _demo(settings, users, seed)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        print("worker stopped")


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["ALERTFEED_APP_ID"] = settings.app_id
    env["ALERTFEED_POLICY__ALLOWED_SENDERS"] = json.dumps(
        [*settings.policy.allowed_senders, DEMO_SENDER]
    )
    env["ALERTFEED_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.entrypoints.cli", "worker"],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{settings.metrics.port}/ready"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if json.load(resp).get("ready"):
                    print(f"worker ready (metrics on {url.rsplit('/', 1)[0]}/metrics)")
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("worker not ready within 90 s")


def _demo(settings: Settings, users: int, seed: int) -> int:
    topics = settings.topics
    producer = DeliveryProducer(settings)
    alert = demo_alert(datetime.now(UTC))
    producer.send(topics.alerts, orjson.dumps(alert), key=alert["id"].encode())
    producer.flush()
    print(f"published alert {alert['id']}: {alert['headline']}")

    rng = random.Random(seed)
    shape = ShapelyPolygon([(lon, lat) for lat, lon in AREA])
    min_lon, min_lat, max_lon, max_lat = shape.bounds
    inside: set[str] = set()
    now = time.time_ns() // 1_000_000
    walkers = [
        (
            f"demo-user-{i:05d}",
            rng.uniform(min_lat - 0.04, max_lat + 0.04),
            rng.uniform(min_lon - 0.04, max_lon + 0.04),
        )
        for i in range(users)
    ]
    for step in range(3):  # three pings each, walking ~100 m between them
        for i, (user, lat0, lon0) in enumerate(walkers):
            lat, lon = lat0 + rng.gauss(0, 0.001), lon0 + rng.gauss(0, 0.001)
            walkers[i] = (user, lat, lon)
            if shape.contains(Point(lon, lat)):
                inside.add(user)
            event = {"user_id": user, "lat": lat, "lon": lon, "ts": now + step * 1000}
            producer.send(topics.locations, orjson.dumps(event), key=user.encode())
        producer.flush()
    print(
        f"published {3 * users} location events from {users} users; "
        f"{len(inside)} were inside the area"
    )

    cards = _collect_cards(settings, alert_id=alert["id"], expected=len(inside))
    per_user = Counter(c["user_id"] for c in cards)
    print(
        f"interstitials emitted: {len(cards)} to {len(per_user)} users "
        f"(max per user: {max(per_user.values(), default=0)})"
    )
    missed = inside - set(per_user)
    print(
        f"users inside without a card: {len(missed)}; cards to users never inside: "
        f"{len(set(per_user) - inside)} (within one ~75 m cell of the edge)"
    )
    for card in cards[:3]:
        print(
            f"  sample: user={card['user_id']} event_id={card['event_id']} "
            f"priority={card['priority']} headline={card['card']['headline']!r}"
        )
    return 0 if not missed else 1


def _collect_cards(
    settings: Settings, *, alert_id: str, expected: int, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"demo-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topics.interstitials])
    cards: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is None or msg.error():
                if len(cards) >= expected and time.monotonic() - quiet_since > 3:
                    break
                continue
            card = orjson.loads(msg.value() or b"null")
            if card["alert_id"] == alert_id:
                cards.append(card)
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return cards
