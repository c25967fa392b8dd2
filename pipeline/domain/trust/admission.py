"""Who sent this, and may they send it: the trust checks of one alerts-topic message.

:class:`TrustPolicy` decides, before anything is installed:

1. **Who.** A CAP message with a ``ds:Signature`` is verified against the pinned anchors
   (:mod:`pipeline.domain.trust.signature`) and attributed to the authority its verified
   certificate names; its fields are then read from the signed bytes only. A message
   without one is attributed by ``<sender>`` to an authority that does not require
   signatures, and only on an input topic declared for it. An unsigned message naming a
   signing authority's sender is a missing signature; anything else is an unknown sender.
2. **What.** The authority may send the alert's SAME event codes; a signing authority that
   lists senders must be the alert's ``<sender>``.
3. **When.** ``sent`` no further in the future than the skew, no older than the age limit.
4. **Where.** The cover stays under the hard area ceiling (km², for any authority), and
   reaches at most one cell outside the authority's own areas.

Each refusal is a :class:`~pipeline.errors.PolicyRejected` with a precise reason: the
message is dead-lettered with reason class ``policy``. What needs state (an Update or
Cancel from another authority, replays, rate limits) is decided where the state is
(:class:`pipeline.domain.lifecycle.AlertIngest`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.domain.alerts.xml import parse_xml
from pipeline.domain.geo.containment import cells_outside, cover_area_km2
from pipeline.domain.models import Alert, AlertCover
from pipeline.domain.trust.registry import Authority, AuthorityRegistry
from pipeline.domain.trust.signature import (
    TrustAnchors,
    is_signed,
    verify_signed_cap,
)
from pipeline.errors import PolicyRejected, excerpt

# Cells of the cover allowed outside the authority's own cover: the two covers are made by
# the same rule, so an area inside the authority's is inside its cover; one cell of slack.
OUTSIDE_CELLS_ALLOWED = 1
DEFAULT_MAX_AREA_KM2 = 10_000_000.0  # the United States with its territories: about 9.9 M


@dataclass(frozen=True, slots=True)
class Sender:
    """Who a message is from: the authority of a verified signature (``signer`` its
    subject), or None for an unsigned message (attributed per alert by its sender)."""

    authority: Authority | None
    document: bytes
    signer: str | None = None


@dataclass
class TrustPolicy:
    """The trust checks (see the module docstring). ``cover`` covers an authority's own
    areas as alerts are covered (same resolution, same rule)."""

    registry: AuthorityRegistry
    anchors: TrustAnchors
    cover: Callable[[Alert], AlertCover]
    max_future_skew_ms: int = 300_000
    max_age_ms: int = 7 * 24 * 3600 * 1000
    max_area_km2: float = DEFAULT_MAX_AREA_KM2
    _covers: dict[str, AlertCover] = field(default_factory=dict, repr=False)

    def sender(self, data: bytes, kind: str, at_ms: int) -> Sender:
        """Verify ``data`` (an alerts-topic message of format ``kind``) if signed, at
        ``at_ms`` (when it is processed). Raises PolicyRejected (or MalformedEvent)."""
        root = parse_xml(data) if kind == "cap" else None
        if root is None or not is_signed(root):
            return Sender(None, data)
        at = datetime.fromtimestamp(at_ms / 1000, UTC)
        signed = verify_signed_cap(data, self.anchors, at, root)
        authority = self.registry.for_signer(signed.signer)
        if authority is None:
            raise PolicyRejected(
                f"signer {excerpt(signed.subject, 120)} is a trusted certificate but no "
                "authority of the registry"
            )
        return Sender(authority, signed.signed_xml, signed.subject)

    def authority(self, alert: Alert, sender: Sender, topic: str | None) -> Authority:
        """The authority ``alert`` (parsed from ``sender.document``) is from. Raises
        PolicyRejected."""
        if sender.authority is not None:
            if sender.authority.senders and alert.sender not in sender.authority.senders:
                raise PolicyRejected(
                    f"sender {excerpt(alert.sender)} is not one of {sender.authority.name!r}'s"
                )
            return sender.authority
        found = self.registry.for_unsigned(alert.sender, topic)
        if found is not None:
            return found
        signing = self.registry.requiring_signature(alert.sender)
        if signing is not None:
            raise PolicyRejected(
                f"signature missing: {signing.name!r} ({excerpt(alert.sender)}) requires signed CAP"
            )
        if any(alert.sender in a.senders for a in self.registry.authorities):
            raise PolicyRejected(
                f"sender {excerpt(alert.sender)} is not admitted unsigned on topic {topic!r}"
            )
        raise PolicyRejected(f"sender {excerpt(alert.sender)} is no authority of the registry")

    def check_alert(self, alert: Alert, authority: Authority, at_ms: int) -> None:
        """Event codes and ``sent`` time. Raises PolicyRejected."""
        codes = [c.value for c in alert.event_codes if c.name.upper() == "SAME"]
        refused = authority.may_send(codes)
        if refused is not None:
            raise PolicyRejected(
                f"event code {excerpt(refused)} is not allowed for {authority.name!r} "
                f"(allowed: {', '.join(authority.events)})"
            )
        if alert.sent_ms > at_ms + self.max_future_skew_ms:
            raise PolicyRejected(
                f"sent {(alert.sent_ms - at_ms) / 1000:.0f} s in the future, beyond the "
                f"allowed skew of {self.max_future_skew_ms / 1000:.0f} s"
            )
        if alert.sent_ms < at_ms - self.max_age_ms:
            raise PolicyRejected(
                f"sent {(at_ms - alert.sent_ms) / 3_600_000:.1f} h ago, older than the "
                f"limit of {self.max_age_ms / 3_600_000:.1f} h"
            )

    def check_cover(self, cover: AlertCover, authority: Authority) -> None:
        """The area ceiling, then the authority's own areas. Raises PolicyRejected."""
        area = cover_area_km2(cover.cells)
        if area > self.max_area_km2:
            raise PolicyRejected(
                f"cover is {area:,.0f} km², over the ceiling of {self.max_area_km2:,.0f} km²"
            )
        if authority.anywhere:
            return
        own = self._authority_cover(authority)
        outside = cells_outside(cover.cells, own.cells, cover.resolution, OUTSIDE_CELLS_ALLOWED)
        if outside > OUTSIDE_CELLS_ALLOWED:
            raise PolicyRejected(
                f"cover reaches at least {outside} cells (res {cover.resolution}) outside the "
                f"areas of {authority.name!r}; at most {OUTSIDE_CELLS_ALLOWED} may be"
            )

    def _authority_cover(self, authority: Authority) -> AlertCover:
        cover = self._covers.get(authority.name)
        if cover is None:
            cover = self._covers[authority.name] = self.cover(authority.as_alert())
        return cover
