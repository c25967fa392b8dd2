"""Format detection and the single parsing entry point."""

from __future__ import annotations

import codecs
from pathlib import Path

import orjson
import pytest

from pipeline.domain.alerts.formats import detect_format, parse_alert_message
from pipeline.domain.models import Geocode
from pipeline.errors import BadInput, MalformedEvent

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<alert/>", "cap"),
        (codecs.BOM_UTF8 + b"\r\n  \t<?xml version='1.0'?><alert/>", "cap"),
        (b'<feed xmlns="http://www.w3.org/2005/Atom"/>', "cap"),
        (codecs.BOM_UTF16_LE + "<alert/>".encode("utf-16-le"), "cap"),
        (b'{"type": "Feature", "properties": {}}', "nws"),
        (b'  {"type": "FeatureCollection", "features": []}', "nws"),
        (b'{"features": []}', "nws"),
        (b'{"@context": {}, "@graph": []}', "nws"),
        (codecs.BOM_UTF8 + b'{"identifier": "A-1", "sender": "s"}', "alert_json"),
        (b'{"type": "Alert"}', "alert_json"),
    ],
)
def test_detect_format(data: bytes, expected: str) -> None:
    assert detect_format(data) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello world", "not CAP XML, NWS GeoJSON or alert JSON: starts with b'hello world'"),
        (b"", "empty message: not CAP XML, NWS GeoJSON or alert JSON"),
        (b" \n\t", "empty message: not CAP XML, NWS GeoJSON or alert JSON"),
        (b"[1, 2]", "JSON message is list, expected an object"),
        (b'{"type": "Feature",', "not JSON: "),
        (codecs.BOM_UTF16_LE + '{"a": 1}'.encode("utf-16-le"), "utf-16-le byte-order mark"),
    ],
)
def test_detect_format_rejects_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        detect_format(data)
    assert str(caught.value).startswith(reason)


def test_long_garbage_is_quoted_briefly() -> None:
    with pytest.raises(MalformedEvent) as caught:
        detect_format(b"x" * 1_000_000)
    assert len(str(caught.value)) < 100


def test_parse_alert_message_routes_cap_xml() -> None:
    (alert,) = parse_alert_message(fixture("cap/amber_cae_child_abduction.xml"))
    assert alert.event_codes == (Geocode("SAME", "CAE"),)


def test_parse_alert_message_routes_atom_feed() -> None:
    alerts = parse_alert_message(fixture("cap/atom_feed_two_alerts.xml"))
    assert [a.identifier for a in alerts] == ["DC-AMBER-1", "MD-AMBER-1"]


def test_parse_alert_message_routes_utf16_cap() -> None:
    text = fixture("cap/prefixed_namespace.xml").decode().replace('"UTF-8"', '"UTF-16"')
    (alert,) = parse_alert_message(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    assert alert.identifier == "RFS-2026-0007"


def test_parse_alert_message_routes_nws_geojson() -> None:
    alerts = parse_alert_message(fixture("nws/collection_two_features.json"))
    assert [a.identifier for a in alerts] == ["NWS-TEST-1", "NWS-TEST-2"]


def test_parse_alert_message_passes_cap_errors_through() -> None:
    with pytest.raises(MalformedEvent, match=r"^missing <identifier>$"):
        parse_alert_message(fixture("cap/malformed_identifier_missing.xml"))


def test_other_json_objects_go_to_the_alert_json_parser() -> None:
    pytest.importorskip("pipeline.domain.alerts.alert_json")
    with pytest.raises(BadInput) as caught:
        parse_alert_message(orjson.dumps({"identifier": 1}))
    assert not str(caught.value).startswith("NWS GeoJSON")
