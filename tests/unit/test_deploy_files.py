"""The shipped alert rules, dashboard and Kubernetes example are well-formed and consistent.

That their metric names exist in a real scrape is checked in
``tests/integration/test_metrics.py``, against a running server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hookline.api.app import create_app
from hookline.config import Settings
from tests.conftest import make_settings
from tests.deploy_files import (
    ALERT_RULE_TESTS,
    ALERT_RULES,
    NO_PROMTOOL,
    PROMTOOL,
    alert_rules,
    dashboard,
    dashboard_queries,
    kubernetes_objects,
    metric_names_in,
)

# Read from the shared store, so every instance reports the same number.
STORE_GAUGES = ("webhook_queue_size", "webhook_dlq_size", "webhook_endpoints_total")
ALERT_CATEGORIES = ("DeadLetterQueue", "SuccessRate", "Queue", "EndpointsDisabled")


def test_metric_names_in__finds_selectors_and_skips_functions_labels_and_numbers() -> None:
    expr = (
        'sum by (job) (rate(a_total{x="b(c)", job=~"$job"}[5m] offset 1h)) / on (job) '
        "histogram_quantile(0.9, b_bucket) > 1e3 and c"
    )

    assert metric_names_in(expr) == {"a_total", "b_bucket", "c"}


def test_alert_rules_have_what_alertmanager_routes_and_shows() -> None:
    rules = alert_rules()

    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for category in ALERT_CATEGORIES:
        assert any(category in name for name in names), category
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert metric_names_in(rule["expr"]), rule["alert"]


def test_store_gauges_are_never_summed_across_instances() -> None:
    queries = {rule["alert"]: rule["expr"] for rule in alert_rules()} | dashboard_queries()

    reading_the_store = {
        where: expr for where, expr in queries.items() if metric_names_in(expr) & set(STORE_GAUGES)
    }

    assert len(reading_the_store) >= len(STORE_GAUGES)
    for where, expr in reading_the_store.items():
        assert "sum" not in expr, f"{where}: {expr}"
        assert "max" in expr, f"{where}: {expr}"


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_alert_rules() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_alert_rules_fire_on_the_series_their_unit_tests_describe() -> None:
    assert PROMTOOL is not None
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", ALERT_RULE_TESTS.name],
        capture_output=True,
        text=True,
        cwd=ALERT_RULE_TESTS.parent,
    )

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_dashboard_panels_query_prometheus_through_the_datasource_variable() -> None:
    board = dashboard()
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]

    assert board["uid"] == "hookline"
    assert {variable["name"] for variable in board["templating"]["list"]} == {"datasource", "job"}
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert metric_names_in(target["expr"]), panel["title"]
            assert 'job=~"$job"' in target["expr"], panel["title"]
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]


def test_kubernetes_probes_ask_routes_the_app_serves(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    routes = set(create_app(settings).openapi()["paths"])
    deployment = kubernetes_objects()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]

    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes, probe
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"], probe
    assert container["ports"][0]["containerPort"] == Settings.model_fields["port"].default
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes


def test_kubernetes_example_never_runs_two_processes_on_one_sqlite_file() -> None:
    objects = kubernetes_objects()
    deployment = objects["Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert env["DATABASE_URL"]["value"].startswith("sqlite:///")
    grace = float(env["SHUTDOWN_GRACE_SECONDS"]["value"])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
