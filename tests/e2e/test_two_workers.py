"""Two workers of one app, end to end on the real broker and Redis.

Every worker consumes some of the locations topic's partitions (its own consumer group,
``<app id>.locations``) and matches them against its in-process replica of the Redis cell
index, while the alerts topic goes to whichever worker Faust's group gives each partition.
So an alert message is applied by one worker and must reach the replica of the other:
these tests publish users on every partition and check what each of them sees.

Users are placed well inside or well outside the alert areas (at least ``MARGIN_M`` from
an edge: the cover of an area may overshoot it by up to one resolution-10 cell, about
75 m), and insideness is decided independently with shapely. A wait is bounded and ends on
an observable outcome: a lifecycle event, the workers' /ready and /metrics, the locations
group's assignment, or "drained" (the group's committed offsets at the end of the
locations topic: a worker commits a batch only after its cards were acknowledged, so a
drained group has produced every card it ever will for the locations so far).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import redis
from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon

from pipeline.adapters.faust.join import locations_group
from pipeline.adapters.kafka.tools import DeliveryProducer, ensure_topics
from pipeline.settings import MatchSettings, Settings
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json, now_ms
from tests.support.fleet import GroupProgress
from tests.support.kafka import collect, produce_json, read_to_end, values
from tests.support.live_replay import metric
from tests.support.schemas import assert_valid
from tests.support.services import Services, free_port
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

StartWorker = Callable[[Settings], WorkerProcess]
LatLon = tuple[float, float]
T = TypeVar("T")

# Near Austin, TX, as (lat, lon): two squares some 15 km apart, and a concave pentagon.
AREA_A = [(30.22, -97.80), (30.22, -97.74), (30.28, -97.74), (30.28, -97.80)]
AREA_B = [(30.36, -97.66), (30.36, -97.60), (30.42, -97.60), (30.42, -97.66)]
PENTAGON = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]
MARGIN_M = 250.0
USERS_PER_GROUP = 60  # per group of new users: all partitions get some (checked)
WAIT_S = 60.0


# -- geometry ------------------------------------------------------------------------------
class Area:
    def __init__(self, corners: Sequence[LatLon]) -> None:
        self.corners = list(corners)
        self.shape = ShapelyPolygon([(lon, lat) for lat, lon in corners])

    def metres_to_edge(self, lat: float, lon: float) -> float:
        # Degrees to metres near this latitude: good to well under 1% over a few km.
        kx, ky = math.cos(math.radians(lat)) * 111_320, 110_574
        ring = ShapelyPolygon([(x * kx, y * ky) for x, y in self.shape.exterior.coords])
        return float(ring.exterior.distance(Point(lon * kx, lat * ky)))

    def contains(self, lat: float, lon: float) -> bool:
        return bool(self.shape.contains(Point(lon, lat)))

    def clearly_inside(self, lat: float, lon: float) -> bool:
        return self.contains(lat, lon) and self.metres_to_edge(lat, lon) >= MARGIN_M

    def points_inside(self, n: int, rng: random.Random) -> list[LatLon]:
        lon0, lat0, lon1, lat1 = self.shape.bounds
        out: list[LatLon] = []
        while len(out) < n:
            lat, lon = round(rng.uniform(lat0, lat1), 6), round(rng.uniform(lon0, lon1), 6)
            if self.clearly_inside(lat, lon):
                out.append((lat, lon))
        return out


A, B, P = Area(AREA_A), Area(AREA_B), Area(PENTAGON)


def users_inside(area: Area, tag: str, seed: int, n: int = USERS_PER_GROUP) -> dict[str, LatLon]:
    """``n`` new users (ids starting with ``tag``) clearly inside ``area``."""
    points = area.points_inside(n, random.Random(seed))
    return {f"{tag}-{i:03d}": point for i, point in enumerate(points)}


# -- the workers ---------------------------------------------------------------------------
def twin(settings: Settings, tmp_path: Path) -> Settings:
    """The same app (topics, groups, Redis keys, policy) with a metrics port and a data
    directory of its own: another worker of it."""
    uid = f"{time.time_ns():x}"
    return settings.model_copy(
        update={
            "metrics": settings.metrics.model_copy(update={"port": free_port()}),
            "data_dir": str(tmp_path / f"worker-{uid}"),
        }
    )


def tails(workers: Iterable[WorkerProcess]) -> str:
    return "\n".join(
        f"--- worker on :{w.settings.metrics.port} ---\n{w.log_tail(2500)}" for w in workers
    )


def wait(
    what: str,
    check: Callable[[], T | None],
    workers: Sequence[WorkerProcess],
    timeout_s: float = WAIT_S,
) -> T:
    """Poll ``check()`` until it gives something other than None or False; AssertionError
    naming ``what`` (with the workers' log tails) after ``timeout_s``, or at once if a
    worker died."""
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        dead = [w for w in workers if not w.running()]
        assert not dead, f"{what}: a worker exited\n{tails(workers)}"
        outcome = check()
        if outcome is not None and outcome is not False:
            return outcome
        assert time.monotonic() < deadline, (
            f"{what}: not reached within {timeout_s:.0f}s\n{tails(workers)}"
        )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def ready(worker: WorkerProcess) -> bool:
    try:
        with urllib.request.urlopen(f"{worker.base_url}/ready", timeout=2) as resp:
            return bool(json.load(resp).get("ready"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def location_owners(settings: Settings) -> list[frozenset[int]] | None:
    """The locations partitions of each member of the locations group, once the group is
    stable; None while it is rebalancing (or the broker cannot say)."""
    admin = AdminClient(dict(settings.kafka.confluent_config()))
    group = locations_group(settings)
    try:
        description = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
    except KafkaException:
        return None
    if description.state != ConsumerGroupState.STABLE:
        return None
    return [
        frozenset(
            tp.partition
            for tp in member.assignment.topic_partitions
            if tp.topic == settings.topics.locations
        )
        for member in description.members
    ]


def wait_sharing(settings: Settings, workers: Sequence[WorkerProcess]) -> None:
    """Until every worker is ready and the locations group's members are exactly these
    workers, each owning some of the locations partitions, together all of them."""

    def shared() -> bool:
        if not all(ready(w) for w in workers):
            return False
        owners = location_owners(settings)
        return (
            owners is not None
            and len(owners) == len(workers)
            and all(owners)
            and frozenset().union(*owners) == frozenset(range(settings.topics.partitions))
        )

    wait(f"{len(workers)} workers sharing the locations partitions", shared, workers)


def cards_out(worker: WorkerProcess) -> float:
    return metric(worker, "alertfeed_events_out_total", topic="interstitials")


def locations_in(worker: WorkerProcess) -> float:
    return metric(worker, "alertfeed_events_in_total", topic="locations")


def wait_drained(settings: Settings, workers: Sequence[WorkerProcess], what: str) -> None:
    """Until the locations group has committed every location published so far."""
    progress = GroupProgress(settings, [settings.topics.locations])
    try:
        wait(f"{what}: the locations group drained", progress.drained, workers)
    finally:
        progress.close()


# -- publishing and reading ----------------------------------------------------------------
def publish_alert(settings: Settings, alert: dict[str, Any], key: str | None = None) -> None:
    produce_json(settings, settings.topics.alerts, [(key or str(alert["id"]), alert)])


def lifecycle(settings: Settings, states: Sequence[str]) -> list[dict[str, Any]]:
    """The lifecycle events, once ``states`` have all been announced (in that order)."""
    events = values(
        collect(
            settings,
            settings.topics.lifecycle,
            until=lambda r: len(r) >= len(states),
            timeout_s=WAIT_S,
            settle_s=0.5,
        )
    )
    assert [e["state"] for e in events] == list(states), events
    for event in events:
        assert_valid("lifecycle", event)
    return events


def publish_users(settings: Settings, users: dict[str, LatLon]) -> None:
    ts = now_ms()
    produce_json(
        settings,
        settings.topics.locations,
        [(u, {"user_id": u, "lat": lat, "lon": lon, "ts": ts}) for u, (lat, lon) in users.items()],
    )


def partitions_of(settings: Settings, users: Iterable[str]) -> set[int]:
    """The locations partitions the locations of ``users`` were published to."""
    wanted = set(users)
    return {
        r.partition
        for r in read_to_end(settings, settings.topics.locations)
        if r.key is not None and r.key.decode() in wanted
    }


def assert_on_every_partition(settings: Settings, users: Iterable[str]) -> None:
    found = partitions_of(settings, users)
    assert found == set(range(settings.topics.partitions)), (
        f"the test's users landed only on partitions {sorted(found)}"
    )


def all_cards(settings: Settings) -> list[dict[str, Any]]:
    found = values(read_to_end(settings, settings.topics.interstitials))
    for card in found:
        assert_valid("interstitial", card)
    return found


def cards_by_user(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for card in all_cards(settings):
        out[card["user_id"]].append(card)
    return out


def delete_app_keys(services: Services, settings: Settings) -> int:
    """Every Redis key of this app (the index, rebuild marker included, and the dedup and
    presence records), in one DEL: the app's Redis lost, as a flush would, and no worker
    ever sees the index half gone."""
    client = redis.Redis.from_url(services.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
        assert keys, "no Redis keys of the app to delete"
        return int(client.delete(*keys))
    finally:
        client.close()


def cancel_or_update(
    original: dict[str, Any], msg_type: str, polygon: Sequence[LatLon]
) -> dict[str, Any]:
    return make_alert_json(
        polygons=[polygon],
        sender=TEST_SENDER,
        msg_type=msg_type,
        sent=datetime.now(UTC) + timedelta(seconds=1),
        references=[(TEST_SENDER, original["id"], original["sent"])],
    )


def card_users_before(
    settings: Settings, workers: Sequence[WorkerProcess], area: Area, tag: str, seed: int
) -> None:
    """Users inside ``area`` on every partition get their cards, from every worker, in two
    waves: the first finds the fresh store without its rebuild marker, and each worker
    rebuilds the index and loads its replica; the second is matched by replicas settled
    on the last rebuild, so that what changes afterwards reaches another worker only
    through the change counter."""
    for wave in (1, 2):
        users = users_inside(area, f"{tag}{wave}", seed=seed * 10 + wave)
        produced = [cards_out(w) for w in workers]
        publish_users(settings, users)
        assert_on_every_partition(settings, users)
        wait_drained(settings, workers, f"the users {tag}, wave {wave}")
        carded = cards_by_user(settings)
        missing = sorted(set(users) - set(carded))
        assert not missing, f"wave {wave}: {len(missing)} users got no card: {missing[:5]}"
        now_produced = [cards_out(w) for w in workers]
        assert all(n > p for n, p in zip(now_produced, produced, strict=True)), (
            f"wave {wave}: cards per worker {produced} -> {now_produced}: one worker made none"
        )


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def app_settings(make_settings: Callable[..., Settings]) -> Settings:
    """The app of every test. The replica's periodic recheck (which bounds how long a
    change that was never counted goes unseen) is put off beyond the tests, so that a
    change reaches the other worker through the change counter alone: the guarantee
    under test."""
    settings = make_settings(
        match=MatchSettings(batch_size=200, batch_within_s=0.05, index_recheck_s=600)
    )
    assert settings.topics.partitions >= 2, "both workers must get locations partitions"
    ensure_topics(settings)
    return settings


# -- the tests -----------------------------------------------------------------------------
def test_a_cancel_stops_cards_on_every_worker(
    app_settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    s = app_settings
    workers = [start_worker(s), start_worker(twin(s, tmp_path))]
    alert = make_alert_json(polygons=[AREA_A], sender=TEST_SENDER)
    publish_alert(s, alert)
    lifecycle(s, ["issued"])
    wait_sharing(s, workers)

    card_users_before(s, workers, A, "before", seed=1)

    publish_alert(s, cancel_or_update(alert, "Cancel", AREA_A), key=alert["id"])
    lifecycle(s, ["issued", "cancelled"])

    consumed = [locations_in(w) for w in workers]
    after = users_inside(A, "after", seed=2)
    publish_users(s, after)
    assert_on_every_partition(s, after)
    wait_drained(s, workers, "the users after the Cancel")
    now_consumed = [locations_in(w) for w in workers]
    assert all(n > c for n, c in zip(now_consumed, consumed, strict=True)), (
        f"locations consumed per worker {consumed} -> {now_consumed}: one worker saw none"
    )
    late = sorted(set(cards_by_user(s)) & set(after))
    assert not late, f"{len(late)} users were carded after the Cancel: {late[:5]}"


def test_an_updates_new_cover_reaches_every_worker(
    app_settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    s = app_settings
    workers = [start_worker(s), start_worker(twin(s, tmp_path))]
    alert = make_alert_json(polygons=[AREA_A], sender=TEST_SENDER)
    publish_alert(s, alert)
    lifecycle(s, ["issued"])
    wait_sharing(s, workers)
    card_users_before(s, workers, A, "early", seed=3)  # every replica holds the first cover

    update = cancel_or_update(alert, "Update", AREA_B)
    publish_alert(s, update, key=alert["id"])
    updated = lifecycle(s, ["issued", "updated"])[1]

    produced = [cards_out(w) for w in workers]
    in_b = users_inside(B, "in-b", seed=4)
    in_a = users_inside(A, "in-a", seed=5)
    publish_users(s, {**in_b, **in_a})
    assert_on_every_partition(s, in_b)
    assert_on_every_partition(s, in_a)
    wait_drained(s, workers, "the users after the Update")

    carded = cards_by_user(s)
    missing = sorted(set(in_b) - set(carded))
    assert not missing, f"{len(missing)} users inside the new area got no card: {missing[:5]}"
    twice = sorted(u for u in in_b if len(carded[u]) > 1)
    assert not twice, f"users with more than one card: {twice[:5]}"
    for user in in_b:
        card = carded[user][0]
        assert (card["alert_id"], card["message_id"], card["alert_version"]) == (
            alert["id"],
            update["id"],
            updated["version"],
        ), card
    stale = sorted(set(in_a) & set(carded))
    assert not stale, f"{len(stale)} users inside only the old area were carded: {stale[:5]}"
    now_produced = [cards_out(w) for w in workers]
    assert all(n > p for n, p in zip(now_produced, produced, strict=True)), (
        f"cards per worker {produced} -> {now_produced}: one worker carded nobody in the new area"
    )


def assert_new_users_carded_by_both(
    s: Settings, workers: list[WorkerProcess], name: str, seed: int, what: str
) -> None:
    """New users inside A, on every partition: each gets a card, and each worker makes some."""
    produced = [cards_out(w) for w in workers]
    users = users_inside(A, name, seed=seed)
    publish_users(s, users)
    assert_on_every_partition(s, users)
    wait_drained(s, workers, what)
    missing = sorted(set(users) - set(cards_by_user(s)))
    assert not missing, f"{len(missing)} users inside got no card: {missing[:5]}"
    now_produced = [cards_out(w) for w in workers]
    assert all(n > p for n, p in zip(now_produced, produced, strict=True)), (
        f"cards per worker {produced} -> {now_produced}"
    )


def test_a_restarted_worker_matches_only_after_its_index_is_loaded(
    app_settings: Settings, start_worker: StartWorker, tmp_path: Path, services: Services
) -> None:
    s = app_settings
    first = start_worker(s)
    publish_alert(s, make_alert_json(polygons=[AREA_A], sender=TEST_SENDER))
    lifecycle(s, ["issued"])
    warm = users_inside(A, "warm", seed=6)
    publish_users(s, warm)
    wait_drained(s, [first], "the first users")
    carded = cards_by_user(s)
    assert set(carded) == set(warm), f"missing: {sorted(set(warm) - set(carded))[:5]}"

    # Redis loses the app's keys; a second worker starts fresh on the empty store while the
    # first still holds the alert in its replica.
    delete_app_keys(services, s)
    second = start_worker(twin(s, tmp_path))
    workers = [first, second]
    wait_sharing(s, workers)
    assert_new_users_carded_by_both(s, workers, "fresh", 7, "the users after the loss")

    # Lost again, and now the first worker restarts on the empty store.
    delete_app_keys(services, s)
    first.stop()
    restarted = start_worker(twin(s, tmp_path))
    workers = [second, restarted]
    wait_sharing(s, workers)
    assert_new_users_carded_by_both(s, workers, "again", 8, "the users after the restart")


class Stream:
    """A steady stream of locations from a thread, at about ``rate`` a second: block after
    block of ``block`` new users (so a card is owed for the first time all along the
    stream), who stay where they are. A share ``once`` of them report once (a loss of a
    single batch shows), the others ``reports`` times, shuffled within their block.
    :meth:`burst` sends ``n`` at once, ahead of the pace. Goes on until :meth:`finish` was
    called and at least ``minimum`` were sent, then ``after`` more. ``crowd`` is every
    user whose location was sent."""

    def __init__(
        self,
        settings: Settings,
        area: Area,
        *,
        rate: float,
        minimum: int,
        after: int,
        block: int = 100,
        once: float = 0.4,
        reports: int = 8,
    ) -> None:
        self._settings = settings
        self._area = area
        self._rate = rate
        self._minimum = minimum
        self._after = after
        self._block = block
        self._once = once
        self._reports = reports
        self._finish_at: int | None = None
        self._ahead = 0  # sent in bursts: not counted against the pace
        self.sent = 0
        self.crowd: dict[str, LatLon] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="location-stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def burst(self, n: int) -> int:
        """Send ``n`` more at once; returns the count sent once the burst is out."""
        self._ahead += n
        return self.sent + n

    def finish(self) -> None:
        if self._finish_at is None:
            self._finish_at = self.sent

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the location stream did not end"
        if self.error is not None:
            raise self.error

    def _done(self) -> bool:
        finish_at = self._finish_at
        return finish_at is not None and self.sent >= max(self._minimum, finish_at + self._after)

    def _run(self) -> None:
        try:
            producer = DeliveryProducer(self._settings)
            topic = self._settings.topics.locations
            chunk = max(1, int(self._rate / 20))
            began = time.monotonic()
            events = self._events()
            while not self._done():
                for _ in range(chunk):
                    user, (lat, lon) = next(events)
                    self.crowd[user] = (lat, lon)
                    event = {"user_id": user, "lat": lat, "lon": lon, "ts": now_ms()}
                    producer.send(topic, orjson.dumps(event), key=user.encode())
                self.sent += chunk
                # A burst moves the schedule back: no pause until it is sent.
                pause = began + (self.sent - self._ahead) / self._rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            producer.flush()
        except BaseException as exc:
            self.error = exc

    def _events(self) -> Iterator[tuple[str, LatLon]]:
        rng = random.Random(20260101)
        lon0, lat0, lon1, lat1 = self._area.shape.bounds
        made = 0
        while True:
            order: list[tuple[str, LatLon]] = []
            for _ in range(self._block):
                while True:
                    lat = round(rng.uniform(lat0 - 0.015, lat1 + 0.015), 6)
                    lon = round(rng.uniform(lon0 - 0.015, lon1 + 0.015), 6)
                    if self._area.metres_to_edge(lat, lon) >= MARGIN_M:
                        break
                times = 1 if rng.random() < self._once else self._reports
                order += [(f"s{made:05d}", (lat, lon))] * times
                made += 1
            rng.shuffle(order)
            yield from order


def test_a_rebalance_mid_stream_loses_no_pair_and_duplicates_none_with_another_event_id(
    app_settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    s = app_settings
    first = start_worker(s)
    alert = make_alert_json(polygons=[PENTAGON], sender=TEST_SENDER)
    publish_alert(s, alert)
    lifecycle(s, ["issued"])

    stream = Stream(s, P, rate=2500, minimum=20_000, after=3000).start()
    marks: dict[str, int] = {}
    try:
        wait("the first worker carding mid-stream", lambda: cards_out(first) >= 100, [first])
        marks["second starts"] = stream.sent
        second = start_worker(twin(s, tmp_path))  # a rebalance
        wait_sharing(s, [first, second])
        marks["second shares"] = stream.sent
        wait(
            "the stream going on",
            lambda: stream.sent >= marks["second shares"] + 2000,
            [first, second],
        )
        # Another, with the first behind: it leaves the group with batches in hand.
        burst_out = stream.burst(20_000)
        wait("the burst sent", lambda: stream.sent >= burst_out, [first, second])
        marks["first stops"] = stream.sent
        first.stop()
        marks["first restarts"] = stream.sent
        restarted = start_worker(twin(s, tmp_path))  # and another
        wait_sharing(s, [second, restarted])
        marks["restarted shares"] = stream.sent
    finally:
        stream.finish()
        stream.join(120)
    workers = [second, restarted]
    wait_drained(s, workers, "the stream")
    inside = {u for u, (lat, lon) in stream.crowd.items() if P.contains(lat, lon)}
    assert 0.2 < len(inside) / len(stream.crowd) < 0.5, len(inside)

    per_pair: dict[tuple[str, str], set[str]] = defaultdict(set)
    cards = all_cards(s)
    for card in cards:
        per_pair[(card["user_id"], card["alert_id"])].add(card["event_id"])
    print(  # pytest -s
        f"\nstream: {stream.sent} locations of {len(stream.crowd)} users "
        f"({len(inside)} inside), sent by {marks}; {len(cards)} cards for "
        f"{len(per_pair)} pairs ({len(cards) - len(per_pair)} duplicates)"
    )
    expected = {(u, alert["id"]) for u in inside}
    lost = sorted(expected - set(per_pair))
    extra = sorted(set(per_pair) - expected)
    assert not lost, f"{len(lost)} (user, alert) pairs lost: {lost[:5]}"
    assert not extra, f"{len(extra)} pairs carded for users outside: {extra[:5]}"
    differing = sorted(pair for pair, ids in per_pair.items() if len(ids) > 1)
    assert not differing, f"duplicates with another event_id: {differing[:5]}"
    # Every worker took part: the restarted one consumed some of the stream too.
    assert locations_in(second) > 0 and locations_in(restarted) > 0
