"""Synthetic scenarios: users moving around real US cities, and AMBER Alerts issued, updated
and cancelled over them.

:func:`scenario_events` is pure and deterministic: the same :class:`ScenarioSpec` (seed
included) gives the same events, in event-time order (ties: alerts first, then by user).
It streams: memory is a few numbers per user, so 100k users over an hour is fine.

The people:

* each user lives near one city of :data:`CITIES` (chosen by population weight), first seen
  within a few kilometres of its centre;
* a share never moves after its first report; the others walk, cycle or drive (about 1.4,
  5 and 8-25 m/s), pausing now and then, turning gradually, and heading home when more
  than ~25 km out;
* every user reports about every ``report_every_s`` seconds (uniform jitter ±50 %).

The alerts: each is a circle or a star-shaped polygon of 2-6 km around a point near a city
centre, issued in the first 40 % of the run, updated with an area 1.6 times as wide, then
cancelled, all within the run. They are CAP 1.2 XML (:mod:`pipeline.domain.alerts.cap_writer`),
status Actual, from ``spec.sender``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from pipeline.domain.alerts.cap_writer import cap_time, cap_xml
from pipeline.domain.models import Alert, Area, Circle, Geocode, LatLon, Polygon, Reference

DEFAULT_SENDER = "amber@simulate.alertfeed.example"
_M_PER_DEG = 111_320.0


@dataclass(frozen=True, slots=True)
class City:
    name: str
    state: str
    lat: float
    lon: float
    weight: float  # relative population


CITIES: tuple[City, ...] = (
    City("Austin", "TX", 30.2672, -97.7431, 1.0),
    City("Houston", "TX", 29.7604, -95.3698, 2.3),
    City("Dallas", "TX", 32.7767, -96.7970, 1.3),
    City("San Antonio", "TX", 29.4241, -98.4936, 1.5),
    City("Miami", "FL", 25.7617, -80.1918, 0.5),
    City("Tallahassee", "FL", 30.4383, -84.2807, 0.2),
    City("Atlanta", "GA", 33.7490, -84.3880, 0.5),
    City("Chicago", "IL", 41.8781, -87.6298, 2.7),
    City("Phoenix", "AZ", 33.4484, -112.0740, 1.6),
    City("Denver", "CO", 39.7392, -104.9903, 0.7),
)

# (mode, share, speed range m/s, chance to be paused during an interval)
_MODES: tuple[tuple[str, float, tuple[float, float], float], ...] = (
    ("stationary", 0.30, (0.0, 0.0), 1.0),
    ("walking", 0.35, (1.0, 1.8), 0.5),
    ("cycling", 0.10, (3.5, 6.5), 0.5),
    ("driving", 0.25, (8.0, 25.0), 0.4),
)

ScenarioEvent = tuple[str, int, str, Any]
"""``(logical topic, event time ms, key, value)``: a location dict or a CAP XML string."""


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    users: int
    duration_s: float
    alerts: int
    seed: int
    start_ms: int
    sender: str = DEFAULT_SENDER
    report_every_s: float = 300.0

    def __post_init__(self) -> None:
        if self.users < 0 or self.alerts < 0 or self.duration_s <= 0 or self.report_every_s <= 0:
            raise ValueError("users and alerts must be >= 0, durations > 0")


@dataclass(slots=True)
class _People:
    """Per-user state as parallel lists: a few numbers per user, nothing per event."""

    home: list[int]
    lat: list[float]
    lon: list[float]
    heading: list[float]
    mode: list[int]
    last_ms: list[int]


def scenario_events(spec: ScenarioSpec) -> Iterator[ScenarioEvent]:
    """Every event of the scenario in event-time order. Deterministic for ``spec``."""
    rng = random.Random(spec.seed)
    people = _place_people(spec, rng)
    alert_rng = random.Random(f"{spec.seed}/alerts")
    queue: list[tuple[int, int, int, Any]] = []
    for number, (ts, key, xml) in enumerate(_alert_messages(spec, alert_rng)):
        queue.append((ts, 0, number, (key, xml)))
    period_ms = spec.report_every_s * 1000
    for user in range(spec.users):
        queue.append((spec.start_ms + int(rng.random() * period_ms), 1, user, None))
    heapq.heapify(queue)
    end_ms = spec.start_ms + int(spec.duration_s * 1000)
    while queue:
        ts, rank, index, payload = queue[0]
        if ts >= end_ms:
            return
        if rank == 0:
            heapq.heappop(queue)
            key, xml = payload
            yield ("alerts", ts, key, xml)
            continue
        user_id = f"sim-user-{index:06d}"
        lat, lon = _move(people, index, ts, rng)
        yield (
            "locations",
            ts,
            user_id,
            {
                "user_id": user_id,
                "lat": lat,
                "lon": lon,
                "ts": ts,
                "accuracy_m": float(rng.randint(3, 40)),
            },
        )
        step = int(period_ms * (0.5 + rng.random()))
        heapq.heapreplace(queue, (ts + max(step, 1), 1, index, None))


def _place_people(spec: ScenarioSpec, rng: random.Random) -> _People:
    weights = [c.weight for c in CITIES]
    mode_shares = [m[1] for m in _MODES]
    people = _People([], [], [], [], [], [])
    for _ in range(spec.users):
        home = rng.choices(range(len(CITIES)), weights)[0]
        city = CITIES[home]
        lat, lon = _offset(city.lat, city.lon, rng.gauss(0, 5000), rng.gauss(0, 5000))
        people.home.append(home)
        people.lat.append(lat)
        people.lon.append(lon)
        people.heading.append(rng.uniform(0, 2 * math.pi))
        people.mode.append(rng.choices(range(len(_MODES)), mode_shares)[0])
        people.last_ms.append(-1)
    return people


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> LatLon:
    new_lat = lat + north_m / _M_PER_DEG
    new_lon = lon + east_m / (_M_PER_DEG * math.cos(math.radians(lat)))
    return new_lat, new_lon


def _move(people: _People, user: int, ts: int, rng: random.Random) -> LatLon:
    """Advance ``user`` to ``ts``; returns its position rounded to 1e-6 degrees (~0.1 m)."""
    last = people.last_ms[user]
    people.last_ms[user] = ts
    lat, lon = people.lat[user], people.lon[user]
    _, _, (slow, fast), pause = _MODES[people.mode[user]]
    if last >= 0 and fast > 0 and rng.random() >= pause:
        heading = people.heading[user] + rng.gauss(0, 0.6)
        home = CITIES[people.home[user]]
        north = (lat - home.lat) * _M_PER_DEG
        east = (lon - home.lon) * _M_PER_DEG * math.cos(math.radians(home.lat))
        if north * north + east * east > 25_000.0**2:
            heading = math.atan2(-east, -north)  # turn back towards home
        distance = rng.uniform(slow, fast) * (ts - last) / 1000
        lat, lon = _offset(lat, lon, distance * math.cos(heading), distance * math.sin(heading))
        lat = min(max(lat, -89.9), 89.9)
        people.heading[user] = heading
        people.lat[user], people.lon[user] = lat, lon
    return round(lat, 6), round(lon, 6)


# -- alerts -----------------------------------------------------------------------------------
_VEHICLES = (
    ("Honda", "Civic", "Silver"),
    ("Toyota", "Camry", "White"),
    ("Ford", "F-150", "Blue"),
    ("Chevrolet", "Malibu", "Black"),
    ("Nissan", "Altima", "Red"),
)
_NAMES = ("Ava Moreno", "Liam Carter", "Mia Nguyen", "Noah Patel", "Emma Johnson")


def _alert_messages(spec: ScenarioSpec, rng: random.Random) -> list[tuple[int, str, str]]:
    """``(sent ms, Kafka key, CAP XML)`` of every alert message, in no particular order."""
    duration_ms = int(spec.duration_s * 1000)
    messages: list[tuple[int, str, str]] = []
    for number in range(spec.alerts):
        city = CITIES[rng.choices(range(len(CITIES)), [c.weight for c in CITIES])[0]]
        centre = _offset(city.lat, city.lon, rng.gauss(0, 3000), rng.gauss(0, 3000))
        radius_km = rng.uniform(2.0, 6.0)
        jitter = [rng.uniform(0.75, 1.25) for _ in range(10)]
        # Whole seconds: CAP times have no fractions.
        issued = spec.start_ms + int(rng.uniform(0.05, 0.4) * duration_ms) // 1000 * 1000
        updated = issued + int(rng.uniform(0.15, 0.3) * duration_ms) // 1000 * 1000 + 1000
        cancelled = updated + int(rng.uniform(0.1, 0.25) * duration_ms) // 1000 * 1000 + 1000
        identifier = f"SIM-{spec.start_ms // 1000}-{spec.seed}-{number:03d}"
        plate = f"SIM{rng.randint(1000, 9999)}"
        make, model, color = _VEHICLES[number % len(_VEHICLES)]
        child = _NAMES[number % len(_NAMES)]
        base = Alert(
            identifier=identifier,
            sender=spec.sender,
            sent_ms=issued,
            status="Actual",
            msg_type="Alert",
            expires_ms=issued + 6 * 3600 * 1000,
            event="Child Abduction Emergency",
            event_codes=(Geocode("SAME", "CAE"),),
            categories=("Rescue",),
            urgency="Immediate",
            severity="Severe",
            certainty="Likely",
            headline=(
                f"AMBER Alert: {city.name}, {city.state} - {color} {make} {model}, plate {plate}"
            ),
            description=f"{child}, {7 + number % 9}, was last seen near {city.name}.",
            instruction="If you see the child or the vehicle, call 911.",
            web="https://www.missingkids.org/",
            sender_name="alertfeed simulation",
            parameters=(
                Geocode("ChildName", child),
                Geocode("ChildAge", str(7 + number % 9)),
                Geocode("VehicleMake", make),
                Geocode("VehicleModel", model),
                Geocode("VehicleColor", color),
                Geocode("VehicleLicensePlate", plate),
            ),
            areas=(_area(city, centre, radius_km, jitter, polygon=number % 2 == 1),),
        )
        first = Reference(spec.sender, identifier, cap_time(issued))
        update = replace(
            base,
            identifier=f"{identifier}-U1",
            sent_ms=updated,
            msg_type="Update",
            references=(first,),
            expires_ms=updated + 6 * 3600 * 1000,
            areas=(_area(city, centre, radius_km * 1.6, jitter, polygon=number % 2 == 1),),
        )
        second = Reference(spec.sender, f"{identifier}-U1", cap_time(updated))
        cancel = replace(
            base,
            identifier=f"{identifier}-C",
            sent_ms=cancelled,
            msg_type="Cancel",
            references=(first, second),
            headline=f"AMBER Alert cancelled: {city.name}, {city.state}",
            expires_ms=cancelled + 3600 * 1000,
            areas=(),
        )
        for alert in (base, update, cancel):
            if alert.sent_ms < spec.start_ms + duration_ms:
                messages.append((alert.sent_ms, identifier, cap_xml(alert)))
    return messages


def _area(
    city: City, centre: LatLon, radius_km: float, jitter: list[float], *, polygon: bool
) -> Area:
    description = f"{city.name}, {city.state} and surroundings"
    lat, lon = round(centre[0], 5), round(centre[1], 5)
    if not polygon:
        return Area(description=description, circles=(Circle(lat, lon, round(radius_km, 3)),))
    ring: list[LatLon] = []
    for step, scale in enumerate(jitter):
        angle = 2 * math.pi * step / len(jitter)
        metres = radius_km * 1000 * scale
        a, o = _offset(lat, lon, metres * math.cos(angle), metres * math.sin(angle))
        ring.append((round(a, 5), round(o, 5)))
    ring.append(ring[0])
    return Area(description=description, polygons=(Polygon(tuple(ring)),))
