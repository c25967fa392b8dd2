"""Retiming moves the times inside alerts and locations, in the style they were written."""

from __future__ import annotations

import orjson

from pipeline.domain.alerts.cap import parse_cap
from pipeline.replay.retime import retime_value, shift_iso


def test_shift_iso_keeps_the_style_of_the_original() -> None:
    assert shift_iso("2026-11-23T10:00:00-05:00", 3_600_000) == "2026-11-23T11:00:00-05:00"
    assert shift_iso("2026-11-23T10:00:00Z", -1000) == "2026-11-23T09:59:59Z"
    assert shift_iso("2026-11-23T23:30:00-00:00", 3_600_000) == "2026-11-24T00:30:00-00:00"
    assert shift_iso("not a time", 1000) == "not a time"


CAP = b"""<?xml version="1.0" encoding="UTF-8"?>
<cap:alert xmlns:cap="urn:oasis:names:tc:emergency:cap:1.2">
  <cap:identifier>A-2</cap:identifier><cap:sender>s@x.example</cap:sender>
  <cap:sent>2026-11-23T10:00:00-06:00</cap:sent><cap:status>Actual</cap:status>
  <cap:msgType>Update</cap:msgType><cap:scope>Public</cap:scope>
  <cap:references>s@x.example,A-1,2026-11-23T09:00:00-06:00</cap:references>
  <cap:info><cap:event>Child Abduction Emergency</cap:event>
    <cap:effective>2026-11-23T10:00:00-06:00</cap:effective>
    <cap:onset>2026-11-23T10:05:00-06:00</cap:onset>
    <cap:expires>2026-11-23T16:00:00-06:00</cap:expires>
    <cap:area><cap:areaDesc>x</cap:areaDesc><cap:circle>30.2,-97.7 5</cap:circle></cap:area>
  </cap:info>
</cap:alert>"""


def test_retime_moves_every_time_inside_a_cap_alert() -> None:
    day = 86_400_000
    before = parse_cap(CAP)[0]
    after = parse_cap(retime_value("alerts", CAP, day))[0]
    assert after.sent_ms == before.sent_ms + day
    assert after.effective_ms == before.effective_ms + day  # type: ignore[operator]
    assert after.expires_ms == before.expires_ms + day  # type: ignore[operator]
    assert after.references[0].sent == "2026-11-24T09:00:00-06:00"
    assert b"<cap:onset>2026-11-24T10:05:00-06:00</cap:onset>" in retime_value("alerts", CAP, day)


def test_retime_moves_alert_json_nws_and_location_times() -> None:
    alert = {"id": "A", "sent": "2026-11-23T10:00:00Z", "expires": "2026-11-23T16:00:00Z"}
    shifted = orjson.loads(retime_value("alerts", orjson.dumps(alert), 60_000))
    assert (shifted["sent"], shifted["expires"]) == ("2026-11-23T10:01:00Z", "2026-11-23T16:01:00Z")
    nws = {
        "type": "Feature",
        "properties": {
            "sent": "2026-11-23T10:00:00-05:00",
            "onset": "2026-11-23T10:00:00-05:00",
            "ends": "2026-11-23T12:00:00-05:00",
            "references": [{"sent": "2026-11-23T09:00:00-05:00"}],
        },
    }
    props = orjson.loads(retime_value("alerts", orjson.dumps(nws), 60_000))["properties"]
    assert props["onset"] == "2026-11-23T10:01:00-05:00"
    assert props["ends"] == "2026-11-23T12:01:00-05:00"
    assert props["references"][0]["sent"] == "2026-11-23T09:01:00-05:00"
    location = {"user_id": "u", "lat": 1.0, "lon": 2.0, "ts": 1795400000000}
    moved = orjson.loads(retime_value("locations", orjson.dumps(location), 5))
    assert moved["ts"] == 1795400000005
    assert retime_value("locations", b"\xff garbage", 5) == b"\xff garbage"
