"""In-process twin of the Redis dedup store (:mod:`pipeline.adapters.redis.dedup`).

Same contract (tests/contract/test_dedup_contract.py runs one suite against both), for the
offline replay and for pure unit tests. Single process only: it owns every partition, and
records a pair whatever partition it is recorded under.
"""

from __future__ import annotations

from collections.abc import Sequence


class MemoryDedupStore:
    """:class:`pipeline.domain.ports.DedupStore` in process memory."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._fanned: dict[tuple[str, int], set[int]] = {}

    async def unseen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> list[bool]:
        return [pair not in self._seen for pair in pairs]

    async def mark_seen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        expires_at_ms: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> int:
        added = 0
        for pair, until in zip(pairs, expires_at_ms, strict=True):
            if pair not in self._seen:
                added += 1
            self._seen[pair] = max(until, self._seen.get(pair, until))
        return added

    def own(self, partitions: frozenset[int]) -> None:
        pass  # nothing is held for one partition rather than another

    async def fanned_out(self, alert_key: str, version: int) -> frozenset[int]:
        return frozenset(self._fanned.get((alert_key, version), ()))

    async def mark_fanned_out(
        self, alert_key: str, version: int, partitions: Sequence[int], keep_until_ms: int
    ) -> None:
        self._fanned.setdefault((alert_key, version), set()).update(partitions)

    def forget_before(self, now_ms: int) -> int:
        """Drop records that expired before ``now_ms``; returns how many (bounded memory)."""
        stale = [pair for pair, until in self._seen.items() if until < now_ms]
        for pair in stale:
            del self._seen[pair]
        return len(stale)
