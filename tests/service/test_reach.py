"""The runtime's reach tracker (pipeline/service/reach.py): reach is a report, so a failing
store is counted and never holds the cards up. (That it times only an alert's first cards
is checked on every store in tests/contract/test_reach_contract.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.adapters.memory.reach import MemoryReachStore
from pipeline.adapters.metrics import Metrics
from pipeline.errors import IndexUnavailable
from pipeline.service.reach import ReachTracker
from tests.support.factories import now_ms


class _DownStore(MemoryReachStore):
    async def add_cards(self, counts: Any, at_ms: int) -> dict[str, int]:
        raise IndexUnavailable("redis unreachable during reach add: connection refused")


def test_a_failing_reach_store_is_counted_and_never_stops_the_cards() -> None:
    metrics = Metrics()
    tracker = ReachTracker(_DownStore(), metrics)
    asyncio.run(tracker.on_cards([("s|A1", "u1")], now_ms()))  # does not raise
    assert metrics.registry.get_sample_value("alertfeed_redis_errors_total") == 1.0
