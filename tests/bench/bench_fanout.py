"""Benchmark: presence fan-out of a state-wide alert over N present users (default 1M).

N users are placed at random points inside Texas and recorded in the Redis presence store,
as the worker does for location events. Then the worker's own code path runs on the real
Redis and Kafka: ``AlertIngest`` installs a CAP state-wide AMBER Alert for SAME 048000
(cover at resolution 10) and ``WorkerRuntime`` fans it out, publishing every card and
waiting for the broker's acknowledgements. The measured path starts from the alert's
bytes with the Texas cover in the cover cache, as deployed workers have every state
(``alertfeed covers warm --states``); the cold cover time is reported beside it.

Baseline, same run: publishing N messages of the same size through the same sink and
waiting for their acknowledgements, i.e. the cost of the output alone.

Target (issue 4): all cards of 1,000,000 present users within 10 s on the 2-core machine.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import h3.api.basic_int as h3i
import numpy as np
import shapely

from pipeline.adapters.kafka.sink import ConfluentSink
from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.adapters.metrics import Metrics
from pipeline.adapters.redis.client import redis_client
from pipeline.adapters.redis.dedup import RedisDedupStore
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.domain.models import Sighting
from pipeline.domain.ports import OutTopic
from pipeline.entrypoints.wiring import make_services
from pipeline.service.runtime import WorkerRuntime, now_ms
from pipeline.settings import (
    KafkaSettings,
    MatchSettings,
    PolicySettings,
    RedisSettings,
    Settings,
    TopicSettings,
)
from tests.bench.bench_cover import texas_polygons
from tests.bench.common import Report, print_report
from tests.support.factories import make_cap_xml

SENDER = "amber@bench.alertfeed.example"
WINDOW_MS = 30 * 60_000


class CountingSink:
    """The worker's own sink, counting the cards that went through it."""

    def __init__(self, inner: ConfluentSink) -> None:
        self.inner = inner
        self.cards = 0

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
        if topic == "interstitials":
            self.cards += len(records)
        await self.inner.publish(topic, records)


def texas_points(n: int, seed: int) -> list[tuple[float, float]]:
    shape = shapely.union_all(
        [shapely.Polygon([(lon, lat) for lat, lon in p.exterior]) for p in texas_polygons()]
    )
    shapely.prepare(shape)
    min_lon, min_lat, max_lon, max_lat = shape.bounds
    rng = np.random.default_rng(seed)
    out: list[tuple[float, float]] = []
    while len(out) < n:
        lons = rng.uniform(min_lon, max_lon, n)
        lats = rng.uniform(min_lat, max_lat, n)
        inside = shapely.contains_xy(shape, lons, lats)
        out.extend(zip(lats[inside].tolist(), lons[inside].tolist(), strict=True))
    return out[:n]


def settings_for(bootstrap: str, redis_url: str, cover_cache: Path) -> Settings:
    uid = uuid.uuid4().hex[:8]
    return Settings(
        match=MatchSettings(cover_cache_dir=cover_cache),
        app_id=f"bench-{uid}",
        kafka=KafkaSettings(url=f"kafka://{bootstrap}"),
        redis=RedisSettings(url=redis_url, key_prefix=f"bf{uid}"),
        topics=TopicSettings(
            alerts=f"b{uid}.alerts",
            locations=f"b{uid}.locations",
            interstitials=f"b{uid}.interstitials",
            lifecycle=f"b{uid}.lifecycle",
            dlq=f"b{uid}.dlq",
            partitions=6,
        ),
        policy=PolicySettings(allowed_senders=[SENDER]),
    )


async def _produce_baseline(sink: ConfluentSink, n: int, size: int) -> float:
    payload = b"x" * size
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        await sink.publish(
            "dlq", [(f"user-{i}".encode(), payload) for i in range(start, min(n, start + 10_000))]
        )
    return time.perf_counter() - started


async def _bench(settings: Settings, users: int) -> dict[str, float]:
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    prefix = settings.redis.key_prefix
    presence = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW_MS)
    index = RedisCellIndex(client, prefix=prefix, resolution=10)
    dedup = RedisDedupStore(client, prefix=prefix)
    await index.mark_built()
    now = now_ms()
    points = texas_points(users, seed=48)
    for start in range(0, users, 20_000):
        await presence.record(
            [
                Sighting(
                    f"user-{i:07d}",
                    h3i.latlng_to_cell(lat, lon, 10),
                    now - random.randrange(600_000),
                )
                for i, (lat, lon) in enumerate(points[start : start + 20_000], start)
            ]
        )
    matcher, ingest = make_services(settings, index, dedup, presence, now_ms)
    sink = CountingSink(ConfluentSink(settings))
    try:
        runtime = WorkerRuntime(matcher, ingest, Metrics(), sink)
        cap = make_cap_xml(sender=SENDER, geocodes=[("SAME", "048000")])
        loop = asyncio.get_running_loop()
        # Cold: the first Texas alert a worker ever sees computes the cover (and caches
        # it). Deployed workers have every state warmed (`alertfeed covers warm --states`).
        started = time.perf_counter()
        await loop.run_in_executor(None, ingest.prepare, cap)
        cold_cover = time.perf_counter() - started
        started = time.perf_counter()
        [item] = await loop.run_in_executor(None, ingest.prepare, cap)
        covered = time.perf_counter()
        applied = await ingest.apply(item)
        assert applied is not None and applied.alert is not None
        installed = time.perf_counter()
        await runtime._fan_out(applied.alert, applied.cells)
        done = time.perf_counter()
        cards = sink.cards
        baseline = await _produce_baseline(sink.inner, users, 1400)
    finally:
        sink.inner.close()
        await client.aclose()
    if cards != users:
        raise AssertionError(f"fan-out emitted {cards} cards for {users} present users")
    return {
        "cold_cover_s": cold_cover,
        "cover_s": covered - started,
        "install_s": installed - covered,
        "fanout_s": done - installed,
        "total_s": done - started,
        "baseline_s": baseline,
    }


def run(report: Report, bootstrap: str, redis_url: str, users: int = 1_000_000) -> None:
    with tempfile.TemporaryDirectory() as cover_cache:
        settings = settings_for(bootstrap, redis_url, Path(cover_cache))
        ensure_topics(settings)
        figures = asyncio.run(_bench(settings, users))
    report(
        f"fan-out of a Texas-wide alert to {users:,} present users (issue to last card acked: "
        f"cached cover {figures['cover_s']:.1f} s + index write {figures['install_s']:.1f} s "
        f"+ fan-out {figures['fanout_s']:.1f} s; a cold cover adds "
        f"{figures['cold_cover_s'] - figures['cover_s']:.1f} s)",
        figures["total_s"],
        "s",
        f"publish+ack of {users:,} 1.4 kB messages through the same sink",
        figures["baseline_s"],
    )


if __name__ == "__main__":
    # python tests/bench/bench_fanout.py BOOTSTRAP REDIS_URL [USERS]
    run(
        print_report, sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    )
