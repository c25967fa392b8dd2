"""The location join on the in-process twins: policy, expiry and dedup decisions."""

from __future__ import annotations

import asyncio

import h3.api.basic_int as h3i
import orjson

from pipeline.adapters.memory.stores import MemoryCellIndex, MemoryDedupStore, MemoryPresenceStore
from pipeline.domain.targeting.cards import ActiveAlert, event_id
from pipeline.domain.targeting.deadletter import RawEvent
from pipeline.domain.targeting.locations import RawLocations
from pipeline.domain.targeting.matching import Matcher
from pipeline.domain.targeting.policy import AudiencePolicy

NOW = 1_795_400_000_000
RES = 9
AUSTIN = (30.2672, -97.7431)


def alert(key: str = "s|a1", status: str = "Actual", expires_ms: int | None = None) -> ActiveAlert:
    return ActiveAlert(
        key=key,
        alert_id="a1",
        sender="s",
        message_id="a1",
        version=1,
        status=status,
        sent_ms=NOW,
        expires_ms=expires_ms,
        priority=100,
        locale="en-US",
        card={},
    )


def raw(user: str, lat: float, lon: float, ts: int = NOW, offset: int = 0) -> RawEvent:
    value = orjson.dumps({"user_id": user, "lat": lat, "lon": lon, "ts": ts})
    return RawEvent("loc", 0, offset, ts, user.encode(), value)


WINDOW = 30 * 60_000


def area() -> frozenset[int]:
    return frozenset({h3i.cell_to_parent(h3i.latlng_to_cell(*AUSTIN, RES), 6)})


def setup(
    active: ActiveAlert | None, test_users: tuple[str, ...] = (), clock: list[int] | None = None
) -> Matcher:
    index = MemoryCellIndex(resolution=RES)
    if active is not None:
        asyncio.run(index.put_alert(active, area()))
    now = clock if clock is not None else [NOW]
    return Matcher(
        index,
        MemoryDedupStore(),
        AudiencePolicy.of(["s"], test_users),
        presence=MemoryPresenceStore(window_ms=WINDOW),
        resolution=RES,
        max_future_skew_ms=60_000,
        freshness_ms=WINDOW,
        clock_ms=lambda: now[0],
    )


def run(matcher: Matcher, events: list[RawEvent]) -> list[str]:
    async def go() -> list[str]:
        result = await matcher.match(events)
        await matcher.confirm(result)
        return [orjson.loads(v)["user_id"] for _, v in result.cards]

    return asyncio.run(go())


def test_one_card_per_user_within_a_batch_and_across_batches() -> None:
    m = setup(alert())
    assert run(m, [raw("u1", *AUSTIN), raw("u1", *AUSTIN), raw("u2", *AUSTIN)]) == ["u1", "u2"]
    assert run(m, [raw("u1", *AUSTIN), raw("u3", *AUSTIN)]) == ["u3"]


def test_user_far_away_gets_nothing() -> None:
    assert run(setup(alert()), [raw("u1", 29.76, -95.37)]) == []


def test_test_alert_reaches_only_test_users() -> None:
    m = setup(alert(status="Test"), test_users=("qa-1",))
    assert run(m, [raw("public", *AUSTIN), raw("qa-1", *AUSTIN)]) == ["qa-1"]


def test_location_after_expiry_gets_nothing() -> None:
    assert run(setup(alert(expires_ms=NOW - 1)), [raw("u1", *AUSTIN)]) == []


def test_bad_event_is_dead_lettered_and_the_rest_still_match() -> None:
    m = setup(alert())
    bad = RawEvent("loc", 2, 41, NOW, b"k", b"{oops")

    async def go() -> tuple[list[str], list[dict[str, object]]]:
        result = await m.match([bad, raw("u1", *AUSTIN)])
        return [orjson.loads(v)["user_id"] for _, v in result.cards], result.dead_letters

    cards, dead = asyncio.run(go())
    assert cards == ["u1"]
    assert [(d["source"]["partition"], d["source"]["offset"]) for d in dead] == [(2, 41)]  # type: ignore[index]


def test_event_id_is_deterministic_per_alert_and_user() -> None:
    assert event_id("s|a1", "u1") == event_id("s|a1", "u1")
    assert len({event_id("s|a1", "u1"), event_id("s|a1", "u2"), event_id("s|a2", "u1")}) == 3


def test_location_older_than_the_freshness_window_is_ignored_not_dead_lettered() -> None:
    m = setup(alert())

    async def go() -> tuple[int, int, int]:
        result = await m.match([raw("u1", *AUSTIN, ts=NOW - WINDOW - 1)])
        return len(result.cards), len(result.dead_letters), result.stale

    assert asyncio.run(go()) == (0, 0, 1)


def test_fan_out_cards_present_users_inside_and_only_once() -> None:
    clock = [NOW]
    m = setup(None, clock=clock)
    # Three users report before any alert exists; one of them far away, one too long ago.
    assert run(m, [raw("home", *AUSTIN), raw("far", 29.76, -95.37)]) == []
    assert run(m, [raw("old", *AUSTIN, ts=NOW - WINDOW + 1000)]) == []
    clock[0] = NOW + 2000  # "old" is now outside the freshness window
    issued = alert()

    async def fan_out() -> list[str]:
        users = []
        async for result in m.fan_out(issued, area()):
            await m.confirm(result)
            users += [orjson.loads(v)["user_id"] for _, v in result.cards]
        return sorted(users)

    assert asyncio.run(fan_out()) == ["home"]
    assert asyncio.run(fan_out()) == []  # the area grows again: nobody twice


def test_fan_out_never_recards_users_a_location_event_carded_before_or_during_it() -> None:
    index = MemoryCellIndex(resolution=RES)
    m = Matcher(
        index,
        MemoryDedupStore(),
        AudiencePolicy.of(["s"], ()),
        presence=MemoryPresenceStore(window_ms=WINDOW),
        resolution=RES,
        max_future_skew_ms=60_000,
        freshness_ms=WINDOW,
        clock_ms=lambda: NOW,
    )
    users = [f"u{i:05d}" for i in range(25_000)]  # several fan-out chunks
    assert run(m, [raw(u, *AUSTIN, offset=i) for i, u in enumerate(users)]) == []
    issued = alert()
    asyncio.run(index.put_alert(issued, area()))
    assert run(m, [raw("u24999", *AUSTIN)]) == ["u24999"]  # reports before the fan-out

    async def card_batch(events: list[RawEvent]) -> list[str]:
        result = await m.match(events)
        await m.confirm(result)
        return [orjson.loads(v)["user_id"] for _, v in result.cards]

    async def fan_out() -> list[str]:
        carded: list[str] = []
        async for result in m.fan_out(issued, area()):
            await m.confirm(result)
            carded += [orjson.loads(v)["user_id"] for _, v in result.cards]
            if len(carded) == 10_000:  # reports between two chunks, before its own
                assert await card_batch([raw("u20000", *AUSTIN)]) == ["u20000"]
        return carded

    carded = asyncio.run(fan_out())
    assert len(carded) == len(set(carded))
    assert set(carded) == set(users) - {"u24999", "u20000"}


def test_a_batch_held_as_columns_matches_like_the_same_events_one_by_one() -> None:
    """Whether the batch is read at once (all usual) or one by one (a bad or odd event
    among them), RawLocations and a list of the same RawEvents give the same result."""
    usual = [
        raw("u1", *AUSTIN, offset=1),
        raw("u1", *AUSTIN, offset=2),  # carded once
        raw("u2", 29.76, -95.37, offset=3),  # far away
        raw("u3", *AUSTIN, ts=NOW - WINDOW - 1, offset=4),  # stale
    ]
    odd = [
        *usual,
        RawEvent("loc", 2, 41, NOW, b"k", b"{oops"),
        RawEvent("loc", 0, 42, NOW, None, None),
        raw("u4", 30, -97, offset=43),  # valid, an integer latitude: the general reading
        raw("u5", *AUSTIN, offset=44),
    ]
    for events in (usual, odd):
        columns = RawLocations(
            "loc",
            [e.partition for e in events],
            [e.offset for e in events],
            [e.timestamp_ms for e in events],
            [e.key for e in events],
            [e.value for e in events],
        )
        results = [asyncio.run(setup(alert()).match(batch)) for batch in (events, columns)]
        assert results[0] == results[1]
        assert results[0].stale == 1 and len(results[0].dead_letters) == 2 * (events is odd)
        assert len(results[0].cards) == 1 + (events is odd)
