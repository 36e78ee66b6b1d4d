"""Prometheus metrics: counters fed by the delivery observers, gauges read at scrape time.

Two kinds of numbers live here and they aggregate differently across instances:

- Counters, histograms and ``webhook_in_flight`` count what *this process* did or holds, so
  summing them over instances gives the cluster's total.
- ``webhook_queue_size``, ``webhook_dlq_size`` and ``webhook_endpoints_total`` are read from the
  shared store, so every instance reports the same cluster-wide number; aggregate them with
  ``max()``, never ``sum()``.

Each :class:`DeliveryMetrics` has a registry of its own rather than the library's global one,
so several services in one process (as in the tests) never clash.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar, cast

import prometheus_client
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from hookline.errors import StoreError
from hookline.models import AcceptedEvent, AttemptOutcome, AttemptVerdict, DeliveryStatus, NewEvent
from hookline.store.base import Store

STORE_GAUGES_MAX_AGE_SECONDS = 2.0
STORE_READ_TIMEOUT_SECONDS = 2.0
MAX_EVENT_TYPE_LABELS = 500
OTHER_EVENT_TYPE = "(other)"
"""Counts event types beyond the cap; parentheses cannot occur in a real event type."""

MS_PER_SECOND = 1000.0
ATTEMPT_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# From a fast first attempt to a delivery that needed a day of retries.
LATENCY_SECONDS_BUCKETS = (
    *(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    *(300, 900, 3600, 4 * 3600, 24 * 3600),
)

DELIVERY_STATUS_LABELS = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.PENDING: "retried",
    DeliveryStatus.FAILED: "failed",
}

# A _created series doubles every counter and histogram, and nothing hookline ships reads
# them; the switch is process-wide in the client library.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

log = structlog.get_logger(__name__)

Metric = TypeVar("Metric", bound=MetricWrapperBase)


class DeliveryMetrics:
    """The service's metrics, in a registry of their own; observes accepts and verdicts.

    With ``per_endpoint`` the per-attempt metrics gain an ``endpoint_id`` label, one series
    per endpoint, which an operator has to opt into because it grows with the endpoints.
    """

    def __init__(self, store: Store, in_flight: Callable[[], int], *, per_endpoint: bool) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._per_endpoint = per_endpoint
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        self._event_types = BoundedLabel(MAX_EVENT_TYPE_LABELS)
        endpoint_label = ["endpoint_id"] if per_endpoint else []

        self._events = Counter(
            "webhook_events",
            "Events accepted (idempotent repeats not counted), by event type.",
            ["event_type"],
            registry=self.registry,
        )
        self._deliveries = Counter(
            "webhook_deliveries",
            "Attempt verdicts by what became of the delivery: delivered, retried (another "
            "attempt is scheduled) or failed (attempts exhausted, moved to the DLQ).",
            ["status", *endpoint_label],
            registry=self.registry,
        )
        self._attempts = Counter(
            "webhook_delivery_attempts",
            "Attempts made, by outcome.",
            ["outcome", *endpoint_label],
            registry=self.registry,
        )
        self._attempt_seconds = Histogram(
            "webhook_delivery_duration_seconds",
            "Duration of one attempt, from sending the request to the end of the response.",
            endpoint_label,
            buckets=ATTEMPT_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._latency = Histogram(
            "webhook_delivery_latency_seconds",
            "From the delivery's creation (the event accepted, or a replay) to its successful "
            "attempt, every attempt and wait in between included.",
            buckets=LATENCY_SECONDS_BUCKETS,
            registry=self.registry,
        )
        Gauge(
            "webhook_in_flight",
            "Attempts this instance has in flight now (per instance: sum across instances).",
            registry=self.registry,
        ).set_function(lambda: float(in_flight()))
        self.store_gauges = StoreGauges(store)
        self.registry.register(self.store_gauges)

        if not per_endpoint:
            # Known label values are exported as 0 from the start, so rate() and alerts see
            # the series before the first event of each kind.
            for status in DELIVERY_STATUS_LABELS.values():
                self._deliveries.labels(status=status)
            for outcome in AttemptOutcome:
                self._attempts.labels(outcome=str(outcome))

    def on_accepted(self, events: Sequence[NewEvent], accepted: Sequence[AcceptedEvent]) -> None:
        event_types = {event.id: event.event_type for event in events}
        for item in accepted:
            if item.created and item.event_id in event_types:
                label = self._event_types.label(event_types[item.event_id])
                self._series(self._events, (label,)).inc()

    def on_verdict(self, verdict: AttemptVerdict) -> None:
        claim, result = verdict.claim, verdict.result
        endpoint = (claim.endpoint_id,) if self._per_endpoint else ()

        self._series(self._attempts, (result.outcome.value, *endpoint)).inc()
        status = DELIVERY_STATUS_LABELS[verdict.status]
        self._series(self._deliveries, (status, *endpoint)).inc()
        attempt_seconds = result.duration_ms / MS_PER_SECOND
        self._series(self._attempt_seconds, endpoint).observe(attempt_seconds)
        if verdict.status is DeliveryStatus.DELIVERED:
            self._latency.observe(max(0.0, result.finished_at - claim.accepted_at))

    def _series(self, metric: Metric, labels: tuple[str, ...]) -> Metric:
        """The child of ``metric`` for these label values, found once and then kept.

        The client library's ``labels()`` validates and locks on every call, which costs more
        than the increment itself at thousands of verdicts per second.
        """
        key = (id(metric), labels)
        series = self._children.get(key)
        if series is None:
            # The client library refuses .labels() on a metric declared without label names.
            series = metric.labels(*labels) if labels else metric
            self._children[key] = series
        return cast(Metric, series)

    async def exposition(self, accept_header: str | None) -> tuple[bytes, str]:
        """Refresh the store gauges, then return the scrape body and its content type."""
        await self.store_gauges.refresh()
        encode, content_type = choose_encoder(accept_header or "")
        return encode(self.registry), content_type


class BoundedLabel:
    """Passes label values through until ``limit`` distinct ones were seen, then lumps the rest.

    Event types are chosen by the API's callers; a caller minting a new type per event would
    otherwise create a series per event and overwhelm Prometheus.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def label(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        if len(self._seen) == self._limit:
            self._seen.add(OTHER_EVENT_TYPE)  # so the warning below is logged once
            log.warning(
                f"more than {self._limit} event types seen; the metrics count further ones "
                f"as event_type={OTHER_EVENT_TYPE!r}",
                action="metrics_label_capped",
            )
        return OTHER_EVENT_TYPE


class StoreGauges(Collector):
    """Queue size, DLQ size and endpoints by state, read from the store before a scrape.

    The read is cached briefly, so several scrapers cost one query, and bounded by a timeout,
    so a slow store cannot hang ``/metrics``. When the read fails these gauges are left out of
    the scrape (Prometheus then treats them as absent rather than showing a stale number) and
    ``webhook_store_up`` is 0.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._stats: tuple[int, int, int, int, int] | None = None
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < STORE_GAUGES_MAX_AGE_SECONDS:
                return
            was_up = self._stats is not None or self._read_at == -math.inf
            try:
                stats = await asyncio.wait_for(
                    self._store.stats(time.time()), STORE_READ_TIMEOUT_SECONDS
                )
            except (TimeoutError, StoreError) as exc:
                self._stats = None
                if was_up:
                    log.warning(
                        "metrics cannot read the store; its gauges are left out until it answers",
                        action="metrics_store_unavailable",
                        error=str(exc) or f"no answer within {STORE_READ_TIMEOUT_SECONDS:g} s",
                    )
            else:
                if not was_up:
                    log.info("metrics read the store again", action="metrics_store_available")
                self._stats = (
                    stats.pending,
                    stats.dead_letters,
                    stats.endpoints_enabled - stats.circuits_open,
                    stats.endpoints - stats.endpoints_enabled,
                    stats.circuits_open,
                )
            self._read_at = time.monotonic()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "webhook_store_up",
            "1 when the last read of the store for these metrics answered in time, else 0.",
            value=0 if self._stats is None else 1,
        )
        if self._stats is None:
            return
        pending, dead_letters, sending, disabled, circuits_open = self._stats
        yield GaugeMetricFamily(
            "webhook_queue_size",
            "Deliveries pending, in flight included (cluster-wide: use max across instances).",
            value=pending,
        )
        yield GaugeMetricFamily(
            "webhook_dlq_size",
            "Messages in the dead-letter queue (cluster-wide: use max across instances).",
            value=dead_letters,
        )
        # Each endpoint is in exactly one state, so the states add up to all endpoints: an
        # enabled endpoint whose circuit is open (or half-open) counts only as circuit_open.
        endpoints = GaugeMetricFamily(
            "webhook_endpoints_total",
            "Endpoints by state: enabled (circuit closed), circuit_open (enabled, held back by "
            "its circuit breaker), disabled (cluster-wide: use max across instances).",
            labels=["state"],
        )
        endpoints.add_metric(["enabled"], sending)
        endpoints.add_metric(["disabled"], disabled)
        endpoints.add_metric(["circuit_open"], circuits_open)
        yield endpoints
