"""Fuzz the per-message entry points the worker calls, with over 100,000 hostile inputs.

Entry points, exactly as the worker wires them:

* alerts: :meth:`AlertIngest.prepare` (:func:`prepare_alerts`, which the worker's
  preparation process calls with the same policy and coverer) with the real coverer
  (:func:`pipeline.entrypoints.wiring.make_coverer`: Census gazetteer, configured limits)
  and an :class:`AudiencePolicy` admitting every sender of the samples, with test users,
  so that inputs that still parse go on through the policy to the H3 cover;
* locations: :func:`parse_location` on each message, and :meth:`Matcher.match` on
  batches of them over the in-process twins, with alerts installed so that cards happen.

Inputs (built in ``tests/support/fuzz_inputs.py``) are seeded mutations
(``tests/support/mutator.py``) of the real samples in
``../shared/samples`` (or, without them, of ``tests/fixtures``), of NWS features split out
of the samples' collections, of alert JSON made from all of them, and of location events;
plus structural cases: declared encodings (unknown, multi-byte, not text), UTF-16 with and
without a BOM, Latin-1, BOMs, deep nesting of XML, JSON and WKT, huge numbers, wrong types,
truncation, empty input, binary garbage and very long strings.

The promises checked: every input is either accepted (a list of prepared alerts, a
location, a match result) or rejected with a :class:`BadInput` that has a reason (of at
most ``MAX_REASON`` characters: it quotes the input, never carries it) and a
``reason_class``; an accepted Alert or Update has a non-empty cover, a Cancel none; in a
batch every bad location comes back as a dead letter with parse_location's own reason and
the original bytes, and every event is accounted for (located, stale or dead-lettered);
``parse_locations``, the matcher's whole-batch path, reads a batch as parse_location reads
each event, or declines it. Any other exception fails the test after all cases ran, with
one example per kind of failure naming the deepest frame in ``pipeline/`` and the case's
category, number and mutations (``Mutator(SEED, corpus).case(label, number)`` rebuilds it).

Why the coverer is built at resolution 5 with tight limits and no cache: a cover costs
2-40 ms even for a small area at resolution 5 (the walk from the 122 base cells, Census
boundaries for geocodes), and an area spanning the globe takes 22 s at resolution 10; some
5,000 of the mutants survive to the cover. At resolution 5 the same code runs (the same
walk, fewer levels), and ``max_cells``, ``max_vertices`` and ``max_shapes`` (see
``LIMITS``) refuse a mutant with a huge area or hundreds of geocoded counties through the
guardrails, as production does at its own limits, before computing anything. The disk
cache is off, so every cover is computed and nothing is written. The slowest inputs of
each category are printed; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import base64
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random

import orjson
import pytest

from pipeline.adapters.memory.dedup import MemoryDedupStore
from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.adapters.memory.presence import MemoryPresenceStore
from pipeline.domain.alerts.formats import parse_alert_message
from pipeline.domain.geo.cover import CoverLimits
from pipeline.domain.lifecycle import AlertIngest, PreparedAlert
from pipeline.domain.models import Location
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.locations import parse_location, parse_locations
from pipeline.domain.targeting.matching import Matcher
from pipeline.entrypoints.wiring import make_coverer, make_policy
from pipeline.errors import BadInput
from pipeline.settings import MatchSettings, PolicySettings, Settings
from tests.support.factories import make_alert_json
from tests.support.fuzz_inputs import (
    NOW,
    SEED,
    TEST_USERS,
    WINDOW_MS,
    alert_json_corpus,
    cap_corpus,
    location_corpus,
    nws_corpus,
    nws_jsonld_corpus,
    structural_alerts,
    structural_locations,
)
from tests.support.mutator import Mutator

# Inputs per category; the structural ones come on top (they are enumerated, not drawn).
PLAN = {"cap": 27_000, "nws": 10_000, "nws-jsonld": 4_000, "alert-json": 10_000, "location": 50_000}
RESOLUTION = 5
SKEW_MS = 300_000
REASON_CLASSES = {"malformed", "unsupported_area", "guardrail", "policy"}
# A reason goes onto a dead letter and into logs: it quotes the input, never carries it.
MAX_REASON = 1_000


# 216 of the corpus's 240 parsed alerts fit these limits (at most 1,405 estimated cells,
# 5,402 vertices, 27 shapes); the rest are NWS alerts naming up to 100 counties (24,684
# vertices), refused as guardrail. Anything far bigger is refused before any geometry.
LIMITS = CoverLimits(max_vertices=8_000, max_shapes=40, max_cells=1_500)


# --- the checks ------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcomes of one category, and what it cost."""

    inputs: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    slowest: list[tuple[float, str]] = field(default_factory=list)
    longest_reason: int = 0
    longest_label: str = ""

    @contextmanager
    def clock(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - start

    def timed(self, seconds: float, label: str) -> None:
        if len(self.slowest) < 3 or seconds > self.slowest[-1][0]:
            self.slowest = sorted([*self.slowest, (seconds, label)], reverse=True)[:3]

    def rejection(self, error: BadInput, label: str, failures: list[str]) -> None:
        reason = str(error)
        if not reason.strip() or error.reason_class not in REASON_CLASSES:
            failures.append(f"no reason: {type(error).__name__} {reason!r} <- {label}")
        elif len(reason) > MAX_REASON:
            failures.append(f"long reason: {len(reason)} chars {reason[:160]!r} <- {label}")
        self.rejected[error.reason_class] += 1
        if len(reason) > self.longest_reason:
            self.longest_reason, self.longest_label = len(reason), label


def crash(label: str, error: Exception) -> str:
    """``TypeError at domain/x.py:12 in f: message <- label``, naming the deepest frame in
    the package: the failures of one bug start alike, and are reported once."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/pipeline/" in f.filename]
    where = ""
    if frames:
        frame = frames[-1]
        where = f" at {frame.filename.rsplit('/pipeline/', 1)[-1]}:{frame.lineno} in {frame.name}"
    return f"{type(error).__name__}{where}: {str(error)[:200]} <- {label[:300]}"


def run_alerts(
    tally: Tally,
    cases: Iterator[tuple[str, bytes]],
    prepare: Callable[[bytes], list[PreparedAlert]],
    failures: list[str],
) -> None:
    for label, data in cases:
        tally.inputs += 1
        start = time.perf_counter()
        try:
            prepared = prepare(data)
        except BadInput as exc:
            tally.rejection(exc, label, failures)
        except Exception as exc:  # collected, so one run reports every crash; fails below
            failures.append(crash(label, exc))
        else:
            tally.accepted += 1
            for item in prepared:
                cover = item.cover
                if (cover is None) != (item.alert.msg_type == "Cancel"):
                    failures.append(f"wrong cover: a {item.alert.msg_type} with {cover} <- {label}")
                elif cover is not None and not cover.cells:
                    failures.append(
                        f"empty cover: a {item.alert.msg_type} reaching nobody <- {label}"
                    )
        tally.timed(time.perf_counter() - start, label)


def drawn(mutator: Mutator, label: str, count: int) -> Iterator[tuple[str, bytes]]:
    for number in range(count):
        variant = mutator.case(label, number)
        yield f"{label} #{number} ({', '.join(variant.operations)})", variant.data


def fuzz_settings() -> Settings:
    """Resolution 5, tight limits, no cover cache; every sender of the samples allowed."""
    senders = {"amber@dps.texas.example", "w-nws.webmaster@noaa.gov"}
    for document in cap_corpus() + nws_corpus():
        try:
            senders |= {alert.sender for alert in parse_alert_message(document)}
        except BadInput:
            continue
    return Settings(
        match=MatchSettings(
            resolution=RESOLUTION,
            cover_cache_mb=0,
            max_vertices=LIMITS.max_vertices,
            max_shapes=LIMITS.max_shapes,
            max_cells=LIMITS.max_cells,
        ),
        policy=PolicySettings(allowed_senders=sorted(senders), test_users=list(TEST_USERS)),
    )


def alert_ingest(settings: Settings, index: MemoryCellIndex) -> AlertIngest:
    coverer = make_coverer(settings)
    assert coverer.keywords["cache"] is None
    return AlertIngest(index, make_policy(settings), coverer, lambda: NOW)


async def matcher(settings: Settings) -> Matcher:
    """A matcher over the in-process twins, with an Actual alert over Austin, a Test alert
    over Portland and an Actual one around (0, 0), installed through the ingest."""
    index = MemoryCellIndex(resolution=10)
    ingest = alert_ingest(settings, index)
    sent = datetime.fromtimestamp(NOW / 1000 - 3600, tz=UTC)
    for number, (status, area) in enumerate(
        (
            ("Actual", {"polygons": [[(30.2, -97.8), (30.4, -97.8), (30.4, -97.6)]]}),
            ("Test", {"circles": [(45.52, -122.68, 20.0)]}),
            ("Actual", {"circles": [(0.0, 0.0, 300.0)]}),
        )
    ):
        obj = make_alert_json(identifier=f"M-{number}", sent=sent, status=status, **area)  # type: ignore[arg-type]
        for item in ingest.prepare(orjson.dumps(obj)):
            assert await ingest.apply(item) is not None
    return Matcher(
        index,
        MemoryDedupStore(),
        make_policy(settings),
        presence=MemoryPresenceStore(window_ms=WINDOW_MS),
        resolution=10,
        max_future_skew_ms=SKEW_MS,
        freshness_ms=WINDOW_MS,
        clock_ms=lambda: NOW,
    )


async def run_locations(
    tally: Tally,
    cases: Iterator[tuple[str, bytes | None]],
    settings: Settings,
    failures: list[str],
) -> int:
    """parse_location on each case, then Matcher.match on batches of them; returns cards."""
    match = await matcher(settings)
    rng = Random(f"{SEED}:batches")
    pending = list(cases)
    cards = 0
    offset = 0
    while pending:
        size = rng.choice((1, 1, 2, 3, 8, 64, 256))
        batch, pending = pending[:size], pending[size:]
        expected: list[str | None] = []  # parse_location's reason per event, None if accepted
        accepted: list[Location] = []
        for label, value in batch:
            tally.inputs += 1
            try:
                location = parse_location(value or b"", now_ms=NOW, max_future_skew_ms=SKEW_MS)
            except BadInput as exc:
                tally.rejection(exc, label, failures)
                expected.append(str(exc))
            except Exception as exc:
                failures.append(crash(label, exc))
                expected.append("crash")
            else:
                tally.accepted += 1
                expected.append(None)
                accepted.append(location)
        first, offset = offset, offset + len(batch)
        events = [
            RawEvent("alertfeed.locations", 0, first + i, NOW, None, value)
            for i, (_, value) in enumerate(batch)
        ]
        where = f"batch of {batch[0][0]} and {len(batch) - 1} more"
        _check_columns(batch, accepted, expected, where, failures)
        start = time.perf_counter()
        try:
            result = await match.match(events)
        except Exception as exc:
            failures.append(f"{crash(where, exc)} (Matcher.match)")
            continue
        tally.timed(time.perf_counter() - start, where)
        reasons = [letter["reason"] for letter in result.dead_letters]
        if reasons != [reason for reason in expected if reason is not None]:
            failures.append(f"dead letters differ: {reasons[:3]} not parse_location's <- {where}")
        for letter in result.dead_letters:
            value = events[letter["source"]["offset"] - first].value
            original = base64.b64encode(value).decode() if value is not None else None
            if letter["value_b64"] != original or letter["reason_class"] not in REASON_CLASSES:
                failures.append(f"dead letter: bytes or reason class lost <- {where}")
        if result.locations + result.stale + len(result.dead_letters) != len(batch):
            failures.append(f"events lost: {len(batch)} not all accounted for <- {where}")
        users = {location.user_id for location in accepted}
        if any(orjson.loads(value)["user_id"] not in users for _, value in result.cards):
            failures.append(f"stray card: for a user not in the batch <- {where}")
        cards += len(result.cards)
        await match.confirm(result)
    return cards


def _check_columns(
    batch: list[tuple[str, bytes | None]],
    accepted: list[Location],
    expected: list[str | None],
    where: str,
    failures: list[str],
) -> None:
    """parse_locations (the matcher's all-at-once path) agrees with parse_location."""
    try:
        columns = parse_locations([v for _, v in batch], now_ms=NOW, max_future_skew_ms=SKEW_MS)
    except Exception as exc:
        failures.append(f"{crash(where, exc)} (parse_locations)")
        return
    if columns is None:
        return
    if any(reason is not None for reason in expected):
        failures.append(f"parse_locations: accepts what parse_location rejects <- {where}")
        return
    as_read = list(zip(*columns, strict=True))
    if as_read != [(a.user_id, a.lat, a.lon, a.ts) for a in accepted]:
        failures.append(f"parse_locations: reads a batch differently <- {where}")


@pytest.mark.timeout(900)  # about 100 s on the 2-core machine; leave room for a loaded one
def test_fuzz_every_entry_point() -> None:
    started = time.perf_counter()
    cap, nws = cap_corpus(), nws_corpus()
    jsonld, alert_json = nws_jsonld_corpus(nws), alert_json_corpus(cap, nws)
    locations = location_corpus()
    assert cap and nws and jsonld and alert_json and locations
    settings = fuzz_settings()
    ingest = alert_ingest(settings, MemoryCellIndex(resolution=RESOLUTION))
    prepare = ingest.prepare
    tallies: dict[str, Tally] = defaultdict(Tally)
    failures: list[str] = []
    drawn_alerts = {"cap": cap, "nws": nws, "nws-jsonld": jsonld, "alert-json": alert_json}
    for label, corpus in drawn_alerts.items():
        with tallies[label].clock():
            cases = drawn(Mutator(SEED, corpus), label, PLAN[label])
            run_alerts(tallies[label], cases, prepare, failures)
    with tallies["alert-structural"].clock():
        cases = structural_alerts(cap, [*nws, *alert_json])
        run_alerts(tallies["alert-structural"], cases, prepare, failures)
    with tallies["location"].clock():
        cases = drawn(Mutator(SEED, locations), "location", PLAN["location"])
        cards = asyncio.run(run_locations(tallies["location"], cases, settings, failures))
    with tallies["location-structural"].clock():
        located = structural_locations()
        cards += asyncio.run(
            run_locations(tallies["location-structural"], located, settings, failures)
        )

    total = sum(t.inputs for t in tallies.values())
    report(tallies, total, cards, time.perf_counter() - started)
    kinds = Counter(failure.split(": ", 1)[0] for failure in failures)
    for kind, count in kinds.most_common():
        print(f"CRASH x{count}: {kind}")
    assert not failures, f"{len(failures)} inputs crashed or broke a promise:\n" + "\n".join(
        next(f for f in failures if f.startswith(kind)) for kind in kinds
    )
    assert total >= 100_000
    assert cards > 0, "no location matched an installed alert: the matcher was not exercised"
    for label in PLAN:
        assert tallies[label].accepted > 0, f"no {label} input was accepted"


def report(tallies: dict[str, Tally], total: int, cards: int, seconds: float) -> None:
    print(f"\nfuzz seed={SEED} resolution={RESOLUTION} limits={LIMITS}")
    print(f"{'category':<20}{'inputs':>8}{'accepted':>10}{'seconds':>9}  rejected by reason class")
    for label, t in tallies.items():
        rejected = ", ".join(f"{k}={v}" for k, v in sorted(t.rejected.items()))
        print(f"{label:<20}{t.inputs:>8}{t.accepted:>10}{t.wall:>9.1f}  {rejected}")
    print(f"{'total':<20}{total:>8}{'':>10}{seconds:>9.1f}  cards made: {cards}")
    for label, t in tallies.items():
        slow = "; ".join(f"{s:.3f}s {name[:80]}" for s, name in t.slowest)
        print(f"{label}: longest reason {t.longest_reason} chars ({t.longest_label[:70]})")
        print(f"  slowest: {slow}")
