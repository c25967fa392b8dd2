"""The narrow interfaces between the domain and the outside world.

Each store port has a real adapter (Redis, ``pipeline.adapters.redis``) and an in-process
twin (``pipeline.adapters.memory``); both pass the same contract tests (tests/contract/).
The :class:`Sink` has a Kafka adapter (``pipeline.adapters.kafka.sink``) and the offline
replay's event-log sink. The domain and the application service (``pipeline.service``)
depend only on these protocols; adapters implement them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Literal, Protocol, TypeVar

from pipeline.domain.models import Sighting
from pipeline.domain.reach import AlertFacts, AlertReach
from pipeline.domain.targeting.cards import ActiveAlert

# The logical topics the worker produces to.
OutTopic = Literal["interstitials", "lifecycle", "dlq"]


A = TypeVar("A")
B = TypeVar("B")


class Concurrently(Protocol):
    """Awaits two independent steps, at once where the caller's runtime can, and returns
    both results; when either raises, it raises only after both have finished (so a retry
    never overlaps a step still running)."""

    async def __call__(self, first: Awaitable[A], second: Awaitable[B], /) -> tuple[A, B]: ...


async def in_turn(first: Awaitable[A], second: Awaitable[B], /) -> tuple[A, B]:
    """:class:`Concurrently`, one step after the other."""
    try:
        done = await first
    except BaseException:
        with contextlib.suppress(Exception):  # the first failure is the one raised
            await second
        raise
    return done, await second


class Sink(Protocol):
    """Publishes to a logical output topic. Returns once the broker acknowledged every
    record; raises BrokerUnavailable if any could not be delivered (and only for that:
    anything else it raises is a bug)."""

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None: ...


class CellIndex(Protocol):
    """Which active alerts cover a cell.

    Writes are versioned: a reader sees either an alert's previous cover or its new one,
    never a mixture, and never an alert after ``remove_alert`` returned.
    """

    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        """Install ``alert`` (replacing any earlier version of ``alert.key``) with ``cells``,
        a compact H3 cover no finer than the index resolution."""

    async def remove_alert(self, key: str) -> bool:
        """Stop matching ``key`` at once; True if this call removed it (exactly one of several
        concurrent callers gets True)."""

    async def tombstone(self, key: str, version: int, keep_until_ms: int) -> None:
        """Record that ``key`` was cancelled by the message of ``version``: messages of
        ``key`` up to that version are never installed again, until ``keep_until_ms``."""

    async def cancelled_version(self, key: str) -> int | None:
        """The version of the Cancel recorded for ``key``, if any."""

    async def owe(self, key: str, version: int, event: bytes, keep_until_ms: int) -> None:
        """Record that the lifecycle event ``event`` of ``key`` at ``version`` is owed to the
        lifecycle topic. Written before the index changes for that version, and cleared by
        :meth:`paid` once the event is announced and its fan-out done: a worker that dies in
        between leaves it for the redelivered message to find."""

    async def owed(self, key: str) -> tuple[int, bytes] | None:
        """``(version, event)`` of the lifecycle event owed for ``key``, if any."""

    async def paid(self, key: str, version: int) -> None:
        """The event owed for ``key`` at ``version`` was announced; forget it (a newer one
        owed meanwhile is kept)."""

    async def mark_built(self) -> None:
        """Record that the index holds every alert of the alerts topic (after a rebuild)."""

    async def is_built(self) -> bool:
        """False when the store lost its contents (flush, failover) and needs a rebuild."""

    async def get_alert(self, key: str) -> ActiveAlert | None:
        """The alert currently installed under ``key``, if any."""

    async def active_alerts(self) -> list[ActiveAlert]:
        """Every installed alert."""

    async def alerts_at(self, cells: Sequence[int]) -> list[Sequence[ActiveAlert]]:
        """For each res-R cell of ``cells``, the installed alerts whose cover contains it.
        One round trip to the store for the whole sequence. Raises IndexNotBuilt when the
        store lost its contents, so that no location is matched against a partial index."""

    async def installed(self) -> list[tuple[ActiveAlert, frozenset[int]]]:
        """Every installed alert with its cover, as current as :meth:`alerts_at` (what the
        presence fan-outs of each worker follow). Raises IndexNotBuilt as it does."""


class DedupStore(Protocol):
    """Memory of which (alert, user) pairs already got their card, and of which fan-outs
    finished.

    Records are kept per partition of the locations topic, the partition the user's
    events come from: the worker that owns a partition is the one that checks and records
    its users (a location batch and a fan-out chunk alike), so an adapter may answer from
    what it holds in process for the partitions it was told it owns (:meth:`own`)."""

    async def unseen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> list[bool]:
        """For each ``(alert_key, user_id)`` of the user's ``partition``, True when no card
        was recorded for it. ``digests``: each pair's
        :func:`~pipeline.domain.targeting.cards.card_digest`, when the caller has them
        (the store may record a prefix of it rather than hash the pair again)."""

    async def mark_seen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        expires_at_ms: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> int:
        """Record the pairs (each of the user's partition); each record may be forgotten
        after its ``expires_at_ms``. Returns how many pairs were not recorded before.
        ``digests`` as for :meth:`unseen`."""

    def own(self, partitions: frozenset[int]) -> None:
        """This worker owns ``partitions`` of the locations topic from now on: what it held
        of the others may have changed elsewhere meanwhile, and is forgotten."""

    async def fanned_out(self, alert_key: str, version: int) -> frozenset[int]:
        """The partitions whose fan-out of ``alert_key`` at ``version`` finished."""

    async def mark_fanned_out(
        self, alert_key: str, version: int, partitions: Sequence[int], keep_until_ms: int
    ) -> None:
        """Record that the fan-out of ``alert_key`` at ``version`` finished for
        ``partitions`` (call once its cards are acknowledged and recorded); the record may
        be forgotten after ``keep_until_ms``."""


class PresenceStore(Protocol):
    """Each active user's last known cell, fresh within a window, in bounded memory, held
    under the partition of the locations topic the user's events come from."""

    async def record(self, sightings: Sequence[Sighting]) -> None:
        """Remember each user's latest sighting under its partition (older sightings never
        replace newer ones within one call; across calls the last write wins)."""

    def present_in(
        self,
        cover: frozenset[int],
        since_ms: int,
        partitions: frozenset[int] | None,
        chunk: int = 10_000,
    ) -> AsyncIterator[list[str]]:
        """The ids of the users of ``partitions`` (None: of every partition, where the
        store can tell them) whose latest sighting at or after ``since_ms`` lies in
        ``cover`` (a compact cell set no finer than the index resolution), in chunks of at
        most ``chunk`` so that a state-wide alert never holds millions in memory. Each user
        comes once, except that a user who moves while the store is read may come twice
        (consumers deduplicate through the :class:`DedupStore`)."""


class CoverCache(Protocol):
    """Computed covers by :func:`pipeline.domain.geo.covercache.cover_key`. Synchronous: it
    is used where covers are computed, off the event loop. A cache may forget anything;
    what it returns must be what it was given."""

    def get(self, key: str) -> frozenset[int] | None:
        """The cover stored under ``key``, or None."""

    def put(self, key: str, cells: frozenset[int]) -> None:
        """Store ``cells`` under ``key`` (best effort: a failure to store is not an error)."""


class ReachStore(Protocol):
    """Per-alert card counters shared by all workers (:mod:`pipeline.domain.reach`)."""

    async def track(self, facts: AlertFacts) -> None:
        """Record an alert's lifecycle: status and state are overwritten, ``issued_ms`` is
        set only the first time, the expiry follows ``facts.expires_ms``. Idempotent."""

    async def add_cards(self, counts: Mapping[str, int], at_ms: int) -> dict[str, int]:
        """Add ``counts[key]`` confirmed cards to each alert at ``at_ms``; returns each
        alert's total after the addition, so ``total == counts[key]`` means this call
        recorded the alert's first cards (across all workers). Not idempotent: call once
        per broker-acknowledged batch."""

    async def issued_at(self, key: str) -> int | None:
        """``issued_ms`` recorded by :meth:`track`, if any."""

    async def snapshot(self, now_ms: int) -> list[AlertReach]:
        """Every alert still remembered, most recently issued first."""
