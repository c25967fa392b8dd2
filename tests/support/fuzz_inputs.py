"""The inputs of tests/domain/alerts/test_fuzz.py: sample corpora to mutate, and structural cases.

Corpora are built from the real samples in ``../shared/samples`` (read from there, never
copied into the project) and, beside them or without them, from ``tests/fixtures``; the
structural cases are enumerated edge cases (encodings, nesting, sizes, hostile areas).
Everything here is deterministic: seeded by :data:`SEED`, timed by :data:`NOW`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random

import orjson

from pipeline.domain.alerts.alert_json import alert_to_json
from pipeline.domain.alerts.formats import parse_alert_message
from pipeline.errors import BadInput
from tests.support.factories import make_alert_json
from tests.support.mutator import hostile_ring

SEED = 20_260_501
NOW = 1_795_400_000_000  # the clock of the ingest and the matcher: fixed, so runs repeat
WINDOW_MS = 30 * 60_000
TEST_USERS = ("tester-1", "tester-2")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT.parent / "shared" / "samples"
FIXTURES = ROOT / "tests" / "fixtures"


# --- the corpus ------------------------------------------------------------------------


def _files(folder: Path, pattern: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.glob(pattern))] if folder.is_dir() else []


def cap_corpus() -> list[bytes]:
    return _files(SAMPLES / "cap", "*.xml") + _files(FIXTURES / "cap", "*.xml")


_DATE_PLACEHOLDER = re.compile(rb'"date:now ([+-]\d+) (minute|hour)s?"')


def _dated(document: bytes) -> bytes:
    """weather.gov's test responses hold ``"date:now -5 minutes"``: make those real times,
    so that the features get past their times to the cover."""
    base = datetime(2026, 5, 1, 12, tzinfo=UTC)

    def when(m: re.Match[bytes]) -> bytes:
        step = timedelta(minutes=int(m.group(1)) * (60 if m.group(2) == b"hour" else 1))
        return b'"' + (base + step).isoformat().encode() + b'"'

    return _DATE_PLACEHOLDER.sub(when, document)


def nws_corpus() -> list[bytes]:
    """Small NWS documents: the small samples whole, single features of the big ones (one
    in 9 of the 529-feature response), with the placeholder times made real, and a
    collection of three."""
    documents = _files(SAMPLES / "nws", "*.json") + _files(FIXTURES / "nws", "*.json")
    corpus: list[bytes] = []
    features: list[dict[str, object]] = []
    for document in documents:
        obj = orjson.loads(_dated(document))
        members = obj.get("features") if isinstance(obj, dict) else None
        if isinstance(members, list) and len(members) > 3:
            step = 9 if len(members) > 100 else 1
            features += members[::step]
        else:
            corpus.append(_dated(document))
            corpus.append(document)
    corpus += [orjson.dumps(feature) for feature in features]
    if len(features) >= 3:
        collection = {"type": "FeatureCollection", "features": features[:3]}
        corpus.append(orjson.dumps(collection))
    return corpus


def nws_jsonld_corpus(nws: list[bytes]) -> list[bytes]:
    """The API's JSON-LD form of the same alerts: properties as items, geometry as WKT."""
    items: list[dict[str, object]] = []
    for document in nws:
        obj = orjson.loads(document)
        features = obj.get("features", [obj]) if isinstance(obj, dict) else []
        for feature in features:
            if isinstance(feature, dict) and isinstance(feature.get("properties"), dict):
                item = dict(feature["properties"])
                item["geometry"] = _wkt(feature.get("geometry"))
                items.append(item)
    corpus = [orjson.dumps({"@context": {}, "@graph": items[i : i + 2]}) for i in range(0, 40, 2)]
    return corpus + [orjson.dumps({**item, "@type": "wx:Alert"}) for item in items[:40]]


def _wkt(geometry: object) -> str | None:
    if not isinstance(geometry, dict) or geometry.get("type") != "Polygon":
        return None
    rings = geometry["coordinates"]
    body = ", ".join("(" + ", ".join(f"{x} {y}" for x, y, *_ in ring) + ")" for ring in rings)
    return f"POLYGON ({body})"


def alert_json_corpus(cap: list[bytes], nws: list[bytes]) -> list[bytes]:
    """Alert JSON of every sample that parses, plus factory alerts of each area kind."""
    corpus: list[bytes] = []
    for document in [*cap, *nws]:
        try:
            alerts = parse_alert_message(document)
        except BadInput:
            continue
        corpus += [orjson.dumps(alert_to_json(alert)) for alert in alerts[:3]]
    sent = datetime(2026, 5, 1, 12, tzinfo=UTC)
    areas: list[dict[str, object]] = [
        {"polygons": [[(30.2, -97.8), (30.4, -97.8), (30.4, -97.6)]]},
        {"circles": [(45.5, -122.7, 12.0)]},
        {"geocodes": [("SAME", "041051"), ("UGC", "ORZ006")]},
        {"polygons": [[(10.0, 179.5), (10.0, -179.5), (11.0, -179.5)]]},
    ]
    for number, area in enumerate(areas):
        obj = make_alert_json(identifier=f"FUZZ-{number}", sent=sent, **area)  # type: ignore[arg-type]
        corpus.append(orjson.dumps(obj))
        if number == 0:  # the same square with a hole
            obj["areas"][0]["holes"] = [[[[30.25, -97.75], [30.3, -97.75], [30.3, -97.7]]]]
            corpus.append(orjson.dumps(obj))
    return corpus


# Where the installed alerts are (see matcher()), and elsewhere.
PLACES = ((30.3, -97.7), (45.52, -122.68), (40.0, -100.0), (0.0, 0.0), (89.99, 10.0))


def location_corpus() -> list[bytes]:
    rng = Random(f"{SEED}:location corpus")
    corpus = []
    for number in range(60):
        lat, lon = PLACES[number % len(PLACES)]
        event: dict[str, object] = {
            "user_id": TEST_USERS[number % 2] if number % 7 == 0 else f"user-{number}",
            "lat": lat + rng.uniform(-0.05, 0.05),
            "lon": lon + rng.uniform(-0.05, 0.05),
            "ts": NOW - rng.randint(0, WINDOW_MS + 600_000),
        }
        if number % 3 == 0:
            event["accuracy_m"] = rng.choice((5.0, 0.0, 1200.5, 30))
        corpus.append(orjson.dumps(event))
    return corpus


# --- structural cases ------------------------------------------------------------------


ENCODINGS = (
    "bogus-8", "utf-7", "shift_jis", "gbk", "big5", "euc-jp", "utf-32", "utf-16", "utf-16-le",
    "hex", "rot13", "base64", "uu", "zlib", "idna", "punycode", "undefined", "mbcs",
    "unicode_escape", "cp037", "EBCDIC-US", "", "UTF 8", "x" * 1000, "latin-1", "cp1252",
    "ISO-8859-1", "US-ASCII", "utf-8-sig", "koi8-r", "cp932", "utf8", "latin1", "windows-1252",
)  # fmt: skip


def _xml_body(document: bytes) -> str:
    """The document as text without its XML declaration (for re-encoding it)."""
    text = document.decode("utf-8", errors="replace").lstrip("\ufeff")
    return text.split("?>", 1)[1] if text.lstrip().startswith("<?xml") else text


def structural_alerts(cap: list[bytes], jsons: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """Named edge cases for parse_alert_message, enumerated rather than drawn."""
    for n, document in enumerate(cap[:24]):
        body = _xml_body(document)
        for encoding in ENCODINGS:
            yield (
                f"cap {n} declares {encoding[:12]!r}",
                (f'<?xml version="1.0" encoding="{encoding}"?>{body}'.encode(errors="replace")),
            )
        declared = f'<?xml version="1.0" encoding="UTF-16"?>{body}'
        yield f"cap {n} utf-16 with BOM", declared.encode("utf-16")
        yield f"cap {n} utf-16-le without BOM", declared.encode("utf-16-le")
        yield f"cap {n} utf-16-be without BOM", declared.encode("utf-16-be")
        yield f"cap {n} utf-16 bytes declared utf-8", body.encode("utf-16")
        yield f"cap {n} utf-32 with BOM", body.encode("utf-32")
        yield f"cap {n} utf-8 with BOM", codecs.BOM_UTF8 + body.encode()
        yield (
            f"cap {n} latin-1",
            (f'<?xml version="1.0" encoding="ISO-8859-1"?>{body}'.encode("latin-1", "replace")),
        )
        yield f"cap {n} latin-1 undeclared", body.replace("e", "\xe9").encode("latin-1", "replace")
        yield f"cap {n} nul bytes", body.encode().replace(b">", b">\x00", 3)
        for cut in (1, 10, len(body) // 2, len(body) - 1):
            yield f"cap {n} truncated at {cut}", body.encode()[:cut]
    for depth in (1_000, 100_000):
        yield f"xml nested {depth}", b"<a>" * depth + b"</a>" * depth
        inner = b"<x>" * depth + b"</x>" * depth
        if cap:
            yield (
                f"cap with {depth} nested elements",
                cap[0].replace(b"</info>", inner + b"</info>"),
            )
    yield from _resources(cap)
    yield from _areas()
    yield from _huge_caps(cap)
    for n, document in enumerate(jsons[:40]):
        yield f"json {n} with BOM", codecs.BOM_UTF8 + document
        yield f"json {n} utf-16", document.decode().encode("utf-16")
        yield f"json {n} utf-16-le without BOM", document.decode().encode("utf-16-le")
        yield (
            f"json {n} latin-1",
            document.decode().replace("e", "\xe9").encode("latin-1", "replace"),
        )
        for cut in (1, len(document) // 2, len(document) - 1):
            yield f"json {n} truncated at {cut}", document[:cut]
    for depth in (100, 500, 1_000, 1_030, 100_000):
        nested = b"[" * depth + b"]" * depth
        yield f"json array nested {depth}", nested
        for key in (b"areas", b"polygons", b"holes", b"features", b"geometry", b"@graph"):
            yield f"json {key.decode()} nested {depth}", b'{"' + key + b'":' + nested + b"}"
        collections = b'{"type":"GeometryCollection","geometries":[' * (depth // 2)
        yield f"nws geometry collections nested {depth // 2}", (
            b'{"type":"Feature","properties":' + _nws_properties() + b',"geometry":'
            + collections + b"null" + b"]}" * (depth // 2) + b"}"
        )  # fmt: skip
        wkt = "MULTIPOLYGON " + "(" * depth + "0 0, 1 0, 1 1, 0 0" + ")" * depth
        item = orjson.loads(_nws_properties())
        yield (
            f"nws wkt nested {depth}",
            orjson.dumps({**item, "@type": "wx:Alert", "geometry": wkt}),
        )
    for blob in (b"", b" ", b"\x00", b"\xff" * 64, b"\x00" * 4096, bytes(range(256)), b"<", b"{"):
        yield f"bytes {blob[:8]!r} x{len(blob)}", blob
    for token in (b"1e400", b"-1e400", b"NaN", b"Infinity", b"9" * 400, b"18446744073709551616"):
        yield f"number {token[:12]!r}", b'{"id":"x","sent":' + token + b"}"
    garbage = Random(f"{SEED}:garbage")
    for number in range(200):
        head = garbage.choice((b"", b"<", b"{", b"[", b"\xef\xbb\xbf<", b"\xff\xfe<\x00"))
        yield f"garbage {number}", head + garbage.randbytes(garbage.choice((3, 64, 4096)))


def _huge_caps(cap: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """A valid CAP polygon alert grown huge where the parser and the guardrails meet it."""
    document = next((d for d in cap if re.search(rb"<polygon>[^<]", d)), None)
    if document is None:
        return
    polygon = re.compile(rb"<polygon>[^<]*</polygon>")
    ring = b" ".join(b"%.4f,%.4f" % (38.0 + i % 7 * 1e-3, -77.0 + i * 1e-5) for i in range(4_999))
    many_points = b"<polygon>" + ring + b" 38.0000,-77.0000</polygon>"
    yield "cap polygon of 5k points", polygon.sub(many_points, document, count=1)
    yield (
        "cap polygon of 100k points",
        polygon.sub(
            b"<polygon>" + b"38.1,-77.1 " * 100_000 + b"38.1,-77.1</polygon>", document, count=1
        ),
    )
    yield (
        "cap with 10k circles",
        polygon.sub(b"<circle>38.9,-77.0 1</circle>" * 10_000, document, count=1),
    )
    yield (
        "cap with 10k areas",
        document.replace(
            b"</info>",
            b"<area><areaDesc>x</areaDesc><circle>1,1 1</circle></area>" * 10_000 + b"</info>",
        ),
    )
    yield (
        "cap with a 1 MB headline",
        re.sub(
            rb"<headline>[^<]*</headline>",
            b"<headline>" + b"x" * 1_000_000 + b"</headline>",
            document,
        ),
    )


def _areas() -> Iterator[tuple[str, bytes]]:
    """Alert JSON with hostile areas for the cover: world-sized, polar, antimeridian,
    degenerate, bow-tie and tiny polygons, and circles from nothing to the whole globe."""
    rng = Random(f"{SEED}:areas")
    sent = datetime(2026, 5, 1, 12, tzinfo=UTC)
    for number in range(240):
        obj = make_alert_json(identifier=f"AREA-{number}", sent=sent)
        ring = [list(point) for point in hostile_ring(rng)]  # orjson writes NaN as null
        obj["areas"] = [{"polygons": [ring]}]
        if number % 3 == 0:
            obj["areas"][0]["holes"] = [[[list(p) for p in hostile_ring(rng)]]]
        elif number % 3 == 1:
            obj["areas"][0]["holes"] = rng.choice((5, {"a": 1}, "abc", [5], [[5]], [None], True))
        yield f"alert json hostile polygon {number}", orjson.dumps(obj)
    radii = (0.0, 1e-9, 0.5, 300.0, 5_000.0, 10_007.5, 19_000.0, 20_015.0, 40_000.0, 1e300)
    for lat, lon in ((0.0, 0.0), (90.0, 0.0), (-90.0, 45.0), (10.0, 180.0), (-33.9, -180.0)):
        for radius in radii:
            obj = make_alert_json(identifier="CIRCLE", sent=sent, circles=[(lat, lon, radius)])
            yield f"alert json circle ({lat}, {lon}) {radius} km", orjson.dumps(obj)


def _resources(cap: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """Image resources with hostile sizes and inline payloads, in the first alert that
    has an <info> (images are best effort: the alert must survive any of them)."""
    document = next((d for d in cap if b"</info>" in d), None)
    if document is None:
        return
    sizes = ("12", "", "²", "١٢", "-1", "1e3", "9" * 5000, " 12 ", "0")
    payloads = ("", "aGVsbG8=", "aGVsbG8", "é", "!!!", "\x01", "A" * 100_000, "=")
    for size in sizes:
        for payload in payloads:
            resource = (
                "<resource><resourceDesc>photo</resourceDesc><mimeType>image/png</mimeType>"
                f"<size>{size}</size><derefUri>{payload}</derefUri></resource>"
            )
            name = f"image resource size {size[:6]!r} payload {payload[:6]!r}"
            yield name, document.replace(b"</info>", resource.encode() + b"</info>", 1)


def _nws_properties() -> bytes:
    return orjson.dumps(
        {
            "id": "NWS-FUZZ-1",
            "sender": "w-nws.webmaster@noaa.gov",
            "sent": "2026-05-01T12:00:00-04:00",
            "status": "Actual",
            "messageType": "Alert",
            "areaDesc": "Somewhere",
        }
    )


def _location_with(field_name: str, raw: bytes) -> bytes:
    """A valid location event whose ``field_name`` holds the JSON text ``raw``."""
    values = {"user_id": b'"u-1"', "lat": b"30.3", "lon": b"-97.7", "ts": b"%d" % NOW}
    values[field_name] = raw
    return b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in values.items()) + b"}"


def structural_locations() -> Iterator[tuple[str, bytes | None]]:
    valid = {"user_id": "u-1", "lat": 30.3, "lon": -97.7, "ts": NOW}
    yield "null value (tombstone)", None
    for blob in (b"", b" ", b"\x00", b"\xff" * 64, bytes(range(256)), b"null", b"[]", b'"x"'):
        yield f"bytes {blob[:8]!r}", blob
    document = orjson.dumps(valid)
    yield "BOM", codecs.BOM_UTF8 + document
    yield "utf-16", document.decode().encode("utf-16")
    yield "latin-1 user", document.replace(b"u-1", b"\xe9")
    fields = ("user_id", "lat", "lon", "ts", "accuracy_m")
    for depth in (100, 1_000, 100_000):
        yield f"nested {depth}", b"[" * depth + b"]" * depth
        for field_name in fields:
            nested = b"[" * depth + b"1" + b"]" * depth
            yield f"{field_name} nested {depth}", _location_with(field_name, nested)
    numbers = (
        b"1e400", b"-1e400", b"NaN", b"Infinity", b"9" * 400, b"18446744073709551616", b"-0",
        b"1e308", b"4.9e-324", b"-9223372036854775809", b"90.0000000001", b"true", b"{}",
    )  # fmt: skip
    for field_name in fields:
        for token in numbers:
            yield f"{field_name}={token[:12]!r}", _location_with(field_name, token)
    for value in ("x" * 1_000_000, "", " ", "\u0000", "\U0010ffff", 5, None, ["u"]):
        yield f"user_id {str(value)[:8]!r}", orjson.dumps({**valid, "user_id": value})
    for cut in range(1, len(document)):
        yield f"truncated at {cut}", document[:cut]
