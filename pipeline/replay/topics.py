"""Topic names between event logs and the broker: logical names (alerts, locations,
interstitials, lifecycle, dlq) and the real topics the settings give them.

An event log names a record's topic by its logical name, or by the real name of a topic
outside alertfeed's set (``schemas/event_log.schema.json``). The recorder turns a broker's
topic into such a name, the replays turn it back, after the renames of ``--topic-map``.
This is the one place those lookups are made; the table itself is
``Settings.topics.by_logical_name()``.
"""

from __future__ import annotations

from collections.abc import Mapping


class TopicNames:
    """``real_names`` maps each logical name to its real topic; ``renames`` (a replay's
    ``--topic-map``, old name to new, logical or real) apply to log names first."""

    def __init__(
        self, real_names: Mapping[str, str], renames: Mapping[str, str] | None = None
    ) -> None:
        self.real_names = dict(real_names)
        self.renames = dict(renames or {})
        self._logical_names: dict[str, str] = {}
        for name, real in self.real_names.items():
            self._logical_names.setdefault(real, name)  # two logical topics on one: the first

    def real(self, name: str) -> str:
        """The real topic a record logged under ``name`` goes to: renamed first, then a
        logical name becomes its real topic; any other name is taken as a real topic."""
        name = self.renames.get(name, name)
        return self.real_names.get(name, name)

    def logical(self, name: str) -> str:
        """The logical topic a record logged under ``name`` belongs to (renamed first): a
        logical name itself, the logical name of a real topic, or else ``name`` itself when
        it is none of ours."""
        name = self.renames.get(name, name)
        if name in self.real_names:
            return name
        return self._logical_names.get(name, name)

    def logged(self, topic: str) -> str:
        """The name a record consumed from the real ``topic`` is logged under: its logical
        name where it has one, else ``topic`` itself. No renames: they are for replays."""
        return self._logical_names.get(topic, topic)
