"""NWS alerts-API (api.weather.gov) GeoJSON to :class:`~pipeline.domain.models.Alert`.

Contract of :func:`parse_nws_geojson`:

* Accepts a ``Feature``, a ``FeatureCollection`` (one Alert per feature, ``[]`` for an
  empty collection), or the JSON-LD forms: ``{"@graph": [...]}`` and a single
  ``{"@type": "wx:Alert", ...}``, whose items are the properties themselves and whose
  ``geometry`` is null or WKT text (``POLYGON``/``MULTIPOLYGON``).
* GeoJSON positions are ``[lon, lat]``; the Alert holds ``(lat, lon)``. Rings must be
  closed and have at least 4 positions (RFC 7946); interior rings become holes.
* Each feature gives one Area: ``areaDesc``, the polygons of ``geometry`` (null means
  none) and the geocodes ``SAME``, then ``UGC``, then any other scheme. When
  ``geocode.UGC`` is empty, UGC codes are taken from the ``affectedZones`` URLs. The
  Area model decides that geocodes only count when there is no geometry.
* ``expires`` maps to ``expires_ms``; ``ends``, ``onset`` and ``response`` have no field
  in the model (``onset`` is still validated, as for CAP). Null properties are absent.
* A geometry that is valid GeoJSON but not an area (Point, LineString) raises
  :class:`UnsupportedArea`; every other problem raises :class:`MalformedEvent` with a
  reason that starts with ``feature N:`` (numbered from 1).
"""

from __future__ import annotations

import math
import re
from itertools import accumulate
from typing import Any

from pipeline.domain.alerts.cap import dedupe, parse_msg_type, parse_status
from pipeline.domain.alerts.cap_details import amber_details
from pipeline.domain.alerts.timefmt import iso_to_ms
from pipeline.domain.checks import check_lat_lon
from pipeline.domain.models import Alert, Area, Geocode, LatLon, Polygon, Reference
from pipeline.errors import MalformedEvent, UnsupportedArea, excerpt

_GEOCODE_ORDER = ("SAME", "UGC")
_UGC_CODE = re.compile(r"[A-Z]{2}[CZ][0-9]{3}")


def parse_nws_geojson(obj: dict[str, Any]) -> list[Alert]:
    """Parse a decoded NWS alerts-API document into Alerts (see the module contract)."""
    if not isinstance(obj, dict):
        raise MalformedEvent(f"NWS GeoJSON must be a JSON object, not {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "FeatureCollection" or (kind is None and "features" in obj):
        features = obj.get("features")
        if not isinstance(features, list):
            raise MalformedEvent("FeatureCollection 'features' is not a list")
        return [_feature_alert(feature, n) for n, feature in enumerate(features, 1)]
    if kind == "Feature":
        return [_feature_alert(obj, 1)]
    if kind is None and "@graph" in obj:
        graph = obj["@graph"]
        if not isinstance(graph, list):
            raise MalformedEvent("JSON-LD '@graph' is not a list")
        return [_graph_alert(item, n) for n, item in enumerate(graph, 1)]
    if kind is None and obj.get("@type") == "wx:Alert":
        return [_graph_alert(obj, 1)]
    raise MalformedEvent(
        f"NWS GeoJSON 'type' is {excerpt(kind)}; expected 'Feature' or 'FeatureCollection'"
    )


def _feature_alert(feature: Any, number: int) -> Alert:
    where = f"feature {number}"
    if not isinstance(feature, dict):
        raise MalformedEvent(f"{where} is {type(feature).__name__}, not an object")
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        raise MalformedEvent(f"{where}: 'properties' is missing or not an object")
    fallback_id = str(feature.get("id") or "").rsplit("/", 1)[-1]
    return _alert(properties, feature.get("geometry"), fallback_id, where)


def _graph_alert(item: Any, number: int) -> Alert:
    where = f"@graph item {number}"
    if not isinstance(item, dict):
        raise MalformedEvent(f"{where} is {type(item).__name__}, not an object")
    return _alert(item, item.get("geometry"), "", where)


def _alert(props: dict[str, Any], geometry: Any, fallback_id: str, where: str) -> Alert:
    try:
        return _alert_of(props, geometry, fallback_id)
    except MalformedEvent as exc:
        raise MalformedEvent(f"{where}: {exc}") from exc
    except UnsupportedArea as exc:
        raise UnsupportedArea(f"{where}: {exc}") from exc


def _alert_of(props: dict[str, Any], geometry: Any, fallback_id: str) -> Alert:
    text = _Text(props)
    identifier = text.get("id") or text.get("identifier") or fallback_id
    if not identifier:
        raise MalformedEvent("missing properties.id")
    effective_ms, onset_ms, expires_ms = (
        iso_to_ms(value, f"properties.{key}") if (value := text.get(key)) else None
        for key in ("effective", "onset", "expires")
    )
    del onset_ms  # validated only: the model has no onset field
    parameters = _code_lists(props, "parameters")
    child, suspect, vehicle = amber_details(parameters)
    area = Area(
        description=text.get("areaDesc"),
        polygons=_geometry_polygons(geometry),
        geocodes=_geocodes(props),
    )
    return Alert(
        identifier=identifier,
        sender=text.required("sender"),
        sent_ms=iso_to_ms(text.required("sent"), "properties.sent"),
        status=parse_status(text.required("status"), "properties.status"),
        msg_type=parse_msg_type(text.required("messageType"), "properties.messageType"),
        scope=text.get("scope") or "Public",
        references=_references(props),
        effective_ms=effective_ms,
        expires_ms=expires_ms,
        event=text.get("event"),
        event_codes=_code_lists(props, "eventCode"),
        categories=_categories(props),
        urgency=text.get("urgency"),
        severity=text.get("severity"),
        certainty=text.get("certainty"),
        language=text.get("language") or "en-US",
        headline=text.get("headline"),
        description=text.get("description"),
        instruction=text.get("instruction"),
        web=text.get("web"),
        sender_name=text.get("senderName"),
        child=child,
        suspect=suspect,
        vehicle=vehicle,
        areas=(area,) if area.polygons or area.geocodes or area.description else (),
        parameters=parameters,
    )


class _Text:
    """String properties: null and blank mean absent; other types are malformed."""

    def __init__(self, props: dict[str, Any]) -> None:
        self.props = props

    def get(self, key: str) -> str:
        value = self.props.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise MalformedEvent(f"properties.{key} is {type(value).__name__}, expected a string")
        return value.strip()

    def required(self, key: str) -> str:
        value = self.get(key)
        if not value:
            raise MalformedEvent(f"missing properties.{key}")
        return value


def _references(props: dict[str, Any]) -> tuple[Reference, ...]:
    raw = props.get("references") or []
    if not isinstance(raw, list):
        raise MalformedEvent("properties.references is not a list")
    references: list[Reference] = []
    for number, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise MalformedEvent(f"reference {number} is not an object")
        fields = [item.get(key) for key in ("sender", "identifier", "sent")]
        if not all(isinstance(value, str) and value for value in fields):
            raise MalformedEvent(
                f"reference {number} needs string 'sender', 'identifier' and 'sent'"
            )
        sender, identifier, sent = (str(value) for value in fields)
        references.append(Reference(sender=sender, identifier=identifier, sent=sent))
    return tuple(references)


def _categories(props: dict[str, Any]) -> tuple[str, ...]:
    raw = props.get("category")
    values = [raw] if isinstance(raw, str) else raw or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MalformedEvent("properties.category is not a string or list of strings")
    return dedupe([v.strip() for v in values if v.strip()])


def _code_lists(props: dict[str, Any], key: str) -> tuple[Geocode, ...]:
    """``{"name": ["v1", "v2"]}`` (the API's eventCode, parameters, geocode) to pairs."""
    raw = props.get(key) or {}
    if not isinstance(raw, dict):
        raise MalformedEvent(f"properties.{key} is not an object of lists")
    pairs: list[Geocode] = []
    for name, values in raw.items():
        items = values if isinstance(values, list) else [values]
        for value in items:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise MalformedEvent(f"properties.{key}.{name} holds a non-text value")
            if text := str(value).strip():
                pairs.append(Geocode(str(name), text))
    return dedupe(pairs)


def _geocodes(props: dict[str, Any]) -> tuple[Geocode, ...]:
    pairs = list(_code_lists(props, "geocode"))
    if not any(g.name == "UGC" for g in pairs):
        pairs += _affected_zone_codes(props)
    rank = {name: index for index, name in enumerate(_GEOCODE_ORDER)}
    return tuple(sorted(pairs, key=lambda g: rank.get(g.name, len(rank))))


def _affected_zone_codes(props: dict[str, Any]) -> list[Geocode]:
    """UGC codes from ``affectedZones`` URLs (``.../zones/forecast/ARZ045``).

    Only used when ``geocode.UGC`` is empty; anything not shaped like a UGC code is
    ignored, since the URLs are a convenience of the API and not part of CAP.
    """
    zones = props.get("affectedZones")
    if not isinstance(zones, list):
        return []
    codes = [zone.rstrip("/").rsplit("/", 1)[-1] for zone in zones if isinstance(zone, str)]
    return [Geocode("UGC", code) for code in codes if _UGC_CODE.fullmatch(code)]


# --- geometry --------------------------------------------------------------------------


def _geometry_polygons(geometry: Any) -> tuple[Polygon, ...]:
    """The polygons of a GeoJSON (or WKT) geometry, GeometryCollections flattened in
    document order. Collections are walked with an explicit stack, not recursion: JSON
    nests them as deep as the decoder allows (hundreds of levels), deeper than Python's
    recursion limit."""
    polygons: list[Polygon] = []
    pending = [geometry]
    while pending:
        member = pending.pop()
        if isinstance(member, dict) and member.get("type") == "GeometryCollection":
            members = member.get("geometries")
            if not isinstance(members, list):
                raise MalformedEvent("GeometryCollection 'geometries' is not a list")
            pending.extend(reversed(members))
        else:
            polygons.extend(_simple_geometry_polygons(member))
    return tuple(polygons)


def _simple_geometry_polygons(geometry: Any) -> tuple[Polygon, ...]:
    if geometry is None:
        return ()
    if isinstance(geometry, str):
        return _simple_geometry_polygons(_wkt_geometry(geometry))
    if not isinstance(geometry, dict):
        raise MalformedEvent(f"geometry is {type(geometry).__name__}, not an object")
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if kind == "Polygon":
        return (_polygon(coordinates, "polygon 1"),)
    if kind == "MultiPolygon":
        if not isinstance(coordinates, list):
            raise MalformedEvent("MultiPolygon coordinates are not a list")
        return tuple(_polygon(rings, f"polygon {n}") for n, rings in enumerate(coordinates, 1))
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        raise UnsupportedArea(f"geometry type {kind!r} has no area; expected Polygon")
    raise MalformedEvent(f"geometry type {excerpt(kind)} is not a GeoJSON geometry")


def _polygon(rings: Any, label: str) -> Polygon:
    if not isinstance(rings, list) or not rings:
        raise MalformedEvent(f"{label} has no rings")
    exterior, *holes = (_ring(ring, f"ring {n} of {label}") for n, ring in enumerate(rings, 1))
    return Polygon(exterior=exterior, holes=tuple(holes))


def _ring(positions: Any, label: str) -> tuple[LatLon, ...]:
    if not isinstance(positions, list):
        raise MalformedEvent(f"{label} is not a list of positions")
    points = [_position(p, f"position {n} of {label}", label) for n, p in enumerate(positions, 1)]
    if len(points) < 4:
        raise MalformedEvent(f"{label} has {len(points)} positions; GeoJSON needs at least 4")
    if points[0] != points[-1]:
        raise MalformedEvent(f"{label} is not closed (first position != last position)")
    return tuple(points)


def _position(position: Any, what: str, label: str) -> LatLon:
    if (
        not isinstance(position, list)
        or len(position) < 2
        or not all(_is_number(c) for c in position[:2])
    ):
        raise MalformedEvent(f"{what} {excerpt(position)} is not [lon, lat]")
    lon, lat = float(position[0]), float(position[1])
    return check_lat_lon(lat, lon, label)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_WKT_TOKEN = re.compile(r"\s*(?:([(),])|([^\s(),]+))")
_WKT_KINDS = {"POLYGON": "Polygon", "MULTIPOLYGON": "MultiPolygon"}


def _wkt_geometry(text: str) -> dict[str, Any] | None:
    """WKT ``POLYGON``/``MULTIPOLYGON`` (JSON-LD responses) as a GeoJSON geometry."""
    keyword, _, body = text.strip().partition("(")
    keyword = keyword.strip().upper()
    if keyword.endswith("EMPTY"):
        return None
    if keyword not in _WKT_KINDS:
        raise MalformedEvent(f"WKT geometry {excerpt(text)} is not a POLYGON or MULTIPOLYGON")
    tokens = [m.group(1) or m.group(2) for m in _WKT_TOKEN.finditer("(" + body)]
    # _wkt_list recurses once per parenthesis; a POLYGON nests 2 deep, a MULTIPOLYGON 3.
    limit = 3 if keyword == "MULTIPOLYGON" else 2
    depth = max(accumulate((t == "(") - (t == ")") for t in tokens), default=0)
    if depth > limit:
        raise MalformedEvent(
            f"WKT geometry {excerpt(text)} nests parentheses {depth} deep; "
            f"a {keyword} nests {limit}"
        )
    try:
        coordinates, end = _wkt_list(tokens, 0)
    except (IndexError, ValueError):
        raise MalformedEvent(f"WKT geometry {excerpt(text)} does not parse") from None
    if end != len(tokens):
        raise MalformedEvent(f"WKT geometry {excerpt(text)} has text after its end")
    return {"type": _WKT_KINDS[keyword], "coordinates": coordinates}


def _wkt_list(tokens: list[str], index: int) -> tuple[list[Any], int]:
    """Parse ``( item, item, ... )`` from ``tokens[index]``; items are lists or positions."""
    if tokens[index] != "(":
        raise ValueError(tokens[index])
    items: list[Any] = []
    index += 1
    while True:
        if tokens[index] == "(":
            item, index = _wkt_list(tokens, index)
        else:
            numbers: list[float] = []
            while tokens[index] not in (",", ")"):
                numbers.append(float(tokens[index]))
                index += 1
            item = numbers
        items.append(item)
        if tokens[index] == ")":
            return items, index + 1
        index += 1  # the comma
