"""The location join on the in-process twins: policy, expiry and dedup decisions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable

import h3.api.basic_int as h3i
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.adapters.memory.dedup import MemoryDedupStore
from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.adapters.memory.presence import MemoryPresenceStore
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.cards import ActiveAlert, CardTemplate, event_id, interstitial
from pipeline.domain.targeting.locations import RawLocations, parse_location, parse_locations
from pipeline.domain.targeting.matching import Matcher
from pipeline.domain.targeting.policy import AudiencePolicy
from pipeline.errors import MalformedEvent
from tests.support.services import ROOT

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
    return matcher_on(index, test_users, clock_ms=lambda: now[0])


def matcher_on(
    index: MemoryCellIndex,
    test_users: tuple[str, ...] = (),
    clock_ms: Callable[[], int] = lambda: NOW,
) -> Matcher:
    return Matcher(
        index,
        MemoryDedupStore(),
        AudiencePolicy.of(["s"], test_users),
        presence=MemoryPresenceStore(window_ms=WINDOW),
        resolution=RES,
        max_future_skew_ms=60_000,
        freshness_ms=WINDOW,
        clock_ms=clock_ms,
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


# Ids as producers send them: printable text, no control characters (locations with a
# control character in the user id are refused, see below).
_IDS = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1)


def card_event_id(card: bytes) -> str:
    return str(orjson.loads(card)["event_id"])


@given(identifier=_IDS, user=_IDS, created_ms=st.integers(0, 2**50))
def test_the_event_id_on_a_card_is_the_one_of_its_alert_and_user(
    identifier: str, user: str, created_ms: int
) -> None:
    """Cards are encoded by a fast template (one per alert version) for matching and
    fan-out alike: its event id must be event_id(alert key, user) for any id a producer
    may send, quotes and non-ASCII included, or consumers could not dedupe on it."""
    active = alert(key=f"s|{identifier}")
    template = CardTemplate(active)
    expected = event_id(active.key, user)
    assert re.fullmatch(r"[0-9a-f]{32}", expected)
    assert card_event_id(template.encode(user, created_ms)) == expected
    [(key, value)] = template.records([user], created_ms)
    assert key == user.encode() and card_event_id(value) == expected
    assert orjson.loads(template.encode(user, created_ms)) == interstitial(active, user, created_ms)


def test_an_update_keeps_the_event_id_of_each_user_card() -> None:
    """One card per (user, alert) across versions: an Update's card is the same event."""
    v1 = alert()
    v2 = dataclasses.replace(v1, version=2, message_id="a1-update", card={"headline": "v2"})
    cards = [CardTemplate(a).encode("u1", NOW) for a in (v1, v2)]
    assert len({card_event_id(c) for c in cards}) == 1


# Senders are the allow-listed addresses of ALERTFEED_POLICY__ALLOWED_SENDERS: no "|", which
# joins sender and identifier into the alert key.
_SENDERS = st.text(
    st.characters(codec="ascii", categories=("L", "N"), include_characters="@.-_"), min_size=1
)


@given(first=st.tuples(_SENDERS, _IDS, _IDS), second=st.tuples(_SENDERS, _IDS, _IDS))
def test_different_alerts_or_users_have_different_event_ids(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    """(sender, identifier, user): the same identifier from two senders is two alerts."""
    if first != second:
        (s1, a1, u1), (s2, a2, u2) = first, second
        assert event_id(f"{s1}|{a1}", u1) != event_id(f"{s2}|{a2}", u2)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("s|a1", "2u"), ("s|a12", "u")),
        (("s|a", "b|c"), ("s|a|b", "c")),
        (("s|a1", "u1"), ("s|a1", "u1 ")),
    ],
)
def test_pairs_that_read_alike_once_joined_have_different_event_ids(
    one: tuple[str, str], other: tuple[str, str]
) -> None:
    assert event_id(*one) != event_id(*other)


def test_a_user_id_that_could_make_two_event_ids_collide_is_refused() -> None:
    """event_id joins the alert key and the user id with \x1f, so ("s|a", "\x1fb") and
    ("s|a\x1f", "b") would share one id. A user id with a control character never gets
    that far: the location is dead-lettered, by the batch path and the single path alike."""
    assert event_id("s|a", "\x1fb") == event_id("s|a\x1f", "b")  # why the rule exists
    now = 1_795_400_000_000
    event = {"user_id": "\x1fb", "lat": 30.26, "lon": -97.76, "ts": now}
    with pytest.raises(MalformedEvent, match="control characters"):
        parse_location(orjson.dumps(event), now_ms=now, max_future_skew_ms=0)
    batch = [orjson.dumps({**event, "user_id": "u1"}), orjson.dumps(event)]
    assert parse_locations(batch, now_ms=now, max_future_skew_ms=0) is None


def test_the_event_id_is_the_same_in_another_process() -> None:
    """A card re-sent by a restarted or another worker must carry the same id (so no
    per-process salt such as Python's str hash may enter it)."""
    pairs = [("s|a1", "u1"), ("amber@ncmec.org|AMBER-TX-1", "user-ß-ü-42")]
    script = (
        "import json, sys\n"
        "from pipeline.domain.targeting.cards import event_id\n"
        "print(json.dumps([event_id(k, u) for k, u in json.load(sys.stdin)]))\n"
    )
    elsewhere = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(pairs),
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(elsewhere.stdout) == [event_id(k, u) for k, u in pairs]


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
        async for result in m.fan_out(issued, area(), None):
            await m.confirm(result)
            users += [orjson.loads(v)["user_id"] for _, v in result.cards]
        return sorted(users)

    assert asyncio.run(fan_out()) == ["home"]
    assert asyncio.run(fan_out()) == []  # the area grows again: nobody twice


def test_fan_out_never_recards_users_a_location_event_carded_before_or_during_it() -> None:
    index = MemoryCellIndex(resolution=RES)
    m = matcher_on(index)
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
        async for result in m.fan_out(issued, area(), None):
            await m.confirm(result)
            carded += [orjson.loads(v)["user_id"] for _, v in result.cards]
            if len(carded) == 10_000:  # reports between two chunks, before its own
                assert await card_batch([raw("u20000", *AUSTIN)]) == ["u20000"]
        return carded

    carded = asyncio.run(fan_out())
    assert len(carded) == len(set(carded))
    assert set(carded) == set(users) - {"u24999", "u20000"}


def users_of(cards: list[tuple[bytes, bytes]]) -> list[str]:
    return [orjson.loads(v)["user_id"] for _, v in cards]


def test_a_batch_carded_before_the_previous_one_is_confirmed_does_not_card_its_pairs() -> None:
    """The worker cards the next batch while the broker acknowledges the previous one's
    cards: a pair carded there and not yet confirmed is not carded again; once the
    previous result is released unconfirmed (its publishing failed, the batch is redone),
    it is."""
    m = setup(alert())

    async def go() -> None:
        first = await m.match([raw("u1", *AUSTIN), raw("u2", *AUSTIN)])
        assert users_of(first.cards) == ["u1", "u2"]
        second = await m.match([raw("u1", *AUSTIN), raw("u3", *AUSTIN)])
        assert users_of(second.cards) == ["u3"]
        assert second.duplicates == 1
        m.release(first)  # never confirmed
        again = await m.match([raw("u1", *AUSTIN), raw("u2", *AUSTIN)])
        assert users_of(again.cards) == ["u1", "u2"]
        await m.confirm(again)
        await m.confirm(second)
        assert users_of((await m.match([raw(u, *AUSTIN) for u in ("u1", "u2", "u3")])).cards) == []

    asyncio.run(go())


def test_a_fan_out_leaves_out_the_pairs_a_location_batch_carded_and_has_not_confirmed() -> None:
    index = MemoryCellIndex(resolution=RES)
    m = matcher_on(index)
    assert run(m, [raw("home", *AUSTIN), raw("other", *AUSTIN)]) == []
    issued = alert()
    asyncio.run(index.put_alert(issued, area()))

    async def go() -> list[str]:
        in_flight = await m.match([raw("home", *AUSTIN, ts=NOW + 1)])  # not yet confirmed
        assert users_of(in_flight.cards) == ["home"]
        carded: list[str] = []
        async for result in m.fan_out(issued, area(), None):
            await m.confirm(result)
            carded += users_of(result.cards)
        await m.confirm(in_flight)
        return carded

    assert asyncio.run(go()) == ["other"]


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
