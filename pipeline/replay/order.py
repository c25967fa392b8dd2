"""Event-time order of an event log: records by (ts, alerts first, file position).

:func:`event_time_blocks` is the reader of the offline replay, :func:`in_event_time_order`
(records) that of the live replay. Simulated and recorded logs are mostly in order
already, so a first pass checks that, keeping what it read of the first lines; a log out
of order is sorted in chunks spilled to disk and merged. Memory stays bounded for any log
size. A reader that can start over (the offline replay) skips the first pass: it reads
optimistically (see :func:`event_time_blocks`).

Speed matters here: a log holds millions of locations. Lines are read a block at a time
and taken apart by :mod:`pipeline.replay.lines`, mostly without decoding their JSON; runs
of locations come as columns (:class:`TopicRun`). Reading optimistically, a big log is
taken apart by a helper process, on a second core, while the caller works on the blocks
before.

Record shapes here, each for its readers: :class:`Sequenced` (a LoggedRecord and its
position), :data:`~pipeline.replay.lines.LogRow` (the same as a plain tuple, for hot
loops) and :class:`TopicRun` (consecutive rows of one topic as columns).
"""

from __future__ import annotations

import heapq
import marshal
import operator
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from itertools import count, islice, repeat
from pathlib import Path
from typing import IO, cast

from pipeline.replay.eventlog import LoggedRecord, read_lines, text_blocks
from pipeline.replay.lines import LogRow, ParsedBlock, parse_block, row_of, sort_head


@dataclass(frozen=True, slots=True)
class TopicRun:
    """Consecutive rows of one topic, each with a key and a value and nothing else (no
    headers, partition or offset), held as columns: row ``i`` is ``(first_seq + i, topic,
    times[i], keys[i], values[i], (), None, None)``. Simulated and recorded logs are mostly
    such runs of locations, which the offline replay takes a column at a time."""

    first_seq: int
    topic: str
    times: list[int]
    keys: list[bytes]
    values: list[bytes]

    def rows(self) -> Iterator[LogRow]:
        nothing = repeat(None)
        fields = (self.times, self.keys, self.values, repeat(()), nothing, nothing)
        return zip(count(self.first_seq), repeat(self.topic), *fields, strict=False)


# What event_time_blocks gives: a run of one topic, or rows of any kind.
LogBlock = TopicRun | Iterable[LogRow]


class NotInOrder(Exception):
    """An optimistic reading (see :func:`event_time_blocks`) found the log out of event-time
    order, or a line it could not read: the blocks it gave are void, read the log again
    without ``optimistic``."""


# A line whose record is read when its turn comes (a layout other than _LOCATION's).
_Deferred = tuple[int, bytes]
# What a block of lines reads into: a run of one topic, or rows and deferred lines.
_Scanned = TopicRun | list[LogRow | _Deferred]

# The head of a line up to its ts, for every line of a block at once (each line after its
# newline).
_HEADS = re.compile(rb'\n\{"topic":"([^"\\\n]+)","ts":(-?\d+)[,}]')
_TOPIC = re.compile(rb'[^"\\\n]+')
_first = operator.itemgetter(0)

# From this size on (on disk), a helper process takes the blocks of a log apart; below, its
# start (a fresh interpreter, about 0.1 s) would cost more than it saves.
HELPER_MIN_BYTES = 4 << 20


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
    for block in event_time_blocks(path, keep=keep, chunk_records=chunk_records):
        yield from block.rows() if isinstance(block, TopicRun) else block


def event_time_blocks(
    path: str | os.PathLike[str],
    *,
    keep: Callable[[str], bool] = lambda _topic: True,
    chunk_records: int = 250_000,
    optimistic: bool = False,
    helper_min_bytes: int = HELPER_MIN_BYTES,
) -> Iterator[LogBlock]:
    """:func:`event_time_rows` in blocks of consecutive rows, for the hottest loops: a
    :class:`TopicRun` where the lines allow (most of a simulated log), else rows.

    With ``optimistic`` the log is taken to be in order and read in one pass, each block
    checked before it is given: the first pass is saved, but NotInOrder is raised as soon
    as a record breaks the order or any line fails to read, and every block given until
    then is void. For a consumer that can start over, such as the offline replay on its
    in-process stores; the blocks are the same when no NotInOrder comes. An optimistic
    reading of a log of at least ``helper_min_bytes`` on disk is taken apart by a helper
    process (see :data:`HELPER_MIN_BYTES`); the blocks are the same either way.
    """
    reader = _Reader(keep)
    if optimistic:
        yield from reader.checked_blocks(path, helper_min_bytes)
        return
    ahead = reader.read_ahead(path, chunk_records)
    if ahead is None:
        yield _external_sort(path, reader.kept, chunk_records)
        return
    held, rest_from = ahead
    for rows in held:
        yield reader.resolve(rows)
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
    ) -> tuple[list[_Scanned], int | None] | None:
        """None if the file is out of order. Else its first kept records (at least those of
        its first ``limit`` lines), block by block, and the offset of the rest for
        ``text_blocks`` (None: no rest)."""
        held: list[_Scanned] = []
        seq = -1
        offset = -1  # the first block has a newline of its own
        blocks = text_blocks(path)
        for block in blocks:
            offset += len(block)
            rows, seq = self.scan(block, seq, check=True)
            if not self.ordered:
                return None
            held.append(rows)
            if seq + 1 >= limit:
                break
        else:
            return held, None
        self.lines = self.held_lines = seq + 1
        return (held, offset) if all(map(self._in_order, blocks)) else None

    def checked_blocks(
        self, path: str | os.PathLike[str], helper_min_bytes: int
    ) -> Iterator[LogBlock]:
        """The blocks of the whole file, each checked (see ``optimistic`` in
        :func:`event_time_blocks`). Raises NotInOrder."""
        seq = -1
        with closing(_parsed_blocks(path, helper_min_bytes)) as blocks:
            while True:
                # Whatever reading raises (a bad line, a corrupt file), the reading without
                # ``optimistic`` raises it too, at its own moment: leave it to that one.
                try:
                    if (parsed := next(blocks, None)) is None:
                        return
                    rows, seq = self.take(parsed, seq, check=True)
                    resolved = rows if isinstance(rows, TopicRun) else list(self._resolving(rows))
                except Exception as exc:
                    raise NotInOrder(f"a line could not be read ({type(exc).__name__})") from exc
                if not self.ordered:
                    raise NotInOrder(f"a record before line {seq + 2} is out of order")
                yield resolved

    def scan(self, block: bytes, seq: int, *, check: bool) -> tuple[_Scanned, int]:
        """The kept rows of a block and the ``seq`` of its last line. With ``check``, clears
        :attr:`ordered` if the block breaks the order (the rows are then incomplete)."""
        return self.take(parse_block(block), seq, check=check)

    def take(self, parsed: ParsedBlock, seq: int, *, check: bool) -> tuple[_Scanned, int]:
        """:meth:`scan` of a block that :func:`~pipeline.replay.lines.parse_block` took
        apart."""
        if isinstance(parsed, tuple):  # only locations, of one topic
            topic, times, keys, values = parsed
            start, seq = seq + 1, seq + len(times)
            if (name := self._name(topic)) is None:
                return [], seq
            if check:
                rank = self._ranks[topic] or 0
                if 2 * times[0] + rank < self.last or any(
                    map(operator.gt, times, islice(times, 1, None))
                ):
                    self.ordered = False
                    return [], seq
                self.last = 2 * times[-1] + rank
            return TopicRun(start, name, times, keys, values), seq
        out: list[LogRow | _Deferred] = []
        for topic, ts_text, key, value, other in parsed:
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
                    topic_name, ts = sort_head(line, seq + 1)
                    if self.kept(topic_name):
                        if (head := 2 * ts + topic_rank(topic_name)) < self.last:
                            self.ordered = False
                            return out, seq
                        self.last = head
                out.append((seq, line))
        return out, seq

    def resolve(self, rows: _Scanned) -> LogBlock:
        """``rows`` with each deferred line read when its turn comes (and dropped unless
        its topic is kept)."""
        if isinstance(rows, TopicRun) or 2 not in map(len, rows):
            return rows  # type: ignore[return-value]  # no deferred line
        return self._resolving(rows)

    def _resolving(self, rows: list[LogRow | _Deferred]) -> Iterator[LogRow]:
        for item in rows:
            if len(item) == 8:
                yield item
            elif self.kept((row := row_of(*item))[1]):
                yield row

    def _in_order(self, lines: bytes) -> bool:
        """Whether the records of a block keep the order (the first pass past the lines
        read ahead)."""
        heads = self._block_heads(lines)
        if heads is None:  # a line in another layout, or a blank one: line by line
            for raw_line in lines.split(b"\n"):
                if (line := raw_line.rstrip(b"\r")).strip():
                    self.lines += 1
                    topic, ts = sort_head(line, self.lines)
                    if self.kept(topic):
                        if (head := 2 * ts + topic_rank(topic)) < self.last:
                            return False
                        self.last = head
            return True
        self.lines += lines.count(b"\n")
        order, rank = heads
        if order:
            first, last = order[0], order[-1]
            if rank is not None:
                first, last = 2 * first + rank, 2 * last + rank
            if first < self.last or any(map(operator.gt, order, islice(order, 1, None))):
                return False
            self.last = last
        return True

    def _block_heads(self, lines: bytes) -> tuple[list[int], int | None] | None:
        """The kept records of a block as ``(order, rank)``: their sort heads are ``2 * x
        + rank`` for ``x`` in ``order``, or ``order`` itself if ``rank`` is None. None
        unless every line has the layout :data:`_HEADS` reads and a UTF-8 topic."""
        count = lines.count(b"\n")
        head = lines[: lines.find(b'","ts":') + 7]
        topic = head[11:-7]
        if head.startswith(b'\n{"topic":"') and _TOPIC.fullmatch(topic):
            # One topic throughout, as in a block of locations only? Then read just the
            # times: they compare as the records do. (Each match starts a line.)
            if (pattern := self._times.get(head)) is None:
                pattern = self._times[head] = re.compile(re.escape(head) + rb"(-?\d+)[,}]")
            times = pattern.findall(lines)
            if len(times) == count:
                if not self._decodes(topic):
                    return None
                rank = self._ranks[topic]
                return ([], None) if rank is None else (list(map(int, times)), rank)
        heads = _HEADS.findall(lines)
        if len(heads) != count or not all(map(self._decodes, set(map(_first, heads)))):
            return None
        ranks = self._ranks
        return [2 * int(ts) + rank for t, ts in heads if (rank := ranks[t]) is not None], None

    def _decodes(self, topic: bytes) -> bool:
        try:
            self._name(topic)
        except UnicodeDecodeError:
            return False
        return True


# The helper writes each block as its length (8 bytes, little-endian) and its marshal data;
# then a length of 0 at the end, or _FAILED if reading failed.
_FRAME = struct.Struct("<Q")
_FAILED = 2**64 - 1
_PIPE_BYTES = 1 << 20  # the most an unprivileged process may ask of Linux by default
_HELPER = "from pipeline.replay.order import parse_to_stdout; parse_to_stdout()"


def _parsed_blocks(
    path: str | os.PathLike[str], helper_min_bytes: int
) -> Generator[ParsedBlock, None, None]:
    """The blocks of a file taken apart: by a helper process, on another core and a block
    ahead of the caller, for a file of at least ``helper_min_bytes`` on a machine with more
    than one; else here. Raises NotInOrder if the helper fails (whatever it was, reading
    again here raises it)."""
    if os.path.getsize(path) < helper_min_bytes or (os.cpu_count() or 1) < 2 or not sys.executable:
        for block in text_blocks(path):
            yield parse_block(block)
        return
    # A plain child process, not multiprocessing's: that one runs the caller's main module
    # again in the child, which no script that replays a log expects.
    # Run from the directory holding this package, so the child imports this very code.
    command = [sys.executable, "-c", _HELPER, os.path.abspath(path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, cwd=_ROOT) as helper:
        out = cast("IO[bytes]", helper.stdout)
        with suppress(ImportError, AttributeError, OSError):  # Linux: room for a block more
            import fcntl

            fcntl.fcntl(out.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        try:
            while True:
                head = out.read(_FRAME.size)
                size = _FRAME.unpack(head)[0] if len(head) == _FRAME.size else _FAILED
                if size == 0:
                    return
                if size == _FAILED or len(data := out.read(size)) != size:
                    raise NotInOrder("the helper reading the log failed")
                yield marshal.loads(data)
        finally:
            out.close()  # a helper still writing gets a broken pipe, and ends
            try:
                helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                helper.kill()


_ROOT = str(Path(__file__).resolve().parents[2])  # where the helper finds this package


def parse_to_stdout() -> None:
    """The helper process of :func:`_parsed_blocks`: writes to stdout the blocks of the file
    named by its argument, taken apart."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's to handle: it closes the pipe
    out = sys.stdout.buffer
    end = 0
    try:
        try:
            for block in text_blocks(sys.argv[1]):
                data = marshal.dumps(parse_block(block))
                out.write(_FRAME.pack(len(data)))
                out.write(data)
        except BrokenPipeError:
            raise
        except Exception:  # the caller reads the log again by itself, and raises it
            end = _FAILED
        out.write(_FRAME.pack(end))
        out.flush()
    except BrokenPipeError:  # the caller stopped reading: nobody to tell, nothing to flush
        os._exit(0)


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
            topic, ts = sort_head(line, seq + 1)
            if kept(topic):
                chunk.append(((ts, topic_rank(topic), seq), line))
                if len(chunk) >= chunk_records:
                    spill()
        if not spills:
            chunk.sort(key=lambda item: item[0])
            for (_, _, seq), line in chunk:
                yield row_of(seq, line)
            return
        if chunk:
            spill()

        def run(spill_path: Path) -> Iterator[tuple[SortKey, bytes]]:
            with open(spill_path, "rb") as spilled:
                for entry in spilled:
                    ts_text, rank_text, seq_text, line = entry.rstrip(b"\n").split(b" ", 3)
                    yield (int(ts_text), int(rank_text), int(seq_text)), line

        for (_, _, seq), line in heapq.merge(*(run(p) for p in spills), key=lambda i: i[0]):
            yield row_of(seq, line)


# -- records ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sequenced:
    """A record and its 0-based position among the non-blank lines of its file."""

    seq: int
    record: LoggedRecord


def in_event_time_order(
    path: str | os.PathLike[str],
    *,
    keep: Callable[[str], bool] = lambda _topic: True,
    chunk_records: int = 250_000,
) -> Iterator[Sequenced]:
    """The records whose topic ``keep`` accepts, ordered by (ts, alerts first, file position).
    See :func:`event_time_rows`, which this wraps."""
    rows = event_time_rows(path, keep=keep, chunk_records=chunk_records)
    for seq, topic, ts, key, value, headers, partition, offset in rows:
        yield Sequenced(seq, LoggedRecord(topic, ts, key, value, headers, partition, offset))
