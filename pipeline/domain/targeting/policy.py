"""Who may send alerts, and who may see them.

* Only senders on the allow-list are indexed at all: someone with write access to the
  alerts topic must not be able to interrupt millions of feeds.
* ``Actual`` alerts reach the public. ``Test`` and ``Exercise`` alerts reach only the
  configured test users (or nobody). ``System`` and ``Draft`` alerts reach nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.domain.models import Alert
from pipeline.errors import PolicyRejected, excerpt

_TEST_AUDIENCE = frozenset(("Test", "Exercise"))


@dataclass(frozen=True, slots=True)
class AudiencePolicy:
    allowed_senders: frozenset[str]
    test_users: frozenset[str]

    @classmethod
    def of(cls, allowed_senders: Iterable[str], test_users: Iterable[str]) -> AudiencePolicy:
        return cls(frozenset(allowed_senders), frozenset(test_users))

    def admit(self, alert: Alert) -> None:
        """Raise PolicyRejected unless ``alert`` may be indexed at all."""
        if alert.sender not in self.allowed_senders:
            raise PolicyRejected(f"sender {excerpt(alert.sender)} is not on the allow-list")
        if alert.status in ("System", "Draft"):
            raise PolicyRejected(f"status {alert.status} alerts are never shown to anyone")
        if alert.status in _TEST_AUDIENCE and not self.test_users:
            raise PolicyRejected(f"status {alert.status} alert and no test users are configured")

    def public(self, status: str) -> bool:
        """Whether every user may be shown an alert of ``status``."""
        return status == "Actual"

    def may_see(self, status: str, user_id: str) -> bool:
        """Whether ``user_id`` may be shown an alert of ``status``."""
        if status == "Actual":
            return True
        return status in _TEST_AUDIENCE and user_id in self.test_users
