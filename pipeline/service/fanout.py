"""The presence fan-out: carding the users already inside an alert, spread over every
worker by the partitions of the locations topic each one owns.

Presence and dedup records are held per locations partition (the partition the user's
key maps to), so the worker that owns a partition is the one that cards its users, both
from their location batches and from a fan-out, under the same carding lock: the two can
never card a user twice between them. Every worker learns of a new alert through the
replicated index and cards its own partitions' share; each (alert version, partition)
is recorded as finished only once its cards are acknowledged and recorded, so a worker
that gains the partition (a rebalance, a restart after a crash) completes it, and the
cards it sends again are byte-identical (same ``event_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from pipeline.adapters.metrics import Metrics
from pipeline.domain.ports import CellIndex
from pipeline.domain.targeting.cards import ActiveAlert
from pipeline.domain.targeting.matching import Matcher, MatchResult
from pipeline.errors import InfrastructureError

log = logging.getLogger(__name__)

T = TypeVar("T")

# The partition key of a fan-out over every partition at once (see PresenceFanOut.own).
_EVERY = -1


class Retrying(Protocol):
    """Run a step until it succeeds, retrying through outages (WorkerRuntime._retrying)."""

    def __call__(self, what: str, step: Callable[[], Awaitable[T]], /) -> Awaitable[T]: ...


class PresenceFanOut:
    """Fans each installed alert out over the presence of this worker's partitions."""

    def __init__(
        self,
        matcher: Matcher,
        index: CellIndex,
        metrics: Metrics,
        *,
        carding: asyncio.Lock,
        retrying: Retrying,
        publish: Callable[[MatchResult], Awaitable[None]],
        hold_chunks: int = 10,
        retry_s: float = 1.0,
        recheck_s: float = 5.0,
        partitions: frozenset[int] | None = None,
    ) -> None:
        self.matcher = matcher
        self.index = index
        self.metrics = metrics
        # Shared with the location batches: checking dedup, publishing and recording
        # cards is one step that must not interleave between the two.
        self._carding = carding
        self._retrying = retrying
        self._publish = publish
        # Chunks per hold of the carding lock, and the pause before an interrupted
        # fan-out starts over.
        self._hold_chunks = hold_chunks
        self._retry_s = retry_s
        # The partitions of the locations topic this worker owns; None: every one, for a
        # runtime alone with in-process stores (the offline replay).
        self._owned = partitions
        # One pass over the due fan-outs at a time; the partitions known to be finished,
        # per (alert key, version) of the installed alerts.
        self._passing = asyncio.Lock()
        self._finished: dict[tuple[str, int], frozenset[int]] = {}
        # The known-finished partitions are Redis's records, cached: read again this
        # often, so that a Redis that lost them (wiped, rebuilt from the alerts topic)
        # has the fan-outs done again over what presence it holds now, and recorded.
        self._recheck_s = recheck_s
        self._cached_at = time.monotonic()
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Have :meth:`run` look for due fan-outs now (an alert was installed here)."""
        self._woken.set()

    async def run(self, poll_s: float) -> None:
        """Forever: :meth:`due` when woken, and at least every ``poll_s`` (the alerts that
        other workers installed, the partitions gained). What it raises ends it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), poll_s)
            self._woken.clear()
            await self.due()

    def own(self, partitions: frozenset[int]) -> None:
        """The partitions of the locations topic this worker owns from now on (from the
        location consumer's assignment). A fan-out in progress over a partition that went
        stops there; the partitions that came are fanned out by the next :meth:`due`."""
        self._owned = partitions
        self.matcher.own(partitions)

    async def due(self) -> None:
        """Card the users already inside each installed alert, over every partition this
        worker owns whose fan-out of the alert's version is not recorded as finished.
        A Cancel (or an Update) stops a fan-out of the version it replaced."""
        async with self._passing:
            installed = await self._retrying("fan-out plan", self.index.installed)
            live = {(a.key, a.version) for a, _ in installed}
            if time.monotonic() - self._cached_at >= self._recheck_s:
                self._finished, self._cached_at = {}, time.monotonic()
            self._finished = {k: v for k, v in self._finished.items() if k in live}
            for alert, cover in installed:
                await self._alert(alert, cover)

    async def _alert(self, alert: ActiveAlert, cover: frozenset[int]) -> None:
        version = (alert.key, alert.version)
        owned = self._owned
        wanted = {_EVERY} if owned is None else set(owned)
        known = self._finished.get(version, frozenset())
        if not wanted - known:
            return
        known = known | await self._retrying(
            "fan-out record", lambda: self.matcher.fanned_out(alert)
        )
        self._finished[version] = known
        for partition in sorted(wanted - known):
            if await self.partition(alert, cover, None if partition == _EVERY else partition):
                await self._retrying(
                    "fan-out record",
                    lambda p=partition: self.matcher.fan_out_finished(alert, p),  # type: ignore[misc]
                )
                self._finished[version] = self._finished.get(version, frozenset()) | {partition}

    async def partition(
        self, alert: ActiveAlert, cells: frozenset[int], partition: int | None
    ) -> bool:
        """Card the users of one partition (None: of all) already inside ``alert``. True
        when every one of them was carded; False when it stopped (the alert was cancelled
        or replaced, or the partition went to another worker)."""
        started = time.perf_counter()
        counts = [0, 0]  # present, cards
        going: bool | None = None
        while True:
            try:
                chunks = aiter(self.matcher.fan_out(alert, cells, partition))
                while (going := await self._some(alert, partition, chunks, counts)) is True:
                    pass  # location batches get the carding lock between holds
                break
            except InfrastructureError as exc:
                # Start over: users already carded are deduplicated on the second pass.
                self.metrics.infra_retries.labels("redis").inc()
                log.warning("fan-out interrupted, restarting error=%s", exc)
                await asyncio.sleep(self._retry_s)
        self.metrics.fanout_duration.observe(time.perf_counter() - started)
        self.metrics.fanouts.labels("done" if going is None else "stopped").inc()
        log.info(
            "fan-out %s partition=%s present=%d cards=%d",
            "done" if going is None else "stopped",
            "all" if partition is None else partition,
            *counts,
        )
        return going is None

    async def _still_due(self, alert: ActiveAlert, partition: int | None) -> bool:
        """Whether ``alert``'s fan-out over ``partition`` is still this worker's to do: the
        alert is installed at that version, and the partition still owned."""
        if partition is not None and (self._owned is None or partition not in self._owned):
            return False
        current = await self._retrying("fan-out check", lambda: self.index.get_alert(alert.key))
        return current is not None and current.version == alert.version

    async def _some(
        self,
        alert: ActiveAlert,
        partition: int | None,
        chunks: AsyncIterator[MatchResult],
        counts: list[int],
    ) -> bool | None:
        """Up to ``hold_chunks`` chunks under one hold of the carding lock: True when there
        is more, None when the fan-out is done, False when it stopped (see
        :meth:`_still_due`, checked before each chunk is published). A chunk is prepared
        (presence read, dedup check, cards encoded) while the previous one's
        acknowledgements arrive; its pairs are pending meanwhile, so the overlap cannot
        card anyone twice. Nothing is left in flight when the lock is released."""
        async with self._carding:
            publishing: asyncio.Future[None] | None = None
            try:
                for _ in range(self._hold_chunks):
                    result = await anext(chunks, None)
                    if publishing is not None:
                        await publishing
                        publishing = None
                    if result is None:
                        return None
                    if not await self._still_due(alert, partition):
                        self.matcher.release(result)
                        return False
                    publishing = asyncio.ensure_future(self._published(result))
                    counts[0] += result.locations
                    counts[1] += len(result.cards)
                return True
            finally:
                if publishing is not None:
                    await publishing

    async def _published(self, result: MatchResult) -> None:
        try:
            await self._retrying("fan-out publish", lambda: self._publish(result))
        finally:
            self.matcher.release(result)
