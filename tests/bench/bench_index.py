"""Benchmark: the location join's index lookups, Redis index against the worker's replica.

Three AMBER-sized polygons (Austin, Houston, Dallas) are installed at resolution 10 in the
real Redis. Then the same location batches (1,000 each, as the worker takes them) run
through, for each of the two indexes on its own key prefix:

* ``alerts_at`` alone: the lookup the matcher makes once per batch;
* the whole ``Matcher.match`` (lookup, presence writes, dedup check and record of the
  cards), as the worker runs it minus Kafka.

Two workloads: 50,000 users in a box around Austin (as ``bench_live``: about one in six
inside an alert), and users spread over the contiguous US (nearly all in no alert).

Printed for each: Redis commands per 1,000 locations, i.e. per batch (``INFO
commandstats``, summed over every command but INFO, before and after the run), and
locations per second, the replica beside the plain Redis index measured in the same run.
The replica's figures include its first load of the index.

    python -m tests.bench.bench_index REDIS_URL [LOCATIONS]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import h3.api.basic_int as h3i
import orjson

from pipeline.adapters.redis.client import RedisClient, redis_client
from pipeline.adapters.redis.dedup import RedisDedupStore
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.adapters.redis.replica import ReplicatedCellIndex
from pipeline.domain.ports import CellIndex
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.matching import Matcher
from pipeline.domain.targeting.policy import AudiencePolicy
from tests.bench.common import Report, print_report
from tests.support.factories import make_active_alert, now_ms

RES = 10
BATCH = 1000
USERS = 50_000
WINDOW_MS = 30 * 60_000
SENDER = "amber@bench.alertfeed.example"
# (south, west, north, east) of each alert's polygon.
ALERTS = {
    "austin": (30.20, -97.82, 30.34, -97.66),
    "houston": (29.65, -95.55, 29.85, -95.25),
    "dallas": (32.70, -96.90, 32.85, -96.70),
}
WORKLOADS = {
    "around Austin": (30.15, -97.90, 30.40, -97.60),
    "over the contiguous US": (25.0, -124.0, 49.0, -67.0),
}


def cover(south: float, west: float, north: float, east: float) -> frozenset[int]:
    ring = [(south, west), (south, east), (north, east), (north, west)]
    cells = h3i.polygon_to_cells(h3i.LatLngPoly(ring), RES)
    return frozenset(h3i.compact_cells(cells))


def batches(box: tuple[float, float, float, float], n: int) -> list[list[RawEvent]]:
    south, west, north, east = box
    rng = random.Random(2026)
    ts = now_ms()
    events = []
    for i in range(n):
        user = f"user-{i % USERS:06d}"
        value = {
            "user_id": user,
            "lat": rng.uniform(south, north),
            "lon": rng.uniform(west, east),
            "ts": ts + i // USERS,
        }
        events.append(RawEvent("locations", 0, i, ts, user.encode(), orjson.dumps(value)))
    return [events[i : i + BATCH] for i in range(0, n, BATCH)]


async def commands(client: RedisClient) -> int:
    stats: dict[str, Any] = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def measure(
    client: RedisClient, step: Callable[[list[RawEvent]], Any], work: list[list[RawEvent]]
) -> tuple[float, float]:
    """Commands per 1,000 locations and locations/s of ``step`` over every batch of ``work``."""
    n = sum(map(len, work))
    before = await commands(client)
    started = time.perf_counter()
    for batch in work:
        await step(batch)
    elapsed = time.perf_counter() - started
    return (await commands(client) - before) / n * 1000, n / elapsed


async def variant(client: RedisClient, replica: bool, work: list[list[RawEvent]]) -> list[float]:
    prefix = f"bi{uuid.uuid4().hex[:8]}"
    source = RedisCellIndex(client, prefix=prefix, resolution=RES)
    await source.mark_built()
    for name, box in ALERTS.items():
        await source.put_alert(make_active_alert(f"{SENDER}|{name}"), cover(*box))
    index: CellIndex = ReplicatedCellIndex(source) if replica else source
    matcher = Matcher(
        index,
        RedisDedupStore(client, prefix=prefix),
        AudiencePolicy.of([SENDER], []),
        presence=RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW_MS),
        resolution=RES,
        max_future_skew_ms=300_000,
        freshness_ms=WINDOW_MS,
        clock_ms=now_ms,
    )
    cells = {
        id(batch): [
            h3i.latlng_to_cell(v["lat"], v["lon"], RES)
            for v in (orjson.loads(e.value or b"") for e in batch)
        ]
        for batch in work
    }

    async def lookup(batch: list[RawEvent]) -> None:
        await index.alerts_at(cells[id(batch)])

    async def match(batch: list[RawEvent]) -> None:
        await matcher.confirm(await matcher.match(batch))

    return [*await measure(client, lookup, work), *await measure(client, match, work)]


async def compare(report: Report, redis_url: str, locations: int) -> None:
    client = redis_client(redis_url, password=None, socket_timeout_s=30)
    try:
        for workload, box in WORKLOADS.items():
            work = batches(box, locations)
            old = await variant(client, False, work)
            new = await variant(client, True, work)
            for i, what in ((0, "alerts_at alone"), (2, "the whole Matcher.match")):
                name = f"{what}, {locations:,} locations {workload}, replica"
                base = "RedisCellIndex"
                report(f"{name}: Redis commands", new[i], "per 1,000 locations", base, old[i])
                report(f"{name}: throughput", new[i + 1], "locations/s", base, old[i + 1])
    finally:
        await client.aclose()


def run(report: Report, redis_url: str, locations: int = 100_000) -> None:
    asyncio.run(compare(report, redis_url, locations))


if __name__ == "__main__":
    run(print_report, sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
