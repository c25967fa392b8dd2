"""The alert lifecycle state machine (pipeline/domain/lifecycle.py) on the in-process index:
versions by ``sent``, Updates, Cancels and their tombstones, out-of-order delivery, expiry.

Every message here is alert JSON with a polygon near Austin, TX; what a test checks is what
the index answers for a place (which alert, which message of it) and which lifecycle events
are announced, never how the state machine stores things.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import h3.api.basic_int as h3i
import orjson

from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.domain.geo.areas import cover_alert
from pipeline.domain.geo.cover import CoverLimits
from pipeline.domain.lifecycle import AlertIngest, Applied
from pipeline.domain.models import Geocode
from pipeline.domain.targeting.policy import AudiencePolicy
from pipeline.settings import MatchSettings
from tests.support.factories import make_alert_json
from tests.support.schemas import assert_valid

SENDER = "amber@dps.texas.example"
RES = 9
# Two nested squares near Austin, TX (lat, lon): SMALL lies well inside BIG.
SMALL = [(30.25, -97.78), (30.25, -97.72), (30.29, -97.72), (30.29, -97.78)]
BIG = [(30.20, -97.85), (30.20, -97.65), (30.34, -97.65), (30.34, -97.85)]
IN_SMALL = (30.27, -97.75)
IN_BIG_ONLY = (30.22, -97.68)

T0 = datetime(2026, 3, 2, 15, 0, 0, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def no_geocodes(codes: Sequence[Geocode]) -> Any:
    raise AssertionError(f"these tests' alerts have polygons only, not {codes}")


@dataclass
class Clock:
    now: datetime

    def ms(self) -> int:
        return ms(self.now)


class Lifecycle:
    """One ingest on an in-process index, driven message by message."""

    def __init__(self, clock: Clock, index: MemoryCellIndex | None = None) -> None:
        self.clock = clock
        self.index = index or MemoryCellIndex(resolution=RES)
        limits = MatchSettings()
        cover = partial(
            cover_alert,
            resolution=RES,
            limits=CoverLimits(limits.max_vertices, limits.max_shapes, limits.max_cells),
            resolve_geocodes=no_geocodes,
        )
        self.ingest = AlertIngest(self.index, AudiencePolicy.of([SENDER], []), cover, clock.ms)

    def apply(self, message: dict[str, Any], *, replay: bool = False) -> list[Applied | None]:
        prepared = self.ingest.prepare(orjson.dumps(message))

        async def go() -> list[Applied | None]:
            return [await self.ingest.apply(item, replay=replay) for item in prepared]

        return asyncio.run(go())

    def announced(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The lifecycle events that applying ``message`` announces, each schema-checked,
        and then recorded as announced (as the runtime does once it published them)."""
        applied = [a for a in self.apply(message) if a is not None]

        async def paid() -> None:
            for a in applied:
                await self.ingest.announced(a)

        asyncio.run(paid())
        events = [a.lifecycle for a in applied]
        for event in events:
            assert_valid("lifecycle", event)
        return events

    def expire_due(self) -> list[dict[str, Any]]:
        events = asyncio.run(self.ingest.expire_due())
        for event in events:
            assert_valid("lifecycle", event)
        return events

    def at(self, where: tuple[float, float]) -> list[tuple[str, str]]:
        """(alert id, message id in force) of each alert matching a user at ``where``."""
        cell = h3i.latlng_to_cell(where[0], where[1], RES)
        [found] = asyncio.run(self.index.alerts_at([cell]))
        return [(a.alert_id, a.message_id) for a in found]


def alert(
    polygon: list[tuple[float, float]], *, sent: datetime = T0, **fields: Any
) -> dict[str, Any]:
    return make_alert_json(polygons=[polygon], sender=SENDER, sent=sent, **fields)


def follow_up(
    of: dict[str, Any],
    msg_type: str,
    *,
    sent: datetime,
    polygon: list[tuple[float, float]] = BIG,
    **fields: Any,
) -> dict[str, Any]:
    """An Update or Cancel of ``of``, sent at ``sent``."""
    references = [(SENDER, of["id"], of["sent"])]
    return alert(polygon, sent=sent, msg_type=msg_type, references=references, **fields)


def states(events: list[dict[str, Any]]) -> list[str]:
    return [e["state"] for e in events]


def test_an_alert_is_issued_at_the_version_of_its_sent_time_over_its_area() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(SMALL)
    [event] = life.announced(original)
    assert (event["state"], event["alert_id"], event["message_id"]) == (
        "issued",
        original["id"],
        original["id"],
    )
    assert event["version"] == ms(T0)
    assert event["cells"] > 0
    assert life.at(IN_SMALL) == [(original["id"], original["id"])]
    assert life.at(IN_BIG_ONLY) == []


def test_an_update_replaces_the_area_and_the_message_in_force() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(SMALL)
    update = follow_up(original, "Update", sent=T0 + timedelta(seconds=10))
    life.apply(original)
    [event] = life.announced(update)
    assert (event["state"], event["alert_id"], event["message_id"]) == (
        "updated",
        original["id"],
        update["id"],
    )
    assert event["version"] == ms(T0 + timedelta(seconds=10))
    assert life.at(IN_BIG_ONLY) == [(original["id"], update["id"])]
    assert life.at(IN_SMALL) == [(original["id"], update["id"])]


def test_a_shrinking_update_stops_matching_where_the_alert_no_longer_reaches() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(BIG)
    life.apply(original)
    life.apply(follow_up(original, "Update", sent=T0 + timedelta(seconds=10), polygon=SMALL))
    assert life.at(IN_BIG_ONLY) == []
    assert [a for a, _ in life.at(IN_SMALL)] == [original["id"]]


def test_an_older_message_never_overwrites_a_newer_one() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(SMALL)
    newer = follow_up(original, "Update", sent=T0 + timedelta(seconds=20), polygon=BIG)
    older = follow_up(original, "Update", sent=T0 + timedelta(seconds=10), polygon=SMALL)
    assert states(life.announced(original) + life.announced(newer)) == ["issued", "updated"]

    assert life.announced(older) == [], "delivered late, sent earlier: ignored"
    assert life.announced(original) == [], "a redelivered message changes nothing"
    assert life.at(IN_BIG_ONLY) == [(original["id"], newer["id"])]


def test_an_update_that_overtakes_its_alert_is_issued_and_the_late_alert_is_ignored() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(SMALL)
    update = follow_up(original, "Update", sent=T0 + timedelta(seconds=5), polygon=BIG)
    [event] = life.announced(update)
    assert (event["state"], event["alert_id"], event["message_id"]) == (
        "issued",
        original["id"],
        update["id"],
    )
    assert life.announced(original) == []
    assert life.at(IN_BIG_ONLY) == [(original["id"], update["id"])]


def test_a_cancel_removes_the_alert_at_once_and_a_late_alert_or_update_stays_out() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(BIG)
    cancel = follow_up(original, "Cancel", sent=T0 + timedelta(seconds=10))
    life.apply(original)
    [event] = life.announced(cancel)
    assert (event["state"], event["alert_id"], event["message_id"]) == (
        "cancelled",
        original["id"],
        cancel["id"],
    )
    assert event["version"] == ms(T0 + timedelta(seconds=10))
    assert life.at(IN_SMALL) == []

    late_update = follow_up(original, "Update", sent=T0 + timedelta(seconds=5))
    update_after_cancel = follow_up(original, "Update", sent=T0 + timedelta(seconds=30))
    for late in (original, late_update, update_after_cancel, cancel):
        assert life.announced(late) == [], "a cancelled alert stays cancelled"
    assert life.at(IN_SMALL) == [] and life.at(IN_BIG_ONLY) == []


def test_a_cancel_that_overtakes_its_alert_keeps_the_alert_out_and_announces_nothing() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(BIG)
    cancel = follow_up(original, "Cancel", sent=T0 + timedelta(seconds=10))
    assert life.announced(cancel) == [], "nothing was installed, so nothing was cancelled"
    assert life.announced(original) == []
    assert life.at(IN_SMALL) == []


def test_a_cancel_older_than_the_update_in_force_changes_nothing() -> None:
    life = Lifecycle(Clock(T0 + timedelta(minutes=1)))
    original = alert(SMALL)
    update = follow_up(original, "Update", sent=T0 + timedelta(seconds=20))
    stale_cancel = follow_up(original, "Cancel", sent=T0 + timedelta(seconds=10))
    life.apply(original)
    life.apply(update)
    assert life.announced(stale_cancel) == []
    assert life.at(IN_BIG_ONLY) == [(original["id"], update["id"])]


def test_an_alert_whose_expiry_has_passed_is_never_installed() -> None:
    life = Lifecycle(Clock(T0))
    stale = alert(BIG, sent=T0 - timedelta(hours=7), expires_in=timedelta(hours=6))
    assert life.announced(stale) == []
    assert life.at(IN_SMALL) == []


def test_an_expired_update_leaves_the_version_in_force_alone() -> None:
    clock = Clock(T0 + timedelta(minutes=1))
    life = Lifecycle(clock)
    original = alert(SMALL, expires_in=timedelta(hours=6))
    life.apply(original)
    expired_update = follow_up(
        original, "Update", sent=T0 + timedelta(seconds=10), expires_in=timedelta(seconds=20)
    )
    clock.now = T0 + timedelta(minutes=2)
    assert life.announced(expired_update) == []
    assert life.at(IN_SMALL) == [(original["id"], original["id"])]
    assert life.at(IN_BIG_ONLY) == []


def test_expire_due_removes_each_alert_once_when_its_time_comes() -> None:
    clock = Clock(T0 + timedelta(minutes=1))
    life = Lifecycle(clock)
    short = alert(SMALL, expires_in=timedelta(minutes=10))
    long = alert(BIG, expires_in=timedelta(hours=6))
    life.apply(short)
    life.apply(long)
    assert life.expire_due() == [], "nothing is due yet"

    clock.now = T0 + timedelta(minutes=11)
    [event] = life.expire_due()
    assert (event["state"], event["alert_id"]) == ("expired", short["id"])
    assert life.at(IN_SMALL) == [(long["id"], long["id"])]
    assert life.expire_due() == [], "an expiry is announced once"

    clock.now = T0 + timedelta(hours=7)
    assert [e["alert_id"] for e in life.expire_due()] == [long["id"]]
    assert life.at(IN_SMALL) == [] and life.at(IN_BIG_ONLY) == []


def test_workers_sharing_an_index_announce_each_expiry_once_between_them() -> None:
    clock = Clock(T0 + timedelta(minutes=1))
    index = MemoryCellIndex(resolution=RES)
    first, second = Lifecycle(clock, index), Lifecycle(clock, index)
    due = alert(BIG, expires_in=timedelta(minutes=5))
    first.apply(due)
    clock.now = T0 + timedelta(minutes=6)
    events = first.expire_due() + second.expire_due()
    assert [(e["state"], e["alert_id"]) for e in events] == [("expired", due["id"])]


def test_a_replay_installs_the_same_state_and_announces_nothing() -> None:
    clock = Clock(T0 + timedelta(minutes=1))
    original = alert(SMALL)
    update = follow_up(original, "Update", sent=T0 + timedelta(seconds=10))
    other = alert(BIG)
    other_cancel = follow_up(other, "Cancel", sent=T0 + timedelta(seconds=10))
    topic = [original, update, other, other_cancel]

    live, rebuilt = Lifecycle(clock), Lifecycle(clock)
    for message in topic:
        live.apply(message)
        assert rebuilt.apply(message, replay=True) == [None]
    for where in (IN_SMALL, IN_BIG_ONLY):
        assert rebuilt.at(where) == live.at(where) == [(original["id"], update["id"])]
    assert rebuilt.announced(other) == [], "the rebuilt index remembers the cancel"
