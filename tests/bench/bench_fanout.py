"""Benchmark: the presence fan-out of a state-wide alert, carded by one worker and then by
two together, and what presence and dedup cost in Redis.

N users (default 1,000,000) are placed at random points inside Texas and recorded in the
Redis presence store under their partition of the locations topic (6 partitions), as
workers do for location events. Then each worker is a process of its own, running the
worker's code on the real Redis and Kafka (``WorkerRuntime`` with its share of the
partitions; the fan-out is ``PresenceFanOut``): the first worker prepares the CAP
state-wide AMBER Alert for SAME 048000 from its bytes (cover at resolution 10, from the
cover cache, as deployed workers have every state warmed), installs it and fans it out
over its partitions; the others learn of it as workers do, by polling the index every
``match.fanout_poll_s``, and fan out over theirs. Measured: from the alert's bytes to the
last card acknowledged by the broker, on whichever worker finishes last.

Baseline, same run: publishing as many messages of the cards' size through the same sink
from one process, waiting for the acknowledgements: the cost of the output alone. Beside
the two workers also the same cards published by two processes, each with its own sink:
the output alone as parallel as the workers, the strongest baseline on this machine.

Memory, from ``INFO memory`` (``used_memory``) deltas: presence per present user (beside
the same users as fields of one plain hash with 8-byte values, the least Redis can hold
them in), and dedup per card (beside one plain set member per card, the previous layout).

Then 5,000,000 users spread over the lower 48 states and a three-state alert (Texas,
Oklahoma, Louisiana) with two workers; the cards are checked against shapely's count of
the users inside.

Targets (issue 13): 1 M users carded in <= 5 s, ratio <= 1.5 to the sink; a second worker
never slower; <= 100 B per present user, <= 32 B per card.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import shapely

from pipeline.adapters.census import CensusGazetteer
from pipeline.adapters.kafka.sink import ConfluentSink
from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.adapters.metrics import Metrics
from pipeline.adapters.redis.client import redis_client
from pipeline.adapters.redis.dedup import RedisDedupStore
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.domain.lifecycle import PreparedAlert
from pipeline.domain.models import Sighting
from pipeline.domain.ports import OutTopic
from pipeline.domain.targeting.cards import CardTemplate, activate
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
from tests.bench.common import Report, print_report
from tests.support.factories import make_cap_xml

SENDER = "amber@bench.alertfeed.example"
WINDOW_MS = 30 * 60_000
PARTITIONS = 6
TEXAS, OKLAHOMA, LOUISIANA = "48", "40", "22"


class CountingSink:
    """The worker's own sink, counting the cards that went through it."""

    def __init__(self, inner: ConfluentSink) -> None:
        self.inner = inner
        self.cards = 0

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
        if topic == "interstitials":
            self.cards += len(records)
        await self.inner.publish(topic, records)


def state_shape(*fips: str) -> Any:
    gazetteer = CensusGazetteer()
    polygons = [p for f in fips for p in gazetteer.state(f) or ()]
    shape = shapely.union_all(
        [shapely.Polygon([(lon, lat) for lat, lon in p.exterior]) for p in polygons]
    )
    shapely.prepare(shape)
    return shape


def points_in(shape: Any, n: int, seed: int) -> list[tuple[float, float]]:
    min_lon, min_lat, max_lon, max_lat = shape.bounds
    rng = np.random.default_rng(seed)
    out: list[tuple[float, float]] = []
    while len(out) < n:
        lons = rng.uniform(min_lon, max_lon, n)
        lats = rng.uniform(min_lat, max_lat, n)
        inside = shapely.contains_xy(shape, lons, lats)
        out.extend(zip(lats[inside].tolist(), lons[inside].tolist(), strict=True))
    return out[:n]


def partition_of(user: str) -> int:
    return zlib.crc32(user.encode()) % PARTITIONS


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
            partitions=PARTITIONS,
        ),
        policy=PolicySettings(allowed_senders=[SENDER]),
    )


async def used_memory(settings: Settings) -> int:
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    try:
        return int((await client.info("memory"))["used_memory"])
    finally:
        await client.aclose()


async def record_presence(settings: Settings, points: Sequence[tuple[float, float]]) -> None:
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    presence = RedisPresenceStore(client, prefix=settings.redis.key_prefix, window_ms=WINDOW_MS)
    rng = np.random.default_rng(7)
    now = now_ms()
    try:
        await RedisCellIndex(client, prefix=settings.redis.key_prefix, resolution=10).mark_built()
        for start in range(0, len(points), 20_000):
            chunk = points[start : start + 20_000]
            ages = rng.integers(0, 600_000, len(chunk)).tolist()
            sightings = []
            for i, (lat, lon) in enumerate(chunk, start):
                user = f"user-{i:07d}"
                cell = h3i.latlng_to_cell(lat, lon, 10)
                sightings.append(Sighting(user, cell, now - ages[i - start], partition_of(user)))
            sightings.sort(key=lambda s: s.ts)
            await presence.record(sightings)
    finally:
        await client.aclose()


async def plain_layouts(settings: Settings, n: int) -> tuple[float, float]:
    """Bytes per user of the same ids as fields of one plain hash (8-byte values), and as
    members of one plain set: the least Redis holds them in, measured here."""
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    hash_key, set_key = (
        f"{settings.redis.key_prefix}:plain:h",
        f"{settings.redis.key_prefix}:plain:s",
    )
    try:
        sizes = []
        for key, command in ((hash_key, "HSET"), (set_key, "SADD")):
            before = int((await client.info("memory"))["used_memory"])
            for start in range(0, n, 10_000):
                ids = [f"user-{i:07d}" for i in range(start, min(n, start + 10_000))]
                if command == "HSET":
                    await client.hset(key, mapping={u: b"\0" * 8 for u in ids})
                else:
                    await client.sadd(key, *ids)
            sizes.append((int((await client.info("memory"))["used_memory"]) - before) / n)
            await client.delete(key)
        return sizes[0], sizes[1]
    finally:
        await client.aclose()


# -- one worker process --------------------------------------------------------------------
def _worker(settings_json: str, partitions: list[int], installs: bool, conn: Connection) -> None:
    settings = Settings.model_validate_json(settings_json)
    conn.send(asyncio.run(_work(settings, frozenset(partitions), installs, conn)))


async def _work(
    settings: Settings, owned: frozenset[int], installs: bool, conn: Connection
) -> dict[str, float]:
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    prefix = settings.redis.key_prefix
    presence = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW_MS)
    index = RedisCellIndex(client, prefix=prefix, resolution=10)
    dedup = RedisDedupStore(client, prefix=prefix)
    matcher, ingest = make_services(settings, index, dedup, presence, now_ms)
    sink = CountingSink(ConfluentSink(settings))
    runtime = WorkerRuntime(matcher, ingest, Metrics(), sink, partitions=owned)
    runtime.own(owned)
    loop = asyncio.get_running_loop()
    try:
        before = {a.key for a, _ in await index.installed()}  # earlier runs' alerts
        conn.send("ready")
        cap: bytes = conn.recv()
        figures: dict[str, float] = {}
        if installs:
            started = time.perf_counter()
            [item] = await loop.run_in_executor(None, ingest.prepare, cap)
            figures["cover_s"] = time.perf_counter() - started
            applied = await ingest.apply(item)
            assert applied is not None and applied.alert is not None
            figures["install_s"] = time.perf_counter() - started - figures["cover_s"]
            installed_memory = int((await client.info("memory"))["used_memory"])
            figures["start_wall"], figures["start_cpu"] = time.time(), time.process_time()
            await runtime.fan_out_due()
            memory = int((await client.info("memory"))["used_memory"])
            figures["fan_out_memory"] = memory - installed_memory
        else:
            poll_s = settings.match.fanout_poll_s
            while True:  # as the worker's fan-out task does, between its polls
                began = time.time(), time.process_time()
                await runtime.fan_out_due()
                # Seen after the pass: installed before it (then this pass carded it) or
                # during it (then the next one does, and this pass, with nothing to do,
                # took a millisecond): timed from this pass's start either way.
                new = [a for a, _ in await index.installed() if a.key not in before]
                if new and "start_wall" not in figures:
                    figures["start_wall"], figures["start_cpu"] = began
                if new and owned <= await matcher.fanned_out(new[0]):
                    break
                if not new:
                    await asyncio.sleep(poll_s)
        figures["done_wall"] = time.time()
        figures["cpu_s"] = time.process_time() - figures["start_cpu"]
        figures["cards"] = sink.cards
        return figures
    finally:
        sink.inner.close()
        await client.aclose()


def _race(target: Any, arguments: Sequence[tuple[Any, ...]], go: Any) -> tuple[float, list[Any]]:
    """Start a spawned process of ``target`` per argument tuple (each also gets its end of
    a pipe), wait until each says "ready", send them all ``go`` at once: when they were
    sent it, and each one's reply."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for args in arguments:
        ours, theirs = context.Pipe()
        process = context.Process(target=target, args=(*args, theirs), daemon=True)
        process.start()
        pipes.append(ours)
        processes.append(process)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    started = time.time()
    for pipe in pipes:
        pipe.send(go)
    replies = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join(30)
    return started, replies


def fan_out_with(settings: Settings, cap: bytes, workers: int) -> dict[str, Any]:
    """The fan-out of ``cap`` by ``workers`` processes, the partitions dealt round robin."""
    shares = [list(range(PARTITIONS))[i::workers] for i in range(workers)]
    config = settings.model_dump_json()
    started, results = _race(
        _worker, [(config, share, i == 0) for i, share in enumerate(shares)], cap
    )
    return {
        "total_s": max(r["done_wall"] for r in results) - started,
        "cover_s": results[0]["cover_s"],
        "install_s": results[0]["install_s"],
        "cards": [int(r["cards"]) for r in results],
        # Each worker's own fan-out: from when it started carding to its last card acked.
        "worker_s": [r["done_wall"] - r["start_wall"] for r in results],
        # and the CPU its process spent on it, librdkafka's threads included.
        "cpu_s": sum(r["cpu_s"] for r in results),
        "fan_out_memory": results[0]["fan_out_memory"],
    }


def cards_of(prepared: PreparedAlert, n: int, first: int = 0) -> list[tuple[bytes, bytes]]:
    """The cards of ``prepared`` for ``n`` users (from the ``first``-th), as the fan-out
    encodes them."""
    alert = activate(prepared.alert, key=prepared.key, alert_id=prepared.alert_id, version=1)
    users = [f"user-{i:07d}" for i in range(first, first + n)]
    return CardTemplate(alert).records(users, now_ms())


def _publisher(
    settings_json: str, prepared: PreparedAlert, n: int, first: int, conn: Connection
) -> None:
    cards = cards_of(prepared, n, first)
    conn.send("ready")
    conn.recv()
    asyncio.run(sink_baseline(Settings.model_validate_json(settings_json), cards))
    conn.send(time.time())


def sink_baseline_processes(
    settings: Settings, prepared: PreparedAlert, n: int, processes: int
) -> float:
    """Wall seconds for ``processes`` processes, each with its own sink, to publish ``n``
    cards between them (encoded beforehand) and have them acknowledged: the output alone,
    as parallel as the workers it is set beside."""
    share = -(-n // processes)
    config = settings.model_dump_json()
    started, finished = _race(
        _publisher, [(config, prepared, min(share, n - f), f) for f in range(0, n, share)], "go"
    )
    return max(finished) - started


async def sink_baseline(
    settings: Settings, cards: list[tuple[bytes, bytes]]
) -> tuple[float, float]:
    """Wall seconds and process CPU seconds (librdkafka's threads included) to publish
    ``cards``, encoded beforehand, through the worker's sink to the interstitials topic
    and have them acknowledged: the fan-out's Kafka work without its own. The very cards,
    not filler: the producer compresses (lz4), and 1.4 kB of one byte repeated would cost
    the broker far less than cards do."""
    sink = ConfluentSink(settings)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(cards), 10_000):
            await sink.publish("interstitials", cards[start : start + 10_000])
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        sink.close()


def warm_cover(settings: Settings, cap: bytes) -> tuple[float, PreparedAlert]:
    """The cold cover of ``cap`` (computed once and cached, as ``alertfeed covers warm``):
    how long it took, and the alert prepared."""
    client = redis_client(settings.redis.url, password=None, socket_timeout_s=30)
    prefix = settings.redis.key_prefix
    _, ingest = make_services(
        settings,
        RedisCellIndex(client, prefix=prefix, resolution=10),
        RedisDedupStore(client, prefix=prefix),
        RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW_MS),
        now_ms,
    )
    started = time.perf_counter()
    [prepared] = ingest.prepare(cap)
    return time.perf_counter() - started, prepared


def _seconds(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.1f} s" for v in values) + "]"


def statewide(*fips: str) -> bytes:
    return make_cap_xml(sender=SENDER, geocodes=[("SAME", f"0{f}000") for f in fips])


def run(report: Report, bootstrap: str, redis_url: str, users: int = 1_000_000) -> None:
    with tempfile.TemporaryDirectory() as cover_cache:
        settings = settings_for(bootstrap, redis_url, Path(cover_cache))
        ensure_topics(settings)
        _run_texas(report, settings, users)
        big = settings_for(bootstrap, redis_url, Path(cover_cache))
        ensure_topics(big)
        _run_three_states(report, big, users * 5)


def _run_texas(report: Report, settings: Settings, users: int) -> None:
    points = points_in(state_shape(TEXAS), users, seed=48)
    before = asyncio.run(used_memory(settings))
    asyncio.run(record_presence(settings, points))
    per_user = (asyncio.run(used_memory(settings)) - before) / users
    plain_hash, plain_set = asyncio.run(plain_layouts(settings, users))
    cold, prepared = warm_cover(settings, statewide(TEXAS))
    baseline, baseline_cpu = asyncio.run(sink_baseline(settings, cards_of(prepared, users)))

    one = fan_out_with(settings, statewide(TEXAS), workers=1)
    per_card = one["fan_out_memory"] / max(1, sum(one["cards"]))
    two = fan_out_with(settings, statewide(TEXAS), workers=2)
    for figures in (one, two):
        if sum(figures["cards"]) != users:
            raise AssertionError(f"{figures['cards']} cards for {users} present users")
    for name, figures in (("one worker", one), ("two workers", two)):
        report(
            f"fan-out of a Texas-wide alert to {users:,} present users, {name} (alert bytes "
            f"to last card acked: cached cover {figures['cover_s']:.1f} s + index write "
            f"{figures['install_s']:.1f} s + fan-out; cards per worker {figures['cards']} in "
            f"{_seconds(figures['worker_s'])} of its own fan-out; "
            f"a cold cover adds {cold - figures['cover_s']:.1f} s)",
            figures["total_s"],
            "s",
            f"publish+ack of the same {users:,} cards, encoded beforehand, through the same sink",
            baseline,
        )
    for name, figures in (("one worker", one), ("two workers", two)):
        report(
            f"fan-out CPU per card, {name} (worker processes' CPU over their fan-outs, "
            "librdkafka's threads included; steadier than wall time on a noisy machine)",
            figures["cpu_s"] / users * 1e6,
            "µs",
            "the sink baseline's process CPU per message",
            baseline_cpu / users * 1e6,
        )
    report(
        "fan-out by two workers against two publishing processes (the strongest baseline "
        "here: the output alone, as parallel as the workers)",
        two["total_s"],
        "s",
        f"publish+ack of the same {users:,} cards, encoded beforehand, by two processes",
        sink_baseline_processes(settings, prepared, users, 2),
    )
    report(
        "two workers against one, same fan-out",
        two["total_s"],
        "s",
        "one worker",
        one["total_s"],
    )
    report(
        f"Redis per present user ({users:,} users, INFO used_memory delta)",
        per_user,
        "B",
        "the same ids as fields of one plain hash, 8-byte values",
        plain_hash,
    )
    report(
        "Redis per card recorded (dedup: INFO used_memory delta over the one-worker fan-out, "
        "after the install)",
        per_card,
        "B",
        "one plain set member per card (the ids)",
        plain_set,
    )


def _run_three_states(report: Report, settings: Settings, users: int) -> None:
    lower_48 = [c for c in CensusGazetteer().state_codes() if int(c) < 57 and c not in ("02", "15")]
    points = points_in(state_shape(*lower_48), users, seed=50)
    asyncio.run(record_presence(settings, points))
    three = state_shape(TEXAS, OKLAHOMA, LOUISIANA)
    lats, lons = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    inside = int(shapely.contains_xy(three, lons, lats).sum())
    cap = statewide(TEXAS, OKLAHOMA, LOUISIANA)
    _, prepared = warm_cover(settings, cap)
    baseline, _ = asyncio.run(sink_baseline(settings, cards_of(prepared, inside)))
    two = fan_out_with(settings, cap, workers=2)
    cards = sum(two["cards"])
    if abs(cards - inside) > max(10, inside // 1000):  # the cover's edge: ~75 m
        raise AssertionError(f"{cards} cards, {inside} users inside by shapely")
    report(
        f"fan-out of a three-state alert (TX, OK, LA) to the {cards:,} present users inside, "
        f"of {users:,} over the lower 48, two workers (cards per worker {two['cards']} in "
        f"{_seconds(two['worker_s'])}; "
        f"shapely counts {inside:,} inside)",
        two["total_s"],
        "s",
        f"publish+ack of {inside:,} of the same cards, encoded beforehand, through the same sink",
        baseline,
    )


if __name__ == "__main__":
    # python tests/bench/bench_fanout.py BOOTSTRAP REDIS_URL [USERS]
    run(
        print_report, sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    )
