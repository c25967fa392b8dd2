"""The alert side: alert messages in, index changes and lifecycle events out.

:meth:`AlertIngest.prepare` is pure and CPU-bound (parse, sender policy, H3 cover); the
worker runs it off the event loop. :meth:`AlertIngest.apply` installs the result in the
:class:`CellIndex` and returns the lifecycle events to publish.

An Update or Cancel refers to the alert as first issued through ``<references>``: its
index key is the earliest referenced ``sender|identifier``, so an Update replaces the
cover of the alert it updates and a Cancel removes it. Versions are the messages' ``sent``
times: an older message never overwrites a newer one, whatever order Kafka delivers them in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.domain.cards import activate
from pipeline.domain.formats import parse_alert_message
from pipeline.domain.models import Alert, AlertCover, alert_key
from pipeline.domain.policy import AudiencePolicy
from pipeline.domain.ports import CellIndex

LIFECYCLE_SCHEMA = "alertfeed.lifecycle/1"


@dataclass(frozen=True, slots=True)
class PreparedAlert:
    alert: Alert
    key: str
    alert_id: str
    cover: AlertCover | None


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
        """Parse, admit and cover one alerts-topic message. Raises BadInput, all or nothing."""
        prepared = []
        for alert in parse_alert_message(data):
            self._policy.admit(alert)
            sender, identifier = original_of(alert)
            cover = None if alert.msg_type == "Cancel" else self._cover(alert)
            prepared.append(PreparedAlert(alert, alert_key(sender, identifier), identifier, cover))
        return prepared

    async def apply(self, item: PreparedAlert) -> dict[str, Any] | None:
        """Install ``item``; returns the lifecycle event, or None when it changed nothing."""
        alert = item.alert
        current = await self.index.get_alert(item.key)
        if current is not None and current.version >= alert.sent_ms and alert.msg_type != "Cancel":
            return None  # a newer message for this alert is already installed
        if alert.msg_type == "Cancel":
            if not await self.index.remove_alert(item.key):
                return None
            return self._lifecycle(item, "cancelled", cells=0)
        if alert.msg_type not in ("Alert", "Update"):
            return None
        assert item.cover is not None
        active = activate(alert, key=item.key, alert_id=item.alert_id, version=alert.sent_ms)
        await self.index.put_alert(active, item.cover.cells)
        state = "issued" if current is None else "updated"
        return self._lifecycle(item, state, cells=len(item.cover.cells))

    def _lifecycle(self, item: PreparedAlert, state: str, *, cells: int) -> dict[str, Any]:
        alert = item.alert
        cover = item.cover
        return {
            "schema": LIFECYCLE_SCHEMA,
            "alert_id": item.alert_id,
            "alert_sender": alert.sender,
            "message_id": alert.identifier,
            "state": state,
            "version": alert.sent_ms,
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
