"""The Grafana dashboard in deploy/grafana: importable, datasource-agnostic, and every panel
queries series a worker really exports (names taken from a live Metrics registry)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.deploy.promql import (
    DEPLOY,
    PROMETHEUS_SERIES,
    exported_metric_names,
    metric_names,
    promtool,
)

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "alertfeed.json"
DATASOURCE = "${datasource}"
# What the on-call engineer must find on the dashboard (issue 6).
MUST_SHOW = {
    "alertfeed_events_out_total",
    "alertfeed_active_alerts",
    "alertfeed_events_dead_lettered_total",
    "alertfeed_location_to_card_seconds_bucket",
    "alertfeed_alert_first_card_seconds_bucket",
    "alertfeed_consumer_lag_messages",
    "alertfeed_redis_roundtrip_seconds_bucket",
    "alertfeed_redis_errors_total",
    "alertfeed_alert_expansion_seconds_bucket",
    "alertfeed_index_rebuilds_total",
    "alertfeed_worker_ready",
}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in panels(doc)
        for target in panel.get("targets", [])
    ]


def test_every_panel_queries_only_series_the_worker_exports() -> None:
    known = exported_metric_names() | PROMETHEUS_SERIES
    found = queries(dashboard())
    assert len(found) >= 10
    for title, expr in found:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        unknown = names - known
        assert not unknown, f"panel {title!r} queries series no worker exports: {unknown}"


def test_the_dashboard_shows_what_on_call_needs() -> None:
    shown = set().union(*(metric_names(expr) for _, expr in queries(dashboard())))
    missing = MUST_SHOW - shown
    assert not missing, f"the dashboard has no panel for {sorted(missing)}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool has no offline expression check; recording rules are checked by the same parser.
    rules = [
        f"      - record: dashboard:panel_{i}\n        expr: {json.dumps(expr)}\n"
        for i, (_, expr) in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text("groups:\n  - name: dashboard\n    rules:\n" + "".join(rules))
    proc = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_datasource_is_a_variable_so_the_json_imports_anywhere() -> None:
    doc = dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(doc):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]


def test_panels_have_unique_ids_and_a_place_on_the_grid() -> None:
    doc = dashboard()
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    for panel in panels(doc):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    assert doc["uid"] and doc["title"]


def test_provisioning_loads_this_dashboard_and_a_prometheus_datasource() -> None:
    providers = (GRAFANA / "provisioning" / "dashboards" / "alertfeed.yml").read_text()
    path = re.search(r"path:\s*(\S+)", providers)
    assert path, "dashboard provider without a path"
    compose = (DEPLOY / "docker-compose.yml").read_text()
    assert f"./grafana/dashboards:{path.group(1)}" in compose
    datasources = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "type: prometheus" in datasources
    assert "url: http://prometheus:9090" in datasources
