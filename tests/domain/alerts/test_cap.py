"""CAP XML parsing: hand-written fixtures (tests/fixtures/cap) and factory-built messages."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.alerts.cap import parse_cap
from pipeline.domain.alerts.cap_details import amber_details, image_from_resource
from pipeline.domain.models import Alert, Circle, Geocode, Person, Reference, Vehicle
from pipeline.errors import MalformedEvent

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cap"
CAP12 = "urn:oasis:names:tc:emergency:cap:1.2"
CAP11 = "urn:oasis:names:tc:emergency:cap:1.1"
IMAGE_BYTES = b"GIF89a alertfeed test image: not a real picture, just known bytes"


def utc_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 1000


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse_one(data: bytes) -> Alert:
    alerts = parse_cap(data)
    assert len(alerts) == 1
    return alerts[0]


def make_area(
    *,
    desc: str = "Test area",
    polygons: Sequence[str] = (),
    circles: Sequence[str] = (),
    geocodes: Sequence[tuple[str, str]] = (),
) -> str:
    parts = [f"<areaDesc>{desc}</areaDesc>"]
    parts += [f"<polygon>{p}</polygon>" for p in polygons]
    parts += [f"<circle>{c}</circle>" for c in circles]
    parts += [
        f"<geocode><valueName>{n}</valueName><value>{v}</value></geocode>" for n, v in geocodes
    ]
    return "<area>" + "".join(parts) + "</area>"


def make_info(
    *,
    language: str = "en-US",
    headline: str = "Test headline",
    areas: Sequence[str] = (),
    parameters: Sequence[tuple[str, str]] = (),
    extra: str = "",
) -> str:
    params = "".join(
        f"<parameter><valueName>{n}</valueName><value>{v}</value></parameter>"
        for n, v in parameters
    )
    return (
        f"<info><language>{language}</language><category>Safety</category>"
        "<event>Test</event><urgency>Immediate</urgency><severity>Minor</severity>"
        f"<certainty>Observed</certainty><headline>{headline}</headline>"
        f"{extra}{params}{''.join(areas)}</info>"
    )


def make_cap(
    *,
    identifier: str = "TEST-1",
    sent: str = "2026-05-01T10:00:00-05:00",
    status: str = "Actual",
    msg_type: str = "Alert",
    references: str = "",
    infos: Sequence[str] = (),
    namespace: str = CAP12,
) -> bytes:
    refs = f"<references>{references}</references>" if references else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><alert xmlns="{namespace}">'
        f"<identifier>{identifier}</identifier><sender>test@example.org</sender>"
        f"<sent>{sent}</sent><status>{status}</status><msgType>{msg_type}</msgType>"
        f"<scope>Public</scope>{refs}{''.join(infos)}</alert>"
    ).encode()


# --- fixtures ----------------------------------------------------------------------------


def test_amber_alert_has_times_codes_and_content() -> None:
    alert = parse_one(load("amber_cae_child_abduction.xml"))

    assert alert.identifier == "FL-AMBER-2026-0501-001"
    assert alert.sender == "amber@fdle.state.fl.us"
    assert alert.key == "amber@fdle.state.fl.us|FL-AMBER-2026-0501-001"
    assert alert.sent_ms == utc_ms(2026, 5, 1, 15)
    assert alert.effective_ms == utc_ms(2026, 5, 1, 15)
    assert alert.expires_ms == utc_ms(2026, 5, 2, 15)
    assert (alert.status, alert.msg_type, alert.scope) == ("Actual", "Alert", "Public")
    assert alert.event_codes == (Geocode("SAME", "CAE"),)
    assert alert.categories == ("Rescue",)
    assert (alert.urgency, alert.severity, alert.certainty) == ("Immediate", "Severe", "Likely")
    assert alert.headline == "AMBER Alert: Tampa, FL"
    assert alert.instruction == "Call 911 if you see the child, suspect or vehicle."
    assert alert.web == "https://www.fdle.state.fl.us/amber"
    assert alert.sender_name == "Florida Department of Law Enforcement"
    assert Geocode("EAS-ORG", "CIV") in alert.parameters
    assert all(p.name != "BLOCKCHANNEL" for p in alert.parameters), "empty value is absent"


def test_amber_alert_child_suspect_and_vehicle_come_from_parameters() -> None:
    alert = parse_one(load("amber_cae_child_abduction.xml"))

    assert alert.child == Person(
        name="Jane Doe",
        age="7",
        sex="F",
        height="4'0\"",
        weight="50 lbs",
        hair="Brown",
        eyes="Green",
        description="Yellow raincoat, pink boots",
    )
    assert alert.suspect == Person(name="John Roe", sex="M", age="35")
    assert alert.vehicle == Vehicle(
        make="Toyota",
        model="Camry",
        year="2015",
        color="Silver",
        license_plate="ABC1234",
        license_state="FL",
    )


def test_amber_alert_keeps_image_references_but_never_the_inline_payload() -> None:
    alert = parse_one(load("amber_cae_child_abduction.xml"))

    inline, linked = alert.images
    assert inline.uri == ""
    assert inline.mime_type == "image/gif"
    assert inline.description == "Photo of Jane Doe"
    assert inline.digest == "sha1:" + hashlib.sha1(IMAGE_BYTES).hexdigest()
    assert inline.size == len(IMAGE_BYTES)
    assert linked.uri == "https://www.fdle.state.fl.us/amber/vehicle.jpg"
    assert linked.digest == "sha1:0123456789abcdef0123456789abcdef01234567"
    assert linked.size == 52000
    assert "R0lGOD" not in repr(alert), "the base64 payload must not reach the event"


def test_amber_alert_area_has_polygon_and_geocode() -> None:
    (area,) = parse_one(load("amber_cae_child_abduction.xml")).areas

    assert area.description == "Hillsborough County"
    (polygon,) = area.polygons
    assert polygon.exterior[0] == (28.17, -82.65)
    assert polygon.exterior[2] == (27.57, -82.05)
    assert len(polygon.exterior) == 5
    assert area.geocodes == (Geocode("SAME", "012057"),)


def test_several_polygons_and_areas_are_kept_in_order_and_empty_polygon_ignored() -> None:
    alert = parse_one(load("polygon_two_areas.xml"))

    first, second = alert.areas
    assert [len(p.exterior) for p in first.polygons] == [4, 5]
    assert first.polygons[1].exterior[1] == (28.30, -82.50)
    assert first.geocodes == (Geocode("SAME", "012103"), Geocode("UGC", "FLZ050"))
    assert second.description == "Hernando"
    assert second.polygons[0].exterior[0] == (28.50, -82.60)
    assert alert.language == "en-US", "CAP's default language"
    assert alert.expires_ms == utc_ms(2026, 5, 1, 20)


def test_circles_and_update_references() -> None:
    alert = parse_one(load("circle_earthquake_update.xml"))

    assert alert.status == "Exercise"
    assert alert.msg_type == "Update"
    assert alert.sent_ms == utc_ms(2026, 5, 1, 20, 56)
    assert alert.references == (
        Reference("quake@usgs.gov", "USGS-EQ-2026-42.1", "2026-05-01T20:30:00Z"),
    )
    assert alert.areas[0].circles == (
        Circle(32.9525, -115.5527, 12.5),
        Circle(33.1, -115.6, 0.0),
    )
    assert alert.expires_ms is None


def test_english_info_is_primary_and_other_languages_are_translations() -> None:
    alert = parse_one(load("bilingual_es_first.xml"))

    assert alert.language == "en-US"
    assert alert.headline == "Amber Alert in Los Angeles County"
    assert alert.event == "Child Abduction"
    assert alert.web == "https://lapd.example/en"
    assert [t.language for t in alert.translations] == ["es-US", "ko-US"]
    spanish = alert.translations[0]
    assert spanish.headline == "Alerta Amber en el condado de Los Ángeles"
    assert spanish.event == "Abducción de Niño"
    assert spanish.instruction == "Llame al 911."
    assert alert.event_codes == (Geocode("SAME", "CAE"),)


def test_areas_are_the_union_of_all_infos_without_duplicates() -> None:
    alert = parse_one(load("bilingual_es_first.xml"))

    assert [a.geocodes for a in alert.areas] == [
        (Geocode("SAME", "006037"),),
        (Geocode("SAME", "006059"),),
    ]
    assert alert.areas[0].description == "Los Angeles County", "primary language first"
    # the Spanish block expires two hours after the English one
    assert alert.expires_ms == utc_ms(2026, 5, 3, 5, 39)


def test_prefixed_namespace() -> None:
    alert = parse_one(load("prefixed_namespace.xml"))

    assert alert.identifier == "RFS-2026-0007"
    assert alert.language == "en-AU"
    assert alert.categories == ("Fire", "Met")
    assert alert.areas[0].circles == (Circle(-35.3888, 147.0598, 25.0),)
    assert alert.sent_ms == utc_ms(2026, 5, 1, 13, 4)


def test_cap_1_1_with_empty_elements() -> None:
    alert = parse_one(load("cap11_flood_watch.xml"))

    assert alert.event == "Flash Flood Watch"
    assert alert.event_codes == ()
    assert alert.description == ""
    assert alert.instruction == ""
    (area,) = alert.areas
    assert area.polygons == ()
    assert area.geocodes == (Geocode("FIPS6", "030049"), Geocode("UGC", "MTZ014"))
    assert alert.parameters == (
        Geocode("VTEC", "/O.CON.KTFX.FF.A.0003.000000T0000Z-260501T1800Z/"),
    )


def test_iso_8859_1_text_decodes() -> None:
    alert = parse_one(load("iso8859_1_earthquake.xml"))

    assert alert.headline == "EQ 4.6 Usulután, El Salvador"
    assert "daños menores" in alert.description
    assert "año 2026" in alert.description
    assert alert.areas[0].description == "47 km SSW de Usulután"


def test_update_carries_vehicle_details_and_reference_to_the_original() -> None:
    alert = parse_one(load("amber_update_with_references.xml"))

    assert alert.msg_type == "Update"
    assert alert.references == (
        Reference("amber@fdle.state.fl.us", "FL-AMBER-2026-0501-001", "2026-05-01T10:00:00-05:00"),
    )
    assert alert.vehicle == Vehicle(
        license_plate="XYZ987", description="Silver sedan, dented rear bumper"
    )
    assert alert.child is None
    assert alert.suspect is None


def test_cancel_without_info_references_every_earlier_message() -> None:
    alert = parse_one(load("amber_cancel_with_references.xml"))

    assert alert.msg_type == "Cancel"
    assert [r.identifier for r in alert.references] == [
        "FL-AMBER-2026-0501-001",
        "FL-AMBER-2026-0501-002",
    ]
    assert alert.areas == ()
    assert alert.event == ""


def test_statewide_alert_is_a_same_geocode_only_area() -> None:
    alert = parse_one(load("amber_florida_statewide_same.xml"))

    (area,) = alert.areas
    assert area.description == "FLORIDA-ALL"
    assert area.geocodes == (Geocode("SAME", "012000"),)
    assert area.polygons == ()
    assert area.circles == ()


def test_atom_feed_returns_every_embedded_alert() -> None:
    first, second = parse_cap(load("atom_feed_two_alerts.xml"))

    assert first.identifier == "DC-AMBER-1"
    assert first.event_codes == (Geocode("SAME", "CAE"),)
    assert first.areas[0].geocodes == (Geocode("FIPS6", "011001"),)
    assert second.identifier == "MD-AMBER-1"
    assert second.areas == ()


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        (
            "malformed_polygon_three_points.xml",
            "polygon 2 in area 1 has 3 points; CAP needs at least 4",
        ),
        (
            "malformed_polygon_unclosed.xml",
            "polygon 1 in area 1 is not closed (first point != last point)",
        ),
        (
            "malformed_latitude_out_of_range.xml",
            "latitude 95.0 out of range in polygon 1 of area 1",
        ),
        (
            "malformed_msgtype_unknown.xml",
            "<msgType> 'Foo' is not one of Alert, Update, Cancel, Ack, Error",
        ),
        ("malformed_identifier_missing.xml", "missing <identifier>"),
    ],
)
def test_malformed_fixture_reasons(fixture: str, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(load(fixture))
    assert str(caught.value) == reason


def test_not_xml_names_the_parser_position() -> None:
    with pytest.raises(MalformedEvent, match=r"^not XML: mismatched tag: line 4, column 2$"):
        parse_cap(load("malformed_not_xml.xml"))


@pytest.mark.parametrize("fixture", ["malformed_entity_bomb.xml", "malformed_external_entity.xml"])
def test_doctype_is_refused_before_any_entity_expands(fixture: str) -> None:
    with pytest.raises(MalformedEvent, match=r"DOCTYPE declaration <!DOCTYPE alert .*not allowed"):
        parse_cap(load(fixture))


# --- factory-built edge cases -------------------------------------------------------------


def test_circle_radius_that_is_not_a_number_names_circle_and_area() -> None:
    data = make_cap(infos=[make_info(areas=[make_area(), make_area(circles=["30.0,-90.0 abc"])])])
    with pytest.raises(MalformedEvent, match=r"^circle 1 in area 2: radius 'abc' is not a number$"):
        parse_cap(data)


@pytest.mark.parametrize(
    ("circle", "reason"),
    [
        ("30.0,-90.0 -5", "circle 1 in area 1: radius -5.0 km is negative"),
        ("30.0,-90.0 nan", "circle 1 in area 1: radius 'nan' is not a number"),
        ("30.0,-90.0", "circle 1 in area 1: '30.0,-90.0' is not 'lat,lon radius_km'"),
        ("30.0,-190.0 1", "longitude -190.0 out of range in circle 1 of area 1"),
    ],
)
def test_bad_circles(circle: str, reason: str) -> None:
    data = make_cap(infos=[make_info(areas=[make_area(circles=[circle])])])
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(data)
    assert str(caught.value) == reason


def test_point_with_trailing_comma_is_named() -> None:
    polygon = "30.0,-90.0 30.1,-90.0, 30.1,-90.1 30.0,-90.0"
    data = make_cap(infos=[make_info(areas=[make_area(polygons=[polygon])])])
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(data)
    assert str(caught.value) == "point 2 of polygon 1 in area 1 '30.1,-90.0,' is not 'lat,lon'"


def test_errors_name_the_info_block_when_there_are_several() -> None:
    bad = make_area(polygons=["30.0,-90.0 30.1,-90.0 30.0,-90.0"])
    data = make_cap(infos=[make_info(), make_info(language="es-US", areas=[bad])])
    with pytest.raises(MalformedEvent, match=r"^polygon 1 in area 1 of info 2 has 3 points"):
        parse_cap(data)


@pytest.mark.parametrize("msg_type", ["Ack", "Error"])
def test_ack_and_error_messages_parse(msg_type: str) -> None:
    assert parse_one(make_cap(msg_type=msg_type)).msg_type == msg_type


def test_cap_1_1_namespace_from_factory() -> None:
    assert parse_one(make_cap(namespace=CAP11, identifier="OLD-1")).identifier == "OLD-1"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"status": "Real"}, "<status> 'Real' is not one of Actual, Exercise, System, Test, Draft"),
        ({"sent": "yesterday"}, "<sent> 'yesterday' is not an ISO-8601 timestamp"),
        ({"sent": "2026-05-01T10:00:00"}, "<sent> '2026-05-01T10:00:00' has no UTC offset"),
        ({"references": "a,b"}, "<references> entry 1 'a,b' is not 'sender,identifier,sent'"),
    ],
)
def test_bad_header_fields(overrides: dict[str, str], reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(make_cap(**overrides))
    assert str(caught.value) == reason


def test_bad_expires_in_info() -> None:
    data = make_cap(infos=[make_info(extra="<expires>soon</expires>")])
    with pytest.raises(MalformedEvent, match=r"^<expires> 'soon' is not an ISO-8601 timestamp$"):
        parse_cap(data)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b'<foo xmlns="urn:x"/>', "root element is {urn:x}foo, expected a CAP alert"),
        (
            b"<alert><identifier>x</identifier></alert>",
            "root element is alert, expected a CAP alert",
        ),
    ],
)
def test_root_must_be_a_cap_alert(document: bytes, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(document)
    assert str(caught.value).startswith(reason)


def test_undefined_entity_is_not_xml() -> None:
    data = make_cap(identifier="&boom;")
    with pytest.raises(MalformedEvent, match=r"^not XML: undefined entity"):
        parse_cap(data)


def test_atom_errors_name_the_entry() -> None:
    bad = make_cap(msg_type="Foo").decode().split("?>", 1)[1]
    feed = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><entry><content type="text/xml">'
        f"{bad}</content></entry></feed>"
    ).encode()
    with pytest.raises(MalformedEvent, match=r"^Atom entry 1: <msgType> 'Foo'"):
        parse_cap(feed)


def test_atom_feed_without_embedded_cap_is_malformed_but_empty_feed_is_empty() -> None:
    index_only = b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>x</title></entry></feed>'
    with pytest.raises(MalformedEvent, match="1 entries but no <content> embeds a CAP alert"):
        parse_cap(index_only)
    assert parse_cap(b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title></feed>') == []


def test_inline_image_that_is_not_base64_is_dropped_but_the_alert_survives() -> None:
    resource = (
        "<resource><resourceDesc>photo</resourceDesc><mimeType>image/png</mimeType>"
        "<derefUri>abc</derefUri></resource>"
    )
    alert = parse_one(make_cap(infos=[make_info(extra=resource)]))
    assert alert.images == ()
    assert alert.headline == "Test headline"


def test_amber_parameter_names_tolerate_case_and_separators() -> None:
    child, suspect, vehicle = amber_details(
        [
            Geocode("CHILD-NAME", "Ann"),
            Geocode("child_name", "ignored: first value wins"),
            Geocode("Child Gender", "F"),
            Geocode("suspect_hair_color", "Red"),
            Geocode("License_State", "GA"),
            Geocode("Magnitude", "3.4"),
        ]
    )
    assert child == Person(name="Ann", sex="F")
    assert suspect == Person(hair="Red")
    assert vehicle == Vehicle(license_state="GA")
    assert amber_details([Geocode("VTEC", "/O.NEW/")]) == (None, None, None)


def test_image_from_resource_ignores_non_images() -> None:
    assert (
        image_from_resource(
            mime_type="audio/mp3",
            uri="https://x/a.mp3",
            inline="",
            digest="",
            size="",
            description="",
        )
        is None
    )


coordinate = st.tuples(
    st.floats(min_value=-90, max_value=90, allow_nan=False),
    st.floats(min_value=-180, max_value=180, allow_nan=False),
)


@given(st.lists(coordinate, min_size=3, max_size=30))
def test_polygon_points_round_trip_in_lat_lon_order(points: list[tuple[float, float]]) -> None:
    ring = [*points, points[0]]
    text = " ".join(f"{lat!r},{lon!r}" for lat, lon in ring)
    alert = parse_one(make_cap(infos=[make_info(areas=[make_area(polygons=[text])])]))
    assert alert.areas[0].polygons[0].exterior == tuple(ring)


# --- regressions found by tests/domain/alerts/test_fuzz.py ------------------------------------


def declaring(encoding: str, text: str = "Test headline") -> bytes:
    """A CAP document whose XML declaration names ``encoding`` (the bytes stay UTF-8)."""
    document = make_cap(infos=[make_info(headline=text)]).decode()
    return document.replace('encoding="UTF-8"', f'encoding="{encoding}"').encode()


@pytest.mark.parametrize(
    ("encoding", "why"),
    [
        ("bogus-8", "is not an encoding Python knows"),
        ("UTF00012", "is not an encoding Python knows"),
        ("utf-7", "is not a single-byte character set"),
        ("shift_jis", "is not a single-byte character set"),
        ("utf-32", "is not a single-byte character set"),
        ("hex", "is not a single-byte character set"),
        ("rot13", "is not a single-byte character set"),
        ("idna", "is not a single-byte character set"),
        ("punycode", "is not a single-byte character set"),
        ("undefined", "is not a single-byte character set"),
        ("unicode_escape", "is not a single-byte character set"),
        ("cp932", "is a multi-byte encoding the XML parser cannot read"),
    ],
)
def test_unusable_declared_encoding_is_malformed_and_named(encoding: str, why: str) -> None:
    # These raised LookupError, ValueError, UnicodeError or (unicode_escape, with warnings
    # as errors) DeprecationWarning out of pyexpat's encoding handler.
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(declaring(encoding))
    assert str(caught.value).startswith(f"not XML: the declared encoding {encoding!r} {why}; ")
    assert caught.value.reason_class == "malformed"


def test_unusable_encoding_declared_in_utf16_is_named_too() -> None:
    document = declaring("bogus-8").decode().replace('"bogus-8"', '"bogus-16"')
    with pytest.raises(MalformedEvent, match="declared encoding 'bogus-16' is not an encoding"):
        parse_cap(document.encode("utf-16"))


@pytest.mark.parametrize(
    ("declared", "codec"),
    [
        ("utf8", "utf-8"),  # expat knows only "UTF-8": pyexpat's byte table lost non-ASCII
        ("UTF_8", "utf-8"),
        ("utf-8-sig", "utf-8"),
        ("windows-1252", "cp1252"),
        ("latin1", "latin-1"),
        ("ISO-8859-15", "iso8859-15"),
    ],
)
def test_aliases_and_single_byte_encodings_parse(declared: str, codec: str) -> None:
    text = "Alerte enlèvement"
    assert parse_one(declaring(declared, text).decode().encode(codec)).headline == text


def test_utf16_alias_declared_without_bom_parses() -> None:
    data = declaring("utf-16-le").decode().encode("utf-16-le")
    assert parse_one(data).identifier == "TEST-1"


@pytest.mark.parametrize("size", ["²", "١٢", "9" * 5000, "-1", "1e3"])
def test_image_size_that_is_no_plain_byte_count_is_unknown_not_a_crash(size: str) -> None:
    # "²".isdigit() is True but int("²") raises; int() refuses over 4,300 digits.
    image = image_from_resource(
        mime_type="image/png", uri="https://x/a.png", inline="", digest="", size=size,
        description="",
    )  # fmt: skip
    assert image is not None
    assert image.size is None


def test_inline_image_with_non_ascii_payload_is_dropped_but_the_alert_survives() -> None:
    # base64.b64decode raises a plain ValueError (not binascii.Error) for non-ASCII text.
    resource = "<resource><mimeType>image/png</mimeType><derefUri>é</derefUri></resource>"
    alert = parse_one(make_cap(infos=[make_info(extra=resource)]))
    assert alert.images == ()


def test_reasons_quote_a_long_value_briefly() -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(make_cap(sent="2026-05-01T10:00:00" + "9" * 100_000))
    assert str(caught.value).startswith("<sent> '2026-05-01T10:00:00999")
    assert len(str(caught.value)) < 120
    with pytest.raises(MalformedEvent) as caught:
        parse_cap(make_cap(status="x" * 100_000))
    assert len(str(caught.value)) < 150
