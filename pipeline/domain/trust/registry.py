"""The authority registry: who may interrupt feeds, how each one is recognised, and where
and what it may alert. One validated TOML file (``deploy/authorities.example.toml``):

    [[authority]]
    name = "Texas AMBER Alert Network"
    signed_by = ["IPAWSOPEN_200302"]      # certificate CN (IPAWS COG id) or RFC 4514 subject
    senders = ["amber@dps.texas.gov"]      # optional for signed sources: their <sender>
    require_signature = true
    same = ["048000"]                      # the areas it may target: SAME PSSCCC or FIPS
    polygons = [[[29.0, -99.0], [29.0, -98.0], [30.0, -98.0]]]   # (lat, lon) rings
    events = ["CAE"]                       # SAME event codes it may send; ["*"]: any
    max_active = 5                         # its alerts in force at once
    max_per_minute = 20                    # its messages per minute

    [[authority]]
    name = "NWS"
    senders = ["w-nws.webmaster@noaa.gov"]
    require_signature = false              # unsigned: trusted by its transport, so...
    unsigned_topics = ["alertfeed.alerts.nws"]   # ...admitted only on these input topics
    anywhere = true                        # no area of its own (still under the ceiling)
    events = ["*"]

A signed message is attributed by its verified signing certificate, never by what it says
about itself; an unsigned one by its ``<sender>``, and only on a topic declared for it.
An empty registry admits nobody.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from cryptography import x509

from pipeline.domain.checks import check_lat_lon
from pipeline.domain.models import Alert, Area, Geocode, Polygon
from pipeline.errors import ConfigurationError, MalformedEvent

ANY_EVENT = "*"
_SAME = re.compile(r"\d{6}")
_FIPS = re.compile(r"\d{2}(\d{3})?")
_EVENT = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Authority:
    """One alerting authority of the registry (see the module docstring)."""

    name: str
    signed_by: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    require_signature: bool = True
    unsigned_topics: tuple[str, ...] = ()
    same: tuple[str, ...] = ()
    polygons: tuple[Polygon, ...] = ()
    anywhere: bool = False
    events: tuple[str, ...] = ()
    max_active: int = 10
    max_per_minute: int = 60

    def as_alert(self) -> Alert:
        """Where it may alert, as an alert to cover: its polygons, and its SAME codes as an
        area of their own (both count; in one area the codes would be only a fallback)."""
        areas = []
        if self.polygons:
            areas.append(Area(description=f"polygons of {self.name}", polygons=self.polygons))
        if self.same:
            codes = tuple(Geocode("SAME", code) for code in self.same)
            areas.append(Area(description=f"areas of {self.name}", geocodes=codes))
        return Alert(
            identifier=f"authority:{self.name}",
            sender="",
            sent_ms=0,
            status="Actual",
            msg_type="Alert",
            areas=tuple(areas),
        )

    def may_send(self, event_codes: Sequence[str]) -> str | None:
        """None when it may send an alert with these SAME event codes, else the code it
        may not send (an alert without any code is judged by ``events = ["*"]`` alone)."""
        if ANY_EVENT in self.events:
            return None
        if not event_codes:
            return "(none)"
        return next((code for code in event_codes if code.upper() not in self.events), None)

    def signed(self, signer: x509.Certificate) -> bool:
        """Whether ``signer`` (a verified certificate) is one of this authority's."""
        names = signer.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        common = str(names[0].value) if names else None
        for wanted in self.signed_by:
            if "=" in wanted:
                if x509.Name.from_rfc4514_string(wanted) == signer.subject:
                    return True
            elif wanted == common:
                return True
        return False


class AuthorityRegistry:
    """The authorities, looked up by verified signer or by (sender, input topic)."""

    def __init__(self, authorities: Sequence[Authority] = ()) -> None:
        self.authorities = tuple(authorities)
        names = [a.name for a in self.authorities]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"authority names repeat: {sorted(names)}")
        unsigned: dict[tuple[str, str], str] = {}
        for authority in self.authorities:
            if authority.require_signature:
                continue
            for sender in authority.senders:
                for topic in authority.unsigned_topics:
                    other = unsigned.setdefault((sender, topic), authority.name)
                    if other != authority.name:
                        raise ConfigurationError(
                            f"sender {sender!r} on topic {topic!r} is claimed by both "
                            f"{other!r} and {authority.name!r}"
                        )

    def __bool__(self) -> bool:
        return bool(self.authorities)

    def for_signer(self, signer: x509.Certificate) -> Authority | None:
        """The authority whose certificate signed (the first that names it)."""
        return next((a for a in self.authorities if a.signed(signer)), None)

    def for_unsigned(self, sender: str, topic: str | None) -> Authority | None:
        """The authority an unsigned message of ``sender`` on input ``topic`` belongs to:
        one that does not require signatures and declared that topic."""
        for authority in self.authorities:
            if (
                not authority.require_signature
                and sender in authority.senders
                and topic in authority.unsigned_topics
            ):
                return authority
        return None

    def requiring_signature(self, sender: str) -> Authority | None:
        """A signing authority that names ``sender`` (an unsigned message from it is a
        missing signature, not an unknown sender)."""
        return next(
            (a for a in self.authorities if a.require_signature and sender in a.senders), None
        )

    @classmethod
    def from_toml(cls, text: str, *, source: str = "the registry") -> AuthorityRegistry:
        """Parse and validate a registry file. Raises ConfigurationError naming the entry
        and the field."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{source} is not TOML: {exc}") from exc
        unknown = set(document) - {"authority"}
        if unknown:
            raise ConfigurationError(f"{source}: unknown top-level keys {sorted(unknown)}")
        entries = document.get("authority", [])
        if not isinstance(entries, list):
            raise ConfigurationError(f"{source}: 'authority' must be an array of tables")
        return cls.from_entries(entries, source=source)

    @classmethod
    def from_entries(
        cls, entries: Sequence[Mapping[str, Any]], *, source: str = "the registry"
    ) -> AuthorityRegistry:
        """Validate decoded entries (a TOML file's ``[[authority]]`` tables, or settings)."""
        return cls(
            [_authority(entry, f"{source}, authority {i + 1}") for i, entry in enumerate(entries)]
        )


def _authority(entry: Mapping[str, Any], where: str) -> Authority:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where}: must be a table")
    unknown = set(entry) - {f.name for f in fields(Authority)}
    if unknown:
        raise ConfigurationError(f"{where}: unknown fields {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name!r})"
    authority = Authority(
        name=name,
        signed_by=_strings(entry, "signed_by", where),
        senders=_strings(entry, "senders", where),
        require_signature=_flag(entry, "require_signature", True, where),
        unsigned_topics=_strings(entry, "unsigned_topics", where),
        same=tuple(_same(code, where) for code in _strings(entry, "same", where)),
        polygons=_polygons(entry.get("polygons", []), where),
        anywhere=_flag(entry, "anywhere", False, where),
        events=tuple(_event(code, where) for code in _strings(entry, "events", where)),
        max_active=_positive(entry, "max_active", 10, where),
        max_per_minute=_positive(entry, "max_per_minute", 60, where),
    )
    for subject in authority.signed_by:
        if "=" in subject:
            try:
                x509.Name.from_rfc4514_string(subject)
            except ValueError as exc:
                raise ConfigurationError(f"{where}: signed_by {subject!r}: {exc}") from exc
    if authority.require_signature and not authority.signed_by:
        raise ConfigurationError(
            f"{where}: require_signature is true, so 'signed_by' must name its certificates"
        )
    if not authority.require_signature and not (authority.senders and authority.unsigned_topics):
        raise ConfigurationError(
            f"{where}: an unsigned source needs 'senders' and the 'unsigned_topics' it may "
            "arrive on (topics only its poller can write to)"
        )
    if authority.anywhere == bool(authority.same or authority.polygons):
        raise ConfigurationError(
            f"{where}: give its areas ('same', 'polygons') or 'anywhere = true', one of them"
        )
    if not authority.events:
        raise ConfigurationError(f"{where}: 'events' must list SAME event codes, or [\"*\"]")
    return authority


def _strings(entry: Mapping[str, Any], field: str, where: str) -> tuple[str, ...]:
    value = entry.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{where}: '{field}' must be a list of non-empty strings")
    return tuple(value)


def _flag(entry: Mapping[str, Any], field: str, default: bool, where: str) -> bool:
    value = entry.get(field, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where}: '{field}' must be true or false")
    return value


def _positive(entry: Mapping[str, Any], field: str, default: int, where: str) -> int:
    value = entry.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{where}: '{field}' must be a whole number of at least 1")
    return value


def _same(code: str, where: str) -> str:
    """A SAME ``PSSCCC`` code, from SAME or from FIPS (``SS`` a state, ``SSCCC`` a county)."""
    if _SAME.fullmatch(code):
        return code
    if _FIPS.fullmatch(code):
        return "0" + (code if len(code) == 5 else code + "000")
    raise ConfigurationError(
        f"{where}: area code {code!r} is neither SAME (PSSCCC) nor FIPS (SS or SSCCC)"
    )


def _event(code: str, where: str) -> str:
    if code == ANY_EVENT or _EVENT.fullmatch(code):
        return code
    raise ConfigurationError(f"{where}: event code {code!r} is not a SAME code (three letters)")


def _polygons(value: Any, where: str) -> tuple[Polygon, ...]:
    if not isinstance(value, list):
        raise ConfigurationError(f"{where}: 'polygons' must be a list of rings")
    rings = []
    for number, ring in enumerate(value, 1):
        polygon = f"polygon {number} of {where}"
        try:
            points = tuple(check_lat_lon(float(lat), float(lon), polygon) for lat, lon in ring)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{polygon} must be a list of [lat, lon] pairs") from exc
        except MalformedEvent as exc:
            raise ConfigurationError(str(exc)) from exc
        if len(set(points)) < 3:
            raise ConfigurationError(f"{polygon} needs at least 3 distinct points")
        rings.append(Polygon(points))
    return tuple(rings)
