"""A seeded mutator of messages, for the fuzz tests: real samples in, hostile variants out.

Every variant is a pure function of ``(seed, label, number)``: :meth:`Mutator.case`
builds its own ``random.Random`` from them, so one failing case is rebuilt on its own,
without replaying the cases before it. Each variant carries the names of the mutations
that made it, for the failure report.

Three families, stacked 1-4 at a time (havoc style):

* bytes: bit flips, interesting bytes, insertion, deletion, duplication, truncation,
  splicing with another sample, and numbers swapped for huge, negative, NaN, infinite,
  1e400 or oddly spelled ones;
* JSON (when the input decodes to JSON): a node swapped for a value of a wrong type, a
  key dropped or added, a list item repeated, a field given a hostile area;
* XML: a leaf element's text swapped (times, codes, polygons, circles, junk), an element
  dropped or repeated.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

INTERESTING_BYTES = b"\x00\x01\x7f\x80\xbf\xc0\xc3\xe2\xef\xf0\xfe\xff<>&;\"'{}[],:/\\\n \t-+.eE0"

TOKENS = (
    b"<", b">", b"</", b"/>", b"<?xml", b"?>", b"<!--", b"-->", b"<![CDATA[", b"]]>",
    b"&amp;", b"&lt;", b"&#0;", b"&#xD800;", b"&#x10FFFF;", b"&undefined;", b"&#65;",
    b"<!DOCTYPE a>", b'<!ENTITY e "x">', b'xmlns="urn:oasis:names:tc:emergency:cap:1.1"',
    b"{", b"}", b"[", b"]", b",", b":", b'"', b"null", b"true", b"false", b"\\u0000",
    b"\\ud800", b"\\", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xed\xa0\x80",
    b'"type":"Feature"', b'"features":[', b'"@graph":[', b'"holes":', b'"geometry":',
    b"POLYGON((", b"MULTIPOLYGON(((", b"EMPTY",
)  # fmt: skip

NUMBERS = (
    b"1e400", b"-1e400", b"NaN", b"nan", b"Infinity", b"-Infinity", b"inf", b"1e308",
    b"-1e308", b"9" * 400, b"18446744073709551616", b"-9223372036854775809", b"0", b"-0",
    b"-0.0", b"1e-400", b"4.9e-324", b"90.000000000001", b"-90", b"180.0000001", b"-180",
    b"0x1F", b"1_0", b"+5", b".5", b"5.", b"00012", b"1" * 5000, b"\xd9\xa1\xd9\xa2",
)  # fmt: skip

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_LEAF = re.compile(rb"<((?:[\w.-]+:)?([\w.-]+))(?:\s[^<>]*)?>([^<]*)</\1\s*>")
_ELEMENT = re.compile(rb"<((?:[\w.-]+:)?[\w.-]+)(?:\s[^<>]*)?>.*?</\1\s*>", re.DOTALL)

# Texts that a CAP leaf element could hold, keyed by its local name ("" for any).
_TIMES = (
    "2024-01-01T00:00:00Z", "2024-01-01T00:00:00", "2024-13-45T99:99:99Z",
    "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2024-01-01T00:00:00+23:59",
    "2024-01-01T00:00:00+24:00", "2024-02-30T00:00:00Z", "date:now -1 hour", "1704067200",
    "2024-01-01 00:00:00+00:00", "20240101T000000Z", "2024-W01-1T00:00Z",
)  # fmt: skip
_CODES = (
    "000000", "006000", "048000", "002000", "012000", "099000", "106001", "048453",
    "02000", "TXC453", "TXZ192", "GMZ850", "XXC001", "TXC000", "1", "", "0" * 6000, "٠٤٨٠٠٠",
)  # fmt: skip
_JUNK = (
    "", " ", "x" * 100_000, "NaN", "inf", "-inf", "1e400", "-1", "²", "١٢", "\u202e",
    "&amp;", "&lt;", "&#0;", "&#xD800;", "&#x10FFFF;", "<![CDATA[x]]>", "]]>", "é" * 1000,
)  # fmt: skip


def _text_values(local: str, rng: random.Random) -> str:
    if local in ("sent", "expires", "effective", "onset"):
        return rng.choice(_TIMES)
    if local == "value":
        return rng.choice(_CODES)
    if local == "valueName":
        return rng.choice(("SAME", "FIPS6", "FIPS", "UGC", "profile:CAP-CP:Location:0.3", ""))
    if local == "polygon":
        return " ".join(f"{lat!r},{lon!r}" for lat, lon in hostile_ring(rng))
    if local == "circle":
        lat, lon = rng.choice(((0.0, 0.0), (90.0, 0.0), (-90.0, 180.0), (38.9, -77.0)))
        radius = rng.choice(("0", "1e-9", "5", "20037", "1e300", "-1", "nan", "inf", "5 6"))
        return f"{lat},{lon} {radius}"
    if local == "status":
        return rng.choice(("Actual", "Test", "Exercise", "System", "Draft", "actual", ""))
    if local == "msgType":
        return rng.choice(("Alert", "Update", "Cancel", "Ack", "Error", "alert"))
    if local == "references":
        return rng.choice(("a,b,c", "a,b", ",,", "a,b,c d,e,f", "a,b,c,d", "x" * 10_000))
    if local == "size":
        return rng.choice(("12", "²", "-1", "9" * 5000, "1e3", "١٢"))
    if local == "derefUri":
        return rng.choice(("aGVsbG8=", "é", "!!!", "aGVsbG8", "=" * 3, "\x01"))
    if local == "mimeType":
        return rng.choice(("image/png", "image/", "IMAGE/JPEG", "audio/x-wav"))
    return rng.choice(_JUNK)


def hostile_ring(rng: random.Random) -> list[tuple[float, float]]:
    """A closed ring of (lat, lon) meant to hurt: world-sized, polar, antimeridian,
    degenerate, bow-tie, tiny, or with a non-finite coordinate."""
    kind = rng.randrange(8)
    if kind == 0:  # the world box
        ring = [(-90.0, -180.0), (90.0, -180.0), (90.0, 180.0), (-90.0, 180.0)]
    elif kind == 1:  # around a pole, across the antimeridian
        lat = rng.choice((89.9, 60.0, -75.0))
        ring = [(lat, float(lon)) for lon in range(-180, 180, 45)]
    elif kind == 2:  # collinear
        ring = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]
    elif kind == 3:  # bow tie
        ring = [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]
    elif kind == 4:  # tiny
        lat, lon = rng.uniform(-80, 80), rng.uniform(-179, 179)
        ring = [(lat, lon), (lat + 1e-9, lon), (lat + 1e-9, lon + 1e-9), (lat, lon + 1e-9)]
    elif kind == 5:  # antimeridian strip
        ring = [(10.0, 179.5), (10.0, -179.5), (11.0, -179.5), (11.0, 179.5)]
    elif kind == 6:  # random points anywhere
        ring = [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(rng.randint(3, 12))]
    else:  # a non-finite or out-of-range coordinate
        bad = rng.choice((math.nan, math.inf, -math.inf, 90.5, -180.5, 1e308))
        ring = [(0.0, 0.0), (bad, 1.0), (1.0, 1.0), (1.0, 0.0)]
    return [*ring, ring[0]]


def hostile_json_value(rng: random.Random) -> Any:
    """A JSON value of some type the schema does not expect."""
    return rng.choice((
        None, True, False, 0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e308, -1e308,
        5e-324, "", " ", "x" * 50_000, "NaN", "2024-01-01T00:00:00Z", [], {}, [[]], [None],
        {"": None}, [1, 2], [[0, 0], [0, 1], [1, 1], [0, 0]], {"type": "Polygon"},
        [hostile_ring(rng)], "POLYGON((0 0, 1 0, 1 1, 0 0))", "\u0000", "é",
    ))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Variant:
    """One generated input and how it was made (for reproducing a failure)."""

    data: bytes
    operations: tuple[str, ...]


class Mutator:
    """Seeded mutations of ``corpus`` (the samples of one format)."""

    def __init__(self, seed: int, corpus: Sequence[bytes]) -> None:
        if not corpus:
            raise ValueError("the mutator needs at least one sample")
        self.seed = seed
        self.corpus = list(corpus)

    def case(self, label: str, number: int) -> Variant:
        """Variant ``number`` of ``label``: a random sample, mutated 1-4 times."""
        rng = random.Random(f"{self.seed}:{label}:{number}")
        index = rng.randrange(len(self.corpus))
        data = self.corpus[index]
        operations = [f"sample {index}"]
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            name, operation = rng.choice(self._operations(data))
            data = operation(data, rng)
            operations.append(name)
        return Variant(data, tuple(operations))

    def _operations(self, data: bytes) -> list[tuple[str, Callable[[bytes, random.Random], bytes]]]:
        ops: list[tuple[str, Callable[[bytes, random.Random], bytes]]] = [
            ("flip bit", _flip_bit),
            ("interesting byte", _interesting_byte),
            ("insert", _insert),
            ("delete", _delete),
            ("duplicate span", _duplicate_span),
            ("truncate", _truncate),
            ("splice", self._splice),
            ("number", _number),
            ("number", _number),
        ]
        head = data.lstrip()[:1]
        if head in (b"{", b"["):
            ops += [("json node", _json_node)] * 4
        elif head == b"<":
            ops += [("xml text", _xml_text)] * 4 + [("xml element", _xml_element)] * 2
        return ops

    def _splice(self, data: bytes, rng: random.Random) -> bytes:
        other = rng.choice(self.corpus)
        return data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]


def _position(data: bytes, rng: random.Random) -> int:
    return rng.randint(0, len(data))


def _flip_bit(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes((data[i] ^ (1 << rng.randrange(8)),)) + data[i + 1 :]


def _interesting_byte(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes((rng.choice(INTERESTING_BYTES),)) + data[i + 1 :]


def _insert(data: bytes, rng: random.Random) -> bytes:
    i = _position(data, rng)
    kind = rng.randrange(3)
    if kind == 0:
        blob = rng.choice(TOKENS)
    elif kind == 1:
        blob = rng.randbytes(rng.randint(1, 16))
    else:
        blob = rng.choice(TOKENS) * rng.choice((2, 10, 1000))
    return data[:i] + blob + data[i:]


def _delete(data: bytes, rng: random.Random) -> bytes:
    i = _position(data, rng)
    return data[:i] + data[i + rng.choice((1, 1, 2, 8, 64, 1024)) :]


def _duplicate_span(data: bytes, rng: random.Random) -> bytes:
    i = _position(data, rng)
    span = data[i : i + rng.choice((1, 16, 256, 4096))]
    j = _position(data, rng)
    return data[:j] + span + data[j:]


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: _position(data, rng)]


def _number(data: bytes, rng: random.Random) -> bytes:
    matches = list(_NUMBER.finditer(data[:200_000]))
    if not matches:
        return _insert(data, rng)
    m = rng.choice(matches)
    return data[: m.start()] + rng.choice(NUMBERS) + data[m.end() :]


def _xml_text(data: bytes, rng: random.Random) -> bytes:
    leaves = list(_LEAF.finditer(data[:200_000]))
    if not leaves:
        return _insert(data, rng)
    m = rng.choice(leaves)
    text = _text_values(m.group(2).decode("ascii", "replace"), rng)
    encoded = text.encode() if rng.randrange(4) else text.encode("latin-1", "replace")
    return data[: m.start(3)] + encoded + data[m.end(3) :]


def _xml_element(data: bytes, rng: random.Random) -> bytes:
    elements = [m for m in _ELEMENT.finditer(data[:200_000]) if m.end() - m.start() < 50_000]
    if not elements:
        return _delete(data, rng)
    m = rng.choice(elements)
    if rng.randrange(2):
        return data[: m.start()] + data[m.end() :]
    return data[: m.end()] + m.group(0) * rng.choice((1, 2, 60)) + data[m.end() :]


def _json_node(data: bytes, rng: random.Random) -> bytes:
    try:
        tree = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _number(data, rng)
    paths: list[tuple[Any, Any]] = []
    _collect(tree, paths, rng, budget=4000)
    if not paths:
        return orjson.dumps(hostile_json_value(rng))
    parent, key = rng.choice(paths)
    kind = rng.randrange(5)
    if kind == 0 and isinstance(parent, dict):
        del parent[key]
    elif kind == 1 and isinstance(parent, list):
        parent.insert(key, parent[key])
    elif kind == 2 and isinstance(parent, dict):
        parent[rng.choice(("holes", "geometry", "areas", "features", "extra", "@graph"))] = (
            hostile_json_value(rng)
        )
    else:
        parent[key] = hostile_json_value(rng)
    try:
        return orjson.dumps(tree)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: keep the input
        return data


def _collect(node: Any, out: list[tuple[Any, Any]], rng: random.Random, budget: int) -> None:
    """(container, key) of up to ``budget`` nodes, sampled without walking giant lists whole."""
    stack = [node]
    while stack and len(out) < budget:
        current = stack.pop()
        if isinstance(current, dict):
            items: list[tuple[Any, Any]] = list(current.items())
        elif isinstance(current, list):
            indices: Sequence[int] = range(len(current))
            if len(current) > 32:
                indices = sorted(rng.sample(indices, 32))
            items = [(i, current[i]) for i in indices]
        else:
            continue
        for key, child in items:
            out.append((current, key))
            stack.append(child)
