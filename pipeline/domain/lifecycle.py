"""The alert side: alert messages in, index changes and lifecycle events out.

:meth:`AlertIngest.prepare` is pure and CPU-bound (parse, sender policy, H3 cover); the
worker runs it off the event loop. :meth:`AlertIngest.apply` installs the result in the
:class:`CellIndex` and says what changed.

Lifecycle rules, keyed by the alert as first issued (``sender|identifier``):

* An Update or Cancel names that alert in ``<references>``: its key is the earliest
  referenced ``sender|identifier``. An Update replaces the areas and the content.
* Versions are the messages' ``sent`` times: an older message never overwrites a newer
  one, whatever order Kafka delivers them in. So an Update that arrives before its Alert
  is installed, and the late Alert is ignored as older.
* A Cancel removes the alert at once and leaves a tombstone: a late Alert or Update of the
  same alert is never installed afterwards, even if it arrives after the Cancel.
* An alert whose ``expires`` has passed is never installed, and :meth:`expire_due`
  removes installed ones when their time comes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.domain.alerts.formats import parse_alert_message
from pipeline.domain.models import Alert, AlertCover, alert_key
from pipeline.domain.ports import CellIndex
from pipeline.domain.targeting.cards import ActiveAlert, activate, render_card
from pipeline.domain.targeting.policy import AudiencePolicy
from pipeline.errors import GuardrailExceeded

LIFECYCLE_SCHEMA = "alertfeed.lifecycle/1"
# How long a Cancel is remembered when the cancelled alert gave no expiry of its own.
TOMBSTONE_MS = 7 * 24 * 3600 * 1000
# A card's content travels in every interstitial; Kafka's default record limit is 1 MB.
MAX_CARD_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class PreparedAlert:
    alert: Alert
    key: str
    alert_id: str
    cover: AlertCover | None


@dataclass(frozen=True, slots=True)
class Applied:
    """What one applied message changed: the lifecycle event to publish and, for an issued
    or updated alert, the installed alert and its cover (for the presence fan-out). Once
    the event is published and the fan-out done, call :meth:`AlertIngest.announced`."""

    key: str
    lifecycle: dict[str, Any]
    alert: ActiveAlert | None = None
    cells: frozenset[int] = frozenset()


def prepare_alerts(
    data: bytes,
    *,
    policy: AudiencePolicy,
    cover: Callable[[Alert], AlertCover],
    max_card_bytes: int = MAX_CARD_BYTES,
) -> list[PreparedAlert]:
    """Parse, admit and cover one alerts-topic message: pure and CPU-bound. Raises
    BadInput, all or nothing; a card too large to travel in an interstitial is a guardrail
    (it could never be delivered, and would hold its partition up retrying)."""
    prepared = []
    for alert in parse_alert_message(data):
        policy.admit(alert)
        size = len(orjson.dumps(render_card(alert)))
        if size > max_card_bytes:
            raise GuardrailExceeded(
                f"card content is {size} bytes, over the limit of {max_card_bytes}"
            )
        sender, identifier = original_of(alert)
        covered = None if alert.msg_type == "Cancel" else cover(alert)
        prepared.append(PreparedAlert(alert, alert_key(sender, identifier), identifier, covered))
    return prepared


def original_of(alert: Alert) -> tuple[str, str]:
    """(sender, identifier) of the alert as first issued that ``alert`` belongs to."""
    if alert.msg_type in ("Update", "Cancel") and alert.references:
        first = min(alert.references, key=lambda r: (r.sent, r.identifier))
        return first.sender, first.identifier
    return alert.sender, alert.identifier


class AlertIngest:
    def __init__(
        self,
        index: CellIndex,
        policy: AudiencePolicy,
        cover: Callable[[Alert], AlertCover],
        clock_ms: Callable[[], int],
    ) -> None:
        self.index = index
        self._policy = policy
        self._cover = cover
        self._clock_ms = clock_ms

    def prepare(self, data: bytes) -> list[PreparedAlert]:
        """:func:`prepare_alerts` with this ingest's policy and cover."""
        return prepare_alerts(data, policy=self._policy, cover=self._cover)

    async def apply(self, item: PreparedAlert, *, replay: bool = False) -> Applied | None:
        """Install ``item``; returns what changed, or None when nothing did.

        The lifecycle event is recorded as owed (:meth:`CellIndex.owe`) before the index
        changes, and stays owed until :meth:`announced`. So a message whose change was
        installed but never announced (its worker died in between) returns the same event
        again when it is redelivered, and its fan-out runs again: nothing is lost, and the
        repeated event is byte-identical.

        With ``replay`` (rebuilding the index from the alerts topic) the index is updated
        the same way but nothing is announced: those changes were announced long ago. Their
        events are still recorded as owed, since the rebuild may also read a message whose
        handling has not finished (on this worker or another): when that handler, or the
        message's redelivery, applies it, it finds the change installed and the event owed,
        and announces it (at worst once more). An owed event that nobody comes back for
        expires with its alert.
        """
        alert = item.alert
        if alert.msg_type == "Cancel":
            return await self._cancel(item, replay)
        if alert.msg_type not in ("Alert", "Update"):
            return None
        if await self.index.cancelled_version(item.key) is not None:
            return None  # cancelled alerts stay cancelled
        current = await self.index.get_alert(item.key)
        if current is not None and current.version == alert.sent_ms and not replay:
            return await self._still_owed(item, current)  # this very message, again
        if current is not None and current.version >= alert.sent_ms:
            return None  # a newer message of this alert is already installed
        if alert.expires_ms is not None and alert.expires_ms <= self._clock_ms():
            return None
        assert item.cover is not None
        active = activate(alert, key=item.key, alert_id=item.alert_id, version=alert.sent_ms)
        state = "issued" if current is None else "updated"
        event = self._lifecycle(active, state, cells=len(item.cover.cells), cover=item.cover)
        await self._owe(item.key, active.version, event, active.expires_ms)
        await self.index.put_alert(active, item.cover.cells)
        if replay:
            return None
        return Applied(item.key, event, active, item.cover.cells)

    async def _cancel(self, item: PreparedAlert, replay: bool) -> Applied | None:
        current = await self.index.get_alert(item.key)
        if current is not None and current.version > item.alert.sent_ms:
            return None  # the Cancel is older than what is installed: an out-of-date replay
        cancelled = await self.index.cancelled_version(item.key)
        if current is None and not replay and cancelled == item.alert.sent_ms:
            return await self._still_owed(item, None)  # this very Cancel, again
        expiry = current.expires_ms if current and current.expires_ms else None
        keep_until = max(expiry or 0, item.alert.sent_ms + TOMBSTONE_MS)
        event: dict[str, Any] | None = None
        if current is not None:
            event = self._lifecycle(current, "cancelled", cells=0)
            event["message_id"] = item.alert.identifier
            event["version"] = item.alert.sent_ms
            await self._owe(item.key, item.alert.sent_ms, event, keep_until)
        await self.index.tombstone(item.key, item.alert.sent_ms, keep_until)
        removed = await self.index.remove_alert(item.key)
        if event is None or replay:
            return None
        if not removed:  # expired or cancelled meanwhile by someone else, who announces it
            await self.index.paid(item.key, item.alert.sent_ms)
            return None
        return Applied(item.key, event)

    async def announced(self, applied: Applied) -> None:
        """``applied``'s lifecycle event was published and its fan-out finished."""
        await self.index.paid(applied.key, int(applied.lifecycle["version"]))

    async def _owe(
        self, key: str, version: int, event: dict[str, Any], expires_ms: int | None
    ) -> None:
        keep_until = max(expires_ms or 0, self._clock_ms() + TOMBSTONE_MS)
        await self.index.owe(key, version, orjson.dumps(event), keep_until)

    async def _still_owed(self, item: PreparedAlert, current: ActiveAlert | None) -> Applied | None:
        """The event of ``item``'s version if it is still owed (installed, never announced)."""
        owed = await self.index.owed(item.key)
        if owed is None or owed[0] != item.alert.sent_ms:
            return None  # announced long ago: a duplicate message
        event = orjson.loads(owed[1])
        # Finish the change first (idempotent): the attempt that made it may have failed
        # before the index counted it, and replicas only reload what was counted.
        if current is None or item.cover is None:
            await self.index.remove_alert(item.key)
            return Applied(item.key, event)
        await self.index.put_alert(current, item.cover.cells)
        return Applied(item.key, event, current, item.cover.cells)

    async def expire_due(self) -> list[dict[str, Any]]:
        """Remove every installed alert whose ``expires`` has passed; returns the lifecycle
        events of the ones this call removed (one caller wins each, across workers)."""
        now = self._clock_ms()
        events = []
        for alert in await self.index.active_alerts():
            expired = alert.expires_ms is not None and alert.expires_ms <= now
            if expired and await self.index.remove_alert(alert.key):
                events.append(self._lifecycle(alert, "expired", cells=0))
        return events

    def _lifecycle(
        self, alert: ActiveAlert, state: str, *, cells: int, cover: AlertCover | None = None
    ) -> dict[str, Any]:
        return {
            "schema": LIFECYCLE_SCHEMA,
            "alert_id": alert.alert_id,
            "alert_sender": alert.sender,
            "message_id": alert.message_id,
            "state": state,
            "version": alert.version,
            "status": alert.status,
            "sent_ms": alert.sent_ms,
            "expires_ms": alert.expires_ms,
            "ts_ms": self._clock_ms(),
            "resolution": cover.resolution if cover else None,
            "cells": cells,
            "unresolved": [{"name": g.name, "value": g.value} for g in cover.unresolved]
            if cover
            else [],
        }
