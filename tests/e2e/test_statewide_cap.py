"""A state-wide AMBER Alert (SAME 012000, all of Florida) sent as CAP XML, end to end on
the real broker and Redis: the Census boundary is resolved offline, covered at resolution
10, and matched against users in four cities."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.settings import Settings
from tests.conftest import TEST_SENDER
from tests.support.factories import make_cap_xml, now_ms
from tests.support.kafka import collect, produce, produce_json, values
from tests.support.schemas import assert_valid
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

CITIES = {
    "miami": (25.7617, -80.1918),
    "tallahassee": (30.4383, -84.2807),
    "atlanta": (33.7490, -84.3880),
    "mobile": (30.6954, -88.0399),
}


def test_florida_statewide_cap_alert_reaches_florida_only(
    settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    ensure_topics(settings)
    start_worker(settings)
    cap = make_cap_xml(sender=TEST_SENDER, geocodes=[("SAME", "012000")])
    produce(settings, settings.topics.alerts, [(b"fl-amber", cap)])
    issued = values(
        collect(
            settings,
            settings.topics.lifecycle,
            until=lambda r: len(r) >= 1,
            settle_s=0,
            timeout_s=120,
        )
    )
    assert [e["state"] for e in issued] == ["issued"]
    assert issued[0]["resolution"] == 10 and issued[0]["cells"] > 1000

    ts = now_ms()
    produce_json(
        settings,
        settings.topics.locations,
        [(u, {"user_id": u, "lat": a, "lon": o, "ts": ts}) for u, (a, o) in CITIES.items()],
    )
    cards = values(
        collect(settings, settings.topics.interstitials, until=lambda r: len(r) >= 2, settle_s=4)
    )
    assert sorted(c["user_id"] for c in cards) == ["miami", "tallahassee"]
    for card in cards:
        assert_valid("interstitial", card)
        assert card["priority"] == 100  # SAME CAE: an AMBER Alert
