"""The fast reading of log lines: a location cut apart without decoding it gives exactly
what decoding gives."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.replay.eventlog import decode_record, encode_record
from pipeline.replay.order import in_event_time_order
from tests.support.event_logs import make_record

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
