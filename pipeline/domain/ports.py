"""The narrow interfaces between the domain and the outside world.

Each port has a real adapter (Redis) and an in-process twin; both pass the same contract
tests (tests/contract/). The domain services depend only on these protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pipeline.domain.cards import ActiveAlert


class CellIndex(Protocol):
    """Which active alerts cover a cell.

    Writes are versioned: a reader sees either an alert's previous cover or its new one,
    never a mixture, and never an alert after ``remove_alert`` returned.
    """

    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        """Install ``alert`` (replacing any earlier version of ``alert.key``) with ``cells``,
        a compact H3 cover no finer than the index resolution."""

    async def remove_alert(self, key: str) -> bool:
        """Stop matching ``key`` at once; True if it was indexed."""

    async def get_alert(self, key: str) -> ActiveAlert | None:
        """The alert currently installed under ``key``, if any."""

    async def active_alerts(self) -> list[ActiveAlert]:
        """Every installed alert."""

    async def alerts_at(self, cells: Sequence[int]) -> list[list[ActiveAlert]]:
        """For each res-R cell of ``cells``, the installed alerts whose cover contains it.
        One round trip to the store for the whole sequence."""


class DedupStore(Protocol):
    """Memory of which (alert, user) pairs already got their card."""

    async def unseen(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """For each ``(alert_key, user_id)``, True when no card was recorded for it."""

    async def mark_seen(
        self, pairs: Sequence[tuple[str, str]], expires_at_ms: Sequence[int]
    ) -> None:
        """Record the pairs; each record may be forgotten after its ``expires_at_ms``."""
