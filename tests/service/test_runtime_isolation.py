"""Per-message isolation in the worker's runtime, on the in-process twins: a message whose
handling raises anything is dead-lettered with its bytes and a reason, and the rest of its
batch goes on; a bug outside any one message is raised, never retried as "Kafka down"."""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from collections.abc import Sequence

import orjson
import pytest

from pipeline.adapters.memory.dedup import MemoryDedupStore
from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.adapters.memory.presence import MemoryPresenceStore
from pipeline.adapters.metrics import Metrics
from pipeline.domain.lifecycle import PreparedAlert
from pipeline.domain.ports import OutTopic
from pipeline.domain.records import RawEvent
from pipeline.entrypoints.wiring import make_services
from pipeline.service.runtime import WorkerRuntime
from pipeline.settings import MatchSettings, PolicySettings, Settings
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json, now_ms

AUSTIN = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]
INSIDE = (30.26, -97.76)


class ListSink:
    """Acknowledges at once and keeps what was published, by logical topic."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.records[topic].extend(records)

    def values(self, topic: str) -> list[dict[str, object]]:
        return [orjson.loads(v) for _, v in self.records[topic]]


class BrokenSink(ListSink):
    """A sink with a bug: every publish raises a TypeError."""

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
        raise TypeError("a bug in the sink")


class DedupWithABug(MemoryDedupStore):
    """Raises a ValueError for one user: a bug that only one event triggers."""

    def __init__(self, cursed_user: str) -> None:
        super().__init__()
        self.cursed_user = cursed_user

    async def unseen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> list[bool]:
        if any(user == self.cursed_user for _, user in pairs):
            raise ValueError("unexpected state")
        return await super().unseen(pairs, partitions, digests)


def runtime(
    sink: ListSink, dedup: MemoryDedupStore | None = None, prepare: object = None
) -> WorkerRuntime:
    settings = Settings(
        policy=PolicySettings(allowed_senders=[TEST_SENDER]),
        match=MatchSettings(cover_cache_mb=0),
    )
    index = MemoryCellIndex(resolution=10)
    presence = MemoryPresenceStore(window_ms=1_800_000)
    matcher, ingest = make_services(settings, index, dedup or MemoryDedupStore(), presence, now_ms)
    return WorkerRuntime(matcher, ingest, Metrics(), sink, prepare=prepare)  # type: ignore[arg-type]


def raw(topic: str, offset: int, value: bytes, key: bytes | None = None) -> RawEvent:
    return RawEvent(topic, 0, offset, now_ms(), key, value)


def alert_bytes() -> bytes:
    return orjson.dumps(make_alert_json(polygons=[AUSTIN]))


def location(user: str) -> bytes:
    lat, lon = INSIDE
    return orjson.dumps({"user_id": user, "lat": lat, "lon": lon, "ts": now_ms()})


def dead_letters(sink: ListSink) -> list[dict[str, object]]:
    return sink.values("dlq")


def test_an_alert_whose_preparation_raises_is_dead_lettered_and_the_next_one_is_issued() -> None:
    sink = ListSink()
    prepare_for_real = runtime(sink).ingest.prepare
    poison = b'<?xml version="1.0" encoding="bogus-8"?><alert/>'

    async def prepare(data: bytes) -> list[PreparedAlert]:
        if data == poison:
            raise LookupError("unknown encoding: bogus-8")
        return prepare_for_real(data)

    rt = runtime(sink, prepare=prepare)
    first, second = alert_bytes(), alert_bytes()
    batch = [raw("alerts", 0, first), raw("alerts", 1, poison), raw("alerts", 2, second)]
    asyncio.run(rt.on_alerts(batch))

    assert [e["state"] for e in sink.values("lifecycle")] == ["issued", "issued"]
    [dead] = dead_letters(sink)
    assert dead["reason_class"] == "internal"
    assert dead["reason"] == "LookupError: unknown encoding: bogus-8"
    assert base64.b64decode(str(dead["value_b64"])) == poison
    assert dead["source"] == {
        "topic": "alerts",
        "logical_topic": "alerts",
        "partition": 0,
        "offset": 1,
        "timestamp_ms": batch[1].timestamp_ms,
    }


def test_a_location_that_triggers_a_bug_is_dead_lettered_alone() -> None:
    sink = ListSink()
    rt = runtime(sink, dedup=DedupWithABug("cursed"))
    asyncio.run(rt.on_alerts([raw("alerts", 0, alert_bytes())]))
    users = ["u1", "cursed", "u2", "u3"]
    batch = [raw("locations", i, location(u), u.encode()) for i, u in enumerate(users)]
    asyncio.run(rt.on_locations(batch))

    carded = {c["user_id"] for c in sink.values("interstitials")}
    assert carded == {"u1", "u2", "u3"}
    [dead] = dead_letters(sink)
    assert dead["reason_class"] == "internal"
    assert dead["reason"] == "ValueError: unexpected state"
    assert base64.b64decode(str(dead["value_b64"])) == batch[1].value
    retries = rt.metrics.registry.get_sample_value(
        "alertfeed_infrastructure_retries_total", {"dependency": "kafka"}
    )
    assert not retries


def test_a_bug_in_the_sink_is_raised_not_retried_as_kafka_down() -> None:
    rt = runtime(BrokenSink())
    with pytest.raises(TypeError, match="a bug in the sink"):
        asyncio.run(rt.on_alerts([raw("alerts", 0, b"not an alert")]))


def test_bad_input_is_still_dead_lettered_with_its_own_reason_class() -> None:
    sink = ListSink()
    asyncio.run(runtime(sink).on_alerts([raw("alerts", 0, b"not an alert")]))
    [dead] = dead_letters(sink)
    assert dead["reason_class"] == "malformed"
    assert isinstance(dead["reason"], str) and "not CAP XML" in dead["reason"]
