"""One contract, two implementations: the Redis reach store and its in-process twin. Every
test runs against the twin, the real server and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipeline.adapters.memory.reach import MemoryReachStore
from pipeline.adapters.metrics import Metrics
from pipeline.adapters.redis.reach import RedisReachStore
from pipeline.domain.ports import ReachStore
from pipeline.domain.reach import MINUTE_MS, AlertFacts
from pipeline.service.reach import ReachTracker
from tests.support.factories import now_ms

Body = Callable[[ReachStore], Awaitable[None]]
HOUR_MS = 3600 * 1000


def facts(
    key: str = "amber@ncmec.org|A1",
    *,
    state: str = "issued",
    sent_ms: int | None = None,
    expires_ms: int | None = None,
    status: str = "Actual",
) -> AlertFacts:
    sent = now_ms() - 60_000 if sent_ms is None else sent_ms
    return AlertFacts(
        key=key,
        alert_id=key.rpartition("|")[2],
        status=status,
        state=state,
        sent_ms=sent,
        expires_ms=sent + 6 * HOUR_MS if expires_ms is None else expires_ms,
    )


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def run(request: pytest.FixtureRequest, connect: Callable[[str], Any]) -> Callable[[Body], None]:
    """Runs ``body(store)`` on a fresh event loop against one implementation."""

    def runner(body: Body) -> None:
        async def main() -> None:
            if request.param == "memory":
                await body(MemoryReachStore())
                return
            client = connect(request.param)
            try:
                await body(RedisReachStore(client, prefix=f"rc{uuid.uuid4().hex[:8]}"))
            finally:
                await client.aclose()

        asyncio.run(main())

    return runner


def test_cards_add_up_per_alert_and_the_first_addition_is_recognisable(
    run: Callable[[Body], None],
) -> None:
    async def body(store: ReachStore) -> None:
        now = now_ms()
        await store.track(facts("s|A1"))
        await store.track(facts("s|A2"))
        assert await store.add_cards({"s|A1": 3, "s|A2": 1}, now) == {"s|A1": 3, "s|A2": 1}
        assert await store.add_cards({"s|A1": 2}, now) == {"s|A1": 5}
        by_id = {r.alert_id: r for r in await store.snapshot(now)}
        assert (by_id["A1"].total, by_id["A2"].total) == (5, 1)

    run(body)


def test_windows_count_the_last_5_and_60_minutes_and_the_total_everything(
    run: Callable[[Body], None],
) -> None:
    async def body(store: ReachStore) -> None:
        now = now_ms()
        await store.track(facts("s|A1", sent_ms=now - 3 * HOUR_MS))
        await store.add_cards({"s|A1": 100}, now - 2 * HOUR_MS)
        await store.add_cards({"s|A1": 20}, now - 30 * MINUTE_MS)
        await store.add_cards({"s|A1": 4}, now - 2 * MINUTE_MS)
        await store.add_cards({"s|A1": 1}, now)
        [row] = await store.snapshot(now)
        assert (row.total, row.last_5m, row.last_60m) == (125, 5, 25)
        assert sum(row.per_minute.values()) == 25
        assert list(row.per_minute) == sorted(row.per_minute)

    run(body)


def test_lifecycle_updates_state_but_keeps_the_first_issue_time(
    run: Callable[[Body], None],
) -> None:
    async def body(store: ReachStore) -> None:
        sent = now_ms() - 10 * MINUTE_MS
        await store.track(facts("s|A1", sent_ms=sent))
        await store.add_cards({"s|A1": 7}, now_ms())
        await store.track(facts("s|A1", state="updated", sent_ms=sent + MINUTE_MS))
        await store.track(facts("s|A1", state="cancelled", sent_ms=sent + 2 * MINUTE_MS))
        [row] = await store.snapshot(now_ms())
        assert (row.state, row.issued_ms, row.total, row.status) == ("cancelled", sent, 7, "Actual")
        assert await store.issued_at("s|A1") == sent
        assert await store.issued_at("s|unknown") is None

    run(body)


def test_an_alert_past_its_expiry_reads_expired_and_is_forgotten_after_the_grace(
    run: Callable[[Body], None],
) -> None:
    async def body(store: ReachStore) -> None:
        now = now_ms()
        await store.track(facts("s|recent", sent_ms=now - HOUR_MS, expires_ms=now - MINUTE_MS))
        await store.track(facts("s|old", sent_ms=now - 9 * HOUR_MS, expires_ms=now - 3 * HOUR_MS))
        rows = await store.snapshot(now)
        assert [(r.alert_id, r.state) for r in rows] == [("recent", "expired")]
        assert await store.snapshot(now) == rows  # pruning the forgotten one changed nothing

    run(body)


def test_snapshot_lists_the_most_recently_issued_first(run: Callable[[Body], None]) -> None:
    async def body(store: ReachStore) -> None:
        now = now_ms()
        await store.track(facts("s|older", sent_ms=now - 2 * HOUR_MS))
        await store.track(facts("s|newer", sent_ms=now - HOUR_MS))
        assert [r.alert_id for r in await store.snapshot(now)] == ["newer", "older"]
        assert await store.add_cards({}, now) == {}

    run(body)


def test_the_tracker_times_only_an_alerts_first_cards(run: Callable[[Body], None]) -> None:
    async def body(store: ReachStore) -> None:
        metrics = Metrics()
        tracker = ReachTracker(store, metrics)
        sent = now_ms() - 90_000
        event: dict[str, Any] = {
            "alert_id": "A1",
            "status": "Actual",
            "state": "issued",
            "sent_ms": sent,
            "expires_ms": None,
        }
        await tracker.on_lifecycle("s|A1", event)
        await tracker.on_cards([("s|A1", "u1"), ("s|A1", "u2")], sent + 30_000)
        await tracker.on_cards([("s|A1", "u3")], sent + 60_000)
        count = metrics.registry.get_sample_value("alertfeed_alert_first_card_seconds_count")
        total = metrics.registry.get_sample_value("alertfeed_alert_first_card_seconds_sum")
        assert (count, total) == (1.0, 30.0)
        [row] = await store.snapshot(sent + 60_000)
        assert row.total == 3

    run(body)
