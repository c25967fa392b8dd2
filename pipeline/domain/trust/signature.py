"""Signed CAP: the enveloped XML-DSig of a CAP 1.2 alert, verified against pinned anchors.

IPAWS signs each CAP message with the alerting authority's own certificate (one per
originator, ``CN=IPAWSOPEN_<COG id>, OU=Devices IPAWS, O=FEMA IPAWS``): an enveloped
``ds:Signature``, the last child of ``<alert>``, one whole-document reference, exclusive
c14n, RSA-SHA256. :func:`verify_signed_cap` promises:

* trust comes only from :class:`TrustAnchors`, which the operator pins: CA certificates,
  to which the message's chain must lead, or end-entity certificates pinned as such (the
  message must be signed with exactly that key). The certificates a message carries are
  never trusted for their own sake, and an empty set of anchors trusts nobody;
* exactly one ``ds:Signature`` in the document, the last child of the root ``<alert>``,
  with one ``Reference URI=""``: a signed alert wrapped in a forged one, content after the
  signature or a second signature is refused before any cryptography;
* SHA-256 or stronger, for the signature and the digest; SHA-1 is refused by name;
* the certificate is checked at the time given (the time the message is processed): an
  expired one is refused as ``expired``;
* what the caller reads is :attr:`SignedCap.signed_xml`, the bytes the signature covers as
  signxml verified them (canonical, without the signature and without comments), never the
  message's own bytes: a comment in signed text cannot cut what is shown.

Every refusal is a :class:`SignatureRejected`: a policy rejection with a ``kind`` (for the
metric) and a precise reason.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from xml.etree import ElementTree as ET

from cryptography import x509
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, SignXMLException
from signxml.util import X509CertChainVerifier
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from pipeline.domain.alerts.cap import CAP_NAMESPACES
from pipeline.domain.alerts.xml import parse_xml
from pipeline.errors import PolicyRejected, excerpt

DSIG = "http://www.w3.org/2000/09/xmldsig#"
_SIGNATURE = f"{{{DSIG}}}Signature"

SignatureProblem = Literal[
    "missing", "structure", "weak_algorithm", "untrusted", "expired", "invalid"
]

# SHA-256 or stronger: what signxml may accept here (it knows SHA-1 too, and would).
_STRONG_DIGESTS = frozenset(
    d for d in DigestAlgorithm if d.name in ("SHA256", "SHA384", "SHA512") or "SHA3" in d.name
)
_STRONG_METHODS = frozenset(
    m
    for m in SignatureMethod
    if not m.name.startswith(("HMAC", "DSA")) and "SHA1" not in m.name and "SHA224" not in m.name
)


class SignatureRejected(PolicyRejected):
    """A CAP signature that does not hold: ``kind`` says which way (a metric label)."""

    def __init__(self, kind: SignatureProblem, reason: str) -> None:
        super().__init__(f"signature {kind.replace('_', ' ')}: {reason}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """What the operator trusts: CA certificates (a signer's chain must end at one) and
    end-entity certificates pinned themselves. Built once from a PEM bundle."""

    authorities: tuple[x509.Certificate, ...] = ()
    pinned: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_pem(cls, data: bytes) -> TrustAnchors:
        """The anchors of a PEM bundle: each certificate with ``basicConstraints CA:TRUE``
        is a CA anchor, any other one is pinned as an end-entity certificate. Raises
        ValueError for a bundle with no certificate in it."""
        certificates = x509.load_pem_x509_certificates(data)
        authorities: list[x509.Certificate] = []
        pinned: list[x509.Certificate] = []
        for certificate in certificates:
            (authorities if _is_ca(certificate) else pinned).append(certificate)
        return cls(tuple(authorities), tuple(pinned))

    def __bool__(self) -> bool:
        return bool(self.authorities or self.pinned)


@dataclass(frozen=True, slots=True)
class SignedCap:
    """A verified signed CAP message: the signed document and who signed it."""

    signed_xml: bytes
    signer: x509.Certificate

    @property
    def subject(self) -> str:
        """The signer's subject, RFC 4514 (``CN=IPAWSOPEN_200302,OU=...,O=FEMA IPAWS,C=US``)."""
        return self.signer.subject.rfc4514_string()

    @property
    def common_name(self) -> str | None:
        names = self.signer.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(names[0].value) if names else None


def is_signed(root: ET.Element) -> bool:
    """Whether a parsed document carries any ``ds:Signature``, anywhere."""
    return next(root.iter(_SIGNATURE), None) is not None


def verify_signed_cap(
    data: bytes, anchors: TrustAnchors, at: datetime, root: ET.Element | None = None
) -> SignedCap:
    """Verify the signature of the CAP message ``data`` at ``at`` (timezone-aware) against
    ``anchors`` (see the module docstring); ``root``: ``data`` already parsed by
    :func:`~pipeline.domain.alerts.xml.parse_xml`, if the caller has it. Raises
    :class:`SignatureRejected`, or MalformedEvent for bytes that are not safe XML."""
    root = parse_xml(data) if root is None else root
    signature = _sole_signature(root)
    _check_algorithms(signature)
    if not anchors:
        raise SignatureRejected("untrusted", "no trust anchors are configured")
    embedded = _embedded_certificates(signature)
    pinned = next((c for c in anchors.pinned if c in embedded), None)
    verifier = _AnchoredVerifier(anchors.authorities, at)
    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=_STRONG_METHODS,
        digest_algorithms=_STRONG_DIGESTS,
        verification_time=at,
    )
    try:
        if pinned is not None:
            result = verifier.verify(data, x509_cert=pinned, expect_config=config)
        elif not anchors.authorities:
            raise SignatureRejected(
                "untrusted", "the signing certificate is none of the pinned certificates"
            )
        else:
            result = verifier.verify(data, expect_config=config)
    except InvalidCertificate as exc:
        raise _certificate_problem(exc, embedded, at) from exc
    except InvalidDigest as exc:
        raise SignatureRejected("invalid", f"the signed content was changed ({exc})") from exc
    except SignXMLException as exc:
        raise SignatureRejected("invalid", str(exc)) from exc
    signer = pinned if pinned is not None else verifier.signer
    if signer is None:  # signxml verified a chain, so it named the leaf it used
        raise SignatureRejected("untrusted", "no verified signing certificate")
    assert isinstance(result, VerifyResult)  # one reference expected, so one result
    return SignedCap(result.signed_data, signer)


def _sole_signature(root: ET.Element) -> ET.Element:
    namespace, _, local = root.tag[1:].partition("}")
    if local != "alert" or namespace not in CAP_NAMESPACES:
        raise SignatureRejected(
            "structure", f"the root element is {excerpt(root.tag)}, not a CAP alert"
        )
    signatures = list(root.iter(_SIGNATURE))
    if not signatures:
        raise SignatureRejected("missing", "the message carries no ds:Signature")
    if len(signatures) > 1:
        raise SignatureRejected(
            "structure", f"{len(signatures)} ds:Signature elements, expected one"
        )
    children = list(root)
    if children[-1] is not signatures[0]:
        where = (
            "inside another element" if signatures[0] not in children else "before other content"
        )
        raise SignatureRejected(
            "structure", f"the ds:Signature must be the last child of <alert>, it is {where}"
        )
    references = signatures[0].findall(f"{{{DSIG}}}SignedInfo/{{{DSIG}}}Reference")
    if len(references) != 1 or references[0].get("URI") != "":
        uris = [r.get("URI") for r in references]
        raise SignatureRejected(
            "structure", f'expected one Reference URI="" (the whole alert), found {excerpt(uris)}'
        )
    return signatures[0]


def _check_algorithms(signature: ET.Element) -> None:
    method = signature.find(f"{{{DSIG}}}SignedInfo/{{{DSIG}}}SignatureMethod")
    digests = signature.findall(f".//{{{DSIG}}}DigestMethod")
    for element, what in ((method, "signature method"), *((d, "digest") for d in digests)):
        algorithm = (element.get("Algorithm") if element is not None else None) or ""
        name = algorithm.rpartition("#")[2].lower()
        if "sha1" in name:
            raise SignatureRejected("weak_algorithm", f"{what} {algorithm} is SHA-1")
        if "md5" in name or "sha224" in name:
            raise SignatureRejected("weak_algorithm", f"{what} {algorithm} is weaker than SHA-256")


def _embedded_certificates(signature: ET.Element) -> list[x509.Certificate]:
    found = []
    for element in signature.iter(f"{{{DSIG}}}X509Certificate"):
        try:
            der = base64.b64decode("".join((element.text or "").split()), validate=True)
            found.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError) as exc:
            raise SignatureRejected(
                "invalid", f"an X509Certificate does not decode: {exc}"
            ) from exc
    return found


def _certificate_problem(
    exc: InvalidCertificate, embedded: Sequence[x509.Certificate], at: datetime
) -> SignatureRejected:
    """Why a chain failed: a certificate of the message outside its validity at ``at``
    (the chain builder reports only its last attempt, which hides that), else untrusted."""
    for certificate in embedded:
        if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
            return SignatureRejected(
                "expired",
                f"certificate {certificate.subject.rfc4514_string()} is valid from "
                f"{certificate.not_valid_before_utc.isoformat()} to "
                f"{certificate.not_valid_after_utc.isoformat()}, not at {at.isoformat()}",
            )
    return SignatureRejected("untrusted", f"the signer's chain leads to no pinned anchor ({exc})")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


class _Chain(X509CertChainVerifier):
    """signxml's chain verifier over the pinned CA anchors (not a file, and never the
    public web PKI it falls back to), remembering the leaf it verified."""

    def __init__(self, authorities: Sequence[x509.Certificate], at: datetime) -> None:
        super().__init__(ca_pem_file=b"", verification_time=at)  # type: ignore[no-untyped-call]
        self._authorities = list(authorities)
        self.verified: x509.Certificate | None = None

    @property
    def store(self) -> x509.verification.Store:
        return x509.verification.Store(self._authorities)

    def verify(self, cert_chain: Iterable[x509.Certificate]) -> x509.Certificate:
        leaf: x509.Certificate = super().verify(cert_chain)  # type: ignore[no-untyped-call]
        self.verified = leaf
        return leaf


class _AnchoredVerifier(XMLVerifier):
    """An XMLVerifier whose certificate chains end only at the pinned CA anchors."""

    def __init__(self, authorities: Sequence[x509.Certificate], at: datetime) -> None:
        super().__init__()
        self._authorities = authorities
        self._at = at
        self._chain: _Chain | None = None

    def get_cert_chain_verifier(self, ca_pem_file: Any, ee_policy: Any, ca_policy: Any) -> _Chain:
        self._chain = _Chain(self._authorities, self._at)
        return self._chain

    @property
    def signer(self) -> x509.Certificate | None:
        return self._chain.verified if self._chain is not None else None
