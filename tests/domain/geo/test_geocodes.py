"""Geocode classification and resolution against the in-memory gazetteer twin."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.geo.geocodes import (
    BoundaryKey,
    InMemoryGazetteer,
    classify_geocode,
    resolve_geocodes,
    resolve_geocodes_with_reasons,
    state_fips_for_abbreviation,
)
from pipeline.domain.models import Geocode, Polygon

MakeSquare = Callable[[float, float], Polygon]


@pytest.fixture
def make_square() -> MakeSquare:
    def make(lat: float, lon: float) -> Polygon:
        ring = ((lat, lon), (lat, lon + 1), (lat + 1, lon + 1), (lat + 1, lon), (lat, lon))
        return Polygon(ring)

    return make


@pytest.fixture
def texas(make_square: MakeSquare) -> tuple[Polygon, ...]:
    return (make_square(30, -98), make_square(27, -97))


@pytest.fixture
def travis(make_square: MakeSquare) -> tuple[Polygon, ...]:
    return (make_square(30.2, -97.8),)


@pytest.fixture
def caddo(make_square: MakeSquare) -> tuple[Polygon, ...]:
    return (make_square(32.5, -93.9),)


@pytest.fixture
def gazetteer(
    texas: tuple[Polygon, ...], travis: tuple[Polygon, ...], caddo: tuple[Polygon, ...]
) -> InMemoryGazetteer:
    return InMemoryGazetteer(
        states={"48": texas, "74": ()},
        counties={"48453": travis, "22017": caddo},
    )


def same(value: str) -> Geocode:
    return Geocode("SAME", value)


def test_a_whole_state_same_code_targets_the_state_polygons(
    gazetteer: InMemoryGazetteer, texas: tuple[Polygon, ...]
) -> None:
    polygons, unresolved = resolve_geocodes([same("048000")], gazetteer)

    assert polygons == texas
    assert unresolved == ()


@pytest.mark.parametrize(
    "geocode",
    [
        same("048453"),
        Geocode("FIPS6", "048453"),
        Geocode("fips", "48453"),
        Geocode("UGC", "TXC453"),
    ],
)
def test_each_county_scheme_targets_the_county(
    gazetteer: InMemoryGazetteer, travis: tuple[Polygon, ...], geocode: Geocode
) -> None:
    resolution = resolve_geocodes_with_reasons([geocode], gazetteer)

    assert resolution.polygons == travis
    assert resolution.resolved[0].boundary == BoundaryKey("county", "48453")


def test_a_targeted_state_absorbs_its_own_counties_but_not_other_states_counties(
    gazetteer: InMemoryGazetteer, texas: tuple[Polygon, ...], caddo: tuple[Polygon, ...]
) -> None:
    codes = [same("048453"), same("048000"), same("022017")]

    resolution = resolve_geocodes_with_reasons(codes, gazetteer)

    assert resolution.polygons == texas + caddo
    covered = {item.geocode.value: item.covered_by for item in resolution.resolved}
    assert covered["048453"] == BoundaryKey("state", "48")
    assert covered["022017"] == BoundaryKey("county", "22017")
    assert resolution.unresolved == ()


def test_codes_naming_the_same_boundary_add_its_polygons_once(
    gazetteer: InMemoryGazetteer, travis: tuple[Polygon, ...]
) -> None:
    codes = [same("048453"), same("048453"), Geocode("FIPS6", "048453"), Geocode("UGC", "TXC453")]

    resolution = resolve_geocodes_with_reasons(codes, gazetteer)

    assert resolution.polygons == travis
    assert len(resolution.resolved) == 3


@pytest.mark.parametrize(
    ("geocode", "kind", "words"),
    [
        (same("148001"), "subdivision", "subdivision 1 of county 48001"),
        (same("948000"), "subdivision", "subdivision 9 of the state"),
        (Geocode("UGC", "TXZ211"), "zone", "zone"),
        (Geocode("UGC", "GMZ455"), "zone", "zone"),
        (Geocode("UGC", "ZZC001"), "unknown_state", "ZZ"),
        (same("099000"), "unknown_state", "state code 99"),
        (same("000000"), "nationwide", "whole United States"),
        (same("48000"), "malformed", "6-digit"),
        (same("04800A"), "malformed", "6-digit"),
        (Geocode("UGC", "TXC201>205"), "malformed", "single UGC code"),
        (Geocode("profile:CAP-CP:Location:0.3", "4806016"), "not_us", "Canadian"),
        (Geocode("EMMA_ID", "FR441"), "unknown_scheme", "scheme"),
    ],
)
def test_codes_without_an_offline_boundary_are_returned_with_a_reason(
    gazetteer: InMemoryGazetteer, geocode: Geocode, kind: str, words: str
) -> None:
    resolution = resolve_geocodes_with_reasons([geocode], gazetteer)

    assert resolution.polygons == ()
    assert resolution.unresolved_geocodes == (geocode,)
    assert resolution.unresolved[0].kind == kind
    assert words in resolution.unresolved[0].reason
    assert geocode.value in resolution.unresolved[0].reason


def test_a_code_the_gazetteer_has_no_boundary_for_is_unresolved(
    gazetteer: InMemoryGazetteer,
) -> None:
    codes = [same("048999"), same("074000"), same("074300")]

    polygons, unresolved = resolve_geocodes(codes, gazetteer)

    assert polygons == ()
    assert unresolved == tuple(codes)
    reasons = resolve_geocodes_with_reasons(codes, gazetteer).unresolved
    assert [item.kind for item in reasons] == ["no_boundary"] * 3
    assert "county FIPS 48999" in reasons[0].reason


def test_unresolved_codes_keep_their_input_order(
    gazetteer: InMemoryGazetteer, texas: tuple[Polygon, ...]
) -> None:
    codes = [Geocode("UGC", "TXZ211"), same("022999"), same("048000"), same("148001")]

    polygons, unresolved = resolve_geocodes(codes, gazetteer)

    assert polygons == texas
    assert unresolved == (codes[0], codes[1], codes[3])


def test_classification_ignores_case_and_whitespace() -> None:
    assert classify_geocode(Geocode(" same ", " 012000 ")) == BoundaryKey("state", "12")
    assert classify_geocode(Geocode("ugc", "txc201")) == BoundaryKey("county", "48201")
    assert classify_geocode(Geocode("FIPS5", "72001")) == BoundaryKey("county", "72001")


def test_state_abbreviations_include_dc_and_territories() -> None:
    assert state_fips_for_abbreviation("TX") == "48"
    assert state_fips_for_abbreviation("dc") == "11"
    assert [state_fips_for_abbreviation(a) for a in ("PR", "GU", "VI", "AS", "MP")] == [
        "72",
        "66",
        "78",
        "60",
        "69",
    ]
    assert state_fips_for_abbreviation("GM") is None


_POOL = [
    same("048000"),
    same("048453"),
    same("022017"),
    same("022000"),
    same("048999"),
    same("148001"),
    same("099000"),
    Geocode("UGC", "TXC453"),
    Geocode("UGC", "TXZ211"),
    Geocode("FIPS6", "048000"),
    Geocode("profile:CAP-CP:Location:0.3", "4806016"),
]


@given(st.lists(st.sampled_from(_POOL), max_size=12))
def test_every_distinct_code_is_either_resolved_or_returned(codes: list[Geocode]) -> None:
    square = Polygon(((0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0)))
    gazetteer = InMemoryGazetteer(
        states={"48": (square,)}, counties={"48453": (square,), "22017": (square,)}
    )

    resolution = resolve_geocodes_with_reasons(codes, gazetteer)

    accounted = [item.geocode for item in resolution.resolved] + list(
        resolution.unresolved_geocodes
    )
    assert sorted(accounted, key=repr) == sorted(set(codes), key=repr)
    covers = {item.covered_by for item in resolution.resolved}
    assert len(resolution.polygons) == len(covers)
    if BoundaryKey("state", "48") in covers:
        assert BoundaryKey("county", "48453") not in covers
