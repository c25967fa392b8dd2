"""The metric-name extraction the dashboard and rule checks rely on."""

from __future__ import annotations

from tests.deploy.promql import exported_metric_names, metric_names


def test_names_are_found_and_functions_labels_and_durations_are_not() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, topic) (rate(a_seconds_bucket{topic="x"}[5m])))'
        " / on() group_left sum without (instance) (b_total offset 5m) or vector(0)"
        " and min_over_time(max(c_gauge)[15m:1m]) > 0"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c_gauge"}


def test_the_registry_lists_suffixed_series_of_every_kind() -> None:
    names = exported_metric_names()
    assert "alertfeed_events_out_total" in names  # counter
    assert "alertfeed_location_to_card_seconds_bucket" in names  # histogram
    assert "alertfeed_active_alerts" in names  # gauge
    assert "alertfeed_events_out" not in names
