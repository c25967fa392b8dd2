"""The design rule "every Redis key works unchanged on Redis Cluster", stated directly.

The contract modules run every Redis adapter on a real three-master cluster; this test
runs one alert's whole path there (install, match through Redis and through a worker's
replica of the index, presence, fan-out, dedup, reach, cancel) and checks the keys it
left: each follows a layout documented in its adapter's module docstring, every
documented layout is used, an alert's own keys share one slot, and the keys are spread
over the masters, so the adapters really crossed nodes.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import h3.api.basic_int as h3i
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from pipeline.adapters.redis import dedup as redis_dedup
from pipeline.adapters.redis import index as redis_index
from pipeline.adapters.redis import presence as redis_presence
from pipeline.adapters.redis import reach as redis_reach
from pipeline.adapters.redis.dedup import RedisDedupStore
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.adapters.redis.reach import RedisReachStore
from pipeline.adapters.redis.replica import ReplicatedCellIndex
from pipeline.domain.models import Sighting
from pipeline.domain.reach import AlertFacts
from tests.support.factories import make_active_alert, now_ms

RES = 10
WINDOW = 30 * 60_000
AUSTIN = (30.2672, -97.7431)
DALLAS = (32.7767, -96.7970)
ALERT = "amber@dps.texas.example|TX-1"


def documented_layouts(prefix: str) -> dict[str, re.Pattern[str]]:
    """The key layouts of the Redis adapters' module docstrings (``p:alert:{K}``, ...),
    each as a pattern over real keys under ``prefix``."""
    layouts: dict[str, re.Pattern[str]] = {}
    for module in (redis_index, redis_dedup, redis_presence, redis_reach):
        for layout in re.findall(r"^\s+(p:(?:<[^>]*>|[^\s<])+)", module.__doc__ or "", re.M):
            parts = re.split(r"(\{[^}]+\}|<[^>]+>|\b[A-Z]\b)", layout[1:])
            layouts[layout] = re.compile(re.escape(prefix) + "".join(map(_placeholder, parts)))
    return layouts


def _placeholder(part: str) -> str:
    if part.startswith("{"):  # a hash tag: {K}, {user}
        return r"\{[^{}]+\}"
    if part.startswith("<") or re.fullmatch(r"[A-Z]", part):  # <cell hex>, V
        return r"[^:{}]+"
    return re.escape(part)


def test_one_alerts_whole_path_keeps_every_key_single_slot_and_documented(  # noqa: PLR0915 - one scenario writes every documented key
    redis_cluster: str, connect: Callable[[str], Any]
) -> None:
    prefix = f"kc{uuid.uuid4().hex[:8]}"
    now = now_ms()
    austin = h3i.latlng_to_cell(*AUSTIN, RES)
    dallas = h3i.latlng_to_cell(*DALLAS, RES)
    cover = frozenset({h3i.cell_to_parent(austin, 6)})

    async def scenario(client: RedisCluster) -> dict[str, list[str]]:
        index = RedisCellIndex(client, prefix=prefix, resolution=RES)
        dedup = RedisDedupStore(client, prefix=prefix)
        presence = RedisPresenceStore(client, prefix=prefix, window_ms=WINDOW)
        reach_store = RedisReachStore(client, prefix=prefix)
        expires = now + 3_600_000

        await index.mark_built()
        await index.put_alert(make_active_alert(ALERT, 1, expires_ms=expires), cover)
        await index.put_alert(make_active_alert(ALERT, 2, expires_ms=expires), cover)
        await reach_store.track(AlertFacts(ALERT, "TX-1", "Actual", "issued", now, expires))
        await presence.record([Sighting("u1", dallas, now - 1), Sighting("u2", dallas, now)])
        await presence.record([Sighting("u1", austin, now)])  # u1 moves to the alert's area
        [hits] = await index.alerts_at([austin])
        assert [(a.key, a.version) for a in hits] == [(ALERT, 2)]
        # The replica reads the rebuild marker, the change count (p:version, written by
        # each put_alert), the registry, the records and the covers.
        [hits] = await ReplicatedCellIndex(index).alerts_at([austin])
        assert [(a.key, a.version) for a in hits] == [(ALERT, 2)]

        mine = frozenset({0})
        users = [u async for c in presence.present_in(cover, now - WINDOW, mine) for u in c]
        assert users == ["u1"]
        pairs = [(ALERT, u) for u in users]
        assert await dedup.unseen(pairs, [0]) == [True]
        assert await dedup.mark_seen(pairs, [0], [expires]) == 1
        assert await dedup.unseen(pairs, [0]) == [False]
        await dedup.mark_fanned_out(ALERT, 2, [0], expires)
        assert await dedup.fanned_out(ALERT, 2) == frozenset({0})
        assert await reach_store.add_cards({ALERT: 1}, now) == {ALERT: 1}

        await index.tombstone(ALERT, 3, expires)
        assert await index.cancelled_version(ALERT) == 3
        await index.owe(ALERT, 3, b'{"state":"cancelled"}', expires)
        assert await index.owed(ALERT) == (3, b'{"state":"cancelled"}')
        assert await index.is_built() is True

        keys_by_node: dict[str, list[str]] = {}
        for node in client.get_primaries():
            keys = await client.execute_command("KEYS", f"{prefix}:*", target_nodes=node)
            keys_by_node[node.name] = sorted(k.decode() for k in keys)
        return keys_by_node

    async def main() -> dict[str, list[str]]:
        client = connect("redis-cluster")
        assert isinstance(client, RedisCluster)
        try:
            return await scenario(client)
        finally:
            await client.aclose()

    keys_by_node = asyncio.run(main())
    keys = [key for node_keys in keys_by_node.values() for key in node_keys]

    layouts = documented_layouts(prefix)
    undocumented = [k for k in keys if not any(p.fullmatch(k) for p in layouts.values())]
    assert undocumented == []
    unused = [name for name, p in layouts.items() if not any(p.fullmatch(k) for k in keys)]
    assert unused == []

    alert_keys = [k for k in keys if f"{{{ALERT}}}" in k]
    # record, cover, tombstone, owed event, seen log, finished fan-outs, reach hash
    assert len(alert_keys) == 7
    assert len({key_slot(k.encode()) for k in alert_keys}) == 1
    assert sum(1 for node_keys in keys_by_node.values() if node_keys) > 1
