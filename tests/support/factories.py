"""Factories for test events: build what a test needs, name only what it cares about."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.domain.targeting.cards import ActiveAlert

_seq = itertools.count(1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_alert_json(
    *,
    polygons: Sequence[Sequence[tuple[float, float]]] = (),
    circles: Sequence[tuple[float, float, float]] = (),
    geocodes: Sequence[tuple[str, str]] = (),
    sender: str = "amber@dps.texas.example",
    identifier: str | None = None,
    status: str = "Actual",
    msg_type: str = "Alert",
    references: Sequence[tuple[str, str, str]] = (),
    sent: datetime | None = None,
    expires_in: timedelta | None = timedelta(hours=6),
    headline: str = "AMBER Alert: test child, silver sedan",
) -> dict[str, Any]:
    """An alert-JSON object (schemas/alert.schema.json) with one area."""
    sent = sent or datetime.now(UTC) + timedelta(milliseconds=next(_seq))
    area: dict[str, Any] = {"description": "test area"}
    if polygons:
        area["polygons"] = [[list(p) for p in ring] + [list(ring[0])] for ring in polygons]
    if circles:
        area["circles"] = [{"lat": a, "lon": o, "radius_km": r} for a, o, r in circles]
    if geocodes:
        area["geocodes"] = [{"name": n, "value": v} for n, v in geocodes]
    return {
        "id": identifier or f"TEST-{uuid.uuid4().hex[:12]}",
        "sender": sender,
        "sent": iso(sent),
        "status": status,
        "msg_type": msg_type,
        "references": [{"sender": s, "id": i, "sent": t} for s, i, t in references],
        "expires": iso(sent + expires_in) if expires_in else None,
        "event": "Child Abduction Emergency",
        "event_codes": [{"name": "SAME", "value": "CAE"}],
        "category": ["Rescue"],
        "severity": "Severe",
        "urgency": "Immediate",
        "language": "en-US",
        "headline": headline,
        "description": "Last seen near the test area.",
        "instruction": "Call 911 if you see the child.",
        "web": "https://www.missingkids.org/poster/TEST/1",
        "child": {"name": "Test Child", "age": "7"},
        "vehicle": {"make": "Honda", "color": "Silver", "license_plate": "TEST123"},
        "areas": [area] if len(area) > 1 else [],
    }


def make_cap_xml(
    *,
    sender: str,
    geocodes: Sequence[tuple[str, str]] = (),
    polygons: Sequence[Sequence[tuple[float, float]]] = (),
    identifier: str | None = None,
    status: str = "Actual",
    expires_in: timedelta = timedelta(hours=6),
) -> bytes:
    """A CAP 1.2 AMBER Alert document, written out by hand after the OASIS spec."""
    sent = datetime.now(UTC).replace(microsecond=0)
    areas = "".join(
        f"<polygon>{' '.join(f'{a},{o}' for a, o in [*ring, ring[0]])}</polygon>"
        for ring in polygons
    ) + "".join(
        f"<geocode><valueName>{n}</valueName><value>{v}</value></geocode>" for n, v in geocodes
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier or "CAP-" + uuid.uuid4().hex[:12]}</identifier>
  <sender>{sender}</sender>
  <sent>{sent.isoformat()}</sent>
  <status>{status}</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>en-US</language>
    <category>Rescue</category>
    <event>Child Abduction Emergency</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <eventCode><valueName>SAME</valueName><value>CAE</value></eventCode>
    <expires>{(sent + expires_in).isoformat()}</expires>
    <senderName>Test State Police</senderName>
    <headline>AMBER Alert: statewide test</headline>
    <description>Test child, 6, last seen in a blue sedan.</description>
    <instruction>Call 911 if you see the child.</instruction>
    <web>https://www.missingkids.org/</web>
    <area><areaDesc>Statewide</areaDesc>{areas}</area>
  </info>
</alert>""".encode()


def make_active_alert(
    key: str = "s|a1", version: int = 1, status: str = "Actual", expires_ms: int | None = None
) -> ActiveAlert:
    """An installed alert as the cell index holds it; ``key`` is ``sender|identifier``."""
    sender, _, identifier = key.partition("|")
    return ActiveAlert(
        key=key,
        alert_id=identifier,
        sender=sender,
        message_id=identifier,
        version=version,
        status=status,
        sent_ms=version,
        expires_ms=expires_ms,
        priority=100,
        locale="en-US",
        card={"headline": f"v{version}"},
    )
