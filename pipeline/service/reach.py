"""The runtime's side of per-alert reach (:mod:`pipeline.domain.reach`): what the worker
records in the shared :class:`~pipeline.domain.ports.ReachStore` as alerts change and
cards are acknowledged."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.adapters.metrics import Metrics
from pipeline.domain.ports import ReachStore
from pipeline.domain.reach import AlertFacts
from pipeline.errors import InfrastructureError

log = logging.getLogger(__name__)


class ReachTracker:
    """Feeds a :class:`ReachStore` from the worker runtime, best effort.

    Reach is a report, not a delivery: a Redis failure here is counted
    (``alertfeed_redis_errors_total``) and logged, and the batch goes on. Retrying would
    either block cards behind a statistic or double-count a half-applied increment.
    The alert's first card (across all workers) is timed into
    ``alertfeed_alert_first_card_seconds`` from the alert's ``sent`` time; the shared total
    decides what is first, so no per-alert state is kept in the process.
    """

    def __init__(self, store: ReachStore, metrics: Metrics) -> None:
        self.store = store
        self._metrics = metrics

    async def on_lifecycle(self, key: str, event: Mapping[str, Any]) -> None:
        """Record a lifecycle event (``schemas/lifecycle.schema.json``) of alert ``key``."""
        facts = AlertFacts(
            key=key,
            alert_id=str(event["alert_id"]),
            status=str(event["status"]),
            state=str(event["state"]),
            sent_ms=int(event["sent_ms"]),
            expires_ms=event.get("expires_ms"),
        )
        try:
            await self.store.track(facts)
        except InfrastructureError as exc:
            self._failed("track", exc)

    async def on_cards(self, pairs: Sequence[tuple[str, str]], at_ms: int) -> None:
        """Count broker-acknowledged cards, one ``(alert_key, user_id)`` pair per card."""
        if not pairs:
            return
        counts = Counter(key for key, _ in pairs)
        try:
            totals = await self.store.add_cards(counts, at_ms)
            for key, total in totals.items():
                if total != counts[key]:
                    continue
                issued = await self.store.issued_at(key)
                if issued is not None:
                    self._metrics.first_card.observe(max(0, at_ms - issued) / 1000)
        except InfrastructureError as exc:
            self._failed("count", exc)

    def _failed(self, what: str, exc: InfrastructureError) -> None:
        self._metrics.redis_errors.inc()
        log.warning("reach %s not recorded dependency=redis error=%s", what, exc)
