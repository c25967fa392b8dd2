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

Records come back in file order (:func:`read_log`); :mod:`pipeline.replay.order` reads them
in event-time order, and :mod:`pipeline.replay.retime` moves them in time. This module is
the format and its files only.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import zstandard

from pipeline.domain.records import Headers
from pipeline.errors import MalformedEvent


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """One record of an event log (one line), bytes untouched.

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


_BLOCK_BYTES = 1 << 20


def text_blocks(path: str | os.PathLike[str], start: int = 0) -> Generator[bytes, None, None]:
    """The decompressed file from byte ``start`` on (0, or the offset of a newline), in
    blocks of whole lines, each line after a newline: a block is ``b"\n"`` and its lines
    joined by newlines. The lengths of the blocks add up to one more than the bytes read."""
    p = Path(path)
    with ExitStack() as stack:
        raw = stack.enter_context(open(p, "rb"))
        kind = _compression(p)
        stream: _ByteSource = raw
        if kind == "gz":
            stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        elif kind == "zst":
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            stream = stack.enter_context(reader)
        rest = b"\n" if start == 0 else b""
        while start > 0 and (data := stream.read(min(start, _BLOCK_BYTES))):
            start -= len(data)
        while data := stream.read(_BLOCK_BYTES):
            end = data.rfind(b"\n")
            if end < 0:
                rest += data
                continue
            yield rest + memoryview(data)[:end]
            rest = data[end:]
        if len(rest) > 1:
            yield rest


class _ByteSource(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The non-blank lines of a log file, decompressed, newline stripped."""
    for block in text_blocks(path):
        for raw_line in block.split(b"\n"):
            line = raw_line.rstrip(b"\r")
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
