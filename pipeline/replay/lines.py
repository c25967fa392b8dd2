"""Lines of an event log taken apart fast, for the readers of :mod:`pipeline.replay.order`.

A log holds millions of locations, so lines are taken apart a block at a time with regexes
(loops in C). A location written the way simulators and recorders write it is cut apart
without decoding its JSON: its value bytes are cut from the line, which gives exactly what
:func:`~pipeline.replay.eventlog.decode_record` gives (see :data:`_LOCATION`). Any other
line goes through ``decode_record``. Pure: no state, no I/O, so a helper process can do it.
"""

from __future__ import annotations

import operator
import re

from pipeline.domain.records import Headers
from pipeline.replay.eventlog import decode_record

# A LoggedRecord as a plain tuple, for hot loops: its 0-based position among the non-blank
# lines of its file, then its fields (topic, ts, key, value, headers, partition, offset).
# Building dataclasses per record costs about as much as reading them.
LogRow = tuple[int, str, int, bytes | None, bytes | None, Headers, int | None, int | None]

_HEAD = re.compile(rb'^\{"topic":"([^"\\]+)","ts":(-?\d+)[,}]')
# A location line with ASCII strings free of escapes, integers, and floats in orjson's own
# shortest form (at most 14 significant digits, no exponent, no trailing zero but ".0"):
# orjson.dumps of the parsed value gives the value's bytes back, byte for byte.
_STR = rb"[\x20\x21\x23-\x5b\x5d-\x7e]"
_FLOAT = rb"-?(?:0\.(?!00000)|[1-9]\d{0,5}\.)(?:0|\d{0,7}[1-9])"
_LOCATION = (
    rb'\{"topic":"(%s+)","ts":([1-9]\d{0,17}),"key":"(%s*)","value":(\{"user_id":"%s+",'
    rb'"lat":%s,"lon":%s,"ts":[1-9]\d{0,17}(?:,"accuracy_m":%s)?\})\}'
    % (_STR, _STR, _STR, _FLOAT, _FLOAT, _FLOAT)
)
_LOCATION_LINE = re.compile(_LOCATION)
# Every line of a block: groups 1-4 for a _LOCATION line, else group 5 holds the line.
_LINES = re.compile(rb"\n(?:%s(?=\n|\Z)|([^\n]*))" % _LOCATION)
_first, _second = operator.itemgetter(0), operator.itemgetter(1)
_third, _fourth = operator.itemgetter(2), operator.itemgetter(3)

# A block of lines taken apart: a run of locations of one topic (its name as bytes, and the
# times, keys and values), or else the groups of _LINES for every line.
ParsedBlock = (
    tuple[bytes, list[int], list[bytes], list[bytes]]
    | list[tuple[bytes, bytes, bytes, bytes, bytes]]
)


def parse_block(block: bytes) -> ParsedBlock:
    """The lines of a block (each after its newline) taken apart; no state, so that a helper
    process can do it."""
    found: list[tuple[bytes, bytes, bytes, bytes, bytes]] = _LINES.findall(block)
    topics = set(map(_first, found))
    if len(topics) == 1 and (topic := topics.pop()):
        columns = map(_second, found), map(_third, found), map(_fourth, found)
        times, keys, values = columns
        return topic, list(map(int, times)), list(keys), list(values)
    return found


def row_of(seq: int, line: bytes) -> LogRow:
    """The row of ``line``, the non-blank line ``seq`` (0-based) of its file. Raises
    MalformedEvent naming it."""
    match = _LOCATION_LINE.fullmatch(line)
    if match is not None:
        topic, ts, key, value = match.groups()
        return seq, topic.decode("ascii"), int(ts), key, value, (), None, None
    r = decode_record(line, seq + 1)
    return seq, r.topic, r.ts, r.key, r.value, r.headers, r.partition, r.offset


def sort_head(line: bytes, number: int) -> tuple[str, int]:
    """``(topic, ts)`` of a line: a regex for the layout the log writers write, else a
    parse. Raises MalformedEvent naming line ``number`` (1-based)."""
    match = _HEAD.match(line)
    if match:
        return match.group(1).decode(), int(match.group(2))
    record = decode_record(line, number)
    return record.topic, record.ts
