"""The event-log format: bytes survive a round trip through every compression, lines follow
the published schema, event-time order is stable, and retiming moves the times inside."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.alerts.cap import parse_cap
from pipeline.errors import MalformedEvent
from pipeline.replay import order as eventorder
from pipeline.replay.eventlog import (
    LoggedRecord,
    decode_record,
    encode_record,
    in_event_time_order,
    parse_duration_ms,
    parse_when,
    read_log,
    write_log,
)
from pipeline.replay.order import (
    LogRow,
    NotInOrder,
    TopicRun,
    event_time_blocks,
    event_time_rows,
)
from pipeline.replay.retime import retime_value, shift_iso
from tests.support.schemas import assert_valid

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


def make_record(
    value: bytes | None = b'{"user_id":"u-1","lat":30.25,"lon":-97.75,"ts":1795400000000}',
    *,
    topic: str = "locations",
    ts: int = 1795400000000,
    key: bytes | None = b"u-1",
    headers: tuple[tuple[str, bytes | None], ...] = (),
    partition: int | None = None,
    offset: int | None = None,
) -> LoggedRecord:
    return LoggedRecord(topic, ts, key, value, headers, partition, offset)


def line_of(record: LoggedRecord) -> dict[str, object]:
    line = orjson.loads(encode_record(record))
    assert_valid("event_log", line)
    return dict(line)


def test_a_compact_json_value_is_stored_as_an_object() -> None:
    line = line_of(make_record())
    assert line["value"] == {"user_id": "u-1", "lat": 30.25, "lon": -97.75, "ts": 1795400000000}
    assert "value_encoding" not in line


def test_json_that_would_not_reserialise_identically_is_kept_as_its_text() -> None:
    spaced = b'{"user_id": "u-1", "lat": 30.250, "lon": -97.75, "ts": 1795400000000}'
    line = line_of(make_record(spaced))
    assert line["value"] == spaced.decode()
    assert decode_record(encode_record(make_record(spaced))).value == spaced


def test_cap_xml_is_a_string_and_non_utf8_is_base64() -> None:
    xml = b'<?xml version="1.0"?><alert>\xc3\xa9</alert>'
    assert line_of(make_record(xml, topic="alerts"))["value"] == xml.decode()
    line = line_of(make_record(b"\xff\xfe not utf-8", key=b"\x80key"))
    assert line["value_encoding"] == "base64" and line["key_encoding"] == "base64"
    back = decode_record(encode_record(make_record(b"\xff\xfe not utf-8", key=b"\x80key")))
    assert (back.value, back.key) == (b"\xff\xfe not utf-8", b"\x80key")


def test_headers_keep_order_duplicates_binary_values_and_nulls() -> None:
    cases = [
        (("trace", b"abc"), ("source", None)),
        (("trace", b"\xff\x00"), ("trace", b"second")),
        (("a", b"1"), ("a", b"2"), ("b", b"")),
    ]
    for headers in cases:
        record = make_record(headers=headers)
        line_of(record)
        assert decode_record(encode_record(record)).headers == headers


@given(
    value=st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=32).map(str.encode)),
    key=st.one_of(st.none(), st.binary(max_size=16)),
    headers=st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.one_of(st.none(), st.binary(max_size=8))),
        max_size=4,
    ).map(tuple),
    ts=st.integers(min_value=0, max_value=2**53),
)
@settings(max_examples=300, deadline=None)
def test_any_bytes_survive_a_round_trip(
    value: bytes | None,
    key: bytes | None,
    headers: tuple[tuple[str, bytes | None], ...],
    ts: int,
) -> None:
    record = make_record(value, key=key, headers=headers, ts=ts, partition=2, offset=7)
    line = encode_record(record)
    assert decode_record(line) == record
    assert encode_record(decode_record(line)) == line  # re-encoding is stable
    assert_valid("event_log", orjson.loads(line))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_files_round_trip_and_compressed_output_is_deterministic(
    tmp_path: Path, suffix: str
) -> None:
    records = [
        make_record(),
        make_record(b"\x00\x01\x02", topic="dlq", key=None),
        make_record(None, topic="alerts", key=b"AMBER-1"),
        make_record(b"<alert/>", topic="alerts", headers=(("h", b"\xfe"),)),
    ]
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    assert write_log(first, records) == 4
    write_log(second, records)
    assert list(read_log(first)) == records
    assert first.read_bytes() == second.read_bytes()
    if suffix == ".jsonl.gz":
        assert gzip.decompress(first.read_bytes()).count(b"\n") == 4


def test_a_bad_line_names_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(encode_record(make_record()) + b'{"topic": "alerts", "ts": "soon"}\n')
    with pytest.raises(MalformedEvent, match="line 2"):
        list(read_log(path))


@pytest.mark.parametrize("chunk", [2, 1000])
def test_event_time_order_is_by_ts_then_alerts_first_then_file_order(
    tmp_path: Path, chunk: int
) -> None:
    records = [
        make_record(b"{}", ts=30, key=b"late"),
        make_record(b"{}", ts=10, key=b"first-location"),
        make_record(b"<a/>", topic="alerts", ts=10, key=b"alert"),
        make_record(b"{}", ts=20, key=b"x"),
        make_record(b"{}", ts=20, key=b"y"),
        make_record(b"{}", topic="lifecycle", ts=5, key=b"dropped"),
    ]
    path = tmp_path / "log.jsonl.zst"
    write_log(path, records)
    ordered = list(in_event_time_order(path, keep=lambda t: t != "lifecycle", chunk_records=chunk))
    assert [s.record.key for s in ordered] == [b"alert", b"first-location", b"x", b"y", b"late"]
    assert [s.seq for s in ordered] == [2, 1, 3, 4, 0]


finite = st.floats(allow_nan=False, allow_infinity=False)
# Mostly numbers as apps write them (a few decimals), which the fast reading takes apart.
coordinates = st.one_of(
    st.integers(-18_000_000, 18_000_000).map(lambda n: n / 100_000),
    finite,
    st.integers(-200, 200),
    st.sampled_from([-0.0, 0.0, 1e-5, 1e-6, 0.000015, 123456.5, 1234567.5, 1e16]),
)
location_values = st.one_of(
    st.fixed_dictionaries(
        {
            "user_id": st.one_of(st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True), st.text()),
            "lat": coordinates,
            "lon": coordinates,
            "ts": st.one_of(st.integers(1, 2**62), st.integers(-(2**63), 2**63 - 1)),
        },
        optional={"accuracy_m": st.one_of(st.none(), coordinates)},
    ),
    st.dictionaries(st.sampled_from(["user_id", "lat", "ts", "x"]), st.integers(0, 2**64 - 1)),
)


@given(
    values=st.lists(location_values, min_size=1, max_size=30),
    keys=st.lists(st.one_of(st.none(), st.binary(max_size=6)), min_size=30, max_size=30),
    spaced=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_the_fast_reading_of_locations_gives_what_decoding_gives(
    tmp_path_factory: pytest.TempPathFactory,
    values: list[dict[str, object]],
    keys: list[bytes | None],
    spaced: bool,
) -> None:
    """Location lines are cut apart without decoding them when their layout allows: the
    records must be exactly those decode_record reads, whatever the numbers and strings."""
    lines = [
        encode_record(make_record(orjson.dumps(value), key=key, ts=1795400000000 + i))
        for i, (value, key) in enumerate(zip(values, keys, strict=False))
    ]
    if spaced:  # a hand-written layout, and a blank line and a CRLF line among them
        lines[0] = orjson.dumps(orjson.loads(lines[0]), option=orjson.OPT_INDENT_2)
        lines[0] = lines[0].replace(b"\n", b" ") + b"\n\n"
        lines[-1] = lines[-1].rstrip(b"\n") + b"\r\n"
    path = tmp_path_factory.mktemp("fast") / "log.jsonl"
    path.write_bytes(b"".join(lines))
    expected = [decode_record(line.strip()) for line in lines]
    for chunk in (1, 7, 250_000):
        ordered = [s.record for s in in_event_time_order(path, chunk_records=chunk)]
        assert ordered == expected


@pytest.mark.parametrize("chunk", [1, 3, 250_000])
@pytest.mark.parametrize("shuffle", [False, True])
def test_event_time_order_is_the_same_however_much_is_read_ahead(
    tmp_path: Path, chunk: int, shuffle: bool
) -> None:
    records = [
        make_record(
            orjson.dumps(
                {"user_id": f"u{i}", "lat": 30.25, "lon": -97.75, "ts": 1795400000000 + i}
            ),
            ts=1795400000000 + i // 2,
            key=f"u{i}".encode(),
            topic="alertfeed.locations" if i % 7 == 3 else "locations",
        )
        for i in range(40)
    ]
    records[5] = make_record(b"<alert/>", topic="alerts", ts=records[5].ts, key=b"a")
    records[9] = make_record(b"{}", topic="lifecycle", ts=records[9].ts, key=b"x")
    records[11] = make_record(b'{"user_id": "spaced"}', ts=records[11].ts, key=None)
    if shuffle:
        records = records[1::2] + records[0::2]
    path = tmp_path / "log.jsonl.gz"
    write_log(path, records)
    keep = {"alerts", "locations", "alertfeed.locations"}.__contains__
    ordered = list(in_event_time_order(path, keep=keep, chunk_records=chunk))
    by_time = sorted(
        ((r.ts, 0 if r.topic == "alerts" else 1, seq), r)
        for seq, r in enumerate(records)
        if keep(r.topic)
    )
    assert [(s.seq, s.record) for s in ordered] == [(seq, r) for (_, _, seq), r in by_time]


def test_a_bad_line_is_raised_when_its_turn_comes(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = encode_record(make_record())
    path.write_bytes(good + b'{"topic":"locations","ts":1795400000001,"key":"k","value":[}\n')
    records = in_event_time_order(path)
    assert next(records).record == make_record()
    with pytest.raises(MalformedEvent, match="line 2"):
        next(records)


def mixed_records(count: int) -> list[LoggedRecord]:
    """Locations in event-time order, among them lines of every other kind."""
    records = [
        make_record(
            orjson.dumps(
                {"user_id": f"u{i}", "lat": 30.25, "lon": -97.75, "ts": 1795400000000 + i}
            ),
            ts=1795400000000 + i // 2,
            key=f"u{i}".encode(),
        )
        for i in range(count)
    ]
    records[6] = make_record(b"<alert/>", topic="alerts", ts=records[6].ts, key=b"a")
    records[9] = make_record(b"{}", topic="lifecycle", ts=records[9].ts, key=b"x")
    records[11] = make_record(b'{"user_id": "spaced"}', ts=records[11].ts, key=None)
    records[13] = make_record(ts=records[13].ts, headers=(("h", b"v"),), partition=2, offset=9)
    return records


def optimistic_rows(path: Path) -> list[LogRow]:
    rows: list[LogRow] = []
    for block in event_time_blocks(path, optimistic=True):
        rows += block.rows() if isinstance(block, TopicRun) else block
    return rows


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_an_optimistic_reading_of_a_log_in_order_gives_the_same_rows(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"log{suffix}"
    write_log(path, mixed_records(40))
    assert optimistic_rows(path) == list(event_time_rows(path))
    # Simulated logs are mostly runs of locations: those come as columns.
    write_log(path, mixed_records(40)[14:])
    assert [type(block) for block in event_time_blocks(path, optimistic=True)] == [TopicRun]
    assert optimistic_rows(path) == list(event_time_rows(path))


def test_an_optimistic_reading_gives_up_on_a_log_out_of_order_or_with_a_bad_line(
    tmp_path: Path,
) -> None:
    """It leaves both to the reading without optimism: that one sorts the log, or raises
    the error before anything is read."""
    records = mixed_records(40)
    path = tmp_path / "log.jsonl"
    write_log(path, records[1:] + records[:1])
    with pytest.raises(NotInOrder):
        optimistic_rows(path)
    assert [row[0] for row in event_time_rows(path)][:3] == [0, 39, 1]  # ts, then position
    path.write_bytes(b"".join(map(encode_record, records)) + b'{"topic": 5}\n')
    with pytest.raises(NotInOrder):
        optimistic_rows(path)
    with pytest.raises(MalformedEvent, match="line 41"):
        next(event_time_rows(path))


def test_a_big_log_is_taken_apart_by_a_helper_process_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventorder, "HELPER_MIN_BYTES", 0)  # every log is big
    path = tmp_path / "log.jsonl.zst"
    write_log(path, mixed_records(5000))
    assert optimistic_rows(path) == list(event_time_rows(path))
    blocks = event_time_blocks(path, optimistic=True)
    next(blocks)
    blocks.close()  # the helper, still writing, ends quietly
    # A reader that fails leaves the log to be read again without optimism.
    path.write_bytes(path.read_bytes()[:-100] + b"not zstd" * 20)
    with pytest.raises(NotInOrder):
        optimistic_rows(path)
    with pytest.raises(zstandard.ZstdError):
        list(event_time_rows(path))


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


def test_command_line_times_and_durations() -> None:
    now = 1795400000000
    assert parse_when("now", now) == now
    assert parse_when("now-10m", now) == now - 600_000
    assert parse_when("now+1.5h", now) == now + 5_400_000
    assert parse_when("1795400000123", now) == 1795400000123
    assert parse_when("2026-11-23T00:00:00Z", now) == 1795392000000
    assert parse_duration_ms("90") == 90_000 and parse_duration_ms("250ms") == 250
    for bad in ("yesterday", "2026-11-23T00:00:00"):
        with pytest.raises(ValueError):
            parse_when(bad, now)
