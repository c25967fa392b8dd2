"""Time shifting of logged records: move a record, and the times inside alerts and
locations, by one offset.

``alertfeed replay --retime`` uses this to play an old log as if it happened now. Values
are bytes as they travel on the topics; what is not a recognised time, or does not parse,
is left untouched. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from pipeline.replay.eventlog import LoggedRecord

_CAP_TIME = re.compile(
    rb"<((?:[A-Za-z_][\w.-]*:)?)(sent|effective|onset|expires)>\s*([^<]*?)\s*</\1\2>"
)
_CAP_REFERENCES = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?)references>([^<]*)</\1references>")
_JSON_ALERT_TIMES = ("sent", "effective", "onset", "expires")
_NWS_TIMES = ("sent", "effective", "onset", "expires", "ends")


def shift_iso(text: str, delta_ms: int) -> str:
    """``text`` (ISO-8601 with an offset) moved by ``delta_ms``, in the same style: same
    offset, ``Z`` or ``-00:00`` kept, fractional seconds only if it had them. Text that is
    not such a timestamp comes back unchanged."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    shifted = moment + timedelta(milliseconds=delta_ms)
    out = shifted.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    stripped = text.strip()
    if stripped.endswith(("Z", "z")):
        out = out.removesuffix("+00:00") + "Z"
    elif stripped.endswith("-00:00"):
        out = out.removesuffix("+00:00") + "-00:00"
    return out


def retime_record(record: LoggedRecord, delta_ms: int, logical_topic: str) -> LoggedRecord:
    """``record`` moved by ``delta_ms``: its ``ts`` and, per :func:`retime_value`, the times
    inside it. ``logical_topic`` says how to read the value."""
    value = record.value
    if value is not None:
        value = retime_value(logical_topic, value, delta_ms)
    return replace(record, ts=record.ts + delta_ms, value=value)


def retime_value(topic: str, value: bytes, delta_ms: int) -> bytes:
    """``value`` of logical ``topic`` with the times inside moved by ``delta_ms``.

    * locations: ``ts``;
    * alerts, CAP XML: ``sent``, ``effective``, ``onset``, ``expires`` (any namespace prefix,
      Atom-embedded alerts too) and the ``sent`` part of ``references``;
    * alerts, alert JSON: ``sent``, ``effective``, ``onset``, ``expires``, ``references[].sent``;
    * alerts, NWS GeoJSON / JSON-LD: ``sent``, ``effective``, ``onset``, ``expires``, ``ends``
      and ``references[].sent`` of every feature's properties (or ``@graph`` item).

    Anything else (other topics, values that do not parse) comes back unchanged. JSON values
    that change are re-serialised compactly.
    """
    if topic == "locations":
        obj = _json_object(value)
        ts = obj.get("ts") if obj is not None else None
        if obj is None or isinstance(ts, bool) or not isinstance(ts, int):
            return value
        obj["ts"] = ts + delta_ms
        return orjson.dumps(obj)
    if topic != "alerts":
        return value
    if value.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return _retime_cap(value, delta_ms)
    obj = _json_object(value)
    if obj is None:
        return value
    nws = obj.get("type") in ("Feature", "FeatureCollection") or "features" in obj
    if nws:
        features = obj.get("features") if "features" in obj else [obj]
        for feature in features if isinstance(features, list) else []:
            if isinstance(feature, dict) and isinstance(feature.get("properties"), dict):
                _shift_fields(feature["properties"], _NWS_TIMES, delta_ms)
    elif "@graph" in obj:
        for item in obj["@graph"] if isinstance(obj["@graph"], list) else []:
            if isinstance(item, dict):
                _shift_fields(item, _NWS_TIMES, delta_ms)
    elif obj.get("@type") == "wx:Alert":
        _shift_fields(obj, _NWS_TIMES, delta_ms)
    else:
        _shift_fields(obj, _JSON_ALERT_TIMES, delta_ms)
    return orjson.dumps(obj)


def _json_object(value: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _shift_fields(obj: dict[str, Any], names: Iterable[str], delta_ms: int) -> None:
    for name in names:
        if isinstance(obj.get(name), str):
            obj[name] = shift_iso(obj[name], delta_ms)
    references = obj.get("references")
    if isinstance(references, list):
        for reference in references:
            if isinstance(reference, dict) and isinstance(reference.get("sent"), str):
                reference["sent"] = shift_iso(reference["sent"], delta_ms)


def _retime_cap(value: bytes, delta_ms: int) -> bytes:
    def one_time(match: re.Match[bytes]) -> bytes:
        prefix, name, text = match.group(1), match.group(2), match.group(3)
        if not text.isascii():
            return match.group(0)
        shifted = shift_iso(text.decode("ascii"), delta_ms).encode("ascii")
        return b"<%s%s>%s</%s%s>" % (prefix, name, shifted, prefix, name)

    def references(match: re.Match[bytes]) -> bytes:
        prefix, raw = match.group(1), match.group(2)
        if not raw.isascii():
            return match.group(0)
        body = raw.decode("ascii")
        shifted = []
        for token in body.split():
            parts = token.split(",")
            if len(parts) == 3:
                parts[2] = shift_iso(parts[2], delta_ms)
            shifted.append(",".join(parts))
        joined = " ".join(shifted).encode("ascii")
        return b"<%sreferences>%s</%sreferences>" % (prefix, joined, prefix)

    return _CAP_REFERENCES.sub(references, _CAP_TIME.sub(one_time, value))
