"""An :class:`~pipeline.domain.models.Alert` as a CAP 1.2 XML document.

Contract of :func:`cap_xml`: for an alert whose content CAP can carry,
``parse_cap(cap_xml(alert).encode())`` gives back an equal Alert. CAP can carry:

* times in whole seconds (CAP has no fractions): milliseconds are dropped, and times are
  written with the ``-00:00`` offset CAP uses for UTC;
* text without leading or trailing whitespace (the parser strips it) and without characters
  XML 1.0 forbids: such characters raise ValueError;
* polygons without holes (CAP polygons have none): a hole raises ValueError;
* AMBER people and vehicle only through ``parameters`` (the parser derives ``child``,
  ``suspect`` and ``vehicle`` from them), and images as ``<resource>`` with a ``uri``.

The primary language gets one ``<info>`` with the areas, codes and parameters; each
translation gets an ``<info>`` of its own carrying only its text (plus the required
category, urgency, severity and certainty, copied from the primary).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from pipeline.domain.models import Alert, Area, Geocode, Image, Translation

CAP_12 = "urn:oasis:names:tc:emergency:cap:1.2"
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def cap_time(ms: int) -> str:
    """Epoch ms as a CAP dateTime: ``2026-11-23T10:00:00-00:00`` (milliseconds dropped)."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + "-00:00"


def cap_xml(alert: Alert) -> str:
    """The CAP 1.2 document of ``alert`` (see the module contract). Raises ValueError for
    content CAP cannot carry faithfully (holes, XML-forbidden characters)."""
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>', f'<alert xmlns="{CAP_12}">']
    out.append(_el("identifier", alert.identifier))
    out.append(_el("sender", alert.sender))
    out.append(_el("sent", cap_time(alert.sent_ms)))
    out.append(_el("status", alert.status))
    out.append(_el("msgType", alert.msg_type))
    out.append(_el("scope", alert.scope))
    if alert.references:
        refs = " ".join(f"{r.sender},{r.identifier},{r.sent}" for r in alert.references)
        out.append(_el("references", refs))
    if _has_info(alert):
        out.extend(_primary_info(alert))
        for translation in alert.translations:
            out.extend(_translation_info(alert, translation))
    out.append("</alert>")
    return "\n".join(out) + "\n"


def _has_info(alert: Alert) -> bool:
    return bool(
        alert.event
        or alert.headline
        or alert.areas
        or alert.event_codes
        or alert.expires_ms is not None
        or alert.effective_ms is not None
        or alert.translations
    )


def _text(value: str) -> str:
    if _XML_FORBIDDEN.search(value):
        raise ValueError(f"text {value[:40]!r} has characters XML 1.0 cannot carry")
    return escape(value, {"\r": "&#13;"})  # a raw CR would be normalised away by the parser


def _el(name: str, value: str, indent: int = 1) -> str:
    return f"{'  ' * indent}<{name}>{_text(value)}</{name}>"


def _optional(name: str, value: str, indent: int = 2) -> list[str]:
    return [_el(name, value, indent)] if value else []


def _pairs(name: str, pairs: tuple[Geocode, ...], indent: int) -> list[str]:
    pad = "  " * indent
    return [
        f"{pad}<{name}><valueName>{_text(p.name)}</valueName><value>{_text(p.value)}</value>"
        f"</{name}>"
        for p in pairs
    ]


def _common_head(alert: Alert, language: str, event: str) -> list[str]:
    lines = [_el("language", language, 2)]
    lines += [_el("category", c, 2) for c in alert.categories]
    lines += _optional("event", event)
    lines += _optional("urgency", alert.urgency)
    lines += _optional("severity", alert.severity)
    lines += _optional("certainty", alert.certainty)
    return lines


def _times(alert: Alert) -> list[str]:
    lines = []
    if alert.effective_ms is not None:
        lines.append(_el("effective", cap_time(alert.effective_ms), 2))
    if alert.expires_ms is not None:
        lines.append(_el("expires", cap_time(alert.expires_ms), 2))
    return lines


def _primary_info(alert: Alert) -> list[str]:
    lines = ["  <info>", *_common_head(alert, alert.language, alert.event)]
    lines += _pairs("eventCode", alert.event_codes, 2)
    lines += _times(alert)
    lines += _optional("senderName", alert.sender_name)
    lines += _optional("headline", alert.headline)
    lines += _optional("description", alert.description)
    lines += _optional("instruction", alert.instruction)
    lines += _optional("web", alert.web)
    lines += _pairs("parameter", alert.parameters, 2)
    lines += [line for image in alert.images for line in _resource(image)]
    lines += [line for area in alert.areas for line in _area(area)]
    lines.append("  </info>")
    return lines


def _translation_info(alert: Alert, translation: Translation) -> list[str]:
    lines = ["  <info>", *_common_head(alert, translation.language, translation.event)]
    lines += _times(alert)
    lines += _optional("headline", translation.headline)
    lines += _optional("description", translation.description)
    lines += _optional("instruction", translation.instruction)
    lines += _optional("web", translation.web)
    lines.append("  </info>")
    return lines


def _resource(image: Image) -> list[str]:
    lines = ["    <resource>", _el("resourceDesc", image.description, 3)]
    lines.append(_el("mimeType", image.mime_type, 3))
    if image.size is not None:
        lines.append(_el("size", str(image.size), 3))
    lines += _optional("uri", image.uri, 3)
    lines += _optional("digest", image.digest, 3)
    lines.append("    </resource>")
    return lines


def _point(lat: float, lon: float) -> str:
    return f"{lat!r},{lon!r}"


def _area(area: Area) -> list[str]:
    lines = ["    <area>", _el("areaDesc", area.description, 3)]
    for polygon in area.polygons:
        if polygon.holes:
            raise ValueError("CAP polygons cannot have holes")
        lines.append(_el("polygon", " ".join(_point(a, o) for a, o in polygon.exterior), 3))
    for circle in area.circles:
        lines.append(_el("circle", f"{_point(circle.lat, circle.lon)} {circle.radius_km!r}", 3))
    lines += _pairs("geocode", area.geocodes, 3)
    lines.append("    </area>")
    return lines
