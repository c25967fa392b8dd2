"""The trust checks of one message: who sent it (verified signature or declared unsigned
topic), what and when it may send, and that its cover stays inside its own areas and under
the ceiling (issue 14). Pure domain: covers at resolution 7, polygons only."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import h3.api.basic_int as h3
import pytest
import shapely

from pipeline.domain.alerts.cap import parse_cap
from pipeline.domain.geo.areas import cover_alert
from pipeline.domain.geo.containment import cells_outside
from pipeline.domain.geo.cover import CoverLimits
from pipeline.domain.models import Geocode
from pipeline.domain.trust.admission import TrustPolicy
from pipeline.domain.trust.registry import AuthorityRegistry
from pipeline.domain.trust.signature import TrustAnchors
from pipeline.errors import PolicyRejected
from tests.support.factories import make_cap_xml
from tests.support.pki import NOW, session_pki, sign_cap

RES = 7
AUSTIN_BOX = [(30.0, -98.2), (30.0, -97.4), (30.6, -97.4), (30.6, -98.2)]
INSIDE = [(30.2, -97.9), (30.2, -97.6), (30.4, -97.6), (30.4, -97.9)]
ACROSS = [(30.2, -97.9), (30.2, -96.9), (30.4, -96.9), (30.4, -97.9)]  # out to the east
NOW_MS = int(NOW.timestamp() * 1000)

REGISTRY = f"""
[[authority]]
name = "Austin"
signed_by = ["IPAWSOPEN_999001"]
polygons = [{[list(p) for p in AUSTIN_BOX]}]
events = ["CAE"]

[[authority]]
name = "Feeds"
senders = ["feeds@example.org"]
require_signature = false
unsigned_topics = ["alerts.unsigned"]
anywhere = true
events = ["*"]

[[authority]]
name = "Signing sender"
signed_by = ["IPAWSOPEN_999002"]
senders = ["amber@two.example"]
anywhere = true
events = ["CAE"]
"""


def _no_geocodes(codes: Sequence[Geocode]) -> Any:
    raise AssertionError("no geocodes here")


@pytest.fixture(scope="module")
def trust() -> TrustPolicy:
    cover = partial(
        cover_alert,
        resolution=RES,
        limits=CoverLimits(500_000, 1_000, 3_000_000),
        resolve_geocodes=_no_geocodes,
    )
    return TrustPolicy(
        AuthorityRegistry.from_toml(REGISTRY),
        TrustAnchors.from_pem(session_pki().root.pem),
        cover,
    )


def _signed(ring: list[tuple[float, float]], signer: Any = None, **kw: Any) -> bytes:
    pki = session_pki()
    cap = make_cap_xml(sender="amber@austin.example", polygons=[ring], **kw)
    return sign_cap(cap, signer or pki.authority_one, (pki.intermediate,))


def _admit(
    trust: TrustPolicy, data: bytes, topic: str | None = "alerts", at_ms: int = NOW_MS
) -> str:
    """Run every check as the ingest does; the authority's name when admitted."""
    sender = trust.sender(data, "cap", at_ms)
    [alert] = parse_cap(sender.document)
    authority = trust.authority(alert, sender, topic)
    trust.check_alert(alert, authority, at_ms)
    trust.check_cover(trust.cover(alert), authority)
    return authority.name


def test_a_signed_alert_inside_its_authority_is_admitted(trust: TrustPolicy) -> None:
    assert _admit(trust, _signed(INSIDE)) == "Austin"


def test_a_cover_reaching_outside_the_authority_is_refused(trust: TrustPolicy) -> None:
    with pytest.raises(PolicyRejected, match="outside the areas of 'Austin'"):
        _admit(trust, _signed(ACROSS))


def test_the_whole_world_never_passes(trust: TrustPolicy) -> None:
    # The polygon of the report: h3 reads it as a strip along the antimeridian.
    world = [(-89.0, -179.9), (-89.0, 179.9), (89.0, 179.9), (89.0, -179.9)]
    with pytest.raises(PolicyRejected, match="outside the areas of 'Austin'"):
        _admit(trust, _signed(world))
    # A source with no area of its own is held by the ceiling alone: the strip is under
    # it (about 0.3 M km² of res-7 centres), half the globe is not.
    hemisphere = [(-60.0, -170.0), (-60.0, -10.0), (60.0, -10.0), (60.0, -170.0)]
    with pytest.raises(PolicyRejected, match="over the ceiling"):
        _admit(
            trust,
            make_cap_xml(sender="feeds@example.org", polygons=[hemisphere]),
            "alerts.unsigned",
        )


def test_unsigned_senders_count_only_on_their_topic(trust: TrustPolicy) -> None:
    cap = make_cap_xml(sender="feeds@example.org", polygons=[INSIDE])
    assert _admit(trust, cap, topic="alerts.unsigned") == "Feeds"
    with pytest.raises(PolicyRejected, match="not admitted unsigned on topic 'alerts'"):
        _admit(trust, cap, topic="alerts")
    with pytest.raises(PolicyRejected, match="no authority"):
        _admit(
            trust, make_cap_xml(sender="nobody@example.org", polygons=[INSIDE]), "alerts.unsigned"
        )


def test_an_unsigned_message_of_a_signing_authority_is_a_missing_signature(
    trust: TrustPolicy,
) -> None:
    cap = make_cap_xml(sender="amber@two.example", polygons=[INSIDE])
    with pytest.raises(PolicyRejected, match="signature missing: 'Signing sender'"):
        _admit(trust, cap)


def test_a_signed_authority_that_lists_senders_must_be_the_sender(trust: TrustPolicy) -> None:
    forged_sender = _signed(INSIDE, session_pki().authority_two)  # says amber@austin.example
    with pytest.raises(PolicyRejected, match="not one of 'Signing sender'"):
        _admit(trust, forged_sender)


def test_a_trusted_certificate_of_no_authority_is_refused(trust: TrustPolicy) -> None:
    pki = session_pki()
    other = make_cap_xml(sender="amber@austin.example", polygons=[INSIDE])
    # authority_two is in the registry; a third leaf from the same CA is not
    stranger = pki.expired  # same CA, but expired: refused before attribution
    with pytest.raises(PolicyRejected, match="expired"):
        _admit(trust, sign_cap(other, stranger, (pki.intermediate,)))


def test_event_codes_and_sent_time(trust: TrustPolicy) -> None:
    tornado = _signed(INSIDE).replace(b"<value>CAE</value>", b"<value>TOR</value>")
    with pytest.raises(PolicyRejected):  # the signature breaks first: changed content
        _admit(trust, tornado)
    pki = session_pki()
    cap = make_cap_xml(sender="amber@austin.example", polygons=[INSIDE])
    signed_tornado = sign_cap(
        cap.replace(b"<value>CAE</value>", b"<value>TOR</value>"),
        pki.authority_one,
        (pki.intermediate,),
    )
    with pytest.raises(PolicyRejected, match="event code 'TOR' is not allowed for 'Austin'"):
        _admit(trust, signed_tornado)
    with pytest.raises(PolicyRejected, match="in the future"):
        _admit(trust, _signed(INSIDE), at_ms=NOW_MS - 3_600_000)
    with pytest.raises(PolicyRejected, match="older than the limit"):
        _admit(trust, _signed(INSIDE), at_ms=NOW_MS + 8 * 24 * 3_600_000)


def test_cells_outside_agrees_with_shapely() -> None:
    # Independent check: res-7 cells of a box, against shapely's count of their centres
    # outside the other box.
    def cells(ring: list[tuple[float, float]]) -> set[int]:
        return set(h3.polygon_to_cells(h3.LatLngPoly(ring), RES))

    inner, outer = cells(ACROSS), cells(AUSTIN_BOX)
    box = shapely.Polygon([(lon, lat) for lat, lon in AUSTIN_BOX])
    centres = [h3.cell_to_latlng(c) for c in inner - outer]
    assert all(not box.contains(shapely.Point(lon, lat)) for lat, lon in centres)
    compact_outer = frozenset(h3.compact_cells(list(outer)))
    exact = cells_outside(h3.compact_cells(list(inner)), compact_outer, RES, limit=10**9)
    assert exact == len(inner - outer) > 0
    assert cells_outside(h3.compact_cells(list(inner)), compact_outer, RES, limit=1) == 2
    assert cells_outside(h3.compact_cells(list(cells(INSIDE))), compact_outer, RES, limit=1) == 0
