"""A test PKI, made in the test session with ``cryptography``, and CAP signed with signxml as
IPAWS signs it (enveloped, exclusive c14n, RSA-SHA256, one ``Reference URI=""``).

    root "alertfeed test root"
    └── intermediate "alertfeed test IPAWS CA"
        ├── leaf CN=IPAWSOPEN_999001 (authority one)
        ├── leaf CN=IPAWSOPEN_999002 (authority two)
        └── leaf CN=IPAWSOPEN_999001, expired
    rogue root "alertfeed rogue root" (pinned by nobody)
    └── leaf CN=IPAWSOPEN_999001, the same name from the wrong issuer
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, *units: str) -> x509.Name:
    """A subject in IPAWS's order (C, O, OU..., CN: ``CN=...,OU=...,O=FEMA IPAWS,C=US``)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FEMA IPAWS"),
            *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    subject: x509.Name,
    issuer: Identity | None,
    *,
    ca: bool,
    not_before: dt.datetime = NOW - 30 * DAY,
    not_after: dt.datetime = NOW + 365 * DAY,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_key = key if issuer is None else issuer.key
    issuer_name = subject if issuer is None else issuer.certificate.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    certificate = builder.sign(signing_key, hash_algorithm or hashes.SHA256())
    return Identity(key, certificate)


@dataclass(frozen=True)
class Pki:
    root: Identity
    intermediate: Identity
    authority_one: Identity
    authority_two: Identity
    expired: Identity
    rogue_root: Identity
    rogue: Identity


@cache
def session_pki() -> Pki:
    """The session's PKI (RSA key generation takes a moment: made once)."""
    root = _issue(_name("alertfeed test root"), None, ca=True)
    intermediate = _issue(_name("alertfeed test IPAWS CA"), root, ca=True)

    def leaf(cog: str, issuer: Identity, **kw: dt.datetime) -> Identity:
        return _issue(_name(f"IPAWSOPEN_{cog}", "Devices IPAWS"), issuer, ca=False, **kw)

    rogue_root = _issue(_name("alertfeed rogue root"), None, ca=True)
    return Pki(
        root=root,
        intermediate=intermediate,
        authority_one=leaf("999001", intermediate),
        authority_two=leaf("999002", intermediate),
        expired=leaf("999001", intermediate, not_before=NOW - 400 * DAY, not_after=NOW - DAY),
        rogue_root=rogue_root,
        rogue=leaf("999001", rogue_root),
    )


def sign_cap(
    cap: bytes,
    signer: Identity,
    chain: tuple[Identity, ...] = (),
    *,
    sha1: bool = False,
) -> bytes:
    """``cap`` with an enveloped signature by ``signer`` as the last child of ``<alert>``,
    carrying ``signer``'s certificate and then ``chain``'s."""
    root = etree.fromstring(cap)
    signed = (_Sha1Signer if sha1 else XMLSigner)(
        signature_algorithm=SignatureMethod.RSA_SHA1 if sha1 else SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA1 if sha1 else DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(
        root,
        key=signer.key,
        cert=[
            i.certificate.public_bytes(serialization.Encoding.PEM).decode()
            for i in (signer, *chain)
        ],
    )
    data: bytes = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
    return data


class _Sha1Signer(XMLSigner):
    """signxml signs with SHA-1 only when told it may: a forger's tool, for the test that
    SHA-1 is refused."""

    def check_deprecated_methods(self) -> None:
        return None
