"""The authority registry: one validated TOML file; each authority recognised by its verified
certificate, or by sender on a topic declared for it when unsigned (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.domain.trust.registry import AuthorityRegistry
from pipeline.errors import ConfigurationError
from tests.support.pki import Pki, session_pki

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "authorities.example.toml"

TEXAS = """
[[authority]]
name = "Texas AMBER Alert Network"
signed_by = ["IPAWSOPEN_999001"]
same = ["048000"]
events = ["CAE"]
max_active = 3
max_per_minute = 5

[[authority]]
name = "NWS"
senders = ["w-nws.webmaster@noaa.gov"]
require_signature = false
unsigned_topics = ["alertfeed.alerts.nws"]
anywhere = true
events = ["*"]
"""


SIGNED = 'name = "x"\nsigned_by = ["IPAWSOPEN_1"]\n'


def test_signed_authorities_are_found_by_their_verified_certificate() -> None:
    pki: Pki = session_pki()
    registry = AuthorityRegistry.from_toml(TEXAS)
    texas = registry.for_signer(pki.authority_one.certificate)
    assert texas is not None and texas.name == "Texas AMBER Alert Network"
    assert registry.for_signer(pki.authority_two.certificate) is None
    assert texas.same == ("048000",) and texas.max_active == 3


def test_a_full_subject_names_one_certificate() -> None:
    pki = session_pki()
    subject = pki.authority_one.certificate.subject.rfc4514_string()
    registry = AuthorityRegistry.from_toml(
        f'[[authority]]\nname = "one"\nsigned_by = ["{subject}"]\nsame = ["48"]\nevents = ["CAE"]\n'
    )
    assert registry.for_signer(pki.authority_one.certificate) is not None
    assert registry.for_signer(pki.authority_two.certificate) is None
    assert registry.authorities[0].same == ("048000",)  # FIPS state 48 read as SAME


def test_unsigned_sources_count_only_on_their_declared_topics() -> None:
    registry = AuthorityRegistry.from_toml(TEXAS)
    assert registry.for_unsigned("w-nws.webmaster@noaa.gov", "alertfeed.alerts.nws") is not None
    assert registry.for_unsigned("w-nws.webmaster@noaa.gov", "alertfeed.alerts") is None
    assert registry.for_unsigned("someone@example.com", "alertfeed.alerts.nws") is None


def test_the_empty_registry_admits_nobody() -> None:
    registry = AuthorityRegistry.from_toml("")
    assert not registry
    assert registry.for_unsigned("w-nws.webmaster@noaa.gov", "alertfeed.alerts") is None


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ('name = "x"\nsame = ["048000"]\nevents = ["CAE"]', "signed_by"),
        (
            'name = "x"\nrequire_signature = false\nsenders = ["a@b"]\n'
            'anywhere = true\nevents = ["*"]',
            "unsigned_topics",
        ),
        ('name = "x"\nsigned_by = ["IPAWSOPEN_1"]\nevents = ["CAE"]', "anywhere"),
        (
            SIGNED + 'same = ["48"]\nanywhere = true\nevents = ["CAE"]',
            "one of them",
        ),
        (
            'name = "x"\nsigned_by = ["IPAWSOPEN_1"]\nsame = ["4800"]\nevents = ["CAE"]',
            "neither SAME",
        ),
        (
            'name = "x"\nsigned_by = ["IPAWSOPEN_1"]\nsame = ["48"]\nevents = ["child"]',
            "event code",
        ),
        ('name = "x"\nsigned_by = ["IPAWSOPEN_1"]\nsame = ["48"]', "events"),
        (
            SIGNED + 'same = ["48"]\nevents = ["CAE"]\nmax_active = 0',
            "max_active",
        ),
        (
            SIGNED + 'same = ["48"]\nevents = ["CAE"]\ncolour = "red"',
            "unknown fields",
        ),
        (
            SIGNED + 'polygons = [[[95, 0], [1, 1], [2, 0]]]\nevents = ["CAE"]',
            "latitude 95.0",
        ),
    ],
)
def test_a_wrong_entry_is_refused_at_start_naming_the_field(entry: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        AuthorityRegistry.from_toml(f"[[authority]]\n{entry}\n", source="authorities.toml")
    assert "authorities.toml, authority 1" in str(caught.value)


def test_names_and_unsigned_senders_may_not_repeat() -> None:
    one = (
        '[[authority]]\nname = "x"\nsigned_by = ["IPAWSOPEN_1"]\nsame = ["48"]\nevents = ["CAE"]\n'
    )
    with pytest.raises(ConfigurationError, match="repeat"):
        AuthorityRegistry.from_toml(one + one)
    nws = (
        '[[authority]]\nname = "{n}"\nsenders = ["a@b"]\nrequire_signature = false\n'
        'unsigned_topics = ["t"]\nanywhere = true\nevents = ["*"]\n'
    )
    with pytest.raises(ConfigurationError, match="claimed by both"):
        AuthorityRegistry.from_toml(nws.format(n="one") + nws.format(n="two"))


def test_not_toml_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not TOML"):
        AuthorityRegistry.from_toml("[[authority]\nname=")


def test_the_shipped_example_registry_is_valid() -> None:
    registry = AuthorityRegistry.from_toml(EXAMPLE.read_text(), source=str(EXAMPLE))
    assert registry
    assert any(not a.require_signature for a in registry.authorities)
    assert any(a.require_signature for a in registry.authorities)


def test_event_codes_an_authority_may_send() -> None:
    texas = AuthorityRegistry.from_toml(TEXAS).authorities[0]
    assert texas.may_send(["CAE"]) is None
    assert texas.may_send(["CAE", "TOR"]) == "TOR"
    assert texas.may_send([]) == "(none)"
    nws = AuthorityRegistry.from_toml(TEXAS).authorities[1]
    assert nws.may_send([]) is None and nws.may_send(["TOR"]) is None
