"""The input of the live bench (tests/bench/bench_live.py): users over the contiguous US,
their location events, and the five alerts.

Users are placed population-weighted around 53 US metro centres (2020 metro populations,
rounded; Dallas and Fort Worth apart), with a Gaussian scatter of a few km that grows with
the metro's size, plus a share uniformly over the lower-48 bounding box (ocean, Canada
and Mexico included: locations nobody covers). Each user reports from home with a few tens
of metres of GPS jitter, so that a user's reports mostly fall in one H3 cell, as a phone
at rest does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from confluent_kafka import KafkaError, Producer

from pipeline.adapters.kafka.tools import PRODUCER_DEFAULTS
from pipeline.errors import BrokerUnavailable
from pipeline.settings import Settings
from tests.support.factories import make_alert_json, make_cap_xml, now_ms

# (name, lat, lon, metro population in millions)
METROS: tuple[tuple[str, float, float, float], ...] = (
    ("New York", 40.7128, -74.0060, 19.8), ("Los Angeles", 34.0522, -118.2437, 13.2),
    ("Chicago", 41.8781, -87.6298, 9.6), ("Dallas", 32.7767, -96.7970, 4.5),
    ("Fort Worth", 32.7555, -97.3308, 3.1), ("Houston", 29.7604, -95.3698, 7.1),
    ("Washington", 38.9072, -77.0369, 6.4), ("Philadelphia", 39.9526, -75.1652, 6.2),
    ("Miami", 25.7617, -80.1918, 6.1), ("Atlanta", 33.7490, -84.3880, 6.1),
    ("Boston", 42.3601, -71.0589, 4.9), ("Phoenix", 33.4484, -112.0740, 4.8),
    ("San Francisco", 37.7749, -122.4194, 4.7), ("Riverside", 33.9533, -117.3962, 4.6),
    ("Detroit", 42.3314, -83.0458, 4.4), ("Seattle", 47.6062, -122.3321, 4.0),
    ("Minneapolis", 44.9778, -93.2650, 3.7), ("San Diego", 32.7157, -117.1611, 3.3),
    ("Tampa", 27.9506, -82.4572, 3.2), ("Denver", 39.7392, -104.9903, 3.0),
    ("St. Louis", 38.6270, -90.1994, 2.8), ("Baltimore", 39.2904, -76.6122, 2.8),
    ("Charlotte", 35.2271, -80.8431, 2.7), ("Orlando", 28.5383, -81.3792, 2.7),
    ("San Antonio", 29.4241, -98.4936, 2.6), ("Portland", 45.5152, -122.6784, 2.5),
    ("Sacramento", 38.5816, -121.4944, 2.4), ("Pittsburgh", 40.4406, -79.9959, 2.4),
    ("Austin", 30.2672, -97.7431, 2.3), ("Las Vegas", 36.1699, -115.1398, 2.3),
    ("Cincinnati", 39.1031, -84.5120, 2.3), ("Kansas City", 39.0997, -94.5786, 2.2),
    ("Columbus", 39.9612, -82.9988, 2.1), ("Indianapolis", 39.7684, -86.1581, 2.1),
    ("Cleveland", 41.4993, -81.6944, 2.1), ("San Jose", 37.3382, -121.8863, 2.0),
    ("Nashville", 36.1627, -86.7816, 2.0), ("Virginia Beach", 36.8529, -75.9780, 1.8),
    ("Providence", 41.8240, -71.4128, 1.7), ("Jacksonville", 30.3322, -81.6557, 1.6),
    ("Milwaukee", 43.0389, -87.9065, 1.6), ("Raleigh", 35.7796, -78.6382, 1.4),
    ("Oklahoma City", 35.4676, -97.5164, 1.4), ("Memphis", 35.1495, -90.0490, 1.3),
    ("Richmond", 37.5407, -77.4360, 1.3), ("Louisville", 38.2527, -85.7585, 1.3),
    ("New Orleans", 29.9511, -90.0715, 1.3), ("Salt Lake City", 40.7608, -111.8910, 1.3),
    ("Hartford", 41.7658, -72.6734, 1.2), ("Buffalo", 42.8864, -78.8784, 1.2),
    ("Birmingham", 33.5186, -86.8104, 1.1), ("Albuquerque", 35.0844, -106.6504, 0.9),
    ("El Paso", 31.7619, -106.4850, 0.9),
)  # fmt: skip
# Metros well inside Texas (El Paso is on the border): the users of the latency run.
TEXAS_METROS = tuple(
    m for m in METROS if m[0] in ("Dallas", "Fort Worth", "Houston", "San Antonio", "Austin")
)
LOWER_48 = (24.5, 49.4, -124.8, -66.9)  # lat min, lat max, lon min, lon max
KM_PER_DEGREE = 111.2


@dataclass(frozen=True, slots=True)
class BenchAlert:
    """One alert of the bench: what it targets, and its message on the alerts topic."""

    name: str
    identifier: str
    value: bytes


def bench_alerts(sender: str, run_id: str) -> list[BenchAlert]:
    """The five alerts: Texas state-wide, two counties (SAME 0SSCCC), two polygons a few
    km across (downtown Chicago and Atlanta)."""
    out: list[BenchAlert] = []
    for name, code in (
        ("Texas (SAME 048000)", "048000"),
        ("Travis County TX (SAME 048453)", "048453"),
        ("Los Angeles County CA (SAME 006037)", "006037"),
    ):
        identifier = f"bench-{run_id}-{code}"
        cap = make_cap_xml(sender=sender, geocodes=[("SAME", code)], identifier=identifier)
        out.append(BenchAlert(name, identifier, cap))
    for name, lat, lon in (
        ("downtown Chicago", 41.8781, -87.6298),
        ("downtown Atlanta", 33.7490, -84.3880),
    ):
        identifier = f"bench-{run_id}-{name.split()[-1].lower()}"
        alert = make_alert_json(
            polygons=[hexagon(lat, lon, radius_km=2.5)], sender=sender, identifier=identifier
        )
        out.append(BenchAlert(f"polygon, {name} (5 km across)", identifier, orjson.dumps(alert)))
    return out


def hexagon(lat: float, lon: float, radius_km: float) -> list[tuple[float, float]]:
    """A hexagon of ``radius_km`` around ``(lat, lon)``, as (lat, lon) vertices."""
    dlat = radius_km / KM_PER_DEGREE
    dlon = dlat / math.cos(math.radians(lat))
    return [
        (lat + dlat * math.sin(a), lon + dlon * math.cos(a))
        for a in (math.radians(60 * k) for k in range(6))
    ]


def place_users(
    n: int,
    rng: np.random.Generator,
    *,
    metros: Sequence[tuple[str, float, float, float]] = METROS,
    uniform_share: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Home (lat, lon) of ``n`` users: population-weighted around ``metros``, a share
    uniformly over the lower-48 box; in random order."""
    pops = np.array([m[3] for m in metros])
    centre_lat = np.array([m[1] for m in metros])
    centre_lon = np.array([m[2] for m in metros])
    sigma_km = np.clip(2.5 * np.sqrt(pops), 2.0, 10.0)
    uniform = int(n * uniform_share)
    which = rng.choice(len(metros), size=n - uniform, p=pops / pops.sum())
    lat0 = centre_lat[which]
    scatter = sigma_km[which] / KM_PER_DEGREE
    lats = lat0 + rng.normal(0.0, 1.0, n - uniform) * scatter
    lons = centre_lon[which] + rng.normal(0.0, 1.0, n - uniform) * scatter / np.cos(
        np.radians(lat0)
    )
    lat_min, lat_max, lon_min, lon_max = LOWER_48
    lats = np.concatenate([lats, rng.uniform(lat_min, lat_max, uniform)])
    lons = np.concatenate([lons, rng.uniform(lon_min, lon_max, uniform)])
    order = rng.permutation(n)
    return lats[order], lons[order]


def jitter(values: np.ndarray, rng: np.random.Generator, metres: float = 15.0) -> list[float]:
    """``values`` (degrees) moved by a Gaussian of ``metres``, as a list of floats."""
    moved: list[float] = (
        values + rng.normal(0.0, metres / 1000 / KM_PER_DEGREE, len(values))
    ).tolist()
    return moved


class FastProducer:
    """A confluent-kafka producer for bulk input: the project's producer defaults (acks
    all, idempotent, lz4, murmur2) with long lingers and big batches, and a delivery
    report only for failures (a Python callback per record would cost more than the
    record). ``flush()`` raises BrokerUnavailable if anything was not delivered."""

    def __init__(self, settings: Settings, **extra: str | int | float | bool) -> None:
        self.failures: list[str] = []
        self.producer = Producer(
            {
                **settings.kafka.confluent_config(),
                **PRODUCER_DEFAULTS,
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 500_000,
                "queue.buffering.max.kbytes": 512 * 1024,
                "delivery.report.only.error": True,
                "log_level": 4,  # not librdkafka's notices of a normal shutdown
                "on_delivery": self._on_delivery,
                **extra,
            }
        )

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self.failures.append(str(err))

    def send(self, topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)

    def flush(self, timeout_s: float = 120.0) -> None:
        remaining = self.producer.flush(timeout_s)
        if remaining or self.failures:
            raise BrokerUnavailable(
                f"{remaining} records undelivered, {len(self.failures)} failed: {self.failures[:1]}"
            )


def publish_alerts(settings: Settings, alerts: Sequence[BenchAlert]) -> None:
    producer = FastProducer(settings, **{"linger.ms": 0})
    for alert in alerts:
        producer.send(settings.topics.alerts, alert.value, alert.identifier.encode())
    producer.flush()


def publish_backlog(settings: Settings, users: int, reports: int, seed: int = 2026) -> int:
    """``reports`` location events of each of ``users`` users (keyed by user id; the k-th
    report of every user, then the next; event times 20 s apart, the last one now) on
    the locations topic, all acknowledged. Returns the number published."""
    rng = np.random.default_rng(seed)
    lats, lons = place_users(users, rng)
    ids = [f"user-{i:07d}" for i in range(users)]
    keys = [u.encode() for u in ids]
    producer = FastProducer(settings)
    topic = settings.topics.locations
    send, dumps = producer.send, orjson.dumps
    now = now_ms()
    for k in range(reports):
        ts = now - (reports - 1 - k) * 20_000
        for user, key, lat, lon in zip(
            ids, keys, jitter(lats, rng), jitter(lons, rng), strict=True
        ):
            send(
                topic,
                dumps({"user_id": user, "lat": lat, "lon": lon, "ts": ts, "accuracy_m": 12.5}),
                key,
            )
        producer.producer.poll(0)
    producer.flush()
    return users * reports


def live_producer(settings: Settings) -> FastProducer:
    """A producer as a client app's: the project's defaults, its 5 ms linger included."""
    return FastProducer(settings, **{"linger.ms": PRODUCER_DEFAULTS["linger.ms"]})


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    sent: int
    users: int
    seconds: float


def publish_open_loop(
    settings: Settings,
    rate: float,
    seconds: float,
    *,
    new_share: float = 0.2,
    texas_share: float = 0.8,
    user_prefix: str = "live",
    seed: int = 7,
    producer: FastProducer | None = None,
) -> OpenLoopResult:
    """Publish fresh location events at ``rate`` per second for ``seconds`` (open loop: on
    schedule, whatever the consumer does), each stamped with the time it is handed to the
    producer (``ts``, epoch ms). ``new_share`` of them come from users never seen before
    (homes ``texas_share`` around Texas metros, the rest over the US), the others are
    repeat reports of a user seen earlier in the stream, from home. Returns once all are
    acknowledged. Pass a ``producer`` that has sent before: an idempotent producer holds
    what it is given until the broker assigned it a producer id (some 0.4 s here), which
    would show as latency."""
    total = int(rate * seconds)
    rng = np.random.default_rng(seed)
    is_new = rng.random(total) < new_share
    is_new[0] = True
    seen = np.cumsum(is_new)  # users seen so far, this message's included
    earlier = np.floor(rng.random(total) * (seen - is_new)).astype(np.int64)
    user_of = np.where(is_new, seen - 1, earlier).tolist()
    homes = int(seen[-1])
    in_texas = int(homes * texas_share)
    tx_lats, tx_lons = place_users(in_texas, rng, metros=TEXAS_METROS, uniform_share=0.0)
    us_lats, us_lons = place_users(homes - in_texas, rng)
    order = rng.permutation(homes)
    home_lats = np.concatenate([tx_lats, us_lats])[order]
    home_lons = np.concatenate([tx_lons, us_lons])[order]
    lats = jitter(home_lats[user_of], rng)
    lons = jitter(home_lons[user_of], rng)
    ids = [f"{user_prefix}-{i:07d}" for i in range(homes)]
    producer = producer or live_producer(settings)
    topic, send, dumps = settings.topics.locations, producer.send, orjson.dumps
    sent = 0
    started = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        if due > sent:
            ts = now_ms()
            for i in range(sent, due):
                user = ids[user_of[i]]
                event = {"user_id": user, "lat": lats[i], "lon": lons[i], "ts": ts}
                send(topic, dumps(event), user.encode())
            sent = due
        producer.producer.poll(0)
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    producer.flush()
    return OpenLoopResult(sent, homes, elapsed)
