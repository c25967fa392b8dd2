"""Event models of the domain core: alerts, their areas, locations and interstitial cards.

Conventions, held everywhere inside the package:

* Coordinates are ``(lat, lon)`` in degrees, CAP order. Formats that say ``[lon, lat]``
  (GeoJSON, shapefiles) are converted at the parser.
* Times are integer epoch milliseconds (UTC). ISO-8601 strings exist only at the edges.
* H3 cells are Python ``int`` (h3's ``basic_int`` API). Hex strings appear only at the
  edges: CLI output, GeoJSON, and the JSON events' ``cells`` lists.

All models are frozen, slotted dataclasses: cheap to build on the hot path, hashable,
and free of any I/O library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LatLon = tuple[float, float]

Status = Literal["Actual", "Exercise", "System", "Test", "Draft"]
MsgType = Literal["Alert", "Update", "Cancel", "Ack", "Error"]

STATUSES: frozenset[str] = frozenset(("Actual", "Exercise", "System", "Test", "Draft"))
MSG_TYPES: frozenset[str] = frozenset(("Alert", "Update", "Cancel", "Ack", "Error"))


@dataclass(frozen=True, slots=True)
class Polygon:
    """A closed ring of ``(lat, lon)`` points, with optional holes.

    Edges are straight lines in latitude/longitude, as h3 treats them. A polygon whose
    consecutive longitudes jump by more than 180 degrees crosses the antimeridian.
    """

    exterior: tuple[LatLon, ...]
    holes: tuple[tuple[LatLon, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Circle:
    """A geodesic circle: centre in degrees, radius in kilometres (0 allowed)."""

    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True, slots=True)
class Geocode:
    """A CAP ``<geocode>``: ``name`` is the scheme (SAME, FIPS6, UGC, ...), ``value`` the code."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Area:
    """One CAP ``<area>``. Polygons and circles are the precise target; geocodes count
    only when the area has neither (CAP's "equivalent description", WEA practice)."""

    description: str = ""
    polygons: tuple[Polygon, ...] = ()
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[Geocode, ...] = ()


@dataclass(frozen=True, slots=True)
class Reference:
    """One ``sender,identifier,sent`` triple of CAP ``<references>``."""

    sender: str
    identifier: str
    sent: str


@dataclass(frozen=True, slots=True)
class Image:
    """A resource worth showing on the card. Inline base64 payloads are never kept:
    only their reference (``uri``, possibly empty) and their digest."""

    uri: str
    mime_type: str = ""
    description: str = ""
    digest: str = ""
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Person:
    """Child or suspect details, where the alert gives them."""

    name: str = ""
    age: str = ""
    sex: str = ""
    height: str = ""
    weight: str = ""
    hair: str = ""
    eyes: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Vehicle:
    make: str = ""
    model: str = ""
    year: str = ""
    color: str = ""
    license_plate: str = ""
    license_state: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Translation:
    """The human-readable content of one CAP ``<info>`` block in one language."""

    language: str
    event: str = ""
    headline: str = ""
    description: str = ""
    instruction: str = ""
    web: str = ""


@dataclass(frozen=True, slots=True)
class Alert:
    """A normalized alert, whatever format it arrived in (CAP XML, NWS GeoJSON, alert JSON).

    ``identifier`` and ``sender`` identify this message; ``references`` name the earlier
    messages an Update or Cancel refers to. ``language`` names the primary content; other
    ``<info>`` languages are kept in ``translations``.
    """

    identifier: str
    sender: str
    sent_ms: int
    status: Status
    msg_type: MsgType
    scope: str = "Public"
    references: tuple[Reference, ...] = ()
    effective_ms: int | None = None
    expires_ms: int | None = None
    event: str = ""
    event_codes: tuple[Geocode, ...] = ()
    categories: tuple[str, ...] = ()
    urgency: str = ""
    severity: str = ""
    certainty: str = ""
    language: str = "en-US"
    headline: str = ""
    description: str = ""
    instruction: str = ""
    web: str = ""
    sender_name: str = ""
    child: Person | None = None
    suspect: Person | None = None
    vehicle: Vehicle | None = None
    images: tuple[Image, ...] = ()
    areas: tuple[Area, ...] = ()
    translations: tuple[Translation, ...] = ()
    parameters: tuple[Geocode, ...] = field(default=())

    @property
    def key(self) -> str:
        """The stable key of this message: ``sender`` and ``identifier``."""
        return alert_key(self.sender, self.identifier)


def alert_key(sender: str, identifier: str) -> str:
    """Key of an alert by (sender, identifier). CAP identifiers are unique per sender only."""
    return f"{sender}|{identifier}"


@dataclass(frozen=True, slots=True)
class Location:
    """A user-location event: ``{"user_id", "lat", "lon", "ts"}`` plus optional ``accuracy_m``."""

    user_id: str
    lat: float
    lon: float
    ts: int
    accuracy_m: float | None = None


@dataclass(frozen=True, slots=True)
class Sighting:
    """A user seen in an H3 cell (at the index resolution) at event time ``ts``, as read
    from ``partition`` of the locations topic (the partition that owns the user's presence
    and dedup records: the topic is keyed by user)."""

    user_id: str
    cell: int
    ts: int
    partition: int = 0


@dataclass(frozen=True, slots=True)
class AlertCover:
    """The H3 cover of an alert: compact cells (mixed resolutions, none finer than
    ``resolution``), plus the geocodes that could not be resolved to geometry."""

    resolution: int
    cells: frozenset[int]
    unresolved: tuple[Geocode, ...] = ()
