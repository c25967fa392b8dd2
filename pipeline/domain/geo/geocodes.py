"""CAP geocodes (SAME, FIPS, UGC) to US state and county boundaries, without I/O.

A CAP ``<area>`` may name its target by code instead of by polygon. Most AMBER Alerts
target a whole state: SAME ``0SS000`` (``012000`` is all of Florida). This module
classifies each code to a *boundary key* (a state or a county FIPS code) and asks a
:class:`Gazetteer` for the boundary polygons. File reading lives in an adapter
(``pipeline.adapters.census.CensusGazetteer``); :class:`InMemoryGazetteer` is the
in-process twin for the pure tests and the offline replay.

Schemes understood (``Geocode.name``, case-insensitive):

========================  ==========  ===============================================
scheme                    value       resolves to
========================  ==========  ===============================================
``SAME``, ``FIPS6``       ``PSSCCC``  ``SS000``: state ``SS``; ``0SSCCC``: county
                                      ``SSCCC``; ``P`` in 1..9 (a part of a county):
                                      unresolved, the part has no shipped boundary
``FIPS``, ``FIPS5``       ``SSCCC``   as ``0SSCCC`` (a 6-digit value reads as SAME)
``UGC``                   ``SSCNNN``  county ``<FIPS of SS>NNN``: NWS UGC county codes
                                      reuse the county FIPS number
``UGC``                   ``SSZNNN``  unresolved: forecast and marine zones are NWS
                                      shapes that are not shipped offline
``profile:CAP-CP:...``    any         unresolved: Canadian locations, not US
anything else             any         unresolved: unknown scheme
========================  ==========  ===============================================

SAME ``000000`` (the whole United States) is left unresolved on purpose: turning it into
every state's outline would be a nationwide alert, which is a policy decision for the
caller, not a geometry lookup. Codes are never dropped: each input code is either
resolved or returned with a human-readable reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pipeline.domain.models import Geocode, Polygon
from pipeline.errors import excerpt

BoundaryLevel = Literal["state", "county"]

UnresolvedKind = Literal[
    "unknown_scheme",  # a scheme this module does not read (EMMA_ID, ISO 3166, ...)
    "not_us",  # a non-US scheme, such as Canada's CAP-CP locations
    "malformed",  # the value does not have the scheme's shape
    "subdivision",  # SAME P in 1..9: a part of a county
    "zone",  # UGC forecast or marine zone
    "nationwide",  # SAME 000000
    "unknown_state",  # the state code is not a US state or territory FIPS code
    "no_boundary",  # the gazetteer has no boundary for the key
]

# Official state-level FIPS codes (FIPS 5-2, as the Census Bureau still uses them):
# 50 states, DC, and the inhabited territories plus the US Minor Outlying Islands.
STATE_FIPS_BY_ABBREVIATION: Mapping[str, str] = {
    "AL": "01", "AK": "02", "AZ": "04", "AR": "05", "CA": "06", "CO": "08", "CT": "09",
    "DE": "10", "DC": "11", "FL": "12", "GA": "13", "HI": "15", "ID": "16", "IL": "17",
    "IN": "18", "IA": "19", "KS": "20", "KY": "21", "LA": "22", "ME": "23", "MD": "24",
    "MA": "25", "MI": "26", "MN": "27", "MS": "28", "MO": "29", "MT": "30", "NE": "31",
    "NV": "32", "NH": "33", "NJ": "34", "NM": "35", "NY": "36", "NC": "37", "ND": "38",
    "OH": "39", "OK": "40", "OR": "41", "PA": "42", "RI": "44", "SC": "45", "SD": "46",
    "TN": "47", "TX": "48", "UT": "49", "VT": "50", "VA": "51", "WA": "53", "WV": "54",
    "WI": "55", "WY": "56", "AS": "60", "GU": "66", "MP": "69", "PR": "72", "UM": "74",
    "VI": "78",
}  # fmt: skip

STATE_FIPS_CODES: frozenset[str] = frozenset(STATE_FIPS_BY_ABBREVIATION.values())

_SAME_SCHEMES = frozenset(("SAME", "FIPS6"))
_FIPS5_SCHEMES = frozenset(("FIPS", "FIPS5"))


def state_fips_for_abbreviation(abbr: str) -> str | None:
    """The 2-digit state FIPS code of a USPS state or territory abbreviation.

    Case-insensitive; surrounding whitespace is ignored. ``None`` for anything that is
    not a US state, DC or territory (including NWS marine prefixes such as ``GM``).
    """
    return STATE_FIPS_BY_ABBREVIATION.get(abbr.strip().upper())


@dataclass(frozen=True, slots=True)
class BoundaryKey:
    """A boundary a gazetteer can return: a state (2-digit FIPS) or a county (5 digits)."""

    level: BoundaryLevel
    fips: str

    @property
    def state_fips(self) -> str:
        """The 2-digit FIPS code of the state this boundary lies in (or is)."""
        return self.fips[:2]


@dataclass(frozen=True, slots=True)
class ResolvedGeocode:
    """A code that resolved. ``boundary`` is what the code names; ``covered_by`` is the
    boundary whose polygons stand for it: itself, or the state when that state is
    targeted too (its county polygons would add nothing)."""

    geocode: Geocode
    boundary: BoundaryKey
    covered_by: BoundaryKey


@dataclass(frozen=True, slots=True)
class UnresolvedGeocode:
    """A code that did not resolve. ``kind`` is a low-cardinality label for metrics;
    ``reason`` is the precise sentence for logs and dead-letter records."""

    geocode: Geocode
    kind: UnresolvedKind
    reason: str


@dataclass(frozen=True, slots=True)
class GeocodeResolution:
    """The outcome of :func:`resolve_geocodes_with_reasons`.

    ``polygons`` hold each covering boundary once, in the order its first code appeared.
    Every distinct input code is in exactly one of ``resolved`` or ``unresolved``.
    """

    polygons: tuple[Polygon, ...]
    resolved: tuple[ResolvedGeocode, ...]
    unresolved: tuple[UnresolvedGeocode, ...]

    @property
    def unresolved_geocodes(self) -> tuple[Geocode, ...]:
        """The unresolved codes alone, as ``AlertCover.unresolved`` stores them."""
        return tuple(item.geocode for item in self.unresolved)


class Gazetteer(Protocol):
    """Boundaries by FIPS code. Implementations return ``None`` for codes they do not
    know and raise only infrastructure or configuration errors, never for bad codes.

    Polygons are ``(lat, lon)`` with longitudes in [-180, 180]; a ring that crosses the
    antimeridian shows it by a jump of more than 180 degrees between consecutive points.
    """

    def state(self, state_fips: str) -> tuple[Polygon, ...] | None:
        """The polygons of a state or territory by its 2-digit FIPS code (``"48"``)."""
        ...

    def county(self, county_fips5: str) -> tuple[Polygon, ...] | None:
        """The polygons of a county or equivalent by its 5-digit FIPS code (``"48453"``)."""
        ...


class InMemoryGazetteer:
    """A :class:`Gazetteer` over given mappings: the in-process twin of the Census
    adapter, for pure tests and the offline replay. Unknown codes give ``None``."""

    def __init__(
        self,
        states: Mapping[str, Sequence[Polygon]] | None = None,
        counties: Mapping[str, Sequence[Polygon]] | None = None,
    ) -> None:
        self._states = {key: tuple(value) for key, value in (states or {}).items()}
        self._counties = {key: tuple(value) for key, value in (counties or {}).items()}

    def state(self, state_fips: str) -> tuple[Polygon, ...] | None:
        return self._states.get(state_fips)

    def county(self, county_fips5: str) -> tuple[Polygon, ...] | None:
        return self._counties.get(county_fips5)


def classify_geocode(geocode: Geocode) -> BoundaryKey | UnresolvedGeocode:
    """The boundary a code names, or why it names none. Pure: no gazetteer is asked, so
    a well-formed county code may still turn out to have no boundary later."""
    scheme = geocode.name.strip().upper()
    value = geocode.value.strip()
    if scheme in _SAME_SCHEMES:
        return _classify_same(geocode, value)
    if scheme in _FIPS5_SCHEMES:
        if len(value) == 5 and value.isdigit():
            return _classify_same(geocode, "0" + value)
        if len(value) == 6 and value.isdigit():
            return _classify_same(geocode, value)
        return _unresolved(geocode, "malformed", "is not a 5-digit FIPS code SSCCC")
    if scheme == "UGC":
        return _classify_ugc(geocode, value.upper())
    if scheme.startswith("PROFILE:CAP-CP"):
        return _unresolved(geocode, "not_us", "is a Canadian CAP-CP location, not a US code")
    return _unresolved(geocode, "unknown_scheme", "uses a geocode scheme this feed does not read")


def resolve_geocodes_with_reasons(
    geocodes: Iterable[Geocode], gazetteer: Gazetteer
) -> GeocodeResolution:
    """Resolve codes to boundary polygons, keeping a reason for each code that fails.

    Promises: identical codes count once; each boundary's polygons appear once even when
    several codes (SAME, FIPS6, UGC) name it; a county whose state is also resolved adds
    no polygons (``covered_by`` names the state). A boundary the gazetteer returns as
    ``None`` or empty leaves its codes unresolved. Raises only what the gazetteer raises.
    """
    unique = tuple(dict.fromkeys(geocodes))
    keys: dict[Geocode, BoundaryKey] = {}
    unresolved: list[UnresolvedGeocode] = []
    for geocode in unique:
        outcome = classify_geocode(geocode)
        if isinstance(outcome, UnresolvedGeocode):
            unresolved.append(outcome)
        else:
            keys[geocode] = outcome

    boundaries: dict[BoundaryKey, tuple[Polygon, ...] | None] = {}
    for state in dict.fromkeys(key for key in keys.values() if key.level == "state"):
        boundaries[state] = gazetteer.state(state.fips) or None
    covered_states = {state.fips: state for state, found in boundaries.items() if found}
    for county in dict.fromkeys(key for key in keys.values() if key.level == "county"):
        if county.state_fips not in covered_states:
            boundaries[county] = gazetteer.county(county.fips) or None

    resolved: list[ResolvedGeocode] = []
    polygons: list[Polygon] = []
    emitted: set[BoundaryKey] = set()
    for geocode, key in keys.items():
        cover = covered_states.get(key.state_fips, key)
        found = boundaries.get(cover)
        if not found:
            noun = "state or territory" if key.level == "state" else "county"
            unresolved.append(
                _unresolved(
                    geocode, "no_boundary", f"names {noun} FIPS {key.fips}, which has no boundary"
                )
            )
            continue
        resolved.append(ResolvedGeocode(geocode, key, cover))
        if cover not in emitted:
            emitted.add(cover)
            polygons.extend(found)
    order = {geocode: index for index, geocode in enumerate(unique)}
    unresolved.sort(key=lambda item: order[item.geocode])
    return GeocodeResolution(tuple(polygons), tuple(resolved), tuple(unresolved))


def resolve_geocodes(
    geocodes: Sequence[Geocode], gazetteer: Gazetteer
) -> tuple[tuple[Polygon, ...], tuple[Geocode, ...]]:
    """``(polygons, unresolved codes)``: :func:`resolve_geocodes_with_reasons` without the
    reasons, in the shape ``AlertCover`` needs. Unresolved codes are returned, never
    dropped."""
    resolution = resolve_geocodes_with_reasons(geocodes, gazetteer)
    return resolution.polygons, resolution.unresolved_geocodes


def _classify_same(geocode: Geocode, value: str) -> BoundaryKey | UnresolvedGeocode:
    if len(value) != 6 or not value.isdigit():
        return _unresolved(geocode, "malformed", "is not a 6-digit SAME code PSSCCC")
    part, state, county = value[0], value[1:3], value[3:]
    if state == "00":
        if value == "000000":
            return _unresolved(
                geocode, "nationwide", "names the whole United States; not resolved to geometry"
            )
        return _unresolved(geocode, "malformed", "has state code 00 but is not 000000")
    if state not in STATE_FIPS_CODES:
        return _unresolved(
            geocode, "unknown_state", f"has state code {state}, which is no US state or territory"
        )
    if part != "0":
        what = "the state" if county == "000" else f"county {state}{county}"
        return _unresolved(
            geocode,
            "subdivision",
            f"names subdivision {part} of {what}, which has no shipped boundary; "
            "targeting it needs polygons",
        )
    if county == "000":
        return BoundaryKey("state", state)
    return BoundaryKey("county", state + county)


def _classify_ugc(geocode: Geocode, value: str) -> BoundaryKey | UnresolvedGeocode:
    if len(value) != 6 or not value[:3].isalpha() or not value[3:].isdigit():
        return _unresolved(geocode, "malformed", "is not a single UGC code SSTNNN")
    prefix, kind, number = value[:2], value[2], value[3:]
    if kind == "Z":
        return _unresolved(
            geocode,
            "zone",
            "is an NWS forecast or marine zone; zone shapes are not shipped offline",
        )
    if kind != "C":
        return _unresolved(geocode, "malformed", "is neither a UGC county (C) nor zone (Z)")
    state = state_fips_for_abbreviation(prefix)
    if state is None:
        return _unresolved(
            geocode, "unknown_state", f"has prefix {prefix}, which is no US state or territory"
        )
    if number == "000":
        return _unresolved(geocode, "malformed", "has county number 000")
    return BoundaryKey("county", state + number)


def _unresolved(geocode: Geocode, kind: UnresolvedKind, predicate: str) -> UnresolvedGeocode:
    label = geocode.name.strip()[:40] or "geocode"
    return UnresolvedGeocode(geocode, kind, f"{label} {excerpt(geocode.value.strip())} {predicate}")
