"""Event logs: recorded or synthetic topic traffic, one JSON record per line.

The format is ``schemas/event_log.schema.json``. Each line is::

    {"topic": "locations", "ts": 1795400000000, "key": "u-1", "value": {...}, "headers": {...}}

with optional ``partition``, ``offset``, ``key_encoding``, ``value_encoding`` and
``headers_encoding``. ``topic`` is a logical name (alerts, locations, interstitials,
lifecycle, dlq), or the real name of a topic outside alertfeed's set.

Bytes are kept exactly. :func:`encode_record` picks, for every value:

* ``null`` for a Kafka tombstone (no value);
* a JSON object when the bytes are a JSON object whose compact re-serialisation (orjson)
  reproduces them byte for byte, so reading it back and serialising it gives the same bytes;
* otherwise a string holding the exact UTF-8 text (CAP XML, pretty-printed JSON, ...);
* otherwise (not UTF-8) a base64 string, marked ``"value_encoding": "base64"``.

Keys are strings, or base64 with ``"key_encoding": "base64"``. Headers are an object of
name to UTF-8 string (or ``null``); if any header value is not UTF-8 every value is base64
and ``"headers_encoding": "base64"``; if a name repeats, headers are an array of
``[name, value]`` pairs instead, in their original order.

Files are ``.jsonl``, ``.jsonl.gz`` or ``.jsonl.zst``, chosen by suffix. Compressed output
is deterministic too: the gzip header carries no name and no mtime.

Time shifting (:func:`retime_record`) also lives here because it rewrites logged records:
it moves the record's ``ts`` and the times inside alerts and locations by one offset.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import heapq
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
import zstandard

from pipeline.errors import MalformedEvent

LOGICAL_TOPICS = ("alerts", "locations", "interstitials", "lifecycle", "dlq")
Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """One record of an event log, bytes untouched.

    ``topic`` is a logical name or a foreign real topic name. ``partition`` and ``offset``
    are known for recorded traffic and ``None`` for synthetic records.
    """

    topic: str
    ts: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None
    offset: int | None = None


# -- one line ---------------------------------------------------------------------------------
def encode_record(record: LoggedRecord) -> bytes:
    """The log line of ``record``, newline included. Deterministic: same record, same bytes."""
    line: dict[str, Any] = {"topic": record.topic, "ts": record.ts}
    extra: dict[str, Any] = {}
    if record.key is None:
        line["key"] = None
    else:
        try:
            line["key"] = record.key.decode("utf-8")
        except UnicodeDecodeError:
            line["key"] = _b64(record.key)
            extra["key_encoding"] = "base64"
    value, value_encoding = _encode_value(record.value)
    line["value"] = value
    if value_encoding:
        extra["value_encoding"] = value_encoding
    if record.headers:
        headers, headers_encoding = _encode_headers(record.headers)
        line["headers"] = headers
        if headers_encoding:
            extra["headers_encoding"] = headers_encoding
    if record.partition is not None:
        line["partition"] = record.partition
    if record.offset is not None:
        line["offset"] = record.offset
    line.update(extra)
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def json_record(topic: str, ts: int, key: str | None, value: Mapping[str, Any]) -> bytes:
    """The log line of a JSON-object event (what producers of synthetic logs write)."""
    return orjson.dumps(
        {"topic": topic, "ts": ts, "key": key, "value": value}, option=orjson.OPT_APPEND_NEWLINE
    )


def decode_record(line: bytes, number: int = 0) -> LoggedRecord:
    """Parse one log line. Raises MalformedEvent naming line ``number`` (1-based)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"event log line {number}: not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedEvent(f"event log line {number}: not a JSON object")
    try:
        return _record_of(obj)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise MalformedEvent(f"event log line {number}: {exc!r}") from exc


def _record_of(obj: dict[str, Any]) -> LoggedRecord:
    topic, ts = obj["topic"], obj["ts"]
    if len(obj) == 4 and type(ts) is int and type(topic) is str and topic:
        # The common shape (synthetic logs): an object value, a string key, nothing else.
        key, value = obj["key"], obj["value"]
        if type(key) is str and type(value) is dict:
            return LoggedRecord(topic, ts, key.encode(), orjson.dumps(value))
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ValueError("ts must be an integer (epoch ms)")
    key = obj.get("key")
    if key is not None:
        if not isinstance(key, str):
            raise ValueError("key must be a string or null")
        key_bytes: bytes | None = (
            _unb64(key) if obj.get("key_encoding") == "base64" else key.encode()
        )
    else:
        key_bytes = None
    value = obj.get("value")
    if value is None:
        value_bytes = None
    elif isinstance(value, dict):
        value_bytes = orjson.dumps(value)
    elif isinstance(value, str):
        value_bytes = _unb64(value) if obj.get("value_encoding") == "base64" else value.encode()
    else:
        raise ValueError("value must be a JSON object, a string or null")
    headers = _decode_headers(obj.get("headers"), obj.get("headers_encoding") == "base64")
    partition, offset = obj.get("partition"), obj.get("offset")
    return LoggedRecord(
        topic,
        ts,
        key_bytes,
        value_bytes,
        headers,
        partition if isinstance(partition, int) else None,
        offset if isinstance(offset, int) else None,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _encode_value(value: bytes | None) -> tuple[Any, str | None]:
    if value is None:
        return None, None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return _b64(value), "base64"
    if text.startswith("{"):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            return text, None
        if isinstance(obj, dict) and orjson.dumps(obj) == value:
            return obj, None
    return text, None


def _encode_headers(headers: Headers) -> tuple[Any, str | None]:
    try:
        texts = [(k, v.decode("utf-8") if v is not None else None) for k, v in headers]
        encoding = None
    except UnicodeDecodeError:
        texts = [(k, _b64(v) if v is not None else None) for k, v in headers]
        encoding = "base64"
    names = [k for k, _ in texts]
    if len(set(names)) == len(names):
        return dict(texts), encoding
    return [[k, v] for k, v in texts], encoding


def _decode_headers(raw: Any, is_b64: bool) -> Headers:
    if raw is None:
        return ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    out: list[tuple[str, bytes | None]] = []
    for pair in pairs:
        name, value = pair
        if not isinstance(name, str) or not (value is None or isinstance(value, str)):
            raise ValueError("headers must map names to strings or null")
        out.append((name, None if value is None else _unb64(value) if is_b64 else value.encode()))
    return tuple(out)


# -- files ------------------------------------------------------------------------------------
def _compression(path: Path) -> str:
    name = path.name
    if name.endswith(".gz"):
        return "gz"
    if name.endswith(".zst"):
        return "zst"
    return "none"


class _ByteSink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class EventLogWriter:
    """Streams log lines to a ``.jsonl``, ``.jsonl.gz`` or ``.jsonl.zst`` file.

    Use as a context manager; the file is complete only after :meth:`close`. ``count`` is
    the number of records written so far.
    """

    _FLUSH_BYTES = 1 << 20

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stack = ExitStack()
        raw = self._stack.enter_context(open(self.path, "wb"))  # noqa: SIM115
        kind = _compression(self.path)
        self._out: _ByteSink
        if kind == "gz":
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
            self._stack.callback(gz.close)
            self._out = gz
        elif kind == "zst":
            self._out = self._stack.enter_context(
                zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
            )
        else:
            self._out = raw
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.count = 0

    def write(self, record: LoggedRecord) -> None:
        self.write_line(encode_record(record))

    def write_line(self, line: bytes) -> None:
        """Append one already-encoded line (ending with a newline)."""
        self._buffer.append(line)
        self._buffered += len(line)
        self.count += 1
        if self._buffered >= self._FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._out.write(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0

    def close(self) -> None:
        self._flush()
        self._stack.close()

    def __enter__(self) -> EventLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The non-blank lines of a log file, decompressed, newline stripped."""
    p = Path(path)
    with ExitStack() as stack:
        raw = stack.enter_context(open(p, "rb"))
        kind = _compression(p)
        stream: Iterable[bytes]
        if kind == "gz":
            gz = gzip.GzipFile(fileobj=raw, mode="rb")
            stack.callback(gz.close)
            stream = gz
        elif kind == "zst":
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            stream = stack.enter_context(io.BufferedReader(reader, buffer_size=1 << 20))
        else:
            stream = raw
        for raw_line in stream:
            line = raw_line.rstrip(b"\r\n")
            if line.strip():
                yield line


def read_log(path: str | os.PathLike[str]) -> Iterator[LoggedRecord]:
    """Every record of a log file, in file order. Raises MalformedEvent on a bad line."""
    for number, line in enumerate(read_lines(path), 1):
        yield decode_record(line, number)


def write_log(path: str | os.PathLike[str], records: Iterable[LoggedRecord]) -> int:
    """Write ``records`` to ``path``; returns how many."""
    with EventLogWriter(path) as writer:
        for record in records:
            writer.write(record)
        return writer.count


# -- event-time order -------------------------------------------------------------------------
def topic_rank(topic: str) -> int:
    """Alerts sort before everything else at equal ``ts``: an alert and a location of the
    same millisecond are taken as alert first."""
    return 0 if topic == "alerts" else 1


_HEAD = re.compile(rb'^\{"topic":"([^"\\]+)","ts":(-?\d+)[,}]')


def _sort_head(line: bytes, number: int) -> tuple[str, int]:
    """``(topic, ts)`` of a line: a regex for the layout this module writes, else a parse."""
    match = _HEAD.match(line)
    if match:
        return match.group(1).decode(), int(match.group(2))
    record = decode_record(line, number)
    return record.topic, record.ts


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

    A first pass checks whether the file is already in that order (simulated logs are), and
    then streams it; otherwise the lines are sorted in chunks of ``chunk_records`` spilled to
    temporary files and merged, so memory stays bounded for any log size. Deterministic.
    """
    last = (-(2**63), 0)
    ordered = True
    for number, line in enumerate(read_lines(path), 1):
        topic, ts = _sort_head(line, number)
        if not keep(topic):
            continue
        head = (ts, topic_rank(topic))
        if head < last:
            ordered = False
            break
        last = head
    if ordered:
        for seq, line in enumerate(read_lines(path)):
            record = decode_record(line, seq + 1)
            if keep(record.topic):
                yield Sequenced(seq, record)
        return
    yield from _external_sort(path, keep, chunk_records)


def _external_sort(
    path: str | os.PathLike[str], keep: Callable[[str], bool], chunk_records: int
) -> Iterator[Sequenced]:
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
            if keep(topic):
                chunk.append(((ts, topic_rank(topic), seq), line))
                if len(chunk) >= chunk_records:
                    spill()
        if not spills:
            chunk.sort(key=lambda item: item[0])
            for (_, _, seq), line in chunk:
                yield Sequenced(seq, decode_record(line, seq + 1))
            return
        if chunk:
            spill()

        def run(spill_path: Path) -> Iterator[tuple[SortKey, bytes]]:
            with open(spill_path, "rb") as spilled:
                for entry in spilled:
                    ts_text, rank_text, seq_text, line = entry.rstrip(b"\n").split(b" ", 3)
                    yield (int(ts_text), int(rank_text), int(seq_text)), line

        for (_, _, seq), line in heapq.merge(*(run(p) for p in spills), key=lambda i: i[0]):
            yield Sequenced(seq, decode_record(line, seq + 1))


# -- retiming ---------------------------------------------------------------------------------
_CAP_TIME = re.compile(
    rb"<((?:[A-Za-z_][\w.-]*:)?)(sent|effective|onset|expires)>\s*([^<]*?)\s*</\1\2>"
)
_CAP_REFERENCES = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?)references>([^<]*)</\1references>")
_JSON_ALERT_TIMES = ("sent", "effective", "onset", "expires")
_NWS_TIMES = ("sent", "effective", "onset", "expires", "ends")


def shift_iso(text: str, delta_ms: int) -> str:
    """``text`` (ISO-8601 with an offset) moved by ``delta_ms``, in the same style: same
    offset, ``Z`` or ``-00:00`` kept, fractional seconds only if it had them. Text that is
    not such a timestamp comes back unchanged."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    shifted = moment + timedelta(milliseconds=delta_ms)
    out = shifted.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    stripped = text.strip()
    if stripped.endswith(("Z", "z")):
        out = out.removesuffix("+00:00") + "Z"
    elif stripped.endswith("-00:00"):
        out = out.removesuffix("+00:00") + "-00:00"
    return out


def retime_value(topic: str, value: bytes, delta_ms: int) -> bytes:
    """``value`` of logical ``topic`` with the times inside moved by ``delta_ms``.

    * locations: ``ts``;
    * alerts, CAP XML: ``sent``, ``effective``, ``onset``, ``expires`` (any namespace prefix,
      Atom-embedded alerts too) and the ``sent`` part of ``references``;
    * alerts, alert JSON: ``sent``, ``effective``, ``onset``, ``expires``, ``references[].sent``;
    * alerts, NWS GeoJSON / JSON-LD: ``sent``, ``effective``, ``onset``, ``expires``, ``ends``
      and ``references[].sent`` of every feature's properties (or ``@graph`` item).

    Anything else (other topics, values that do not parse) comes back unchanged. JSON values
    that change are re-serialised compactly.
    """
    if topic == "locations":
        obj = _json_object(value)
        ts = obj.get("ts") if obj is not None else None
        if obj is None or isinstance(ts, bool) or not isinstance(ts, int):
            return value
        obj["ts"] = ts + delta_ms
        return orjson.dumps(obj)
    if topic != "alerts":
        return value
    if value.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return _retime_cap(value, delta_ms)
    obj = _json_object(value)
    if obj is None:
        return value
    nws = obj.get("type") in ("Feature", "FeatureCollection") or "features" in obj
    if nws:
        features = obj.get("features") if "features" in obj else [obj]
        for feature in features if isinstance(features, list) else []:
            if isinstance(feature, dict) and isinstance(feature.get("properties"), dict):
                _shift_fields(feature["properties"], _NWS_TIMES, delta_ms)
    elif "@graph" in obj:
        for item in obj["@graph"] if isinstance(obj["@graph"], list) else []:
            if isinstance(item, dict):
                _shift_fields(item, _NWS_TIMES, delta_ms)
    elif obj.get("@type") == "wx:Alert":
        _shift_fields(obj, _NWS_TIMES, delta_ms)
    else:
        _shift_fields(obj, _JSON_ALERT_TIMES, delta_ms)
    return orjson.dumps(obj)


def retime_record(record: LoggedRecord, delta_ms: int, logical_topic: str) -> LoggedRecord:
    """``record`` moved by ``delta_ms``: its ``ts`` and, per :func:`retime_value`, the times
    inside it. ``logical_topic`` says how to read the value."""
    value = record.value
    if value is not None:
        value = retime_value(logical_topic, value, delta_ms)
    return replace(record, ts=record.ts + delta_ms, value=value)


def _json_object(value: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _shift_fields(obj: dict[str, Any], names: Iterable[str], delta_ms: int) -> None:
    for name in names:
        if isinstance(obj.get(name), str):
            obj[name] = shift_iso(obj[name], delta_ms)
    references = obj.get("references")
    if isinstance(references, list):
        for reference in references:
            if isinstance(reference, dict) and isinstance(reference.get("sent"), str):
                reference["sent"] = shift_iso(reference["sent"], delta_ms)


def _retime_cap(value: bytes, delta_ms: int) -> bytes:
    def one_time(match: re.Match[bytes]) -> bytes:
        prefix, name, text = match.group(1), match.group(2), match.group(3)
        if not text.isascii():
            return match.group(0)
        shifted = shift_iso(text.decode("ascii"), delta_ms).encode("ascii")
        return b"<%s%s>%s</%s%s>" % (prefix, name, shifted, prefix, name)

    def references(match: re.Match[bytes]) -> bytes:
        prefix, raw = match.group(1), match.group(2)
        if not raw.isascii():
            return match.group(0)
        body = raw.decode("ascii")
        shifted = []
        for token in body.split():
            parts = token.split(",")
            if len(parts) == 3:
                parts[2] = shift_iso(parts[2], delta_ms)
            shifted.append(",".join(parts))
        joined = " ".join(shifted).encode("ascii")
        return b"<%sreferences>%s</%sreferences>" % (prefix, joined, prefix)

    return _CAP_REFERENCES.sub(references, _CAP_TIME.sub(one_time, value))


# -- topic names ------------------------------------------------------------------------------
def parse_topic_map(pairs: Iterable[str]) -> dict[str, str]:
    """``["old=new", ...]`` into a mapping. Raises ValueError on an entry without ``=``."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"topic map entry {pair!r} is not old=new")
        mapping[old] = new
    return mapping


# -- times on the command line ----------------------------------------------------------------
_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?)?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``90``, ``90s``, ``10m``, ``1.5h``, ``2d`` or ``250ms`` (bare numbers are seconds) to
    milliseconds. Raises ValueError."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration (e.g. 90s, 10m, 1h): {text!r}")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])


def parse_when(text: str, now_ms: int) -> int:
    """A point in time as epoch ms: ``now``, ``now-10m``, ``now+30s``, an ISO-8601 time with
    an offset, or epoch milliseconds. Raises ValueError."""
    stripped = text.strip()
    match = _RELATIVE.match(stripped)
    if match:
        sign, amount, unit = match.groups()
        if sign is None:
            return now_ms
        delta = parse_duration_ms(f"{amount}{unit or 's'}")
        return now_ms + delta if sign == "+" else now_ms - delta
    if stripped.isdigit():
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"not a time (now, now-10m, ISO-8601, epoch ms): {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return int(moment.timestamp() * 1000)
