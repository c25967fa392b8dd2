"""What the deploy tests need to know about PromQL and about the metrics a worker exports."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipeline.adapters.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Series Prometheus itself makes about every target; the worker does not export them.
PROMETHEUS_SERIES = frozenset({"up"})
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right"}
)
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")


def promtool() -> str:
    """The promtool binary; fails (never skips) the calling test when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(apt-get install prometheus; .ci/run does it) to check the alert rules",
            pytrace=False,
        )
    return path


def exported_metric_names() -> frozenset[str]:
    """Every series name a worker can expose, from a real :class:`Metrics` registry:
    counters as ``<name>_total``, histograms as ``_bucket``/``_sum``/``_count``."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names in
    matchers and grouping clauses, durations and strings left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        name = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
