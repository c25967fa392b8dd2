"""What a feed ranker needs to render the black full-screen card, and the card event itself.

An :class:`ActiveAlert` is the alert as installed in the index: identity, version, time
window, audience and the pre-rendered card content. It is computed once per alert version,
so building a user's interstitial on the hot path is a dict copy plus a hash.
"""

from __future__ import annotations

import hashlib
from binascii import hexlify
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from pipeline.domain.models import Alert, Status

INTERSTITIAL_SCHEMA = "alertfeed.interstitial/1"
DEFAULT_CARD_LIFETIME_MS = 24 * 3600 * 1000
CALL_911 = {"type": "call", "label": "Call 911", "uri": "tel:911"}


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """An alert as the matcher sees it.

    ``key`` is ``sender|identifier`` of the alert as first issued and stays the same across
    Updates; ``message_id`` is the identifier of the message currently in force; ``version``
    grows with every installed change.
    """

    key: str
    alert_id: str
    sender: str
    message_id: str
    version: int
    status: Status
    sent_ms: int
    expires_ms: int | None
    priority: int
    locale: str
    card: dict[str, Any]

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> ActiveAlert:
        return cls(**orjson.loads(data))


def priority_of(alert: Alert) -> int:
    """0-100, higher first. AMBER (SAME CAE) and Extreme/Immediate alerts outrank the rest."""
    codes = {c.value.upper() for c in alert.event_codes}
    if "CAE" in codes or "child abduction" in alert.event.lower():
        return 100
    return {"Extreme": 90, "Severe": 70, "Moderate": 50, "Minor": 30}.get(alert.severity, 40)


def render_card(alert: Alert) -> dict[str, Any]:
    """The card content of an alert, in its primary language with the translations beside."""
    actions: list[dict[str, str]] = [dict(CALL_911)]
    if alert.web:
        actions.append({"type": "link", "label": "More information", "uri": alert.web})
    return {
        "event": alert.event,
        "headline": alert.headline or alert.event,
        "description": alert.description,
        "instruction": alert.instruction,
        "sender_name": alert.sender_name,
        "images": [
            {
                "uri": i.uri,
                "mime_type": i.mime_type,
                "description": i.description,
                "digest": i.digest,
            }
            for i in alert.images
        ],
        "child": asdict(alert.child) if alert.child else None,
        "suspect": asdict(alert.suspect) if alert.suspect else None,
        "vehicle": asdict(alert.vehicle) if alert.vehicle else None,
        "actions": actions,
        "translations": [asdict(t) for t in alert.translations],
    }


def activate(alert: Alert, *, key: str, alert_id: str, version: int) -> ActiveAlert:
    """The ActiveAlert for ``alert`` installed as ``version`` of the alert ``key``."""
    return ActiveAlert(
        key=key,
        alert_id=alert_id,
        sender=alert.sender,
        message_id=alert.identifier,
        version=version,
        status=alert.status,
        sent_ms=alert.sent_ms,
        expires_ms=alert.expires_ms,
        priority=priority_of(alert),
        locale=alert.language,
        card=render_card(alert),
    )


def card_digest(alert_key: str, user_id: str) -> bytes:
    """The SHA-256 of (alert, user): its first 16 bytes, in hex, are the card's
    ``event_id``; a dedup store may record a prefix of it instead of hashing again."""
    return hashlib.sha256(f"{alert_key}\x1f{user_id}".encode()).digest()


def event_id(alert_key: str, user_id: str) -> str:
    """Deterministic id of the one card of (alert, user): consumers dedupe on it."""
    return card_digest(alert_key, user_id)[:16].hex()


def card_expiry_ms(alert: ActiveAlert, created_ms: int) -> int:
    return (
        alert.expires_ms if alert.expires_ms is not None else created_ms + DEFAULT_CARD_LIFETIME_MS
    )


def interstitial(alert: ActiveAlert, user_id: str, created_ms: int) -> dict[str, Any]:
    """The interstitial insertion event (``schemas/interstitial.schema.json``).

    ``created_ms`` is the event time of the trigger (a location's ``ts``), not the wall
    clock, so that a redelivered duplicate is byte-identical to the original.
    """
    return {
        "schema": INTERSTITIAL_SCHEMA,
        "event_id": event_id(alert.key, user_id),
        "user_id": user_id,
        "alert_id": alert.alert_id,
        "alert_sender": alert.sender,
        "message_id": alert.message_id,
        "alert_version": alert.version,
        "status": alert.status,
        "created_ms": created_ms,
        "expires_ms": card_expiry_ms(alert, created_ms),
        "priority": alert.priority,
        "locale": alert.locale,
        "card": alert.card,
    }


class CardTemplate:
    """Encodes the interstitials of one alert version fast, byte for byte what
    ``orjson.dumps(interstitial(alert, user_id, created_ms))`` gives: everything but the
    user's id, event id and times is encoded once. A fan-out to a million users spends
    most of its time here otherwise."""

    __slots__ = ("_expires", "_head", "_id_prefix", "_middle", "_tail", "alert")

    def __init__(self, alert: ActiveAlert) -> None:
        self.alert = alert
        self._expires = alert.expires_ms
        self._id_prefix = f"{alert.key}\x1f".encode()  # what event_id's hash starts with
        dumps = orjson.dumps
        self._head = b'{"schema":' + dumps(INTERSTITIAL_SCHEMA) + b',"event_id":"'
        self._middle = (
            b',"alert_id":' + dumps(alert.alert_id)
            + b',"alert_sender":' + dumps(alert.sender)
            + b',"message_id":' + dumps(alert.message_id)
            + b',"alert_version":' + dumps(alert.version)
            + b',"status":' + dumps(alert.status)
            + b',"created_ms":'
        )  # fmt: skip
        self._tail = (
            b',"priority":' + dumps(alert.priority)
            + b',"locale":' + dumps(alert.locale)
            + b',"card":' + dumps(alert.card) + b"}"
        )  # fmt: skip

    def digests(self, users: Sequence[str]) -> list[bytes]:
        """:func:`card_digest` of each of ``users`` for this alert."""
        base, sha256 = self._id_prefix, hashlib.sha256
        return [sha256(base + user.encode()).digest() for user in users]

    def encode(self, user_id: str, created_ms: int, digest: bytes | None = None) -> bytes:
        """The card of ``user_id``; ``digest``: its :func:`card_digest`, if known."""
        expires = (
            self._expires if self._expires is not None else created_ms + DEFAULT_CARD_LIFETIME_MS
        )
        if digest is None:
            (digest,) = self.digests([user_id])
        return b"".join((
            self._head, hexlify(digest[:16]), b'","user_id":',
            orjson.dumps(user_id), self._middle, b"%d" % created_ms,
            b',"expires_ms":', b"%d" % expires, self._tail,
        ))  # fmt: skip

    def records(
        self, users: Sequence[str], created_ms: int, digests: Sequence[bytes] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` Kafka records of the cards of ``users``, all created at
        ``created_ms`` (a fan-out): :meth:`encode` for each, with the shared parts joined
        once, and one comprehension over the users: a join of five parts per card (a
        ``%`` format would scan the whole 1 kB card for each). ``digests``: the users'
        :meth:`digests`, if known."""
        expires = (
            self._expires if self._expires is not None else created_ms + DEFAULT_CARD_LIFETIME_MS
        )
        tail = self._middle + b"%d" % created_ms + b',"expires_ms":' + b"%d" % expires + self._tail
        head, join, dumps = self._head, b"".join, orjson.dumps
        if digests is None:
            digests = self.digests(users)
        return [
            (user.encode(), join((head, hexlify(d[:16]), b'","user_id":', dumps(user), tail)))
            for d, user in zip(digests, users, strict=True)
        ]
