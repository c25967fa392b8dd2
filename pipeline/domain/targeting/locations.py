"""User-location events: ``{"user_id": str, "lat": float, "lon": float, "ts": int}`` plus an
optional ``accuracy_m``.

Rules (each rejection is a MalformedEvent, dead-lettered with its reason and counted):

* every required field present and of its type; ``user_id`` non-empty;
* ``lat`` in [-90, 90], ``lon`` in [-180, 180], all numbers finite (JSON has no NaN; a
  producer that writes one produces invalid JSON, which is rejected as such);
* ``ts`` in epoch milliseconds, not more than ``max_future_skew_ms`` ahead of the worker's
  clock: a clock that far off would let one event outlive the freshness window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import Any, overload

import orjson

from pipeline.domain.models import Location, Sighting
from pipeline.domain.targeting.deadletter import RawEvent
from pipeline.errors import MalformedEvent

_REQUIRED = ("user_id", "lat", "lon", "ts")
# Anything below this is seconds or garbage, not epoch ms (it is 2001-09-09 in ms).
_MIN_TS_MS = 1_000_000_000_000
_INF = math.inf

# Location is frozen, so its __init__ sets every field through object.__setattr__; on the
# matcher's hot path it is built by the slots' own descriptors instead (the same object).
_new = object.__new__
_set_user_id, _set_lat, _set_lon, _set_ts, _set_accuracy = (
    Location.__dict__[name].__set__ for name in Location.__slots__
)


def parse_location(data: bytes, *, now_ms: int, max_future_skew_ms: int) -> Location:
    """Decode and validate one location event. Raises MalformedEvent with the reason."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"location is not valid JSON: {exc}") from exc
    if type(obj) is not dict:
        raise MalformedEvent(f"location must be a JSON object, not {type(obj).__name__}")
    # The common case first, by exact types: every event it accepts, location_from_json
    # accepts too and reads the same way (a float within bounds is finite; orjson gives no
    # bool for a float). Anything else, valid or not, takes the general path.
    user_id, lat, lon, ts = obj.get("user_id"), obj.get("lat"), obj.get("lon"), obj.get("ts")
    accuracy = obj.get("accuracy_m")
    if (
        type(user_id) is str
        and user_id
        and type(lat) is float
        and -90.0 <= lat <= 90.0
        and type(lon) is float
        and -180.0 <= lon <= 180.0
        and type(ts) is int
        and _MIN_TS_MS <= ts <= now_ms + max_future_skew_ms
        and (accuracy is None or (type(accuracy) is float and 0.0 <= accuracy < _INF))
    ):
        location = _new(Location)
        _set_user_id(location, user_id)
        _set_lat(location, lat)
        _set_lon(location, lon)
        _set_ts(location, ts)
        _set_accuracy(location, accuracy)
        return location
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
    """Decode a batch of location events at once, as columns, when every one of them takes
    the common case of :func:`parse_location` (which would read each the same way). None
    when any does not, valid or not (and for an empty batch): then read them one by one.

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
        and _all_of(float, lats)
        and -90.0 <= min(lats) <= max(lats) <= 90.0
        and _all_of(float, lons)
        and -180.0 <= min(lons) <= max(lons) <= 180.0
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


# The same trick as for Location, column by column: each setter runs over a column in C.
_SIGHTING_SETTERS = tuple(Sighting.__dict__[name].__set__ for name in Sighting.__slots__)


def sightings_of(
    users: Sequence[str], cells: Sequence[int], times: Sequence[int]
) -> list[Sighting]:
    """``[Sighting(u, c, t) for u, c, t in zip(users, cells, times)]``, the same objects
    built in C loops (the columns must have one length)."""
    sightings = list(map(_new, repeat(Sighting, len(users))))
    for set_field, column in zip(_SIGHTING_SETTERS, (users, cells, times), strict=True):
        deque(map(set_field, sightings, column), maxlen=0)  # runs the setters, keeps nothing
    return sightings


def location_from_json(obj: dict[str, Any], *, now_ms: int, max_future_skew_ms: int) -> Location:
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise MalformedEvent(f"location is missing {', '.join(missing)}")
    user_id = obj["user_id"]
    if not isinstance(user_id, str) or not user_id:
        raise MalformedEvent("location user_id must be a non-empty string")
    lat = _coordinate(obj["lat"], "lat", 90.0)
    lon = _coordinate(obj["lon"], "lon", 180.0)
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


def _coordinate(value: Any, name: str, bound: float) -> float:
    number = _finite(value, name)
    if not -bound <= number <= bound:
        raise MalformedEvent(f"location {name} out of range [-{bound:g}, {bound:g}]")
    return number
