"""The Prometheus config and alert rules in deploy/prometheus: valid for promtool, their unit
tests pass, every rule leads the on-call engineer to a runbook section, and every rule asks
about series a worker really exports.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it); without it these
tests fail with that advice rather than skip.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.promql import (
    DEPLOY,
    PROMETHEUS_SERIES,
    exported_metric_names,
    metric_names,
    promtool,
)

PROM = DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
RUNBOOK = DEPLOY / "RUNBOOK.md"
RUNBOOK_URL = re.compile(r"runbook_url:\s*(\S+)")


def run_promtool(*args: str | Path) -> str:
    proc = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def alert_blocks() -> list[tuple[str, str]]:
    """(rule name, its YAML text) for every alerting rule: a line-level reading of the
    rule files (their layout is ours; promtool validates the YAML itself)."""
    blocks = []
    for path in RULE_FILES:
        parts = re.split(r"^\s*- alert:\s*", path.read_text(), flags=re.M)[1:]
        blocks += [(part.split("\n", 1)[0].strip(), part) for part in parts]
    return blocks


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings (lower case, spaces to dashes)."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_the_rule_files_are_valid() -> None:
    assert RULE_FILES, "no rule files in deploy/prometheus/rules"
    output = run_promtool("check", "rules", *RULE_FILES)
    assert f"SUCCESS: {len(alert_blocks())} rules found" in output


def test_the_scrape_config_is_valid_and_loads_the_rules() -> None:
    output = run_promtool("check", "config", PROM / "prometheus.yml")
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output
    config = (PROM / "prometheus.yml").read_text()
    assert "job_name: alertfeed-worker" in config
    assert "metrics_path: /metrics" in config


def test_the_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no rule unit tests in deploy/prometheus/tests"
    output = run_promtool("test", "rules", *RULE_TESTS)
    assert "FAILED" not in output


def test_every_rule_has_a_unit_test() -> None:
    tested = set(re.findall(r"alertname:\s*(\w+)", "".join(p.read_text() for p in RULE_TESTS)))
    untested = {name for name, _ in alert_blocks()} - tested
    assert not untested, f"rules without a promtool unit test: {sorted(untested)}"


@pytest.mark.parametrize("name", [name for name, _ in alert_blocks()])
def test_every_rule_links_to_its_runbook_section(name: str) -> None:
    block = dict(alert_blocks())[name]
    urls = RUNBOOK_URL.findall(block)
    assert len(urls) == 1, f"{name}: needs exactly one runbook_url annotation"
    assert "/deploy/RUNBOOK.md#" in urls[0], f"{name}: runbook_url must point into RUNBOOK.md"
    anchor = urls[0].rsplit("#", 1)[1]
    assert anchor == name.lower(), f"{name}: link to the section named after the rule"
    assert anchor in runbook_anchors(), f"{name}: deploy/RUNBOOK.md has no section #{anchor}"
    assert re.search(r"severity:\s*(critical|warning)\b", block), f"{name}: needs a severity"
    assert "summary:" in block, f"{name}: needs a summary annotation"


def test_rules_only_use_series_the_worker_exports() -> None:
    known = exported_metric_names() | PROMETHEUS_SERIES
    for name, block in alert_blocks():
        expr = block.split("expr:", 1)[1].split("\n        for:", 1)[0]
        expr = expr.split("\n        labels:", 1)[0].lstrip("| \n")
        unknown = metric_names(expr) - known
        assert not unknown, f"{name} uses series no worker exports: {sorted(unknown)}"
