"""Who may send alerts and who may see them (pipeline/domain/targeting/policy.py).

The rules, from the README's safety paragraph: only allow-listed senders are indexed (an
empty list admits nobody); ``Actual`` alerts reach the public, ``Test`` and ``Exercise``
only the configured test users, ``System`` and ``Draft`` nobody.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.models import Alert
from pipeline.domain.targeting.policy import AudiencePolicy
from pipeline.errors import PolicyRejected

SENDER = "amber@ncmec.example"
TESTERS = ("qa-1", "qa-2")
STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")


def make_alert(status: str = "Actual", sender: str = SENDER) -> Alert:
    return Alert(
        identifier="A-1",
        sender=sender,
        sent_ms=1_795_400_000_000,
        status=status,  # type: ignore[arg-type]
        msg_type="Alert",
    )


def policy(
    senders: tuple[str, ...] = (SENDER,), testers: tuple[str, ...] = TESTERS
) -> AudiencePolicy:
    return AudiencePolicy.of(senders, testers)


def test_an_actual_alert_from_an_allowed_sender_is_admitted() -> None:
    policy().admit(make_alert("Actual"))


@pytest.mark.parametrize(
    "sender",
    [
        "prankster@example.com",
        "AMBER@NCMEC.EXAMPLE.evil",
        f"{SENDER}.evil.example",
        f" {SENDER}",
        "",
    ],
)
def test_a_sender_not_on_the_allow_list_is_rejected_and_named(sender: str) -> None:
    with pytest.raises(PolicyRejected, match="allow-list") as caught:
        policy().admit(make_alert(sender=sender))
    assert repr(sender) in str(caught.value)
    assert caught.value.reason_class == "policy"


def test_an_empty_allow_list_admits_nobody() -> None:
    with pytest.raises(PolicyRejected):
        policy(senders=()).admit(make_alert())


def test_the_reason_quotes_only_an_excerpt_of_a_huge_sender() -> None:
    with pytest.raises(PolicyRejected) as caught:
        policy().admit(make_alert(sender="x" * 100_000))
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("status", ["System", "Draft"])
def test_system_and_draft_alerts_are_never_admitted_even_with_test_users(status: str) -> None:
    with pytest.raises(PolicyRejected, match=status):
        policy().admit(make_alert(status))


@pytest.mark.parametrize("status", ["Test", "Exercise"])
def test_test_and_exercise_alerts_need_test_users(status: str) -> None:
    policy().admit(make_alert(status))
    with pytest.raises(PolicyRejected, match="no test users"):
        policy(testers=()).admit(make_alert(status))


def test_everyone_may_see_an_actual_alert() -> None:
    p = policy()
    assert p.public("Actual")
    assert all(p.may_see("Actual", user) for user in ("anyone", *TESTERS))


@pytest.mark.parametrize("status", ["Test", "Exercise"])
def test_only_test_users_may_see_a_test_or_exercise_alert(status: str) -> None:
    p = policy()
    assert not p.public(status)
    assert [u for u in ("public-user", *TESTERS) if p.may_see(status, u)] == list(TESTERS)


@pytest.mark.parametrize("status", ["System", "Draft"])
def test_nobody_may_see_a_system_or_draft_alert(status: str) -> None:
    p = policy()
    assert not p.public(status)
    assert not any(p.may_see(status, u) for u in ("public-user", *TESTERS))


@given(
    status=st.sampled_from(STATUSES),
    user=st.text(min_size=1, max_size=12),
    testers=st.frozensets(st.text(min_size=1, max_size=12), max_size=4),
)
def test_seeing_a_non_public_alert_takes_being_a_test_user(
    status: str, user: str, testers: frozenset[str]
) -> None:
    p = AudiencePolicy.of([SENDER], testers)
    if p.public(status):
        assert p.may_see(status, user)
    elif p.may_see(status, user):
        assert user in testers and status in ("Test", "Exercise")
