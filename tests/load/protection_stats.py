"""The protection benchmark's arithmetic, verdicts and report lines, kept free of I/O.

Rates come from the receiver's arrival times; a scenario's figures are medians over its runs,
and a run that did not complete fails its scenario whatever its figures say.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from load_stats import ratio_of, shown

RATE_TOLERANCE = 0.05
ISOLATION_MIN_RATIO = 0.90


@dataclass(frozen=True, slots=True)
class WindowRates:
    """Delivery rates read from arrival times, relative to the first arrival."""

    window_per_s: float
    """Arrivals in [first + skip, first + skip + window), divided by the window."""
    with_burst_per_s: float
    """Arrivals in [first, first + skip + window), divided by skip + window."""
    burst_count: int
    """Arrivals in the skipped first stretch."""
    per_second: list[int]
    """Arrivals in each whole second of the window, to show how even the pace was."""
    through_window: int
    """Arrivals from the first one to the end of the window."""


def count_between(ordered: Sequence[float], start: float, end: float) -> int:
    """How many of the sorted values lie in [start, end)."""
    return bisect.bisect_left(ordered, end) - bisect.bisect_left(ordered, start)


def window_rates(
    arrivals: Sequence[float], skip_seconds: float, window_seconds: float
) -> WindowRates | None:
    """Rates over a window that opens ``skip_seconds`` after the first arrival, or None if none."""
    if not arrivals:
        return None
    ordered = sorted(arrivals)
    first = ordered[0]
    opens = first + skip_seconds
    closes = opens + window_seconds
    in_window = count_between(ordered, opens, closes)
    through_window = count_between(ordered, first, closes)
    seconds = [count_between(ordered, opens + i, opens + i + 1) for i in range(int(window_seconds))]
    return WindowRates(
        window_per_s=in_window / window_seconds,
        with_burst_per_s=through_window / (skip_seconds + window_seconds),
        burst_count=count_between(ordered, first, opens),
        per_second=seconds,
        through_window=through_window,
    )


@dataclass(slots=True)
class RateRun:
    """One run of the rate scenario."""

    limit_per_s: float
    burst: float | None = None
    events_accepted: int = 0
    window_per_s: float | None = None
    ratio: float | None = None
    with_first_second_per_s: float | None = None
    first_second: int | None = None
    per_second: list[int] = field(default_factory=list)
    duplicates: int = 0
    server_exit_code: int | None = None
    server_stop_seconds: float | None = None
    problem: str | None = None


@dataclass(slots=True)
class FastRun:
    """One measurement of the fast endpoint, alone or beside the slow one."""

    beside_slow: bool
    expected: int
    delivered: int = 0
    per_s: float | None = None
    """Deliveries divided by the time from the first ingest request to the last arrival."""
    arrival_span_per_s: float | None = None
    """Deliveries per second between the first and the last arrival only."""
    seconds: float | None = None
    slow_arrivals: int | None = None
    slow_peak_held: int | None = None
    """The most requests the slow receiver held at once: the slow endpoint's real pressure."""
    server_exit_code: int | None = None
    server_stop_seconds: float | None = None
    problem: str | None = None


def median_of(values: Sequence[float | None]) -> float | None:
    """The median of the values that were measured, or None when none was."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def shown_all(values: Sequence[float | None]) -> str:
    return ", ".join(shown(value, digits=1) for value in values)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def summarize_rate(
    runs: list[RateRun], *, limit_per_s: float, window_seconds: float
) -> dict[str, Any]:
    """The rate scenario's medians and verdict; every run must be complete to pass."""
    measured = median_of([run.window_per_s for run in runs])
    ratio = ratio_of(measured, limit_per_s)
    problems = [run.problem for run in runs if run.problem]
    within = ratio is not None and abs(ratio - 1.0) <= RATE_TOLERANCE
    return {
        "limit_per_s": limit_per_s,
        "burst": runs[0].burst if runs else None,
        "window_seconds": window_seconds,
        "measured_per_s": measured,
        "ratio": ratio,
        "with_first_second_per_s": median_of([run.with_first_second_per_s for run in runs]),
        "first_second": median_of([run.first_second for run in runs]),
        "tolerance": RATE_TOLERANCE,
        "passed": within and not problems,
        "problems": problems,
        "runs": [asdict(run) for run in runs],
    }


def rate_line(summary: dict[str, Any]) -> str:
    percent = summary["tolerance"] * 100
    return (
        f"rate: limit {shown(summary['limit_per_s'], '/s', 1)}, measured "
        f"{shown(summary['measured_per_s'], '/s', 1)} over {summary['window_seconds']:g} s "
        f"after the first second (ratio {shown(summary['ratio'], digits=3)}, "
        f"needs 1 ± {percent:g} %) | incl. first second "
        f"{shown(summary['with_first_second_per_s'], '/s', 1)} | first second "
        f"{shown(summary['first_second'])} | runs {len(summary['runs'])} | "
        f"{verdict(summary['passed'])}"
    )


def summarize_isolation(
    pairs: list[tuple[FastRun, FastRun]],
    *,
    max_in_flight: int,
    slow_seconds: float,
    fast_events: int,
) -> dict[str, Any]:
    """The isolation scenario's medians and verdict; the ratio is the median of each pair's."""
    ratios = [ratio_of(beside.per_s, alone.per_s) for alone, beside in pairs]
    ratio = median_of(ratios)
    runs = [run for pair in pairs for run in pair]
    problems = [run.problem for run in runs if run.problem]
    warnings = []
    peaks = [beside.slow_peak_held for _, beside in pairs]
    if any(peak is None or peak < max_in_flight for peak in peaks):
        # Then the slow endpoint pressed less than its limit allows, and the test is weaker.
        warnings.append(
            f"the slow receiver held at most {peaks} requests at once, below the slow "
            f"endpoint's max_in_flight of {max_in_flight}"
        )
    durations = [beside.seconds for _, beside in pairs]
    if any(seconds is not None and seconds < slow_seconds for seconds in durations):
        # No slow attempt finished while the fast endpoint was busy, so handing the slow
        # endpoint's freed slots back while other work flows was never exercised.
        warnings.append(
            f"the fast endpoint was done beside the slow one in {shown_all(durations)} s, "
            f"before the first slow answer at {slow_seconds:g} s; raise --events "
            "for a longer test"
        )
    return {
        "alone_per_s": median_of([alone.per_s for alone, _ in pairs]),
        "beside_slow_per_s": median_of([beside.per_s for _, beside in pairs]),
        "ratio": ratio,
        "ratios": ratios,
        "min_ratio": ISOLATION_MIN_RATIO,
        "slow_peak_held": max((p for p in peaks if p is not None), default=None),
        "slow_seconds": slow_seconds,
        "max_in_flight": max_in_flight,
        "fast_events": fast_events,
        "passed": ratio is not None and ratio >= ISOLATION_MIN_RATIO and not problems,
        "problems": problems,
        "warnings": warnings,
        "runs": [asdict(run) for run in runs],
    }


def isolation_line(summary: dict[str, Any]) -> str:
    return (
        f"isolation: fast alone {shown(summary['alone_per_s'], '/s')}, beside slow "
        f"{shown(summary['beside_slow_per_s'], '/s')} (ratio {shown(summary['ratio'], digits=3)}"
        f", needs >= {summary['min_ratio']:.2f}) | slow receiver held "
        f"{shown(summary['slow_peak_held'])} at once for {summary['slow_seconds']:g} s each | "
        f"max_in_flight {summary['max_in_flight']} | N={summary['fast_events']} | "
        f"runs {len(summary['runs']) // 2} | {verdict(summary['passed'])}"
    )


def describe_rate_run(run: RateRun) -> str:
    seconds = run.per_second
    spread = f", per second {min(seconds)}..{max(seconds)}" if seconds else ""
    trouble = f", PROBLEM: {run.problem}" if run.problem else ""
    return (
        f"  rate: {shown(run.window_per_s, '/s', 1)} in the window, burst "
        f"{'default' if run.burst is None else shown(run.burst)}, "
        f"first second {shown(run.first_second)}{spread}, "
        f"server stopped in {shown(run.server_stop_seconds, ' s', 1)} "
        f"(exit {run.server_exit_code}){trouble}"
    )


def describe_fast_run(run: FastRun) -> str:
    where = "beside slow" if run.beside_slow else "alone"
    slow = ""
    if run.beside_slow:
        slow = f", slow arrivals {run.slow_arrivals}, slow held at most {run.slow_peak_held}"
    trouble = f", PROBLEM: {run.problem}" if run.problem else ""
    return (
        f"  fast {where}: {run.delivered}/{run.expected} in {shown(run.seconds, ' s', 2)} = "
        f"{shown(run.per_s, '/s')} (between arrivals {shown(run.arrival_span_per_s, '/s')})"
        f"{slow}, server stopped in {shown(run.server_stop_seconds, ' s', 1)} "
        f"(exit {run.server_exit_code}){trouble}"
    )
