"""Which alert format a message is, and the one entry point that parses any of them.

Formats, told apart by content alone (Kafka headers are not trusted to say):

* ``cap``: XML (first character ``<``): CAP 1.2/1.1, or an Atom feed embedding CAP.
* ``nws``: a JSON object that is GeoJSON (``type`` Feature/FeatureCollection, or a
  ``features`` list) or the API's JSON-LD (``@graph``, ``@type: wx:Alert``).
* ``alert_json``: any other JSON object, our own alert JSON.

A UTF-8 byte-order mark and leading whitespace are skipped; UTF-16/32 byte-order marks
are accepted for XML only (JSON must be UTF-8).
"""

from __future__ import annotations

import codecs
from typing import Any, Literal

import orjson

from pipeline.domain.alerts.cap import parse_cap
from pipeline.domain.alerts.nws import parse_nws_geojson
from pipeline.domain.models import Alert
from pipeline.errors import MalformedEvent

AlertFormat = Literal["cap", "nws", "alert_json"]

_WHITESPACE = b" \t\r\n"
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def detect_format(data: bytes) -> AlertFormat:
    """Name the format of ``data``; decodes JSON to decide, but returns only the name.

    Raises :class:`MalformedEvent` for empty input, JSON that does not decode or is not an
    object, and anything that starts like none of the formats.
    """
    return _classify(data)[0]


def parse_alert_message(data: bytes) -> list[Alert]:
    """Parse one Kafka message of any supported format into its Alerts.

    CAP and NWS messages may hold several alerts (Atom feeds, FeatureCollections); alert
    JSON holds exactly one. Every rejection is a :class:`~pipeline.errors.BadInput`
    (:class:`MalformedEvent`, or :class:`~pipeline.errors.UnsupportedArea` for an NWS
    geometry without area) carrying the precise reason.
    """
    kind, obj = _classify(data)
    if kind == "cap":
        return parse_cap(data)
    if kind == "nws":
        return parse_nws_geojson(obj)
    from pipeline.domain.alerts.alert_json import alert_from_json

    return [alert_from_json(obj)]


def _classify(data: bytes) -> tuple[AlertFormat, dict[str, Any]]:
    """The format and, for JSON, the decoded object (``{}`` for CAP)."""
    if not data.strip(_WHITESPACE):
        raise MalformedEvent("empty message: not CAP XML, NWS GeoJSON or alert JSON")
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            head = data[len(bom) : len(bom) + 400].decode(encoding, errors="ignore").lstrip()
            if head.startswith("<"):
                return "cap", {}
            raise MalformedEvent(
                f"{encoding} byte-order mark before {head[:20]!r}: only XML may be UTF-16/32"
            )
    body = data.removeprefix(codecs.BOM_UTF8).lstrip(_WHITESPACE)
    if body.startswith(b"<"):
        return "cap", {}
    if not body.startswith((b"{", b"[")):
        raise MalformedEvent(f"not CAP XML, NWS GeoJSON or alert JSON: starts with {body[:20]!r}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedEvent(
            f"JSON message is {type(obj).__name__}, expected an object (NWS GeoJSON or alert JSON)"
        )
    if _is_nws(obj):
        return "nws", obj
    return "alert_json", obj


def _is_nws(obj: dict[str, Any]) -> bool:
    return (
        obj.get("type") in ("Feature", "FeatureCollection")
        or "features" in obj
        or "@graph" in obj
        or obj.get("@type") == "wx:Alert"
    )
