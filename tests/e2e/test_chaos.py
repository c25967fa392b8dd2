"""Chaos end to end, after Kafka's own transactions system test: real workers are killed and
the broker and Redis restarted under a steady stream of users, and an independent reader
of the interstitials topic checks the outcome against an oracle.

Three worker processes share a private broker and Redis (their own LocalStack: the faults
never reach the session's services). A few thousand users move in and out of an Actual
AMBER alert A, first over polygon P1, then grown by an Update to P2 (which contains P1),
then cancelled; a Test alert X covers an area of its own, where only the test users may
see it; others stay outside everything. During the run a worker is SIGKILLed eight times
(and restarted, as is any worker that exits by itself), the broker is crashed and
restarted on its log directory once, and Redis is restarted once, empty. Kills during
location streams land as soon as the victim has begun to consume; kills around alert
messages land before the message arrives or once its handler is done with it but has not
yet committed it, when the announcer's fan-outs may still be running (every worker fans
each alert out over its own partitions; a fan-out killed midway is completed by the
partition's next owner); test_crash_between_install_and_announcement
kills a worker in between, after the index changed and before the announcement (a loss
this test found: the lifecycle event is now owed until announced).

Every phase ends on an observable outcome, never on a sleep: a lifecycle event on the
lifecycle topic, the workers' /ready, their /metrics, "drained" -- the group's
committed offsets at the end of the locations and alerts topics, which workers commit
only after the batch's cards were acknowledged -- and every installed alert's fan-out
recorded finished on every partition (in Redis, after its cards were acknowledged). Alert messages
are published only when the group is drained, so each location is known to have been
matched against the cover that was active between two alert messages.

The oracle is computed from what the test published and from shapely geometry (never
from the pipeline's output); locations within ``MARGIN_M`` of an edge are never sent:

* required (A): a location inside P1 sent after A's ``issued`` was observed, or inside P2
  sent after ``updated`` was observed, in both cases acknowledged before the Cancel was
  published; and the fan-outs: a user whose last location before the alert message was
  published lies inside its cover, sent after the Redis restart (presence lives in Redis,
  and the restart forgets it), and processed before that message (drained);
* required (X): a test user inside X after X's ``issued`` was observed, or present inside
  it before (its fan-out);
* forbidden: a user whose every location is clearly outside the alert's area; any public
  user for X; a user whose locations inside (or near) P2 were all sent after A's
  ``cancelled`` was observed;
* duplicates (same user and alert twice) must carry the same ``event_id``; how many each
  fault caused, and whether they are byte-identical, is printed (``pytest -s``).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon

from pipeline.adapters.kafka.tools import DeliveryProducer, ensure_topics
from pipeline.settings import (
    KafkaSettings,
    MatchSettings,
    MetricsSettings,
    PolicySettings,
    RedisSettings,
    Settings,
    TopicSettings,
)
from tests.conftest import TEST_SENDER
from tests.support.chaos import (
    KAFKA_LOG,
    ChaosRun,
    LatLon,
    Pair,
    Sent,
    duplicates_report,
    print_report,
    scraped,
)
from tests.support.factories import make_alert_json
from tests.support.fleet import Fleet, GroupProgress
from tests.support.kafka import read_to_end, values
from tests.support.schemas import assert_valid
from tests.support.services import free_port, load_localstack

pytestmark = pytest.mark.integration

# Near Austin, TX, as (lat, lon). P1 lies inside P2 with kilometres to spare; X is 6 km
# north of P2.
P1 = [(30.25, -97.78), (30.25, -97.72), (30.29, -97.72), (30.30, -97.75), (30.29, -97.78)]
P2 = [(30.20, -97.85), (30.20, -97.65), (30.34, -97.65), (30.36, -97.75), (30.34, -97.85)]
X_AREA = [(30.42, -97.80), (30.42, -97.72), (30.46, -97.72), (30.46, -97.80)]
REGION = ((30.12, 30.54), (-97.95, -97.55))  # where the users are: lat and lon ranges
MARGIN_M = 250.0
WORKERS = 3
PARTITIONS = 6
TESTERS = [f"tester-{i:02d}" for i in range(12)]
PHASE_TIMEOUT_S = 150.0


class Area:
    def __init__(self, corners: Sequence[LatLon]) -> None:
        self.corners = list(corners)
        self.shape = ShapelyPolygon([(lon, lat) for lat, lon in corners])

    def side(self, lat: float, lon: float) -> Literal["in", "out", "edge"]:
        """Inside or outside by at least MARGIN_M, else "edge"."""
        # Degrees to metres near this latitude: good to well under 1% over a few km.
        kx, ky = math.cos(math.radians(lat)) * 111_320, 110_574

        def scaled(x: float, y: float) -> tuple[float, float]:
            return x * kx, y * ky

        ring = ShapelyPolygon([scaled(x, y) for x, y in self.shape.exterior.coords])
        if ring.exterior.distance(Point(scaled(lon, lat))) < MARGIN_M:
            return "edge"
        return "in" if self.shape.contains(Point(lon, lat)) else "out"


AREA_P1, AREA_P2, AREA_X = Area(P1), Area(P2), Area(X_AREA)


def sampler(rng: random.Random, wanted: Callable[[float, float], bool]) -> Callable[[], LatLon]:
    (lat0, lat1), (lon0, lon1) = REGION

    def draw() -> LatLon:
        while True:
            lat, lon = round(rng.uniform(lat0, lat1), 6), round(rng.uniform(lon0, lon1), 6)
            if wanted(lat, lon):
                return lat, lon

    return draw


# -- the oracle ----------------------------------------------------------------------------


def fanned_out(
    locs: Sequence[Sent], area: Area, published: float, observed: float, restarts: list[float]
) -> bool:
    """Whether the fan-out of an alert message (published, then its lifecycle event
    observed) must reach this user: their last location before it lies inside ``area``,
    was processed before it and was not forgotten by a Redis restart since, and nothing
    newer was sent before the fan-out ran."""
    before = [loc for loc in locs if loc.sent < published]
    if not before or any(published <= loc.sent < observed for loc in locs):
        return False
    last = before[-1]
    return (
        area.side(last.lat, last.lon) == "in"
        and last.acked < published
        and not any(last.sent < r < observed for r in restarts)
    )


def oracle(run: ChaosRun, a_id: str, x_id: str) -> tuple[set[Pair], set[Pair]]:
    """(required, forbidden) (user, alert id) pairs, from the published events alone."""
    m = run.marks
    by_user: dict[str, list[Sent]] = defaultdict(list)
    for loc in sorted(run.sent, key=lambda s: s.sent):
        by_user[loc.user].append(loc)
    required: set[Pair] = set()
    forbidden: set[Pair] = set()
    for user, locs in by_user.items():
        p1 = [AREA_P1.side(s.lat, s.lon) for s in locs]
        p2 = [AREA_P2.side(s.lat, s.lon) for s in locs]
        xs = [AREA_X.side(s.lat, s.lon) for s in locs]
        active = [m["issued A"] < s.sent and s.acked < m["publish cancel"] for s in locs]
        grown = [m["updated A"] < s.sent and s.acked < m["publish cancel"] for s in locs]
        if (
            any(a and side == "in" for a, side in zip(active, p1, strict=True))
            or any(g and side == "in" for g, side in zip(grown, p2, strict=True))
            or fanned_out(locs, AREA_P1, m["publish A"], m["issued A"], run.redis_restarts)
            or fanned_out(locs, AREA_P2, m["publish update"], m["updated A"], run.redis_restarts)
        ):
            required.add((user, a_id))
        near = [s for s, side in zip(locs, p2, strict=True) if side != "out"]
        if all(s.sent > m["cancelled A"] for s in near):  # also when there are none
            forbidden.add((user, a_id))
        if user not in TESTERS or all(side == "out" for side in xs):
            forbidden.add((user, x_id))
        elif any(
            m["issued X"] < s.sent and side == "in" for s, side in zip(locs, xs, strict=True)
        ) or fanned_out(locs, AREA_X, m["publish X"], m["issued X"], run.redis_restarts):
            required.add((user, x_id))
    assert not required & forbidden, "the oracle contradicts itself"
    return required, forbidden


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker and Redis of this module's own: its faults never reach other tests."""
    localstack = load_localstack()
    stack = localstack.LocalStack(tmp_path_factory.mktemp("chaos-stack"))
    try:
        stack.start()
    except localstack.StackError as exc:
        pytest.fail(f"cannot start the private Kafka/Redis: {exc}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop()


def chaos_settings(stack: Any, tmp_path: Path, seed: int) -> Settings:
    uid = f"{seed:08x}"
    return Settings(
        app_id=f"alertfeed-chaos-{uid}",
        kafka=KafkaSettings(url=f"kafka://{stack.state.bootstrap_servers}"),
        redis=RedisSettings(url=stack.state.redis_url, key_prefix=f"af{uid}"),
        topics=TopicSettings(
            alerts=f"c{uid}.alerts",
            locations=f"c{uid}.locations",
            interstitials=f"c{uid}.interstitials",
            lifecycle=f"c{uid}.lifecycle",
            dlq=f"c{uid}.dlq",
            partitions=PARTITIONS,
        ),
        match=MatchSettings(
            resolution=10, batch_size=200, batch_within_s=0.05, cover_cache_dir=tmp_path / "covers"
        ),
        policy=PolicySettings(allowed_senders=[TEST_SENDER], test_users=TESTERS),
        metrics=MetricsSettings(host="127.0.0.1", port=0),
        data_dir=str(tmp_path / "worker"),
        log_level="INFO",
    )


# -- the scenario --------------------------------------------------------------------------
def make_run(stack: Any, tmp_path: Path, seed: int, workers: int) -> ChaosRun:
    base = chaos_settings(stack, tmp_path, seed)
    ensure_topics(base)

    def settings_for(slot: int, incarnation: int) -> Settings:
        return base.model_copy(
            update={
                "metrics": MetricsSettings(host="127.0.0.1", port=free_port()),
                "data_dir": f"{base.data_dir}-{slot}-{incarnation}",
            }
        )

    lifecycle = Consumer(
        {
            **base.kafka.confluent_config(),
            "group.id": f"chaos-lifecycle-{seed}",
            "enable.auto.commit": False,
            "logger": KAFKA_LOG,
        }
    )
    lifecycle.assign(
        [TopicPartition(base.topics.lifecycle, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
    )
    return ChaosRun(
        settings=base,
        stack=stack,
        fleet=Fleet(settings_for, tmp_path, workers),
        progress=GroupProgress(base, [base.topics.locations, base.topics.alerts], KAFKA_LOG),
        lifecycle=lifecycle,
        producer=DeliveryProducer(base, logger=KAFKA_LOG),  # type: ignore[arg-type]
        rng=random.Random(seed),
    )


def close(run: ChaosRun) -> None:
    run.fleet.stop()
    run.progress.close()
    run.lifecycle.close()


@pytest.mark.timeout(600)
def test_kills_and_restarts_lose_no_card_and_leak_none(chaos_stack: Any, tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 32))
    run = make_run(chaos_stack, tmp_path, seed, WORKERS)
    print(f"\nchaos: CHAOS_SEED={seed}, logs in {tmp_path}")
    try:
        a_id, x_id = Scenario(run).play()
        run.account_all()
        records = read_to_end(run.settings, run.settings.topics.interstitials)
        lifecycle = values(read_to_end(run.settings, run.settings.topics.lifecycle))
    finally:
        close(run)

    required, forbidden = oracle(run, a_id, x_id)
    table, mismatched = duplicates_report(records, run.faults)
    print_report(run, records, table, lifecycle)
    cards = values(records)
    for card in run.rng.sample(cards, min(200, len(cards))):
        assert_valid("interstitial", card)
    got = {(c["user_id"], c["alert_id"]) for c in cards}
    print(f"required pairs {len(required)}, forbidden pairs {len(forbidden)}, got {len(got)}")
    assert {(e["alert_id"], e["state"]) for e in lifecycle} == {
        (x_id, "issued"),
        (a_id, "issued"),
        (a_id, "updated"),
        (a_id, "cancelled"),
    }
    assert {alert for _, alert in got} <= {a_id, x_id}
    lost = required - got
    leaked = got & forbidden
    assert not lost, (
        f"{len(lost)} required (user, alert) pairs never carded, e.g. {sorted(lost)[:5]}"
    )
    assert not leaked, f"{len(leaked)} forbidden pairs carded, e.g. {sorted(leaked)[:5]}"
    assert not mismatched, f"duplicates with another event_id: {mismatched[:5]}"
    assert run.fleet.kills >= 5


@pytest.mark.timeout(300)
def test_crash_between_install_and_announcement(chaos_stack: Any, tmp_path: Path) -> None:
    """A worker SIGKILLed right after it installed an alert message in the index, before
    it announced it: the message was not acknowledged, so it is consumed again, and is
    still announced and (an Update) fanned out: its lifecycle event stayed owed. The
    moment is observed in Redis, on the alert's record (the README's layout): the kill
    lands within a fraction of a millisecond of the flip, while the announcement still
    waits for the producer's linger.
    """
    run = make_run(chaos_stack, tmp_path, random.randrange(1 << 32), workers=1)
    index = redis.Redis.from_url(run.settings.redis.url)
    scenario = Scenario(run)
    a, fanout = scenario.a, scenario.fanout[:100]
    record = f"{run.settings.redis.key_prefix}:alert:{{{TEST_SENDER}|{a['id']}}}"

    def kill_when(installed: Callable[[bytes | None], bool], why: str) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not installed(index.get(record)):
            assert time.monotonic() < deadline, f"never installed: {why}"
        run.fleet.kill(0)  # at once: not even a scrape of its /metrics first
        run.fault(f"SIGKILL worker 0 ({why})")

    try:
        run.fleet.start()
        scenario.wave(scenario.outsiders[:10], scenario.outside)  # the index marker is built
        run.settle("before A")
        run.publish_alert(a, a["id"], "publish A")
        run.observe(a["id"], "issued", "issued A")
        scenario.wave(fanout, scenario.in_ring)
        run.settle("fan-out cohort present")

        update = scenario.later_message("Update", P2)
        run.publish_alert(update, a["id"], "publish update")
        kill_when(
            lambda raw: raw is not None and orjson.loads(raw)["message_id"] == update["id"],
            "Update installed, not yet announced",
        )
        run.settle("Update consumed again")
        run.publish_alert(scenario.later_message("Cancel", P2), a["id"], "publish cancel")
        kill_when(lambda raw: raw is None, "Cancel applied, not yet announced")
        run.settle("Cancel consumed again")
        events = values(read_to_end(run.settings, run.settings.topics.lifecycle))
        cards = values(read_to_end(run.settings, run.settings.topics.interstitials))
    finally:
        close(run)
        index.close()
    states = {e["state"] for e in events if e["alert_id"] == a["id"]}
    carded = {c["user_id"] for c in cards}
    problems = []
    if "updated" not in states:
        problems.append("the Update was never announced")
    if missing := set(fanout) - carded:
        problems.append(f"{len(missing)} of {len(fanout)} users in P2 \\ P1 missed its fan-out")
    if "cancelled" not in states:
        problems.append("the Cancel was never announced (rankers keep the cards)")
    assert not problems, "; ".join(problems)


def cohort(name: str, n: int) -> list[str]:
    return [f"{name}-{i:04d}" for i in range(n)]


class Scenario:
    """The phases, in order; :meth:`play` returns the ids of A and X."""

    def __init__(self, run: ChaosRun) -> None:
        self.run = run
        rng = run.rng
        self.in_p1 = sampler(rng, lambda a, o: AREA_P1.side(a, o) == "in")
        self.in_ring = sampler(
            rng, lambda a, o: AREA_P2.side(a, o) == "in" and AREA_P1.side(a, o) == "out"
        )
        self.in_x = sampler(rng, lambda a, o: AREA_X.side(a, o) == "in")
        self.outside = sampler(
            rng, lambda a, o: AREA_P2.side(a, o) == "out" and AREA_X.side(a, o) == "out"
        )
        self.outsiders, self.public_in_x = cohort("out", 300), cohort("pubx", 200)
        self.homebodies = cohort("home", 200)  # in P1 before A: its fan-out must find them
        self.movers1, self.movers2, self.movers3 = (
            cohort("m1", 800),
            cohort("m2", 500),
            cohort("m3", 600),
        )
        self.forgotten = cohort("lost", 300)  # in P2 \ P1 before the Redis restart only
        self.fanout = cohort("fan", 600)  # in P2 \ P1 after it, silent afterwards
        self.late = cohort("late", 400)  # enter A's area after the Cancel
        self.testers_early, self.testers_mid, self.testers_late = (
            TESTERS[:4],
            TESTERS[4:8],
            TESTERS[8:],
        )
        self.a = make_alert_json(polygons=[P1], sender=TEST_SENDER)
        self.x = make_alert_json(polygons=[X_AREA], sender=TEST_SENDER, status="Test")

    def wave(self, users: Sequence[str], where: Callable[[], LatLon]) -> None:
        for user in users:
            self.run.locate(user, where())

    def anywhere_in_p2(self) -> LatLon:
        return self.in_ring() if self.run.rng.random() < 0.6 else self.in_p1()

    def background(self) -> None:
        """People never in A's area, and the public inside X's."""
        self.wave(self.outsiders, self.outside)
        self.wave(self.public_in_x, self.in_x)

    def later_message(self, msg_type: str, polygon: Sequence[LatLon]) -> dict[str, Any]:
        a = self.a
        return make_alert_json(
            polygons=[polygon],
            sender=TEST_SENDER,
            msg_type=msg_type,
            sent=datetime.now(UTC),
            references=[(TEST_SENDER, a["id"], a["sent"])],
        )

    def play(self) -> tuple[str, str]:
        run = self.run
        run.started = time.monotonic()
        run.fleet.start()
        for phase in (
            self.before_any_alert,
            self.issue,
            self.movers_in_p1,
            self.redis_restart,
            self.fanout_cohort_reports,
            self.update,
            self.movers_in_p2_and_broker_restart,
            self.cancel,
            self.after_cancel,
        ):
            began = time.monotonic()
            phase()
            print(f"chaos: phase {phase.__name__} {time.monotonic() - began:.0f}s")
        print(f"chaos: scenario took {time.monotonic() - run.started:.0f}s")
        return self.a["id"], self.x["id"]

    def before_any_alert(self) -> None:
        self.background()
        self.wave(self.homebodies, self.in_p1)
        self.wave(self.testers_early, self.in_x)
        self.wave(self.late + self.testers_late, self.outside)
        self.run.settle("before any alert")

    def issue(self) -> None:
        """A over P1 and the Test alert X, published while a worker is dead."""
        run, a, x = self.run, self.a, self.x
        run.settle("before the alerts")
        run.kill("dead while A and X arrive")
        run.publish_alert(x, x["id"], "publish X")
        run.publish_alert(a, a["id"], "publish A")
        run.observe(x["id"], "issued", "issued X")
        run.observe(a["id"], "issued", "issued A")

    def movers_in_p1(self) -> None:
        """Movers in and out of P1, two workers killed mid-stream."""
        run, m1 = self.run, self.movers1
        self.wave(m1, self.outside)
        run.flush()
        run.kill_busy("movers entering P1", lambda: self.wave(m1, self.in_p1))
        self.wave(m1, self.outside)
        self.wave(self.forgotten, self.in_ring)
        self.wave(self.testers_mid, self.in_x)
        self.background()
        run.settle("movers left P1")
        run.kill_busy("movers re-entering P1", lambda: self.wave(m1[:400], self.in_p1))
        run.settle("movers re-entered P1")

    def redis_restart(self) -> None:
        """Redis restarts empty; the next location batch finds no rebuild marker and the
        index is rebuilt from the alerts topic. Presence and dedup state are gone."""
        run = self.run

        def rebuilds() -> float:
            return sum(
                max(0.0, scraped(slot.process, "alertfeed_index_rebuilds_total"))
                for slot in run.fleet.slots
            )

        before = rebuilds()
        run.fault("Redis restart (empty)")
        run.stack.restart_redis()
        run.redis_restarts.append(time.monotonic())
        self.wave(self.movers1[400:600], self.in_p1)  # carded before: a second card
        self.wave(self.movers2, self.outside)
        run.settle("index rebuilt")
        assert rebuilds() > before, "no worker rebuilt its index after the Redis restart"
        run.kill_busy(
            "movers entering P1 after the rebuild", lambda: self.wave(self.movers2, self.in_p1)
        )
        run.settle("after the Redis restart")

    def fanout_cohort_reports(self) -> None:
        """Once, inside P2 but outside P1, and never again."""
        self.wave(self.fanout, self.in_ring)
        self.run.settle("fan-out cohort present")

    def update(self) -> None:
        """The Update grows A to P2, published while a worker is dead; its announcer is
        killed once it has announced and fanned out, before it commits."""
        run = self.run
        run.settle("before the Update")
        run.kill("dead while the Update arrives")
        run.publish_alert(self.later_message("Update", P2), self.a["id"], "publish update")
        run.observe(self.a["id"], "updated", "updated A")
        run.kill_announcer("updated", "Update done, not yet committed")
        run.settle("after the Update")

    def movers_in_p2_and_broker_restart(self) -> None:
        """Movers in the grown area; the broker crashes and restarts on its log directory."""
        run, m3 = self.run, self.movers3
        self.wave(m3, self.outside)
        run.flush()
        self.wave(m3[:300], self.anywhere_in_p2)
        run.flush()
        run.fault("Kafka broker crash and restart")
        run.stack.stop_kafka(hard=True)
        self.wave(m3[300:], self.anywhere_in_p2)  # queued by the producer meanwhile
        run.stack.start_kafka()
        run.settle("broker back")
        run.kill_busy("movers leaving P2", lambda: (self.wave(m3, self.outside), self.background()))
        run.settle("movers left P2")

    def cancel(self) -> None:
        """The Cancel; its announcer is killed once it has announced, before it commits."""
        run = self.run
        run.settle("before the Cancel")
        run.publish_alert(self.later_message("Cancel", P2), self.a["id"], "publish cancel")
        run.observe(self.a["id"], "cancelled", "cancelled A")
        run.kill_announcer("cancelled", "Cancel done, not yet committed")

    def after_cancel(self) -> None:
        """Newcomers to A's area get nothing; X still reaches test users."""
        self.wave(self.late, self.anywhere_in_p2)
        self.wave(self.testers_late, self.in_x)
        self.background()
        self.run.settle("after the Cancel")
