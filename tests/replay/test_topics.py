"""Topic names between logs and the broker: a log names alertfeed's topics logically, the
broker by their real names, and a replay's renames come first."""

from __future__ import annotations

from pipeline.replay.topics import TopicNames
from pipeline.settings import TopicSettings

REAL = TopicSettings(locations="prod.locations").by_logical_name()


def test_a_logged_name_goes_to_its_real_topic_and_a_foreign_one_as_it_is() -> None:
    names = TopicNames(REAL)
    assert names.real("locations") == "prod.locations"
    assert names.real("alerts") == "alertfeed.alerts"
    assert names.real("someone.elses") == "someone.elses"


def test_renames_apply_first_and_may_name_a_logical_or_a_real_topic() -> None:
    names = TopicNames(REAL, {"locations": "loadtest.locations", "old.alerts": "alerts"})
    assert names.real("locations") == "loadtest.locations"
    assert names.real("old.alerts") == "alertfeed.alerts"
    assert names.logical("old.alerts") == "alerts"
    assert names.logical("locations") == "loadtest.locations"  # none of ours any more


def test_the_logical_topic_of_a_logical_or_real_name() -> None:
    names = TopicNames(REAL)
    assert names.logical("locations") == "locations"
    assert names.logical("prod.locations") == "locations"
    assert names.logical("someone.elses") == "someone.elses"


def test_a_consumed_topic_is_logged_under_its_logical_name_without_renames() -> None:
    names = TopicNames(REAL, {"locations": "elsewhere"})
    assert names.logged("prod.locations") == "locations"
    assert names.logged("someone.elses") == "someone.elses"
