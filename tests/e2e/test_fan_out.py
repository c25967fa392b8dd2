"""The presence fan-out of a state-wide alert, carded by several workers together, end to
end on the real broker and Redis with real worker processes.

Users report once from all over Texas and its neighbours, then an AMBER Alert for all of
Texas arrives as CAP (SAME 048000, the Census boundary). Each worker cards the present
users of the locations partitions it owns. Who is inside is decided independently, with
shapely on the state's boundary, and users are kept at least ``MARGIN_M`` from it (a
resolution-10 cover may overshoot by about 75 m).

A wait ends on an observable outcome: the lifecycle topic, the cards on the
interstitials topic, the workers' /metrics, the locations group's assignment.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.ops import unary_union

from pipeline.adapters.census import CensusGazetteer
from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import MatchSettings, Settings
from tests.conftest import TEST_SENDER
from tests.e2e.test_two_workers import (
    LatLon,
    all_cards,
    assert_on_every_partition,
    cards_out,
    lifecycle,
    location_owners,
    publish_alert,
    publish_users,
    twin,
    wait,
    wait_drained,
    wait_sharing,
)
from tests.support.factories import make_alert_json, make_cap_xml
from tests.support.kafka import produce
from tests.support.live_replay import metric
from tests.support.services import Services
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

StartWorker = Callable[[Settings], WorkerProcess]

WORKERS = 3
PARTITIONS = 6
MARGIN_M = 2_000.0
TEXAS = unary_union(
    [
        ShapelyPolygon([(lon, lat) for lat, lon in p.exterior])
        for p in CensusGazetteer().state("48") or ()
    ]
)
# Texas and around it: Oklahoma, New Mexico, Louisiana, Arkansas, Mexico, the Gulf.
AROUND = (25.0, -107.5, 37.5, -92.5)  # south, west, north, east


def crowd(n: int, seed: int) -> tuple[dict[str, LatLon], set[str]]:
    """``n`` users spread over ``AROUND``, clear of the state's boundary; and the ones
    inside Texas."""
    rng = random.Random(seed)
    south, west, north, east = AROUND
    edge = TEXAS.boundary
    users: dict[str, LatLon] = {}
    inside: set[str] = set()
    while len(users) < n:
        lat, lon = round(rng.uniform(south, north), 5), round(rng.uniform(west, east), 5)
        # Degrees to metres, roughly (a degree of longitude shrinks with latitude): the
        # margin only needs to be generous.
        if edge.distance(Point(lon, lat)) * 111_000 * 0.8 < MARGIN_M:
            continue
        user = f"u{seed}-{len(users):05d}"
        users[user] = (lat, lon)
        if TEXAS.contains(Point(lon, lat)):
            inside.add(user)
    return users, inside


def fan_out_settings(make_settings: Callable[..., Settings], **match: Any) -> Settings:
    settings = make_settings(
        match=MatchSettings(batch_size=500, batch_within_s=0.05, fanout_poll_s=0.2, **match)
    )
    settings = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"partitions": PARTITIONS})}
    )
    ensure_topics(settings)
    return settings


def start_fleet(s: Settings, start_worker: StartWorker, tmp_path: Path) -> list[WorkerProcess]:
    workers = [start_worker(s)] + [start_worker(twin(s, tmp_path)) for _ in range(WORKERS - 1)]
    wait_sharing(s, workers)
    return workers


def make_present(s: Settings, workers: Sequence[WorkerProcess], users: dict[str, LatLon]) -> None:
    """Every user reports once, before any alert: present, and carded by nobody."""
    publish_users(s, users)
    assert_on_every_partition(s, users)
    wait_drained(s, workers, "the present users")
    assert all_cards(s) == []


def publish_texas(s: Settings) -> str:
    """The state-wide AMBER Alert; its alert id."""
    identifier = f"TX-AMBER-{time.time_ns():x}"
    cap = make_cap_xml(sender=TEST_SENDER, geocodes=[("SAME", "048000")], identifier=identifier)
    produce(s, s.topics.alerts, [(identifier.encode(), cap)])
    return identifier


def fan_outs(worker: WorkerProcess, outcome: str) -> float:
    return metric(worker, "alertfeed_fanouts_total", outcome=outcome)


def event_ids_by_user(s: Settings) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for card in all_cards(s):
        out[card["user_id"]].add(card["event_id"])
    return out


def wait_all_carded(
    s: Settings, workers: Sequence[WorkerProcess], inside: set[str], what: str
) -> None:
    def carded() -> bool:
        return inside <= set(event_ids_by_user(s))

    wait(what, carded, workers, timeout_s=180)


def fanned_partitions(services: Services, s: Settings, alert_id: str) -> set[int]:
    """The partitions whose fan-out of the alert is recorded finished, read from Redis (the
    documented ``p:fanned:{K}`` set of ``<version>:<partition>``)."""
    client = redis.Redis.from_url(services.redis_url)
    try:
        members = client.smembers(f"{s.redis.key_prefix}:fanned:{{{TEST_SENDER}|{alert_id}}}")
    finally:
        client.close()
    return {int(m.decode().rsplit(":", 1)[1]) for m in members}


# -- the tests -----------------------------------------------------------------------------
def test_a_statewide_fan_out_over_three_workers_cards_everyone_inside_once_and_nobody_else(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tmp_path: Path
) -> None:
    """Three workers card the present users of Texas together: each present user inside
    exactly once, nobody outside, every worker some of them; and a third of the users,
    reporting again while the fan-out runs, still get exactly one card."""
    s = fan_out_settings(make_settings, fanout_chunk=25, fanout_hold_chunks=1)
    workers = start_fleet(s, start_worker, tmp_path)
    users, inside = crowd(9000, seed=1)
    assert 0.3 < len(inside) / len(users) < 0.7, len(inside)
    make_present(s, workers, users)

    alert_id = publish_texas(s)
    [issued] = lifecycle(s, ["issued"])
    assert issued["resolution"] == 10
    # While it fans out, a third of the users report again, from where they are.
    again = dict(list(users.items())[::3])
    rounds = 0
    while sum(fan_outs(w, "done") for w in workers) < PARTITIONS and rounds < 20:
        publish_users(s, again)
        rounds += 1
    wait(
        "every partition's fan-out done",
        lambda: sum(fan_outs(w, "done") for w in workers) >= PARTITIONS,
        workers,
        timeout_s=180,
    )
    wait_drained(s, workers, "the users reporting during the fan-out")
    wait_all_carded(s, workers, inside, "every present user inside carded")

    cards = all_cards(s)
    per_user = Counter(c["user_id"] for c in cards)
    outside = sorted(set(per_user) - inside)
    assert not outside, f"{len(outside)} users outside Texas were carded: {outside[:5]}"
    twice = sorted(u for u, n in per_user.items() if n > 1)
    assert not twice, f"{len(twice)} users got more than one card: {twice[:5]}"
    assert {c["alert_id"] for c in cards} == {alert_id}
    produced = [cards_out(w) for w in workers]
    assert all(p > 0 for p in produced), f"cards per worker: {produced}"
    assert sum(produced) == len(inside)
    print(
        f"\n{len(inside)} inside, {rounds} rounds of reports during it, cards per worker {produced}"
    )


def test_a_worker_sigkilled_mid_fan_out_loses_no_user_and_duplicates_keep_their_event_id(
    make_settings: Callable[..., Settings],
    start_worker: StartWorker,
    tmp_path: Path,
    services: Services,
) -> None:
    s = fan_out_settings(make_settings, fanout_chunk=20, fanout_hold_chunks=1)
    workers = start_fleet(s, start_worker, tmp_path)
    users, inside = crowd(9000, seed=2)
    make_present(s, workers, users)
    owners = location_owners(s)
    assert owners is not None

    victim = workers[1]
    alert_id = publish_texas(s)
    wait("the victim carding", lambda: cards_out(victim) > 0, workers, timeout_s=180)
    # Proof of "mid": the victim had not finished the fan-outs of all its partitions.
    finished = fan_outs(victim, "done")
    victim.kill()
    assert finished < PARTITIONS // WORKERS, "the victim had finished its fan-outs"
    assert sorted(map(len, owners)) == [PARTITIONS // WORKERS] * WORKERS, owners

    survivors = [w for w in workers if w is not victim]
    wait_sharing(s, survivors)
    wait_all_carded(s, survivors, inside, "every present user inside carded after the kill")
    wait(
        "every partition's fan-out recorded finished",
        lambda: fanned_partitions(services, s, alert_id) == set(range(PARTITIONS)),
        survivors,
        timeout_s=120,
    )
    ids = event_ids_by_user(s)
    outside = sorted(set(ids) - inside)
    assert not outside, f"{len(outside)} users outside Texas were carded: {outside[:5]}"
    differing = sorted(u for u, found in ids.items() if len(found) > 1)
    assert not differing, f"duplicates with another event_id: {differing[:5]}"
    cards = all_cards(s)
    print(f"\n{len(inside)} inside, {len(cards)} cards ({len(cards) - len(ids)} duplicates)")


def test_a_cancel_during_a_fan_out_stops_it_on_every_worker(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tmp_path: Path
) -> None:
    # One user a chunk, each chunk published and acknowledged before the next: some
    # 3,000 round trips to the broker per worker, seconds more than the Cancel needs to
    # reach every worker (at 10 a chunk a worker could finish its share first).
    s = fan_out_settings(make_settings, fanout_chunk=1, fanout_hold_chunks=1)
    workers = start_fleet(s, start_worker, tmp_path)
    users, inside = crowd(9000, seed=3)
    make_present(s, workers, users)

    texas = [("SAME", "048000")]
    alert = make_alert_json(geocodes=texas, sender=TEST_SENDER)
    publish_alert(s, alert)
    wait("every worker carding", lambda: all(cards_out(w) > 0 for w in workers), workers)
    cancel = make_alert_json(
        geocodes=texas,
        sender=TEST_SENDER,
        msg_type="Cancel",
        sent=datetime.now(UTC) + timedelta(seconds=1),
        references=[(TEST_SENDER, alert["id"], alert["sent"])],
    )
    publish_alert(s, cancel, key=alert["id"])
    lifecycle(s, ["issued", "cancelled"])
    wait(
        "every worker's fan-out stopped",
        lambda: all(fan_outs(w, "stopped") >= 1 for w in workers),
        workers,
        timeout_s=60,
    )
    produced = [cards_out(w) for w in workers]
    time.sleep(2)  # nothing more comes
    assert [cards_out(w) for w in workers] == produced
    cards = all_cards(s)
    print(f"\n{len(cards)} of {len(inside)} present users carded before the Cancel, {produced}")
    assert len(cards) < len(inside)
    assert {c["user_id"] for c in cards} <= inside
