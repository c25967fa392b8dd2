"""In-process twin of the Redis dedup store (:mod:`pipeline.adapters.redis.dedup`).

Same contract (tests/contract/test_index_contract.py runs one suite against both), for the
offline replay and for pure unit tests. Single process only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


class MemoryDedupStore:
    """:class:`pipeline.domain.ports.DedupStore` in process memory."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._cards: Counter[str] = Counter()

    async def unseen(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        return [pair not in self._seen for pair in pairs]

    async def mark_seen(
        self, pairs: Sequence[tuple[str, str]], expires_at_ms: Sequence[int]
    ) -> int:
        added = 0
        for pair, until in zip(pairs, expires_at_ms, strict=True):
            if pair not in self._seen:
                added += 1
                self._cards[pair[0]] += 1
            self._seen[pair] = until
        return added

    async def cards_of(self, alert_key: str) -> int:
        return self._cards[alert_key]

    def forget_before(self, now_ms: int) -> int:
        """Drop records that expired before ``now_ms``; returns how many (bounded memory)."""
        stale = [pair for pair, until in self._seen.items() if until < now_ms]
        for pair in stale:
            del self._seen[pair]
            self._cards[pair[0]] -= 1
        return len(stale)
