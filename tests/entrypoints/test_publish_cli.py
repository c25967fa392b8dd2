"""``alertfeed publish`` as a person runs it: a malformed file is named in one line, with
the reason, and nothing is published.

The malformed cases run against a Kafka address where nothing listens: the files are
checked before any connection, so they fail fast and quietly (a connection attempt would
log librdkafka's errors on stderr, and a send would wait out the delivery timeout).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.entrypoints.publish import location_record
from pipeline.settings import Settings
from tests.support.cli import offline_settings, one_error_line, run_alertfeed
from tests.support.factories import make_alert_json, make_cap_xml, now_ms
from tests.support.kafka import collect

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOOD_CAP = (FIXTURES / "cap" / "polygon_two_areas.xml").read_bytes()
SENDER = "amber@dps.texas.example"


def location_line(**fields: object) -> str:
    """One location JSON line: a valid event in Austin unless ``fields`` say otherwise."""
    event: dict[str, object] = {"user_id": "u-1", "lat": 30.2672, "lon": -97.7431, "ts": now_ms()}
    event.update(fields)
    return json.dumps({k: v for k, v in event.items() if v is not None})


# make_cap_xml without polygons or geocodes: an <area> that only names a place.
DESCRIPTION_ONLY_CAP = make_cap_xml(sender=SENDER)
NO_AREA_CAP = DESCRIPTION_ONLY_CAP.replace(b"<area><areaDesc>Statewide</areaDesc></area>", b"")

# name, content (None: do not create it), what the one line must say besides the name.
ALERT_FILES: list[tuple[str, bytes | None, tuple[str, ...]]] = [
    (
        "bogus_encoding.xml",
        b'<?xml version="1.0" encoding="bogus-8"?>\n<alert/>',
        ("bogus-8",),
    ),
    ("truncated.xml", (FIXTURES / "cap" / "malformed_not_xml.xml").read_bytes(), ("not XML",)),
    ("missing.xml", None, ("cannot read", "No such file")),
    ("empty.xml", b"", ("empty",)),
    ("garbage.bin", bytes(range(256)) * 4, ("not CAP XML, NWS GeoJSON or alert JSON",)),
    ("array.json", b"[1, 2, 3]", ("list", "expected an object")),
    ("no_area.xml", NO_AREA_CAP, ("has no area",)),
    (
        "description_only.xml",
        DESCRIPTION_ONLY_CAP,
        ("has no area", "no polygon, circle or geocode"),
    ),
    ("no_area.json", json.dumps(make_alert_json()).encode(), ("needs at least one area",)),
    ("empty_collection.json", b'{"type": "FeatureCollection", "features": []}', ("no alert",)),
    (
        "bad_latitude.xml",
        (FIXTURES / "cap" / "malformed_latitude_out_of_range.xml").read_bytes(),
        ("latitude",),
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "reasons"), ALERT_FILES, ids=[c[0] for c in ALERT_FILES]
)
def test_a_malformed_alert_file_among_good_ones_is_named_and_nothing_is_published(
    tmp_path: Path, name: str, content: bytes | None, reasons: tuple[str, ...]
) -> None:
    (tmp_path / "good.xml").write_bytes(GOOD_CAP)
    if content is not None:
        (tmp_path / name).write_bytes(content)
    result = run_alertfeed(
        "publish", "alerts", "good.xml", name, settings=offline_settings(), cwd=tmp_path
    )
    line = one_error_line(result)
    assert line.startswith(f"alertfeed: {name}: "), line
    for reason in reasons:
        assert reason in line, line
    assert result.stdout == ""  # no "published N message(s)"


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    result = run_alertfeed("publish", "alerts", "alerts", settings=offline_settings(), cwd=tmp_path)
    assert one_error_line(result) == "alertfeed: alerts: cannot read: Is a directory"


LOCATION_FILES: list[tuple[str, list[str], str]] = [
    (
        "not_json",
        [location_line(), location_line(user_id="u-2"), "{user_id: u-3"],
        "not valid JSON",
    ),
    ("array", [location_line(), "[30.2, -97.7]"], "must be a JSON object, not list"),
    ("number", [location_line(), "", "42"], "must be a JSON object, not int"),
    ("no_user", [location_line(user_id=None)], "missing user_id"),
    ("empty_user", [location_line(user_id="")], "user_id must be a non-empty string"),
    ("latitude", [location_line(lat=91.5)], "latitude 91.5 out of range in location"),
    ("longitude_text", [location_line(lon="-97.7")], "lon must be a finite number"),
    ("seconds", [location_line(ts=1_700_000_000)], "is not epoch milliseconds"),
    ("ts_text", [location_line(ts="2026-01-01T00:00:00Z")], "ts must be an integer"),
]


@pytest.mark.parametrize(
    ("case", "lines", "reason"), LOCATION_FILES, ids=[c[0] for c in LOCATION_FILES]
)
def test_a_bad_location_line_is_named_by_file_and_line_and_nothing_is_published(
    tmp_path: Path, case: str, lines: list[str], reason: str
) -> None:
    (tmp_path / "good.jsonl").write_text(location_line() + "\n")
    (tmp_path / f"{case}.jsonl").write_text("\n".join(lines) + "\n")
    result = run_alertfeed(
        "publish",
        "locations",
        "good.jsonl",
        f"{case}.jsonl",
        settings=offline_settings(),
        cwd=tmp_path,
    )
    line = one_error_line(result)
    # The bad line is the last one written (blank lines count, as in an editor).
    assert line.startswith(f"alertfeed: {case}.jsonl line {len(lines)}: "), line
    assert reason in line, line
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\n  \n", "only blank lines"),
        (b"\xff\xfe\x00garbage\n", "not valid JSON"),
    ],
    ids=["empty", "blank", "garbage"],
)
def test_an_empty_or_garbage_locations_file_is_refused(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    (tmp_path / "people.jsonl").write_bytes(content)
    result = run_alertfeed(
        "publish", "locations", "people.jsonl", settings=offline_settings(), cwd=tmp_path
    )
    line = one_error_line(result)
    assert line.startswith("alertfeed: people.jsonl"), line
    assert reason in line, line


def test_a_missing_locations_file_is_named(tmp_path: Path) -> None:
    result = run_alertfeed(
        "publish", "locations", "nobody.jsonl", settings=offline_settings(), cwd=tmp_path
    )
    assert (
        one_error_line(result) == "alertfeed: nobody.jsonl: cannot read: No such file or directory"
    )


def test_a_location_ahead_of_the_clock_is_publishable() -> None:
    """Only the shape is checked: whether ``ts`` is too far ahead is for the worker's clock
    when it consumes the event, which publishing cannot know."""
    line = location_line(user_id="u-9", ts=now_ms() + 24 * 3600 * 1000).encode()
    assert location_record(line) == (b"u-9", line)


@pytest.mark.integration
def test_good_files_are_published_keyed_and_a_bad_one_publishes_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    ensure_topics(settings)
    cap = make_cap_xml(
        sender=SENDER, identifier="PUB-1", polygons=[[(30.2, -97.8), (30.3, -97.8), (30.3, -97.7)]]
    )
    (tmp_path / "good.xml").write_bytes(cap)
    (tmp_path / "bad.xml").write_bytes(b'<?xml version="1.0" encoding="bogus-8"?>\n<alert/>')
    (tmp_path / "people.jsonl").write_text(
        "\n".join([location_line(user_id="u-1"), "", location_line(user_id="u-2")]) + "\n"
    )

    refused = run_alertfeed(
        "publish", "alerts", "good.xml", "bad.xml", settings=settings, cwd=tmp_path
    )
    assert "bad.xml" in one_error_line(refused)

    for topic, files in (("alerts", ["good.xml"]), ("locations", ["people.jsonl"])):
        done = run_alertfeed("publish", topic, *files, settings=settings, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr

    alerts = collect(settings, settings.topics.alerts, until=lambda r: len(r) >= 1, settle_s=2)
    # One record: the refused run published nothing, not even good.xml.
    assert [(r.key, r.value) for r in alerts] == [(b"PUB-1", cap)]
    locations = collect(
        settings, settings.topics.locations, until=lambda r: len(r) >= 2, settle_s=2
    )
    assert sorted(r.key for r in locations) == [b"u-1", b"u-2"]
