"""Event-time order of an event log: records by (ts, alerts first, file position).

:func:`event_time_rows` is the reader of the offline replay and of ``alertfeed replay``
(through :func:`pipeline.adapters.eventlog.in_event_time_order`). Simulated and recorded
logs are mostly in order already, so a first pass checks that, keeping what it read of the
first lines; a log out of order is sorted in chunks spilled to disk and merged. Memory
stays bounded for any log size.

Speed matters here: a log holds millions of locations. Lines are read a block at a time
with regexes (loops in C), and a location written the way simulators and recorders write
it is taken apart without decoding its JSON: its value bytes are cut from the line, which
gives exactly what :func:`~pipeline.adapters.eventlog.decode_record` gives (see
:data:`_LOCATION`). Any other line goes through ``decode_record``.
"""

from __future__ import annotations

import heapq
import operator
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from itertools import islice, repeat
from pathlib import Path

from pipeline.adapters.eventlog import Headers, decode_record, read_lines, text_blocks

# One record: its 0-based position among the non-blank lines of its file, then the fields
# of its LoggedRecord (topic, ts, key, value, headers, partition, offset). Plain tuples:
# building dataclasses per record costs about as much as reading them.
LogRow = tuple[int, str, int, bytes | None, bytes | None, Headers, int | None, int | None]
# A line whose record is read when its turn comes (a layout other than _LOCATION's).
_Deferred = tuple[int, bytes]

_HEAD = re.compile(rb'^\{"topic":"([^"\\]+)","ts":(-?\d+)[,}]')
# The same, for every line of a block at once (each line after its newline).
_HEADS = re.compile(rb'\n\{"topic":"([^"\\\n]+)","ts":(-?\d+)[,}]')
_TOPIC = re.compile(rb'[^"\\\n]+')
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
_third, _fourth, _fifth = operator.itemgetter(2), operator.itemgetter(3), operator.itemgetter(4)


def topic_rank(topic: str) -> int:
    """Alerts sort before everything else at equal ``ts``: an alert and a location of the
    same millisecond are taken as alert first."""
    return 0 if topic == "alerts" else 1


def event_time_rows(
    path: str | os.PathLike[str],
    *,
    keep: Callable[[str], bool] = lambda _topic: True,
    chunk_records: int = 250_000,
) -> Iterator[LogRow]:
    """The records whose topic ``keep`` accepts, ordered by (ts, alerts first, file
    position), as :data:`LogRow` tuples.

    A first pass checks whether the file is already in that order, keeping its first
    ``chunk_records`` lines, read, in memory; then they and the rest of the file stream
    out. Otherwise the lines are sorted in chunks of ``chunk_records`` spilled to temporary
    files and merged. Deterministic. ``keep`` is asked once per distinct topic. Raises
    MalformedEvent on a bad line: as the first pass reaches it if its ``topic`` and ``ts``
    cannot be read, else when its turn comes.
    """
    for rows in event_time_blocks(path, keep=keep, chunk_records=chunk_records):
        yield from rows


def event_time_blocks(
    path: str | os.PathLike[str],
    *,
    keep: Callable[[str], bool] = lambda _topic: True,
    chunk_records: int = 250_000,
) -> Iterator[Iterable[LogRow]]:
    """:func:`event_time_rows` in runs of consecutive rows, for the hottest loops."""
    reader = _Reader(keep)
    ahead = reader.read_ahead(path, chunk_records)
    if ahead is None:
        yield _external_sort(path, reader.kept, chunk_records)
        return
    held, rest_from = ahead
    yield reader.resolve(held)
    if rest_from is not None:
        seq = reader.held_lines - 1
        for block in text_blocks(path, rest_from):
            rows, seq = reader.scan(block, seq, check=False)
            yield reader.resolve(rows)


class _Reader:
    """Reads blocks of lines into rows, and checks their order on the way (records
    compare by ``2 * ts + rank``)."""

    def __init__(self, keep: Callable[[str], bool]) -> None:
        self._keep = keep
        self._kept: dict[str, bool] = {}
        self._names: dict[bytes, str | None] = {}  # a topic's name, if kept
        self._ranks: dict[bytes, int | None] = {}  # its rank, if kept
        self._times: dict[bytes, re.Pattern[bytes]] = {}  # by line head, up to "ts":
        self.last = -(2**64)
        self.ordered = True  # so far
        self.lines = 0  # non-blank lines checked
        self.held_lines = 0  # of which read ahead

    def kept(self, topic: str) -> bool:
        if (answer := self._kept.get(topic)) is None:
            answer = self._kept[topic] = bool(self._keep(topic))
        return answer

    def _name(self, topic: bytes) -> str | None:
        """The name of a topic given as bytes, if kept. Raises UnicodeDecodeError."""
        if topic not in self._names:
            name = topic.decode()
            kept = self.kept(name)
            self._names[topic] = name if kept else None
            self._ranks[topic] = topic_rank(name) if kept else None
        return self._names[topic]

    def read_ahead(
        self, path: str | os.PathLike[str], limit: int
    ) -> tuple[list[LogRow | _Deferred], int | None] | None:
        """None if the file is out of order. Else its first kept records (at least those of
        its first ``limit`` lines) and the offset of the rest for ``text_blocks`` (None: no
        rest)."""
        held: list[LogRow | _Deferred] = []
        seq = -1
        offset = -1  # the first block has a newline of its own
        blocks = text_blocks(path)
        for block in blocks:
            offset += len(block)
            rows, seq = self.scan(block, seq, check=True)
            if not self.ordered:
                return None
            held += rows
            if seq + 1 >= limit:
                break
        else:
            return held, None
        self.lines = self.held_lines = seq + 1
        return (held, offset) if all(map(self._in_order, blocks)) else None

    def scan(self, block: bytes, seq: int, *, check: bool) -> tuple[list[LogRow | _Deferred], int]:
        """The kept rows of a block and the ``seq`` of its last line. With ``check``, clears
        :attr:`ordered` if the block breaks the order (the rows are then incomplete)."""
        found = _LINES.findall(block)
        topics = set(map(_first, found))
        if len(topics) == 1 and (topic := topics.pop()):  # only locations, of one topic
            start, seq = seq + 1, seq + len(found)
            if (name := self._name(topic)) is None:
                return [], seq
            times = list(map(int, map(_second, found)))
            if check:
                rank = self._ranks[topic] or 0
                if 2 * times[0] + rank < self.last or any(
                    map(operator.gt, times, islice(times, 1, None))
                ):
                    self.ordered = False
                    return [], seq
                self.last = 2 * times[-1] + rank
            nothing = repeat(None)
            rows = zip(
                range(start, seq + 1),
                repeat(name),
                times,
                map(_third, found),
                map(_fourth, found),
                repeat(()),
                nothing,
                nothing,
                strict=False,
            )
            return list(rows), seq
        out: list[LogRow | _Deferred] = []
        for topic, ts_text, key, value, other in found:
            if topic:
                seq += 1
                if (name := self._name(topic)) is None:
                    continue
                ts = int(ts_text)
                if check:
                    if (head := 2 * ts + (self._ranks[topic] or 0)) < self.last:
                        self.ordered = False
                        return out, seq
                    self.last = head
                out.append((seq, name, ts, key, value, (), None, None))
            elif (line := other.rstrip(b"\r")).strip():
                seq += 1
                if check:
                    topic_name, ts = _sort_head(line, seq + 1)
                    if self.kept(topic_name):
                        if (head := 2 * ts + topic_rank(topic_name)) < self.last:
                            self.ordered = False
                            return out, seq
                        self.last = head
                out.append((seq, line))
        return out, seq

    def resolve(self, rows: list[LogRow | _Deferred]) -> Iterable[LogRow]:
        """``rows`` with each deferred line read when its turn comes (and dropped unless
        its topic is kept)."""
        if 2 not in map(len, rows):
            return rows  # type: ignore[return-value]  # no deferred line
        return self._resolving(rows)

    def _resolving(self, rows: list[LogRow | _Deferred]) -> Iterator[LogRow]:
        for item in rows:
            if len(item) == 8:
                yield item
            elif self.kept((row := _row_of(*item))[1]):
                yield row

    def _in_order(self, lines: bytes) -> bool:
        """Whether the records of a block keep the order (the first pass past the lines
        read ahead)."""
        order = self._block_heads(lines)
        if order is None:  # a line in another layout, or a blank one: line by line
            for raw_line in lines.split(b"\n"):
                if (line := raw_line.rstrip(b"\r")).strip():
                    self.lines += 1
                    topic, ts = _sort_head(line, self.lines)
                    if self.kept(topic):
                        if (head := 2 * ts + topic_rank(topic)) < self.last:
                            return False
                        self.last = head
            return True
        self.lines += lines.count(b"\n")
        if order:
            if order[0] < self.last or any(map(operator.gt, order, islice(order, 1, None))):
                return False
            self.last = order[-1]
        return True

    def _block_heads(self, lines: bytes) -> list[int] | None:
        """The sort heads of the kept records of a block; None unless every line has the
        layout :data:`_HEAD` reads and a UTF-8 topic."""
        count = lines.count(b"\n")
        head = lines[: lines.find(b'","ts":') + 7]
        topic = head[11:-7]
        if (
            head.startswith(b'\n{"topic":"')
            and _TOPIC.fullmatch(topic)
            and lines.count(head) == count
        ):
            # One topic throughout, as in a block of locations only: read just the times.
            if (pattern := self._times.get(head)) is None:
                pattern = self._times[head] = re.compile(re.escape(head) + rb"(-?\d+)[,}]")
            times = pattern.findall(lines)
            if len(times) != count or not self._decodes(topic):
                return None
            rank = self._ranks[topic]
            return [] if rank is None else [2 * ts + rank for ts in map(int, times)]
        heads = _HEADS.findall(lines)
        if len(heads) != count or not all(map(self._decodes, set(map(_first, heads)))):
            return None
        ranks = self._ranks
        return [2 * int(ts) + rank for t, ts in heads if (rank := ranks[t]) is not None]

    def _decodes(self, topic: bytes) -> bool:
        try:
            self._name(topic)
        except UnicodeDecodeError:
            return False
        return True


def _row_of(seq: int, line: bytes) -> LogRow:
    match = _LOCATION_LINE.fullmatch(line)
    if match is not None:
        topic, ts, key, value = match.groups()
        return seq, topic.decode("ascii"), int(ts), key, value, (), None, None
    r = decode_record(line, seq + 1)
    return seq, r.topic, r.ts, r.key, r.value, r.headers, r.partition, r.offset


def _sort_head(line: bytes, number: int) -> tuple[str, int]:
    """``(topic, ts)`` of a line: a regex for the layout this module writes, else a parse."""
    match = _HEAD.match(line)
    if match:
        return match.group(1).decode(), int(match.group(2))
    record = decode_record(line, number)
    return record.topic, record.ts


def _external_sort(
    path: str | os.PathLike[str], kept: Callable[[str], bool], chunk_records: int
) -> Iterator[LogRow]:
    SortKey = tuple[int, int, int]
    chunk: list[tuple[SortKey, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="alertfeed-sort-") as tmp:
        spills: list[Path] = []

        def spill() -> None:
            chunk.sort(key=lambda item: item[0])
            spill_path = Path(tmp) / f"run-{len(spills)}.txt"
            with open(spill_path, "wb") as out:
                for (ts, rank, seq), line in chunk:
                    out.write(b"%d %d %d %s\n" % (ts, rank, seq, line))
            spills.append(spill_path)
            chunk.clear()

        for seq, line in enumerate(read_lines(path)):
            topic, ts = _sort_head(line, seq + 1)
            if kept(topic):
                chunk.append(((ts, topic_rank(topic), seq), line))
                if len(chunk) >= chunk_records:
                    spill()
        if not spills:
            chunk.sort(key=lambda item: item[0])
            for (_, _, seq), line in chunk:
                yield _row_of(seq, line)
            return
        if chunk:
            spill()

        def run(spill_path: Path) -> Iterator[tuple[SortKey, bytes]]:
            with open(spill_path, "rb") as spilled:
                for entry in spilled:
                    ts_text, rank_text, seq_text, line = entry.rstrip(b"\n").split(b" ", 3)
                    yield (int(ts_text), int(rank_text), int(seq_text)), line

        for (_, _, seq), line in heapq.merge(*(run(p) for p in spills), key=lambda i: i[0]):
            yield _row_of(seq, line)
