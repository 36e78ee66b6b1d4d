"""``/metrics`` scraped from a real server after real deliveries, retries and dead letters."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hookline import metrics
from hookline.models import Stats
from tests.conftest import RunningServer, ServerFactory
from tests.deploy_files import (
    NO_PROMTOOL,
    PROMTOOL,
    alert_rules,
    dashboard_queries,
    metric_names_in,
    queryable_names,
)
from tests.receivers import Received, Receiver, Reply

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# Named by the issue that asked for it, for the dashboards that already use it, although
# Prometheus's naming rules reserve _total for counters.
KNOWN_LINT = "webhook_endpoints_total non-counter metrics should not have"


class Scrape:
    """One ``/metrics`` answer, parsed; ``value`` looks a sample up by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples[name, frozenset(labels.items())]

    def has(self, name: str) -> bool:
        return any(sample_name == name for sample_name, _ in self.samples)

    def label_names(self) -> set[str]:
        return {name for _, labels in self.samples for name, _ in labels}

    def label_values(self) -> set[str]:
        return {value for _, labels in self.samples for _, value in labels}


async def scrape(server: RunningServer, accept: str | None = None) -> tuple[int, str, str]:
    """GET /metrics with no API key, as Prometheus does; return status, content type, body."""
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + "/metrics", headers=headers) as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


async def scraped(server: RunningServer) -> Scrape:
    status, _, text = await scrape(server)
    assert status == 200, text
    return Scrape(text)


def by_path(scripts: dict[str, Any]) -> Any:
    return lambda request: scripts[request.path](request)


def failing_first(times: int) -> Any:
    def reply(request: Received) -> Reply:
        attempt = int(request.headers["X-Webhook-Attempt"])
        return Reply(status=503) if attempt <= times else Reply()

    return reply


async def run_successes_retries_and_a_dead_letter(
    server: RunningServer, receiver: Receiver
) -> dict[str, dict[str, Any]]:
    """Two clean deliveries, one after two retries, one dead-lettered after two attempts."""
    receiver.script = by_path(
        {
            "/ok": lambda _: Reply(),
            "/flaky": failing_first(2),
            "/down": lambda _: Reply(status=500),
        }
    )
    endpoints = {
        "ok": await server.create_endpoint(receiver.url("/ok"), events=["user.*"]),
        "flaky": await server.create_endpoint(receiver.url("/flaky"), events=["order.*"]),
        "down": await server.create_endpoint(
            receiver.url("/down"), events=["payment.*"], max_retries=1
        ),
    }
    finished = [
        (await server.emit("user.created"), "delivered"),
        (await server.emit("user.created"), "delivered"),
        (await server.emit("order.paid"), "delivered"),
        (await server.emit("payment.failed"), "failed"),
    ]
    for accepted, status in finished:
        await server.wait_for_delivery(accepted["deliveries"][0]["id"], status)
    return endpoints


async def test_scrape_after_successes_retries_and_a_dead_letter__counts_match(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoints = await run_successes_retries_and_a_dead_letter(server, receiver)
    status, _ = await server.request(
        "PATCH", f"/api/v1/webhooks/{endpoints['ok']['id']}", json={"enabled": False}
    )
    assert status == 200

    found = await scraped(server)

    assert found.value("webhook_events_total", event_type="user.created") == 2
    assert found.value("webhook_events_total", event_type="order.paid") == 1
    assert found.value("webhook_events_total", event_type="payment.failed") == 1
    # ok: 1 + 1 attempts; flaky: 503, 503, 200; down: 500, 500 and dead-lettered.
    assert found.value("webhook_deliveries_total", status="delivered") == 3
    assert found.value("webhook_deliveries_total", status="retried") == 3
    assert found.value("webhook_deliveries_total", status="failed") == 1
    assert found.value("webhook_delivery_attempts_total", outcome="success") == 3
    assert found.value("webhook_delivery_attempts_total", outcome="http_error") == 4
    assert found.value("webhook_delivery_attempts_total", outcome="timeout") == 0
    assert found.value("webhook_delivery_attempts_total", outcome="connection_error") == 0
    assert found.value("webhook_delivery_attempts_total", outcome="blocked") == 0
    assert found.value("webhook_delivery_duration_seconds_count") == 7
    assert found.value("webhook_delivery_latency_seconds_count") == 3
    assert found.value("webhook_delivery_latency_seconds_bucket", le="+Inf") == 3
    # The flaky delivery waited two backoffs, so the slowest latency outlasts any attempt.
    assert (
        found.value("webhook_delivery_latency_seconds_sum")
        > found.value("webhook_delivery_duration_seconds_sum")
        > 0
    )
    assert found.value("webhook_queue_size") == 0
    assert found.value("webhook_dlq_size") == 1
    assert found.value("webhook_in_flight") == 0
    assert found.value("webhook_endpoints_total", state="enabled") == 2
    assert found.value("webhook_endpoints_total", state="disabled") == 1
    assert found.value("webhook_endpoints_total", state="circuit_open") == 0
    assert found.value("webhook_store_up") == 1
    assert found.value("process_resident_memory_bytes") > 0
    assert found.has("python_info")


async def test_open_circuit__the_endpoint_counts_as_circuit_open_only(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server: RunningServer = await start_server(
        circuit_breaker_failure_threshold=2, circuit_breaker_cooldown_seconds=60
    )
    receiver.script = by_path({"/ok": lambda _: Reply(), "/down": lambda _: Reply(status=500)})
    await server.create_endpoint(receiver.url("/ok"), events=["user.*"])
    await server.create_endpoint(receiver.url("/down"), events=["payment.*"], max_retries=1)
    accepted = await server.emit("payment.failed")
    await server.wait_for_delivery(accepted["deliveries"][0]["id"], "failed")

    found = await scraped(server)

    # Two failures in a row opened the circuit; the states still add up to every endpoint.
    assert found.value("webhook_endpoints_total", state="circuit_open") == 1
    assert found.value("webhook_endpoints_total", state="enabled") == 1
    assert found.value("webhook_endpoints_total", state="disabled") == 0


async def test_attempts_underway_count_in_flight_and_in_the_queue(
    server: RunningServer, receiver: Receiver
) -> None:
    receiver.script = lambda _: Reply(delay_seconds=3.0)
    await server.create_endpoint(receiver.url())
    for _ in range(3):
        await server.emit()
    await receiver.wait_for(3)

    found = await scraped(server)

    assert found.value("webhook_in_flight") == 3
    assert found.value("webhook_queue_size") == 3  # pending until an attempt succeeds
    assert found.value("webhook_delivery_attempts_total", outcome="success") == 0


async def test_metrics_need_no_api_key_and_carry_no_endpoint_labels_by_default(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoints = await run_successes_retries_and_a_dead_letter(server, receiver)

    status, content_type, text = await scrape(server)

    assert status == 200
    assert content_type.startswith("text/plain")
    found = Scrape(text)
    assert not found.label_names() & {"endpoint_id", "url", "delivery_id", "event_id"}
    for endpoint in endpoints.values():
        assert endpoint["id"] not in text
        assert endpoint["url"] not in text


async def test_per_endpoint_metrics__attempts_and_verdicts_carry_the_endpoint_id(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server: RunningServer = await start_server(metrics_per_endpoint=True)
    endpoints = await run_successes_retries_and_a_dead_letter(server, receiver)
    flaky, down = endpoints["flaky"]["id"], endpoints["down"]["id"]

    found = await scraped(server)

    assert found.value("webhook_delivery_attempts_total", outcome="http_error", endpoint_id=flaky)
    assert found.value("webhook_delivery_attempts_total", outcome="http_error", endpoint_id=down)
    assert found.value("webhook_deliveries_total", status="delivered", endpoint_id=flaky) == 1
    assert found.value("webhook_deliveries_total", status="failed", endpoint_id=down) == 1
    assert found.value("webhook_delivery_duration_seconds_count", endpoint_id=flaky) == 3
    # Still no URLs, and the end-to-end latency stays one series.
    assert receiver.url("/flaky") not in found.text
    assert found.value("webhook_delivery_latency_seconds_count") == 3


async def test_slow_store__scrape_answers_in_time_without_the_store_gauges(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "STORE_READ_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(metrics, "STORE_GAUGES_MAX_AGE_SECONDS", 0.0)
    answer_stats = server.service.store.stats

    async def hung_stats(now: float) -> Stats:
        await asyncio.sleep(30)
        raise AssertionError("the scrape should have stopped waiting")

    monkeypatch.setattr(server.service.store, "stats", hung_stats)
    started = time.monotonic()
    found = await scraped(server)

    assert time.monotonic() - started < 2
    assert found.value("webhook_store_up") == 0
    assert not found.has("webhook_queue_size")
    assert not found.has("webhook_dlq_size")
    assert found.has("webhook_in_flight")

    monkeypatch.setattr(server.service.store, "stats", answer_stats)
    recovered = await scraped(server)

    assert recovered.value("webhook_store_up") == 1
    assert recovered.value("webhook_dlq_size") == 0


async def test_scraper_asking_for_openmetrics_gets_it(server: RunningServer) -> None:
    await server.emit()

    status, content_type, text = await scrape(server, accept=OPENMETRICS)

    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert "webhook_delivery_attempts_total" in text


async def test_event_types_beyond_the_cap_are_counted_as_other(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "MAX_EVENT_TYPE_LABELS", 2)
    server: RunningServer = await start_server()
    for event_type in ("a.one", "a.two", "a.three", "a.four", "a.one"):
        await server.emit(event_type)

    found = await scraped(server)

    assert found.value("webhook_events_total", event_type="a.one") == 2
    assert found.value("webhook_events_total", event_type="a.two") == 1
    assert found.value("webhook_events_total", event_type=metrics.OTHER_EVENT_TYPE) == 2
    assert not {"a.three", "a.four"} & found.label_values()


async def test_alert_rules_and_dashboard_name_only_metrics_the_service_exports(
    server: RunningServer, receiver: Receiver
) -> None:
    await run_successes_retries_and_a_dead_letter(server, receiver)
    _, _, text = await scrape(server)
    exported = queryable_names(text)
    queries = {f"alert {r['alert']}": r["expr"] for r in alert_rules()} | {
        f"dashboard {where}": expr for where, expr in dashboard_queries().items()
    }

    unknown = {
        where: sorted(metric_names_in(expr) - exported)
        for where, expr in queries.items()
        if metric_names_in(expr) - exported
    }

    assert unknown == {}
    assert "webhook_dlq_size_total" not in exported  # a gauge is not a counter
    assert "webhook_events" not in exported  # counters are queried with _total


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
async def test_promtool_finds_the_exposition_well_formed(
    server: RunningServer, receiver: Receiver
) -> None:
    assert PROMTOOL is not None
    await run_successes_retries_and_a_dead_letter(server, receiver)
    _, _, text = await scrape(server)

    checked = await asyncio.to_thread(
        subprocess.run, [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True
    )

    problems = [
        line
        for line in (checked.stdout + checked.stderr).splitlines()
        if line.strip() and KNOWN_LINT not in line
    ]
    assert problems == []
