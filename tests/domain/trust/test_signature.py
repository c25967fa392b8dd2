"""Signed CAP is verified against pinned anchors only, and what is shown comes from what was
signed (issue 14). The PKI is made in the test session (tests/support/pki.py); the four
real IPAWS samples verify at their ``sent`` time with their own certificate pinned."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from pipeline.domain.alerts.cap import parse_cap
from pipeline.domain.trust.signature import SignatureRejected, TrustAnchors, verify_signed_cap
from pipeline.errors import MalformedEvent, PolicyRejected
from tests.support.factories import make_cap_xml
from tests.support.pki import NOW, Pki, session_pki, sign_cap

SAMPLES = Path(__file__).resolve().parents[4] / "shared" / "samples" / "cap"
IPAWS = sorted(SAMPLES.glob("0[5-8]_ipaws_*.xml"))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return session_pki()


@pytest.fixture(scope="module")
def root_pinned(pki: Pki) -> TrustAnchors:
    return TrustAnchors.from_pem(pki.root.pem)


def _cap(**kw: object) -> bytes:
    return make_cap_xml(sender="amber@dps.texas.example", geocodes=[("SAME", "048453")], **kw)  # type: ignore[arg-type]


def _rejected(data: bytes, anchors: TrustAnchors, at: datetime = NOW) -> SignatureRejected:
    with pytest.raises(SignatureRejected) as caught:
        verify_signed_cap(data, anchors, at)
    assert caught.value.reason_class == "policy"  # dead-lettered as policy
    return caught.value


def test_a_chain_to_the_pinned_root_verifies_and_names_the_signer(
    pki: Pki, root_pinned: TrustAnchors
) -> None:
    signed = verify_signed_cap(
        sign_cap(_cap(), pki.authority_one, (pki.intermediate,)), root_pinned, NOW
    )
    assert signed.common_name == "IPAWSOPEN_999001"
    assert signed.subject == "CN=IPAWSOPEN_999001,OU=Devices IPAWS,O=FEMA IPAWS,C=US"
    [alert] = parse_cap(signed.signed_xml)
    assert alert.sender == "amber@dps.texas.example"
    assert [g.value for g in alert.areas[0].geocodes] == ["048453"]


def test_a_leaf_alone_verifies_when_its_intermediate_is_pinned(pki: Pki) -> None:
    data = sign_cap(_cap(), pki.authority_one)  # no chain in the message
    signed = verify_signed_cap(data, TrustAnchors.from_pem(pki.intermediate.pem), NOW)
    assert signed.common_name == "IPAWSOPEN_999001"
    # With only the root pinned the path to it is missing: untrusted, not guessed.
    assert _rejected(data, TrustAnchors.from_pem(pki.root.pem)).kind == "untrusted"


def test_changed_text_or_geocode_breaks_the_signature(pki: Pki, root_pinned: TrustAnchors) -> None:
    data = sign_cap(_cap(), pki.authority_one, (pki.intermediate,))
    for old, new in (
        (b"AMBER Alert: statewide test", b"AMBER Alert: statewide TEST"),
        (b"<value>048453</value>", b"<value>036061</value>"),  # Travis County -> Manhattan
    ):
        assert old in data
        problem = _rejected(data.replace(old, new), root_pinned)
        assert problem.kind == "invalid"
        assert "changed" in str(problem)


def test_content_after_the_signature_is_refused(pki: Pki, root_pinned: TrustAnchors) -> None:
    data = sign_cap(_cap(), pki.authority_one, (pki.intermediate,))
    extra = data.replace(b"</alert>", b"<note>unsigned text</note></alert>")
    problem = _rejected(extra, root_pinned)
    assert problem.kind == "structure"
    assert "last child" in str(problem)


def test_a_signed_alert_wrapped_in_a_forged_one_is_refused(
    pki: Pki, root_pinned: TrustAnchors
) -> None:
    genuine = sign_cap(_cap(), pki.authority_one, (pki.intermediate,))
    inner = genuine.split(b"?>", 1)[1]
    forged = _cap().split(b"</alert>")[0] + inner + b"</alert>"
    problem = _rejected(forged, root_pinned)
    assert problem.kind == "structure"
    # and moving the signature up to the forged root breaks the digest instead
    signature = re.search(rb"<ds:Signature.*</ds:Signature>", genuine, re.S)
    assert signature is not None
    moved = _cap().replace(b"</alert>", signature.group(0) + b"</alert>")
    assert _rejected(moved, root_pinned).kind == "invalid"


def test_a_rogue_ca_issuing_the_same_name_is_untrusted(pki: Pki, root_pinned: TrustAnchors) -> None:
    data = sign_cap(_cap(), pki.rogue, (pki.rogue_root,))
    assert pki.rogue.certificate.subject == pki.authority_one.certificate.subject
    assert _rejected(data, root_pinned).kind == "untrusted"


def test_an_expired_certificate_is_refused_as_expired(pki: Pki, root_pinned: TrustAnchors) -> None:
    problem = _rejected(sign_cap(_cap(), pki.expired, (pki.intermediate,)), root_pinned)
    assert problem.kind == "expired"
    assert "IPAWSOPEN_999001" in str(problem)


def test_sha1_is_refused_by_name(pki: Pki, root_pinned: TrustAnchors) -> None:
    problem = _rejected(
        sign_cap(_cap(), pki.authority_one, (pki.intermediate,), sha1=True), root_pinned
    )
    assert problem.kind == "weak_algorithm"
    assert "SHA-1" in str(problem)


def test_missing_and_duplicate_signatures(pki: Pki, root_pinned: TrustAnchors) -> None:
    assert _rejected(_cap(), root_pinned).kind == "missing"
    data = sign_cap(_cap(), pki.authority_one, (pki.intermediate,))
    signature = re.search(rb"<ds:Signature.*</ds:Signature>", data, re.S)
    assert signature is not None
    twice = data.replace(b"</alert>", signature.group(0) + b"</alert>")
    problem = _rejected(twice, root_pinned)
    assert problem.kind == "structure"
    assert "2 ds:Signature" in str(problem)


def test_a_dtd_is_refused_before_any_verification(pki: Pki, root_pinned: TrustAnchors) -> None:
    data = sign_cap(_cap(), pki.authority_one, (pki.intermediate,))
    with_dtd = data.replace(b"?>", b'?><!DOCTYPE alert [<!ENTITY x "forged">]>', 1)
    with pytest.raises(MalformedEvent, match="DOCTYPE"):
        verify_signed_cap(with_dtd, root_pinned, NOW)


def test_a_comment_in_signed_text_cannot_cut_what_is_shown(
    pki: Pki, root_pinned: TrustAnchors
) -> None:
    # Exclusive c14n without comments leaves comments out of the digest, so the signature
    # still holds; a reader of the raw tree's .text would stop at the comment.
    data = sign_cap(_cap(), pki.authority_one, (pki.intermediate,))
    injected = data.replace(
        b"AMBER Alert: statewide test", b"AMBER Alert: <!-- x -->statewide test"
    )
    signed = verify_signed_cap(injected, root_pinned, NOW)
    [alert] = parse_cap(signed.signed_xml)
    assert alert.headline == "AMBER Alert: statewide test"
    assert b"<!--" not in signed.signed_xml


def test_no_anchors_trust_nobody(pki: Pki) -> None:
    data = sign_cap(_cap(), pki.authority_one, (pki.intermediate,))
    assert _rejected(data, TrustAnchors()).kind == "untrusted"


def test_a_pinned_leaf_admits_that_key_only(pki: Pki) -> None:
    anchors = TrustAnchors.from_pem(pki.authority_one.pem)
    assert anchors.pinned and not anchors.authorities
    ok = verify_signed_cap(sign_cap(_cap(), pki.authority_one), anchors, NOW)
    assert ok.common_name == "IPAWSOPEN_999001"
    # a sibling from the same CA, and the rogue with the same name, are not that leaf
    assert _rejected(sign_cap(_cap(), pki.authority_two), anchors).kind == "untrusted"
    assert _rejected(sign_cap(_cap(), pki.rogue), anchors).kind == "untrusted"


def _embedded_leaf(data: bytes) -> x509.Certificate:
    found = re.search(rb"X509Certificate>([^<]+)<", data)
    assert found is not None
    return x509.load_der_x509_certificate(base64.b64decode(re.sub(rb"\s", b"", found.group(1))))


def _sent(data: bytes) -> datetime:
    found = re.search(rb"<sent>([^<]+)</sent>", data)
    assert found is not None
    return datetime.fromisoformat(found.group(1).decode())


@pytest.mark.parametrize("sample", IPAWS, ids=lambda p: p.name[:2])
def test_the_real_ipaws_samples_verify_at_their_sent_time(sample: Path) -> None:
    data = sample.read_bytes()
    # The samples carry only the originator's leaf (issued by IdenTrust's IGC Server CA 1,
    # which is not here): pinning that leaf is pinning their issuing chain, for this test.
    leaf = _embedded_leaf(data)
    anchors = TrustAnchors(pinned=(leaf,))
    signed = verify_signed_cap(data, anchors, _sent(data))
    assert signed.common_name is not None and signed.common_name.startswith("IPAWSOPEN_")
    [alert] = parse_cap(signed.signed_xml)
    [original] = parse_cap(data)
    assert alert == original  # every field, read from the verified tree
    # Their certificates have since expired: processed today, they are refused.
    assert _rejected(data, anchors).kind == "expired"


def test_signature_rejections_are_policy_rejections() -> None:
    assert issubclass(SignatureRejected, PolicyRejected)
