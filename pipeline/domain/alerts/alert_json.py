"""Our own alert JSON (``schemas/alert.schema.json``) to and from :class:`Alert`.

The JSON mirrors CAP: ISO-8601 times, polygons as lists of ``[lat, lon]`` pairs, circles
with ``radius_km``. Validation is written out by hand so that every rejection carries a
reason a person can act on ("areas[0].polygons[1] has 2 points; a polygon needs at least 3").
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from pipeline.domain.alerts.timefmt import iso_to_ms, ms_to_iso
from pipeline.domain.checks import check_lat_lon
from pipeline.domain.models import (
    MSG_TYPES,
    STATUSES,
    Alert,
    Area,
    Circle,
    Geocode,
    Image,
    LatLon,
    MsgType,
    Person,
    Polygon,
    Reference,
    Status,
    Translation,
    Vehicle,
)
from pipeline.errors import MalformedEvent, excerpt

_PERSON_FIELDS = tuple(Person.__dataclass_fields__)
_VEHICLE_FIELDS = tuple(Vehicle.__dataclass_fields__)


def alert_from_json(obj: Any) -> Alert:
    """Build an Alert from a decoded alert-JSON object. Raises MalformedEvent."""
    if not isinstance(obj, dict):
        raise MalformedEvent(f"alert JSON must be an object, not {type(obj).__name__}")
    status = _required_str(obj, "status")
    if status not in STATUSES:
        raise MalformedEvent(
            f"status {excerpt(status)} is not one of {', '.join(sorted(STATUSES))}"
        )
    msg_type = _required_str(obj, "msg_type")
    if msg_type not in MSG_TYPES:
        raise MalformedEvent(
            f"msg_type {excerpt(msg_type)} is not one of {', '.join(sorted(MSG_TYPES))}"
        )
    areas = tuple(_area(a, i) for i, a in enumerate(_list(obj, "areas")))
    if msg_type in ("Alert", "Update") and not areas:
        raise MalformedEvent(f"an {msg_type} needs at least one area")
    return Alert(
        identifier=_required_str(obj, "id"),
        sender=_required_str(obj, "sender"),
        sent_ms=iso_to_ms(_required_str(obj, "sent"), "sent"),
        status=_as_status(status),
        msg_type=_as_msg_type(msg_type),
        scope=_str(obj, "scope") or "Public",
        references=tuple(_reference(r, i) for i, r in enumerate(_list(obj, "references"))),
        effective_ms=_time(obj, "effective"),
        expires_ms=_time(obj, "expires"),
        event=_str(obj, "event"),
        event_codes=tuple(
            _pair(p, f"event_codes[{i}]") for i, p in enumerate(_list(obj, "event_codes"))
        ),
        categories=tuple(str(c) for c in _list(obj, "category")),
        urgency=_str(obj, "urgency"),
        severity=_str(obj, "severity"),
        certainty=_str(obj, "certainty"),
        language=_str(obj, "language") or "en-US",
        headline=_str(obj, "headline"),
        description=_str(obj, "description"),
        instruction=_str(obj, "instruction"),
        web=_str(obj, "web"),
        sender_name=_str(obj, "sender_name"),
        child=_person(obj.get("child"), "child"),
        suspect=_person(obj.get("suspect"), "suspect"),
        vehicle=_vehicle(obj.get("vehicle")),
        images=tuple(_image(m, i) for i, m in enumerate(_list(obj, "images"))),
        areas=areas,
        translations=tuple(_translation(t, i) for i, t in enumerate(_list(obj, "translations"))),
        parameters=tuple(
            _pair(p, f"parameters[{i}]") for i, p in enumerate(_list(obj, "parameters"))
        ),
    )


def alert_to_json(alert: Alert) -> dict[str, Any]:
    """The alert-JSON object of an Alert; ``alert_from_json`` of it gives the Alert back."""
    return {
        "id": alert.identifier,
        "sender": alert.sender,
        "sent": ms_to_iso(alert.sent_ms),
        "status": alert.status,
        "msg_type": alert.msg_type,
        "scope": alert.scope,
        "references": [
            {"sender": r.sender, "id": r.identifier, "sent": r.sent} for r in alert.references
        ],
        "effective": ms_to_iso(alert.effective_ms) if alert.effective_ms is not None else None,
        "expires": ms_to_iso(alert.expires_ms) if alert.expires_ms is not None else None,
        "event": alert.event,
        "event_codes": [{"name": c.name, "value": c.value} for c in alert.event_codes],
        "category": list(alert.categories),
        "urgency": alert.urgency,
        "severity": alert.severity,
        "certainty": alert.certainty,
        "language": alert.language,
        "headline": alert.headline,
        "description": alert.description,
        "instruction": alert.instruction,
        "web": alert.web,
        "sender_name": alert.sender_name,
        "child": asdict(alert.child) if alert.child else None,
        "suspect": asdict(alert.suspect) if alert.suspect else None,
        "vehicle": asdict(alert.vehicle) if alert.vehicle else None,
        "images": [asdict(image) for image in alert.images],
        "areas": [_area_json(area) for area in alert.areas],
        "translations": [asdict(t) for t in alert.translations],
        "parameters": [{"name": p.name, "value": p.value} for p in alert.parameters],
    }


def _area_json(area: Area) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": area.description,
        "polygons": [[list(p) for p in poly.exterior] for poly in area.polygons],
        "circles": [{"lat": c.lat, "lon": c.lon, "radius_km": c.radius_km} for c in area.circles],
        "geocodes": [{"name": g.name, "value": g.value} for g in area.geocodes],
    }
    holes = [[[list(p) for p in ring] for ring in poly.holes] for poly in area.polygons]
    if any(holes):
        out["holes"] = holes
    return out


# -- field readers ----------------------------------------------------------------------------
def _as_status(value: str) -> Status:
    return value  # type: ignore[return-value]  # checked against STATUSES by the caller


def _as_msg_type(value: str) -> MsgType:
    return value  # type: ignore[return-value]  # checked against MSG_TYPES by the caller


def _required_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedEvent(f"missing or empty {key!r}")
    return value.strip()


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedEvent(f"{key!r} must be a string, not {type(value).__name__}")
    return value


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedEvent(f"{key!r} must be a list, not {type(value).__name__}")
    return value


def _time(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"{key!r} must be an ISO-8601 string")
    return iso_to_ms(value, key)


def _pair(obj: Any, where: str) -> Geocode:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or "value" not in obj:
        raise MalformedEvent(f"{where} must be an object with 'name' and 'value'")
    return Geocode(obj["name"], str(obj["value"]))


def _reference(obj: Any, index: int) -> Reference:
    if not isinstance(obj, dict):
        raise MalformedEvent(f"references[{index}] must be an object")
    where = f"references[{index}]"
    return Reference(
        sender=_required_str(obj, "sender")
        if obj.get("sender")
        else _fail(f"{where} has no sender"),
        identifier=_required_str(obj, "id") if obj.get("id") else _fail(f"{where} has no id"),
        sent=str(obj.get("sent") or ""),
    )


def _fail(reason: str) -> str:
    raise MalformedEvent(reason)


def _person(obj: Any, what: str) -> Person | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise MalformedEvent(f"{what!r} must be an object")
    return Person(**{k: str(obj[k]) for k in _PERSON_FIELDS if obj.get(k) is not None})


def _vehicle(obj: Any) -> Vehicle | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise MalformedEvent("'vehicle' must be an object")
    return Vehicle(**{k: str(obj[k]) for k in _VEHICLE_FIELDS if obj.get(k) is not None})


def _image(obj: Any, index: int) -> Image:
    if not isinstance(obj, dict) or not isinstance(obj.get("uri"), str):
        raise MalformedEvent(f"images[{index}] must be an object with a 'uri'")
    size = obj.get("size")
    return Image(
        uri=obj["uri"],
        mime_type=str(obj.get("mime_type") or ""),
        description=str(obj.get("description") or ""),
        digest=str(obj.get("digest") or ""),
        size=int(size) if isinstance(size, int) else None,
    )


def _translation(obj: Any, index: int) -> Translation:
    if not isinstance(obj, dict) or not isinstance(obj.get("language"), str):
        raise MalformedEvent(f"translations[{index}] must be an object with a 'language'")
    return Translation(
        language=obj["language"],
        **{
            k: str(obj.get(k) or "")
            for k in ("event", "headline", "description", "instruction", "web")
        },
    )


def _area(obj: Any, index: int) -> Area:
    where = f"areas[{index}]"
    if not isinstance(obj, dict):
        raise MalformedEvent(f"{where} must be an object")
    holes = _holes(obj.get("holes"), where)
    polygons = tuple(
        Polygon(
            _ring(ring, f"{where}.polygons[{i}]"),
            tuple(_ring(h, f"{where}.holes[{i}][{j}]") for j, h in enumerate(holes[i]))
            if i < len(holes)
            else (),
        )
        for i, ring in enumerate(_list(obj, "polygons"))
    )
    circles = tuple(
        _circle(c, f"{where}.circles[{i}]") for i, c in enumerate(_list(obj, "circles"))
    )
    geocodes = tuple(
        _pair(g, f"{where}.geocodes[{i}]") for i, g in enumerate(_list(obj, "geocodes"))
    )
    if not (polygons or circles or geocodes):
        raise MalformedEvent(f"{where} has no polygon, circle or geocode")
    return Area(_str(obj, "description"), polygons, circles, geocodes)


def _holes(value: Any, where: str) -> list[list[Any]]:
    """``holes``: per polygon, the list of its hole rings (absent, null or empty: none)."""
    if not value:
        return []
    if not isinstance(value, list):
        raise MalformedEvent(
            f"{where}.holes must be a list (per polygon, a list of hole rings), "
            f"not {type(value).__name__}"
        )
    per_polygon: list[list[Any]] = []
    for i, rings in enumerate(value):
        if rings and not isinstance(rings, list):
            raise MalformedEvent(
                f"{where}.holes[{i}] must be a list of the hole rings of polygons[{i}], "
                f"not {type(rings).__name__}"
            )
        per_polygon.append(rings or [])
    return per_polygon


def _ring(obj: Any, where: str) -> tuple[LatLon, ...]:
    if not isinstance(obj, list):
        raise MalformedEvent(f"{where} must be a list of [lat, lon] points")
    points = [_point(p, f"{where}[{i}]") for i, p in enumerate(obj)]
    distinct = set(points)
    if len(distinct) < 3:
        raise MalformedEvent(
            f"{where} has {len(distinct)} distinct points; a polygon needs at least 3"
        )
    if points[0] != points[-1]:
        points.append(points[0])
    return tuple(points)


def _point(obj: Any, where: str) -> LatLon:
    if not (isinstance(obj, list) and len(obj) == 2):
        raise MalformedEvent(f"{where} must be a [lat, lon] pair")
    lat, lon = _number(obj[0], f"{where} latitude"), _number(obj[1], f"{where} longitude")
    return check_lat_lon(lat, lon, where)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedEvent(f"{what} {excerpt(value)} is not a finite number")
    return float(value)


def _circle(obj: Any, where: str) -> Circle:
    if not isinstance(obj, dict):
        raise MalformedEvent(f"{where} must be an object with lat, lon and radius_km")
    lat, lon = _point([obj.get("lat"), obj.get("lon")], where)
    radius = _number(obj.get("radius_km"), f"{where} radius_km")
    if radius < 0:
        raise MalformedEvent(f"{where} radius_km {radius} is negative")
    return Circle(lat, lon, radius)
