"""A lifecycle event stays owed until it is announced: a message whose change was installed
but never announced (its worker died in between) gives the same event again when it is
redelivered; once announced, a redelivery changes and announces nothing."""

from __future__ import annotations

import asyncio

import orjson

from pipeline.adapters.memory.index import MemoryCellIndex
from pipeline.domain.geo.areas import cover_alert
from pipeline.domain.geo.cover import CoverLimits
from pipeline.domain.lifecycle import AlertIngest, PreparedAlert
from pipeline.domain.targeting.policy import AudiencePolicy
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json, now_ms

AUSTIN = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]


def ingest() -> AlertIngest:
    def cover(alert: object) -> object:
        return cover_alert(
            alert,  # type: ignore[arg-type]
            resolution=7,
            limits=CoverLimits(),
            resolve_geocodes=lambda codes: None,  # type: ignore[arg-type,return-value]
        )

    policy = AudiencePolicy.of([TEST_SENDER], [])
    return AlertIngest(MemoryCellIndex(resolution=7), policy, cover, now_ms)  # type: ignore[arg-type]


def prepared(ingest: AlertIngest, **fields: object) -> PreparedAlert:
    message = orjson.dumps(make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER, **fields))  # type: ignore[arg-type]
    [item] = ingest.prepare(message)
    return item


def test_an_issue_installed_but_not_announced_is_announced_on_redelivery() -> None:
    async def scenario() -> None:
        lifecycle = ingest()
        item = prepared(lifecycle)
        first = await lifecycle.apply(item)
        assert first is not None and first.lifecycle["state"] == "issued"
        # The worker dies here: installed, never announced. The message comes again.
        again = await lifecycle.apply(item)
        assert again is not None
        assert orjson.dumps(again.lifecycle) == orjson.dumps(first.lifecycle)
        assert again.alert == first.alert and again.cells == first.cells  # fan-out again
        await lifecycle.announced(again)
        assert await lifecycle.apply(item) is None  # announced: a duplicate now

    asyncio.run(scenario())


def test_a_cancel_applied_but_not_announced_is_announced_on_redelivery() -> None:
    async def scenario() -> None:
        lifecycle = ingest()
        alert = make_alert_json(polygons=[AUSTIN], sender=TEST_SENDER)
        [issued] = lifecycle.prepare(orjson.dumps(alert))
        done = await lifecycle.apply(issued)
        assert done is not None
        await lifecycle.announced(done)
        cancel = prepared(
            lifecycle,
            msg_type="Cancel",
            identifier=f"{alert['id']}-cancel",
            references=[(TEST_SENDER, str(alert["id"]), str(alert["sent"]))],
        )
        first = await lifecycle.apply(cancel)
        assert first is not None and first.lifecycle["state"] == "cancelled"
        again = await lifecycle.apply(cancel)  # the worker died before announcing
        assert again is not None and again.lifecycle == first.lifecycle
        assert again.alert is None  # nothing to fan out for a Cancel
        await lifecycle.announced(again)
        assert await lifecycle.apply(cancel) is None
        assert await lifecycle.index.get_alert(issued.key) is None

    asyncio.run(scenario())
