"""The event-log format: bytes survive a round trip through every compression, and lines
follow the published schema."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import MalformedEvent
from pipeline.replay.eventlog import (
    LoggedRecord,
    decode_record,
    encode_record,
    read_log,
    write_log,
)
from tests.support.event_logs import SUFFIXES, make_record
from tests.support.schemas import assert_valid


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
