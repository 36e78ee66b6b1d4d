"""The load test's arithmetic and its one-line summary, kept free of I/O so it can be tested."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

HOOK_PATH_PREFIX = "/hook/"
"""Receiver paths that belong to hookline's endpoints, as opposed to the ceiling sender's."""
MS_PER_SECOND = 1000.0


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of already sorted values, interpolating between ranks.

    This is the estimator numpy uses by default, so figures compare with other tools.
    """
    if not sorted_values:
        raise ValueError("A percentile of no values is undefined.")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"A percentile fraction must lie in [0, 1], got {fraction}.")
    position = (len(sorted_values) - 1) * fraction
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * weight


def latency_percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and p99 in milliseconds, or None each when nothing was measured."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {
        "p50_ms": percentile(ordered, 0.50) * MS_PER_SECOND,
        "p95_ms": percentile(ordered, 0.95) * MS_PER_SECOND,
        "p99_ms": percentile(ordered, 0.99) * MS_PER_SECOND,
    }


def delivery_latencies(
    first_ok: Mapping[tuple[str, str], float], accepted_at: Mapping[str, float]
) -> tuple[list[float], int]:
    """Latency of every hookline delivery the receiver saw, and how many had no known 202.

    ``first_ok`` maps (receiver path, webhook-id) to the first 2xx receipt. ``accepted_at`` is
    keyed by event id and by delivery id, so the join works whichever one the server sends.
    """
    latencies = []
    unmatched = 0
    for (path, webhook_id), received_at in first_ok.items():
        if not path.startswith(HOOK_PATH_PREFIX):
            continue
        accepted = accepted_at.get(webhook_id)
        if accepted is None:
            unmatched += 1
        else:
            latencies.append(received_at - accepted)
    return latencies, unmatched


def hook_receipts(first_ok: Mapping[tuple[str, str], float]) -> list[float]:
    """First-receipt times of hookline's deliveries only."""
    return [t for (path, _), t in first_ok.items() if path.startswith(HOOK_PATH_PREFIX)]


def per_second(count: int, seconds: float) -> float | None:
    """A rate, or None when there is nothing to divide."""
    return count / seconds if count and seconds > 0 else None


def ratio_of(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def shown(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def summary_line(report: Mapping[str, Any]) -> str:
    """The one line a person compares between runs."""
    settings = report["settings"]
    parts = [
        f"ceiling {shown(report['ceiling_per_s'], '/s')}",
        f"hookline {shown(report['hookline_per_s'], '/s')} "
        f"(ratio {shown(report['ratio'], digits=2)})",
        f"ingest {shown(report['ingest_per_s'], '/s')}",
        f"p50 {shown(report['p50_ms'], ' ms')} p95 {shown(report['p95_ms'], ' ms')} "
        f"p99 {shown(report['p99_ms'], ' ms')}",
        f"peak RSS {shown(report['peak_rss_mb'], ' MB')}",
        f"dup {shown(report['duplicates'])}",
        f"N={settings['deliveries']} K={settings['fanout']}",
    ]
    if report["hookline"] is not None:
        code = report["server_exit_code"]
        parts.append("exit killed" if code is None else f"exit {code}")
    if not report["complete"]:
        parts.append("INCOMPLETE")
    return " | ".join(parts)
