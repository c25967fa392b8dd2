"""CAP 1.2 / 1.1 XML to :class:`~pipeline.domain.models.Alert`.

Contract of :func:`parse_cap`:

* Input is the raw bytes of the message, read by :func:`pipeline.domain.alerts.xml.parse_xml`:
  the encoding named by the XML declaration is honoured (UTF-8, UTF-16, ISO-8859-1,
  US-ASCII and the single-byte codecs Python knows, under any name Python gives them);
  any other declared encoding is malformed, named in the reason; DOCTYPE and ENTITY
  declarations are refused before anything is expanded.
* The root is a CAP 1.2 or 1.1 ``alert`` (default or prefixed namespace), or an Atom
  ``feed``/``entry`` whose ``<content>`` embeds CAP alerts; one Alert per CAP alert.
* Empty elements count as absent.
* Several ``<info>`` blocks: the primary one (``en-US``, else any ``en*``, else the first)
  fills the top-level content and ``language``. Every other language appears once in
  ``translations`` (its first block); the primary language never does. Areas are the
  union of the areas of all blocks, primary first, deduplicated on their geometry and
  geocodes. Event codes, parameters, categories and images are unions as well.
  ``effective_ms`` is the earliest and ``expires_ms`` the latest time any block gives.
* Times must be ISO 8601 with an offset, as CAP requires; a time without one is
  malformed (:func:`pipeline.domain.alerts.timefmt.iso_to_ms`): guessing UTC could shift an
  alert's expiry by most of a day. ``onset`` is validated although the model has no
  field for it. An absent ``effective`` stays ``None``; CAP says it then equals ``sent``.
* Only ``image/*`` resources are kept, as :class:`Image`. Inline ``<derefUri>`` payloads
  are never kept: only their ``<digest>`` (CAP's SHA-1, as ``sha1:<hex>``) or, without
  one, the SHA-1 of the decoded bytes. An inline image that is not valid base64 is
  dropped, since images are decoration and must not cost the alert.
* AMBER details come from the parameters, see :mod:`pipeline.domain.alerts.cap_details`.
* Anything else that is wrong raises :class:`MalformedEvent` with a reason a human can
  act on. Areas and polygons are numbered from 1 in document order; with several
  ``<info>`` blocks the area is named ``area N of info M``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TypeVar, cast

from pipeline.domain.alerts.cap_details import amber_details, image_from_resource
from pipeline.domain.alerts.timefmt import iso_to_ms
from pipeline.domain.alerts.xml import parse_xml
from pipeline.domain.checks import check_lat_lon
from pipeline.domain.models import (
    MSG_TYPES,
    STATUSES,
    Alert,
    Area,
    Circle,
    Geocode,
    Image,
    MsgType,
    Polygon,
    Reference,
    Status,
    Translation,
)
from pipeline.errors import MalformedEvent, excerpt

CAP_NAMESPACES = (
    "urn:oasis:names:tc:emergency:cap:1.2",
    "urn:oasis:names:tc:emergency:cap:1.1",
)
ATOM_NAMESPACE = "http://www.w3.org/2005/Atom"

T = TypeVar("T")

_ORDER_OF_STATUSES = "Actual, Exercise, System, Test, Draft"
_ORDER_OF_MSG_TYPES = "Alert, Update, Cancel, Ack, Error"


def parse_cap(data: bytes) -> list[Alert]:
    """Parse one CAP document, or an Atom feed embedding CAP alerts, into Alerts.

    Returns one Alert for a plain CAP document, one per embedded alert for Atom (an
    Atom feed without entries gives ``[]``). Raises :class:`MalformedEvent` on anything
    that is not well-formed, safe, valid CAP; an error inside an Atom feed names its entry.
    """
    root = parse_xml(data)
    namespace, local = _split_tag(root.tag)
    if namespace in CAP_NAMESPACES and local == "alert":
        return [_alert(root, namespace)]
    if namespace == ATOM_NAMESPACE and local in ("feed", "entry"):
        return _atom_alerts(root)
    raise MalformedEvent(
        f"root element is {root.tag[:100]}, expected a CAP alert "
        f"({{{CAP_NAMESPACES[0]}}}alert or {{{CAP_NAMESPACES[1]}}}alert) or an Atom feed"
    )


def parse_status(value: str, what: str = "<status>") -> Status:
    """Validate a CAP status; raises :class:`MalformedEvent` naming the allowed values."""
    if value not in STATUSES:
        raise MalformedEvent(f"{what} {excerpt(value)} is not one of {_ORDER_OF_STATUSES}")
    return cast(Status, value)


def parse_msg_type(value: str, what: str = "<msgType>") -> MsgType:
    """Validate a CAP msgType; raises :class:`MalformedEvent` naming the allowed values."""
    if value not in MSG_TYPES:
        raise MalformedEvent(f"{what} {excerpt(value)} is not one of {_ORDER_OF_MSG_TYPES}")
    return cast(MsgType, value)


def dedupe(items: list[T]) -> tuple[T, ...]:
    """Keep the first of equal items, in order."""
    return tuple(dict.fromkeys(items))


# --- document structure ----------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return "", tag


def _atom_alerts(root: ET.Element) -> list[Alert]:
    entries = [root] if root.tag.endswith("}entry") else root.findall(f"{{{ATOM_NAMESPACE}}}entry")
    alerts: list[Alert] = []
    for number, entry in enumerate(entries, 1):
        for content in entry.findall(f"{{{ATOM_NAMESPACE}}}content"):
            for child in content:
                namespace, local = _split_tag(child.tag)
                if namespace in CAP_NAMESPACES and local == "alert":
                    try:
                        alerts.append(_alert(child, namespace))
                    except MalformedEvent as exc:
                        raise MalformedEvent(f"Atom entry {number}: {exc}") from exc
    if entries and not alerts:
        raise MalformedEvent(
            f"Atom feed has {len(entries)} entries but no <content> embeds a CAP alert"
        )
    return alerts


class _Reader:
    """Reads CAP children in one namespace; empty text counts as absent."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def all(self, parent: ET.Element, name: str) -> list[ET.Element]:
        return parent.findall(f"{{{self.ns}}}{name}")

    def text(self, parent: ET.Element, name: str) -> str:
        element = parent.find(f"{{{self.ns}}}{name}")
        return (element.text or "").strip() if element is not None else ""

    def texts(self, parent: ET.Element, name: str) -> list[str]:
        return [t for e in self.all(parent, name) if (t := (e.text or "").strip())]

    def required(self, parent: ET.Element, name: str) -> str:
        value = self.text(parent, name)
        if not value:
            raise MalformedEvent(f"missing <{name}>")
        return value

    def pairs(self, parent: ET.Element, name: str) -> list[Geocode]:
        """``valueName``/``value`` children (geocode, eventCode, parameter), minus empty values."""
        return [
            Geocode(self.text(e, "valueName"), value)
            for e in self.all(parent, name)
            if (value := self.text(e, "value"))
        ]

    def time_ms(self, parent: ET.Element, name: str) -> int | None:
        value = self.text(parent, name)
        return iso_to_ms(value, f"<{name}>") if value else None


@dataclass(frozen=True, slots=True)
class _Info:
    language: str
    categories: list[str]
    event: str
    urgency: str
    severity: str
    certainty: str
    event_codes: list[Geocode]
    effective_ms: int | None
    expires_ms: int | None
    sender_name: str
    headline: str
    description: str
    instruction: str
    web: str
    parameters: list[Geocode]
    images: list[Image]
    areas: list[Area]


def _alert(root: ET.Element, namespace: str) -> Alert:
    read = _Reader(namespace)
    identifier = read.required(root, "identifier")
    sender = read.required(root, "sender")
    sent_ms = iso_to_ms(read.required(root, "sent"), "<sent>")
    status = parse_status(read.required(root, "status"))
    msg_type = parse_msg_type(read.required(root, "msgType"))
    references = _references(read.text(root, "references"))
    info_elements = read.all(root, "info")
    infos = [
        _info(read, element, number, len(info_elements))
        for number, element in enumerate(info_elements, 1)
    ]
    common = Alert(
        identifier=identifier,
        sender=sender,
        sent_ms=sent_ms,
        status=status,
        msg_type=msg_type,
        scope=read.text(root, "scope") or "Public",
        references=references,
    )
    return _with_infos(common, infos) if infos else common


def _with_infos(common: Alert, infos: list[_Info]) -> Alert:
    primary_index = _primary_index([info.language for info in infos])
    primary = infos[primary_index]
    ordered = [primary, *infos[:primary_index], *infos[primary_index + 1 :]]
    seen_languages = {primary.language.lower()}
    translations: list[Translation] = []
    for info in infos:
        if info.language.lower() in seen_languages:
            continue
        seen_languages.add(info.language.lower())
        translations.append(
            Translation(
                language=info.language,
                event=info.event,
                headline=info.headline,
                description=info.description,
                instruction=info.instruction,
                web=info.web,
            )
        )
    parameters = dedupe([p for info in ordered for p in info.parameters])
    child, suspect, vehicle = amber_details(parameters)
    effective = [i.effective_ms for i in infos if i.effective_ms is not None]
    expires = [i.expires_ms for i in infos if i.expires_ms is not None]
    return Alert(
        identifier=common.identifier,
        sender=common.sender,
        sent_ms=common.sent_ms,
        status=common.status,
        msg_type=common.msg_type,
        scope=common.scope,
        references=common.references,
        effective_ms=min(effective) if effective else None,
        expires_ms=max(expires) if expires else None,
        event=primary.event,
        event_codes=dedupe([c for info in ordered for c in info.event_codes]),
        categories=dedupe([c for info in ordered for c in info.categories]),
        urgency=primary.urgency,
        severity=primary.severity,
        certainty=primary.certainty,
        language=primary.language,
        headline=primary.headline,
        description=primary.description,
        instruction=primary.instruction,
        web=primary.web,
        sender_name=primary.sender_name,
        child=child,
        suspect=suspect,
        vehicle=vehicle,
        images=dedupe([image for info in ordered for image in info.images]),
        areas=_union_areas([area for info in ordered for area in info.areas]),
        translations=tuple(translations),
        parameters=parameters,
    )


def _primary_index(languages: list[str]) -> int:
    folded = [language.lower() for language in languages]
    if "en-us" in folded:
        return folded.index("en-us")
    for index, language in enumerate(folded):
        if language == "en" or language.startswith("en-"):
            return index
    return 0


def _union_areas(areas: list[Area]) -> tuple[Area, ...]:
    """Deduplicate on geometry and geocodes: translations repeat areas under other names."""
    kept: dict[object, Area] = {}
    for area in areas:
        key: object = (area.polygons, area.circles, area.geocodes)
        if not (area.polygons or area.circles or area.geocodes):
            key = ("description only", area.description)
        kept.setdefault(key, area)
    return tuple(kept.values())


def _references(text: str) -> tuple[Reference, ...]:
    references: list[Reference] = []
    for number, token in enumerate(text.split(), 1):
        parts = token.split(",")
        if len(parts) != 3 or not all(parts):
            raise MalformedEvent(
                f"<references> entry {number} {excerpt(token)} is not 'sender,identifier,sent'"
            )
        references.append(Reference(sender=parts[0], identifier=parts[1], sent=parts[2]))
    return tuple(references)


def _info(read: _Reader, info: ET.Element, number: int, count: int) -> _Info:
    suffix = f" of info {number}" if count > 1 else ""
    read.time_ms(info, "onset")  # validated only: the model has no onset field
    return _Info(
        language=read.text(info, "language") or "en-US",
        categories=read.texts(info, "category"),
        event=read.text(info, "event"),
        urgency=read.text(info, "urgency"),
        severity=read.text(info, "severity"),
        certainty=read.text(info, "certainty"),
        event_codes=read.pairs(info, "eventCode"),
        effective_ms=read.time_ms(info, "effective"),
        expires_ms=read.time_ms(info, "expires"),
        sender_name=read.text(info, "senderName"),
        headline=read.text(info, "headline"),
        description=read.text(info, "description"),
        instruction=read.text(info, "instruction"),
        web=read.text(info, "web"),
        parameters=read.pairs(info, "parameter"),
        images=[i for r in read.all(info, "resource") if (i := _image(read, r)) is not None],
        areas=[
            _area(read, element, f"area {n}{suffix}")
            for n, element in enumerate(read.all(info, "area"), 1)
        ],
    )


# --- areas -----------------------------------------------------------------------------


def _area(read: _Reader, area: ET.Element, where: str) -> Area:
    polygons = [
        polygon
        for n, element in enumerate(read.all(area, "polygon"), 1)
        if (polygon := _polygon((element.text or "").strip(), n, where)) is not None
    ]
    circles = [
        circle
        for n, element in enumerate(read.all(area, "circle"), 1)
        if (circle := _circle((element.text or "").strip(), n, where)) is not None
    ]
    return Area(
        description=read.text(area, "areaDesc"),
        polygons=tuple(polygons),
        circles=tuple(circles),
        geocodes=dedupe(read.pairs(area, "geocode")),
    )


def _point(token: str, what: str) -> tuple[float, float]:
    parts = token.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(token)
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise MalformedEvent(f"{what} {excerpt(token)} is not 'lat,lon'") from None


def _polygon(text: str, number: int, where: str) -> Polygon | None:
    if not text:
        return None
    points = [
        check_lat_lon(
            *_point(token, f"point {index} of polygon {number} in {where}"),
            f"polygon {number} of {where}",
        )
        for index, token in enumerate(text.split(), 1)
    ]
    if len(points) < 4:
        raise MalformedEvent(
            f"polygon {number} in {where} has {len(points)} points; CAP needs at least 4"
        )
    if points[0] != points[-1]:
        raise MalformedEvent(
            f"polygon {number} in {where} is not closed (first point != last point)"
        )
    return Polygon(exterior=tuple(points))


def _circle(text: str, number: int, where: str) -> Circle | None:
    if not text:
        return None
    label = f"circle {number} in {where}"
    parts = text.split()
    if len(parts) != 2:
        raise MalformedEvent(f"{label}: {excerpt(text)} is not 'lat,lon radius_km'")
    centre, radius_text = parts
    lat, lon = check_lat_lon(*_point(centre, f"{label}: centre"), f"circle {number} of {where}")
    try:
        radius = float(radius_text)
    except ValueError:
        radius = math.nan
    if not math.isfinite(radius):
        raise MalformedEvent(f"{label}: radius {excerpt(radius_text)} is not a number")
    if radius < 0.0:
        raise MalformedEvent(f"{label}: radius {radius} km is negative")
    return Circle(lat=lat, lon=lon, radius_km=radius)


# --- resources -------------------------------------------------------------------------


def _image(read: _Reader, resource: ET.Element) -> Image | None:
    return image_from_resource(
        mime_type=read.text(resource, "mimeType"),
        uri=read.text(resource, "uri"),
        inline=read.text(resource, "derefUri"),
        digest=read.text(resource, "digest"),
        size=read.text(resource, "size"),
        description=read.text(resource, "resourceDesc"),
    )
