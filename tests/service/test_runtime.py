"""The worker's runtime on the in-process twins: what becomes of a batch when Kafka or Redis
fails, when the index has lost its contents, and when something that is not infrastructure
goes wrong; and the presence fan-out.

Per-message isolation (dead-lettering what one message's handling raises) has its own
module, tests/service/test_runtime_isolation.py. The doubles here stand in for ports (the
sink, the cell index, the presence store, the alert log): they fail the way the real
adapters report a failure (with :mod:`pipeline.errors`), a set number of times, and
otherwise behave exactly as the in-process twins they wrap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson
import pytest

from pipeline.adapters.memory.dedup import MemoryDedupStore
from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.adapters.memory.presence import MemoryPresenceStore
from pipeline.adapters.metrics import Metrics
from pipeline.domain.lifecycle import PreparedAlert
from pipeline.domain.ports import CellIndex, DedupStore, OutTopic, PresenceStore
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.cards import ActiveAlert
from pipeline.entrypoints.wiring import make_services
from pipeline.errors import BrokerUnavailable, IndexUnavailable
from pipeline.service.runtime import WorkerRuntime
from pipeline.settings import MatchSettings, PolicySettings, Settings
from tests.conftest import TEST_SENDER, TEST_USERS
from tests.support.factories import make_alert_json, now_ms

# Two nested squares near Austin, TX (lat, lon): SMALL lies well inside BIG.
SMALL = [(30.25, -97.78), (30.25, -97.72), (30.29, -97.72), (30.29, -97.78)]
BIG = [(30.20, -97.85), (30.20, -97.65), (30.34, -97.65), (30.34, -97.85)]
IN_SMALL = (30.27, -97.75)
IN_BIG_ONLY = (30.22, -97.68)
OUTSIDE = (30.50, -97.40)

RUNTIME_LOG = "pipeline.service.runtime"
SMALL_BACKOFF_S = 0.01


# -- doubles of the ports ------------------------------------------------------------------
class ListSink:
    """Acknowledges at once and keeps what was published, by logical topic."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.records[topic].extend(records)

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(v) for _, v in self.records[topic]]


class FlakySink(ListSink):
    """The broker is down for the next ``failures`` publishes to ``topic``: they raise
    BrokerUnavailable and deliver nothing, as the Kafka sink reports it."""

    def __init__(self, topic: OutTopic, failures: int) -> None:
        super().__init__()
        self.topic = topic
        self.failures = failures

    async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
        if topic == self.topic and self.failures:
            self.failures -= 1
            raise BrokerUnavailable("broker down (test double)")
        await super().publish(topic, records)


class FlakyIndex(MemoryCellIndex):
    """The in-process index, whose next ``failures`` lookups raise IndexUnavailable once
    :meth:`fail_next` arms it, as the Redis index reports a lost connection."""

    def __init__(self) -> None:
        super().__init__(resolution=10)
        self.failures = 0
        self.lookups = 0

    def fail_next(self, failures: int) -> None:
        self.failures = failures

    async def alerts_at(self, cells: Sequence[int]) -> list[Sequence[ActiveAlert]]:
        self.lookups += 1
        if self.failures:
            self.failures -= 1
            raise IndexUnavailable("redis down (test double)")
        return await super().alerts_at(cells)


class FlushableIndex:
    """The in-process index behind a switch: :meth:`flush` loses every alert and leaves an
    index that is not built, as a Redis FLUSHDB or a failover to an empty replica does."""

    def __init__(self) -> None:
        self.store = MemoryCellIndex(resolution=10)

    def flush(self) -> None:
        self.store = MemoryCellIndex(resolution=10, built=False)

    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        await self.store.put_alert(alert, cells)

    async def remove_alert(self, key: str) -> bool:
        return await self.store.remove_alert(key)

    async def tombstone(self, key: str, version: int, keep_until_ms: int) -> None:
        await self.store.tombstone(key, version, keep_until_ms)

    async def cancelled_version(self, key: str) -> int | None:
        return await self.store.cancelled_version(key)

    async def owe(self, key: str, version: int, event: bytes, keep_until_ms: int) -> None:
        await self.store.owe(key, version, event, keep_until_ms)

    async def owed(self, key: str) -> tuple[int, bytes] | None:
        return await self.store.owed(key)

    async def paid(self, key: str, version: int) -> None:
        await self.store.paid(key, version)

    async def mark_built(self) -> None:
        await self.store.mark_built()

    async def is_built(self) -> bool:
        return await self.store.is_built()

    async def get_alert(self, key: str) -> ActiveAlert | None:
        return await self.store.get_alert(key)

    async def active_alerts(self) -> list[ActiveAlert]:
        return await self.store.active_alerts()

    async def alerts_at(self, cells: Sequence[int]) -> list[Sequence[ActiveAlert]]:
        return await self.store.alerts_at(cells)

    async def installed(self) -> list[tuple[ActiveAlert, frozenset[int]]]:
        return await self.store.installed()


class BuggyExpiryIndex(MemoryCellIndex):
    """An index adapter with a bug: listing the alerts raises an exception that no adapter
    translated (a library's own ConnectionError), which is not an alertfeed infrastructure
    error and must not be retried as one."""

    def __init__(self) -> None:
        super().__init__(resolution=10)
        self.calls = 0

    async def active_alerts(self) -> list[ActiveAlert]:
        self.calls += 1
        raise ConnectionError("raw library error that no adapter translated")


class ChunkyPresence(MemoryPresenceStore):
    """The in-process presence store, read in chunks of two users; the read after the first
    chunk fails ``failures`` times with IndexUnavailable (Redis lost mid-fan-out)."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(window_ms=1_800_000)
        self.failures = failures

    async def present_in(
        self,
        cover: frozenset[int],
        since_ms: int,
        partitions: frozenset[int] | None,
        chunk: int = 10_000,
    ) -> AsyncIterator[list[str]]:
        first = True
        async for users in super().present_in(cover, since_ms, partitions, chunk=2):
            if not first and self.failures:
                self.failures -= 1
                raise IndexUnavailable("redis down mid-fan-out (test double)")
            first = False
            yield users


class AlertLog:
    """The alerts topic as the rebuild reads it; the next ``failures`` reads raise
    BrokerUnavailable, as :func:`pipeline.adapters.kafka.tools.read_alert_log` does."""

    def __init__(self, messages: Sequence[RawEvent] = (), failures: int = 0) -> None:
        self.messages = list(messages)
        self.failures = failures
        self.reads = 0

    def __call__(self) -> list[RawEvent]:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("broker down while the alert log is read (test double)")
        return list(self.messages)


class LosableDedup:
    """The in-process dedup store behind a switch: :meth:`lose` drops every record (the
    cards and the finished fan-outs), as a Redis FLUSHDB or a failover to an empty replica
    does."""

    def __init__(self) -> None:
        self.store = MemoryDedupStore()

    def lose(self) -> None:
        self.store = MemoryDedupStore()

    async def unseen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> list[bool]:
        return await self.store.unseen(pairs, partitions, digests)

    async def mark_seen(
        self,
        pairs: Sequence[tuple[str, str]],
        partitions: Sequence[int],
        expires_at_ms: Sequence[int],
        digests: Sequence[bytes] | None = None,
    ) -> int:
        return await self.store.mark_seen(pairs, partitions, expires_at_ms, digests)

    def own(self, partitions: frozenset[int]) -> None:
        self.store.own(partitions)

    async def fanned_out(self, alert_key: str, version: int) -> frozenset[int]:
        return await self.store.fanned_out(alert_key, version)

    async def mark_fanned_out(
        self, alert_key: str, version: int, partitions: Sequence[int], keep_until_ms: int
    ) -> None:
        await self.store.mark_fanned_out(alert_key, version, partitions, keep_until_ms)


# -- building and driving a runtime --------------------------------------------------------
def build(
    sink: ListSink,
    *,
    index: CellIndex | None = None,
    presence: PresenceStore | None = None,
    dedup: DedupStore | None = None,
    alert_log: Callable[[], list[RawEvent]] | None = None,
    prepare: Callable[[bytes], Any] | None = None,
    max_backoff_s: float = SMALL_BACKOFF_S,
    fanout_recheck_s: float = 5.0,
) -> WorkerRuntime:
    settings = Settings(
        policy=PolicySettings(allowed_senders=[TEST_SENDER], test_users=list(TEST_USERS)),
        match=MatchSettings(cover_cache_mb=0),
    )
    matcher, ingest = make_services(
        settings,
        index if index is not None else MemoryCellIndex(resolution=10),
        dedup if dedup is not None else MemoryDedupStore(),
        presence if presence is not None else MemoryPresenceStore(window_ms=1_800_000),
        now_ms,
    )
    return WorkerRuntime(
        matcher,
        ingest,
        Metrics(),
        sink,
        max_backoff_s=max_backoff_s,
        fanout_retry_s=SMALL_BACKOFF_S,
        fanout_recheck_s=fanout_recheck_s,
        alert_log=alert_log,
        prepare=prepare,
    )


_offsets = Counter[str]()


def raw(topic: str, value: bytes, key: bytes | None = None) -> RawEvent:
    offset = _offsets[topic]
    _offsets[topic] += 1
    return RawEvent(topic, 0, offset, now_ms(), key, value)


def alert_message(polygon: list[tuple[float, float]], **fields: Any) -> tuple[RawEvent, str]:
    """An alerts-topic message of an alert JSON over ``polygon``, and the alert's id."""
    alert = make_alert_json(polygons=[polygon], sender=TEST_SENDER, **fields)
    return raw("alerts", orjson.dumps(alert), str(alert["id"]).encode()), str(alert["id"])


def follow_up(
    original: RawEvent, msg_type: str, polygon: list[tuple[float, float]]
) -> tuple[RawEvent, str]:
    """An Update or Cancel of ``original``, sent a second later."""
    first = orjson.loads(original.value or b"")
    sent = datetime.fromisoformat(first["sent"]) + timedelta(seconds=1)
    return alert_message(
        polygon,
        msg_type=msg_type,
        sent=sent.astimezone(UTC),
        references=[(TEST_SENDER, first["id"], first["sent"])],
    )


def locations(*where: tuple[str, tuple[float, float]]) -> list[RawEvent]:
    ts = now_ms()
    return [
        raw(
            "locations",
            orjson.dumps({"user_id": u, "lat": p[0], "lon": p[1], "ts": ts}),
            u.encode(),
        )
        for u, p in where
    ]


def carded(sink: ListSink) -> list[str]:
    """The users carded, in publishing order, one entry per card."""
    return [c["user_id"] for c in sink.values("interstitials")]


def states(sink: ListSink) -> list[str]:
    return [e["state"] for e in sink.values("lifecycle")]


def sample(rt: WorkerRuntime, name: str, **labels: str) -> float:
    return rt.metrics.registry.get_sample_value(name, labels) or 0.0


def retries(rt: WorkerRuntime, dependency: str) -> float:
    return sample(rt, "alertfeed_infrastructure_retries_total", dependency=dependency)


def run(*steps: Any) -> None:
    """Run the runtime's coroutines one after the other, in one event loop."""

    async def go() -> None:
        for step in steps:
            await step

    asyncio.run(go())


CROWD = (
    ("in-1", IN_SMALL),
    ("in-2", IN_SMALL),
    ("in-3", IN_BIG_ONLY),
    ("out-1", OUTSIDE),
)
CROWD_INSIDE_BIG = ["in-1", "in-2", "in-3"]


# -- infrastructure failures: retried with capped backoff, nothing lost or doubled --------
@pytest.mark.parametrize(
    ("make_runtime", "dependency"),
    [
        pytest.param(
            lambda: build(FlakySink("interstitials", failures=3)), "kafka", id="broker-down"
        ),
        pytest.param(lambda: build(ListSink(), index=FlakyIndex()), "redis", id="redis-down"),
    ],
)
def test_a_location_batch_outlives_an_outage_and_is_carded_exactly_once(
    make_runtime: Callable[[], WorkerRuntime], dependency: str
) -> None:
    alert, _ = alert_message(BIG)
    batch = locations(*CROWD)
    control = build(ListSink())
    run(control.on_alerts([alert]), control.on_locations(batch))

    rt = make_runtime()
    run(rt.on_alerts([alert]))
    if isinstance(rt.ingest.index, FlakyIndex):
        rt.ingest.index.fail_next(3)
    run(rt.on_locations(batch))

    assert isinstance(rt.sink, ListSink) and isinstance(control.sink, ListSink)
    assert sorted(carded(rt.sink)) == CROWD_INSIDE_BIG, "each user inside once, nobody outside"
    assert rt.sink.records["interstitials"] == control.sink.records["interstitials"], (
        "the cards after the outage are byte for byte the ones without it"
    )
    assert rt.sink.records["dlq"] == [], "nothing was dead-lettered for an outage"
    assert retries(rt, dependency) == 3
    # The batch was recorded as delivered once: the same users reporting again get nothing.
    run(rt.on_locations(locations(*CROWD)))
    assert sorted(carded(rt.sink)) == CROWD_INSIDE_BIG


def test_a_redis_outage_is_counted_as_failed_round_trips() -> None:
    index = FlakyIndex()
    rt = build(ListSink(), index=index)
    alert, _ = alert_message(BIG)
    run(rt.on_alerts([alert]))
    index.fail_next(2)
    run(rt.on_locations(locations(("in-1", IN_SMALL))))
    assert sample(rt, "alertfeed_redis_errors_total") == 2
    assert index.lookups == 3, "two failed lookups, then the one that worked"
    assert isinstance(rt.sink, ListSink) and carded(rt.sink) == ["in-1"]


def retry_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the runtime announced before each retry ("retrying in ...s")."""
    return [
        arg
        for record in caplog.records
        if record.name == RUNTIME_LOG and "retrying in" in str(record.msg)
        for arg in record.args or ()
        if isinstance(arg, float)
    ]


@pytest.mark.parametrize("cap_s", [0.02, 0.25])
def test_retries_back_off_exponentially_and_never_wait_longer_than_the_cap(
    cap_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    index = FlakyIndex()
    rt = build(ListSink(), index=index, max_backoff_s=cap_s)
    alert, _ = alert_message(BIG)
    run(rt.on_alerts([alert]))
    index.fail_next(4)
    with caplog.at_level(logging.WARNING, logger=RUNTIME_LOG):
        run(rt.on_locations(locations(("in-1", IN_SMALL))))

    delays = retry_delays(caplog)
    assert len(delays) == 4, "one announced wait per failed attempt"
    assert all(0 < d <= cap_s for d in delays), f"a wait exceeded the cap {cap_s}s: {delays}"
    for before, after in pairwise(delays):
        assert after == pytest.approx(min(2 * before, cap_s)), f"not doubling to the cap: {delays}"
    assert isinstance(rt.sink, ListSink) and carded(rt.sink) == ["in-1"]


def test_an_alert_announced_through_a_broker_outage_is_announced_once_and_fanned_out() -> None:
    sink = FlakySink("lifecycle", failures=2)
    rt = build(sink)
    run(rt.on_locations(locations(("present", IN_SMALL))))  # before any alert: no card
    assert carded(sink) == []

    alert, alert_id = alert_message(BIG)
    run(rt.on_alerts([alert]))

    assert states(sink) == ["issued"], "the lifecycle event is neither lost nor doubled"
    assert [e["alert_id"] for e in sink.values("lifecycle")] == [alert_id]
    assert carded(sink) == ["present"], "the user already inside got the card by fan-out"
    assert retries(rt, "kafka") == 2


def test_a_cancel_announced_through_a_broker_outage_is_announced_once() -> None:
    sink = ListSink()
    rt = build(sink)
    alert, alert_id = alert_message(BIG)
    run(rt.on_alerts([alert]))
    cancel, cancel_id = follow_up(alert, "Cancel", BIG)

    flaky = FlakySink("lifecycle", failures=2)
    rt.sink = flaky
    run(rt.on_alerts([cancel]))
    assert [(e["state"], e["alert_id"], e["message_id"]) for e in flaky.values("lifecycle")] == [
        ("cancelled", alert_id, cancel_id)
    ]
    run(rt.on_locations(locations(("after", IN_SMALL))))
    assert carded(flaky) == [], "the cancelled alert no longer matches"


# -- an index that lost its contents is rebuilt from the alerts topic ----------------------
def test_a_flushed_index_is_rebuilt_from_the_alert_log_and_matching_resumes() -> None:
    index = FlushableIndex()
    original, original_id = alert_message(SMALL)
    update, update_id = follow_up(original, "Update", BIG)
    other, _ = alert_message(BIG)
    other_cancel, _ = follow_up(other, "Cancel", BIG)
    topic = [original, update, other, other_cancel]
    log = AlertLog(topic)
    sink = ListSink()
    rt = build(sink, index=index, alert_log=log)
    run(rt.on_alerts(topic))
    announced = sink.values("lifecycle")
    assert states(sink) == ["issued", "updated", "issued", "cancelled"]

    index.flush()
    run(rt.on_locations(locations(("grown", IN_BIG_ONLY), ("out", OUTSIDE))))

    [card] = sink.values("interstitials")
    assert card["user_id"] == "grown", "matched against the rebuilt, updated area"
    assert (card["alert_id"], card["message_id"]) == (original_id, update_id)
    assert sink.values("lifecycle") == announced, "the rebuild announced nothing again"
    assert sink.records["dlq"] == []
    assert log.reads == 1
    assert sample(rt, "alertfeed_index_rebuilds_total") == 1


def test_a_rebuild_installs_quietly_and_fans_out_to_nobody() -> None:
    index, dedup = FlushableIndex(), MemoryDedupStore()
    alert, _ = alert_message(BIG)
    sink = ListSink()
    rt = build(sink, index=index, dedup=dedup, alert_log=AlertLog([alert]))
    run(rt.on_locations(locations(*CROWD)))
    run(rt.on_alerts([alert]))
    assert sorted(carded(sink)) == CROWD_INSIDE_BIG  # the live fan-out

    # Redis lost everything: the index and the record of who got which card.
    index.flush()
    dedup.forget_before(2**62)
    run(rt.on_locations(locations(("late", IN_SMALL))))
    assert sorted(carded(sink)) == sorted([*CROWD_INSIDE_BIG, "late"]), (
        "only the user who reported was carded: the rebuild fanned out to nobody again"
    )
    assert states(sink) == ["issued"]


def test_batches_that_all_find_the_index_empty_share_one_rebuild() -> None:
    index = MemoryCellIndex(resolution=10, built=False)
    alert, _ = alert_message(BIG)
    log = AlertLog([alert])
    sink = ListSink()
    rt = build(sink, index=index, alert_log=log)

    async def together() -> None:
        await asyncio.gather(
            rt.on_locations(locations(("a", IN_SMALL))),
            rt.on_locations(locations(("b", IN_BIG_ONLY))),
            rt.on_locations(locations(("c", IN_SMALL))),
        )

    asyncio.run(together())
    assert sorted(carded(sink)) == ["a", "b", "c"]
    assert log.reads == 1
    assert sample(rt, "alertfeed_index_rebuilds_total") == 1


def test_a_broker_outage_while_the_alert_log_is_read_is_retried_not_dead_lettered() -> None:
    index = MemoryCellIndex(resolution=10, built=False)
    alert, _ = alert_message(BIG)
    log = AlertLog([alert], failures=2)
    sink = ListSink()
    rt = build(sink, index=index, alert_log=log)
    run(rt.on_locations(locations(("a", IN_SMALL), ("b", IN_BIG_ONLY))))

    assert sink.records["dlq"] == [], "an outage is not the locations' fault"
    assert sorted(carded(sink)) == ["a", "b"]
    assert log.reads == 3
    assert retries(rt, "kafka") == 2
    assert sample(rt, "alertfeed_index_rebuilds_total") == 1


def test_a_rebuild_passes_over_the_messages_that_were_dead_lettered_when_consumed() -> None:
    poison = b'<?xml version="1.0" encoding="bogus-8"?><alert/>'
    malformed = b"not an alert at all"
    good, good_id = alert_message(BIG)
    sink = ListSink()
    prepare_for_real = build(sink).ingest.prepare

    async def prepare(data: bytes) -> list[PreparedAlert]:
        if data == poison:
            raise LookupError("unknown encoding: bogus-8")
        return prepare_for_real(data)

    topic = [raw("alerts", poison), raw("alerts", malformed), good]
    index = FlushableIndex()
    rt = build(sink, index=index, alert_log=AlertLog(topic), prepare=prepare)
    run(rt.on_alerts(topic))
    assert sorted(d["reason_class"] for d in sink.values("dlq")) == ["internal", "malformed"]

    index.flush()
    run(rt.on_locations(locations(("a", IN_SMALL))))
    assert [(c["user_id"], c["alert_id"]) for c in sink.values("interstitials")] == [("a", good_id)]
    assert len(sink.records["dlq"]) == 2, "nothing was dead-lettered again, no location at all"


def test_without_an_alert_log_an_empty_index_counts_as_built_and_matching_goes_on() -> None:
    sink = ListSink()
    rt = build(sink, index=MemoryCellIndex(resolution=10, built=False))
    run(rt.on_locations(locations(("early", IN_SMALL))))
    assert carded(sink) == [] and sink.records["dlq"] == []

    alert, _ = alert_message(BIG)
    run(rt.on_alerts([alert]), rt.on_locations(locations(("later", IN_BIG_ONLY))))
    assert carded(sink) == ["early", "later"]  # "early" by the fan-out, "later" by location


# -- what is not infrastructure is never retried as if it were ----------------------------
def test_an_untranslated_error_in_the_expiry_timer_is_raised_at_once_not_retried() -> None:
    index = BuggyExpiryIndex()
    rt = build(ListSink(), index=index)
    with pytest.raises(ConnectionError, match="no adapter translated"):
        run(rt.on_tick())
    assert index.calls == 1
    assert retries(rt, "redis") == 0 and retries(rt, "kafka") == 0


def test_a_bug_that_even_dead_lettering_hits_escapes_the_location_batch() -> None:
    class BrokenSink(ListSink):
        """A bug in publishing cards and dead letters (lifecycle events go through)."""

        async def publish(self, topic: OutTopic, records: Sequence[tuple[bytes, bytes]]) -> None:
            if topic in ("interstitials", "dlq"):
                raise TypeError("a bug in the sink")
            await super().publish(topic, records)

    rt = build(BrokenSink())
    run(rt.on_alerts([alert_message(BIG)[0]]))  # nobody present yet: no card to publish
    with pytest.raises(TypeError, match="a bug in the sink"):
        run(rt.on_locations(locations(("in-1", IN_SMALL))))
    assert retries(rt, "kafka") == 0


# -- the presence fan-out -------------------------------------------------------------------
def test_the_fan_out_cards_each_present_user_once_and_an_update_only_the_newly_covered() -> None:
    sink = ListSink()
    rt = build(sink)
    run(rt.on_locations(locations(*CROWD)))
    original, _ = alert_message(SMALL)
    run(rt.on_alerts([original]))
    assert sorted(carded(sink)) == ["in-1", "in-2"]

    run(rt.on_locations(locations(*CROWD)))  # everyone reports again: no second card
    assert sorted(carded(sink)) == ["in-1", "in-2"]

    update, update_id = follow_up(original, "Update", BIG)
    run(rt.on_alerts([update]))
    assert sorted(carded(sink)) == CROWD_INSIDE_BIG, "the grown area reached in-3 only"
    assert sink.values("interstitials")[-1]["message_id"] == update_id
    assert states(sink) == ["issued", "updated"]


def test_a_fan_out_interrupted_by_a_redis_outage_starts_over_and_cards_each_user_once() -> None:
    crowd = [(f"home-{i}", (IN_SMALL[0] + i * 1e-4, IN_SMALL[1])) for i in range(7)]
    alert, _ = alert_message(BIG)
    control = build(ListSink(), presence=ChunkyPresence())
    run(control.on_locations(locations(*crowd)), control.on_alerts([alert]))

    sink = ListSink()
    rt = build(sink, presence=ChunkyPresence(failures=1))
    run(rt.on_locations(locations(*crowd)), rt.on_alerts([alert]))
    assert Counter(carded(sink)) == {u: 1 for u, _ in crowd}
    assert isinstance(control.sink, ListSink)
    assert sorted(sink.records["interstitials"]) == sorted(control.sink.records["interstitials"])
    assert retries(rt, "redis") == 1


def test_a_fan_out_whose_records_redis_lost_is_done_again_with_the_same_cards() -> None:
    sink, dedup = ListSink(), LosableDedup()
    rt = build(sink, dedup=dedup, fanout_recheck_s=0)
    run(rt.on_locations(locations(*CROWD)))
    alert, _ = alert_message(SMALL)
    run(rt.on_alerts([alert]))
    first = sink.records["interstitials"][:]
    assert sorted(carded(sink)) == ["in-1", "in-2"]

    dedup.lose()  # the records of the cards and of the finished fan-out are gone
    run(rt.fan_out_due())
    assert sorted(sink.records["interstitials"]) == sorted(first * 2), "the same cards again"
    run(rt.fan_out_due())
    assert len(carded(sink)) == 4, "recorded finished again: not a third time"


def test_a_test_alert_fans_out_to_the_test_users_only() -> None:
    sink = ListSink()
    rt = build(sink)
    run(rt.on_locations(locations(("public", IN_SMALL), (TEST_USERS[0], IN_SMALL))))
    drill, _ = alert_message(BIG, status="Test")
    run(rt.on_alerts([drill]))
    assert [(c["user_id"], c["status"]) for c in sink.values("interstitials")] == [
        (TEST_USERS[0], "Test")
    ]
