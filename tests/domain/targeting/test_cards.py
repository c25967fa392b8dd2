"""The card a ranker renders, and the fast encoder of the fan-out."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.targeting.cards import ActiveAlert, CardTemplate, interstitial
from tests.support.schemas import assert_valid

CARD = {
    "event": "Child Abduction Emergency",
    "headline": 'AMBER Alert: "Zoë" — blue sedan',
    "description": "Last seen\nnear the park, 100% sure %s",
    "instruction": "Call 911",
    "sender_name": "DPS",
    "images": [],
    "child": {"name": "Zoë"},
    "suspect": None,
    "vehicle": None,
    "actions": [{"type": "call", "label": "Call 911", "uri": "tel:911"}],
    "translations": [],
}


def alert(expires_ms: int | None) -> ActiveAlert:
    return ActiveAlert(
        key="amber@dps.example|TX-1",
        alert_id="TX-1",
        sender="amber@dps.example",
        message_id="TX-1-U2",
        version=1_795_400_000_000,
        status="Actual",
        sent_ms=1_795_400_000_000,
        expires_ms=expires_ms,
        priority=100,
        locale="es-US",
        card=CARD,
    )


@settings(max_examples=300, deadline=None)
@given(
    user_id=st.text(min_size=1, max_size=40),
    created_ms=st.integers(min_value=1_000_000_000_000, max_value=4_000_000_000_000),
    expires_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=5_000_000_000_000)),
)
def test_template_encoding_is_byte_identical_to_the_plain_encoding(
    user_id: str, created_ms: int, expires_ms: int | None
) -> None:
    a = alert(expires_ms)
    assert CardTemplate(a).encode(user_id, created_ms) == orjson.dumps(
        interstitial(a, user_id, created_ms)
    )


@settings(max_examples=100, deadline=None)
@given(
    users=st.one_of(
        st.lists(st.text(min_size=1, max_size=40), max_size=20),
        # the usual ids, which need no JSON escaping (the encoder's fast path)
        st.lists(st.from_regex(r"[A-Za-z0-9_.:-]{1,24}", fullmatch=True), max_size=20),
    ),
    created_ms=st.integers(min_value=1_000_000_000_000, max_value=4_000_000_000_000),
    expires_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=5_000_000_000_000)),
)
def test_fan_out_records_are_keyed_by_user_and_byte_identical_to_the_plain_encoding(
    users: list[str], created_ms: int, expires_ms: int | None
) -> None:
    a = alert(expires_ms)
    assert CardTemplate(a).records(users, created_ms) == [
        (u.encode(), orjson.dumps(interstitial(a, u, created_ms))) for u in users
    ]


def test_card_has_what_a_ranker_needs_and_validates() -> None:
    card = orjson.loads(CardTemplate(alert(None)).encode("u-1", 1_795_400_060_000))
    assert_valid("interstitial", card)
    assert card["alert_id"] == "TX-1" and card["message_id"] == "TX-1-U2"
    assert card["expires_ms"] == 1_795_400_060_000 + 24 * 3600 * 1000  # no expiry: a day
    assert card["card"]["actions"][0]["uri"] == "tel:911"
