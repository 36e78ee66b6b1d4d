"""The shipped deployment files, read the way Prometheus, Grafana and Kubernetes read them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_RULE_TESTS = REPO_ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "hookline.json"
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes" / "hookline.yaml"

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is not installed (Debian: apt-get install prometheus)"

# Words of PromQL that look like metric names but are operators, modifiers or literals.
PROMQL_WORDS = {
    *("and", "or", "unless", "bool", "atan2", "offset", "inf", "nan"),
    *("by", "without", "on", "ignoring", "group_left", "group_right"),
}
# The series a metric family of each type exposes, as a query names them.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def alert_rules() -> list[dict[str, Any]]:
    content = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in content["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> dict[str, str]:
    """Every query of the dashboard, keyed by panel title and target."""
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    }


def kubernetes_objects() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc}


def metric_names_in(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects (not functions or label names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    # Not after a digit or a dot, so the exponent of 1e3 is not taken for a name.
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        is_call = text[match.end() :].lstrip().startswith("(")
        if not is_call and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def queryable_names(exposition: str) -> set[str]:
    """The series names a query can select from a scrape, by each family's declared type.

    Typed per family rather than by stripping suffixes, so that a rule asking for
    ``webhook_dlq_size_total`` (a gauge has no ``_total``) is caught.
    """
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
    return names
