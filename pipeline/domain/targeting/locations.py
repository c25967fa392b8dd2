"""User-location events: ``{"user_id": str, "lat": float, "lon": float, "ts": int}`` plus an
optional ``accuracy_m``.

Rules (each rejection is a MalformedEvent, dead-lettered with its reason and counted):

* every required field present and of its type; ``user_id`` non-empty, with no control
  characters (a card's ``event_id`` joins the alert key and the user id with one);
* ``lat`` in [-90, 90], ``lon`` in [-180, 180], all numbers finite (JSON has no NaN; a
  producer that writes one produces invalid JSON, which is rejected as such);
* ``ts`` in epoch milliseconds, not more than ``max_future_skew_ms`` ahead of the worker's
  clock: a clock that far off would let one event outlive the freshness window.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import Any, overload

import orjson

from pipeline.domain.checks import LAT_MAX, LAT_MIN, LON_MAX, LON_MIN, check_lat_lon
from pipeline.domain.models import Location, Sighting
from pipeline.domain.records import RawEvent
from pipeline.errors import MalformedEvent

_REQUIRED = ("user_id", "lat", "lon", "ts")
# Anything below this is seconds or garbage, not epoch ms (it is 2001-09-09 in ms).
_MIN_TS_MS = 1_000_000_000_000
_INF = math.inf
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_location(data: bytes, *, now_ms: int, max_future_skew_ms: int) -> Location:
    """Decode and validate one location event (:func:`location_from_json`). Raises
    MalformedEvent with the reason."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"location is not valid JSON: {exc}") from exc
    if type(obj) is not dict:
        raise MalformedEvent(f"location must be a JSON object, not {type(obj).__name__}")
    return location_from_json(obj, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms)


class RawLocations(Sequence[RawEvent]):
    """Raw location events of one topic, held as columns, as a reader of an event log has
    them: event ``i`` is ``RawEvent(topic, partitions[i], offsets[i], times[i], keys[i],
    values[i])``, built only when asked for. The matcher reads :attr:`values` as they are,
    so that a batch of valid locations needs no RawEvent at all."""

    __slots__ = ("keys", "offsets", "partitions", "times", "topic", "values")

    def __init__(  # noqa: PLR0917 - the field order of RawEvent itself
        self,
        topic: str,
        partitions: list[int],
        offsets: list[int],
        times: list[int],
        keys: list[bytes | None],
        values: list[bytes | None],
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.offsets = offsets
        self.times = times
        self.keys = keys
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> RawEvent: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RawEvent]: ...
    def __getitem__(self, index: int | slice) -> RawEvent | Sequence[RawEvent]:
        if isinstance(index, slice):
            return list(self)[index]
        return RawEvent(
            self.topic,
            self.partitions[index],
            self.offsets[index],
            self.times[index],
            self.keys[index],
            self.values[index],
        )

    def __iter__(self) -> Iterator[RawEvent]:
        columns = (self.partitions, self.offsets, self.times, self.keys, self.values)
        return map(RawEvent, repeat(self.topic), *columns)


# A batch of locations as parallel columns: user ids, latitudes, longitudes, times (ms).
LocationColumns = tuple[list[str], list[float], list[float], list[int]]
_NONE_TYPE = type(None)


def parse_locations(
    values: Sequence[bytes | None], *, now_ms: int, max_future_skew_ms: int
) -> LocationColumns | None:
    """Decode a batch of location events at once, as columns, when every one of them has
    the common shape: exact types (a float within bounds is finite; orjson gives no bool
    for a float) that :func:`location_from_json` accepts and reads the same way. None when
    any does not, valid or not (and for an empty batch): then read them one by one.

    Each check runs over a whole column in C (``map``, ``min``, ``list.count``): on the
    matcher's hot path this costs a fraction of a Python loop over the events.
    """
    if not values:
        return None
    try:  # orjson raises JSONDecodeError for a None too
        objs = list(map(orjson.loads, values))  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        return None
    if not _all_of(dict, objs):
        return None
    get: Callable[[dict[str, Any], str], Any] = dict.get
    users: list[str] = list(map(get, objs, repeat("user_id")))
    lats: list[float] = list(map(get, objs, repeat("lat")))
    lons: list[float] = list(map(get, objs, repeat("lon")))
    times: list[int] = list(map(get, objs, repeat("ts")))
    if not (
        _all_of(str, users)
        and all(users)
        and not _CONTROL.search("".join(users))
        and _all_of(float, lats)
        and LAT_MIN <= min(lats) <= max(lats) <= LAT_MAX
        and _all_of(float, lons)
        and LON_MIN <= min(lons) <= max(lons) <= LON_MAX
        and _all_of(int, times)
        and _MIN_TS_MS <= min(times) <= max(times) <= now_ms + max_future_skew_ms
    ):
        return None
    accuracies = list(map(get, objs, repeat("accuracy_m")))
    kinds = list(map(type, accuracies))
    if (floats := kinds.count(float)) + kinds.count(_NONE_TYPE) < len(kinds):
        return None
    if floats:  # each finite and not negative
        given = list(compress(accuracies, map(is_not, accuracies, repeat(None))))
        if not 0.0 <= min(given) <= max(given) < _INF:
            return None
    return users, lats, lons, times


def _all_of(kind: type, column: list[Any]) -> bool:
    """Whether every item of ``column`` is exactly of type ``kind``."""
    return list(map(type, column)).count(kind) == len(column)


# Sighting is frozen, so its __init__ sets every field through object.__setattr__; on the
# matcher's hot path each slot's own descriptor is run over a whole column in C instead.
_new = object.__new__
_SIGHTING_SETTERS = tuple(Sighting.__dict__[name].__set__ for name in Sighting.__slots__)


def sightings_of(
    users: Sequence[str],
    cells: Sequence[int],
    times: Sequence[int],
    partitions: Sequence[int] | None = None,
) -> list[Sighting]:
    """``[Sighting(u, c, t, p) for u, c, t, p in zip(users, cells, times, partitions)]``
    (partition 0 throughout when not given), the same objects built in C loops (the columns
    must have one length)."""
    sightings = list(map(_new, repeat(Sighting, len(users))))
    columns = (users, cells, times, repeat(0, len(users)) if partitions is None else partitions)
    for set_field, column in zip(_SIGHTING_SETTERS, columns, strict=True):
        deque(map(set_field, sightings, column), maxlen=0)  # runs the setters, keeps nothing
    return sightings


def location_from_json(obj: dict[str, Any], *, now_ms: int, max_future_skew_ms: int) -> Location:
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise MalformedEvent(f"location is missing {', '.join(missing)}")
    user_id = obj["user_id"]
    if not isinstance(user_id, str) or not user_id:
        raise MalformedEvent("location user_id must be a non-empty string")
    if _CONTROL.search(user_id):
        raise MalformedEvent("location user_id must not contain control characters")
    lat, lon = check_lat_lon(_finite(obj["lat"], "lat"), _finite(obj["lon"], "lon"), "location")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise MalformedEvent(f"location ts must be an integer (epoch ms), not {type(ts).__name__}")
    if ts < _MIN_TS_MS:
        raise MalformedEvent(f"location ts {ts} is not epoch milliseconds")
    if ts > now_ms + max_future_skew_ms:
        raise MalformedEvent(f"location ts is {(ts - now_ms) / 1000:.0f}s in the future")
    accuracy = obj.get("accuracy_m")
    if accuracy is not None:
        accuracy = _finite(accuracy, "accuracy_m")
        if accuracy < 0:
            raise MalformedEvent("location accuracy_m is negative")
    return Location(user_id, lat, lon, ts, accuracy)


def location_to_json(location: Location) -> dict[str, Any]:
    out: dict[str, Any] = {
        "user_id": location.user_id,
        "lat": location.lat,
        "lon": location.lon,
        "ts": location.ts,
    }
    if location.accuracy_m is not None:
        out["accuracy_m"] = location.accuracy_m
    return out


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedEvent(f"location {name} must be a finite number")
    return float(value)
