"""Checks of the protection benchmark's parts: the rate window, the verdicts, the slow receiver.

Run with ``python -m pytest tests/load -p no:benchmark`` (they are not in the default test paths).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import protection_benchmark as bench
import protection_stats as stats
import pytest
import receiver
import slow_receiver

RATE_PER_S = 100.0
DELAY_SECONDS = 0.3


def post(webhook_id: bytes) -> bytes:
    body = b'{"a":1}'
    return (
        b"POST /hook/slow HTTP/1.1\r\nHost: x\r\nwebhook-id: %s\r\nContent-Length: %d\r\n\r\n"
        % (webhook_id, len(body))
        + body
    )


# --- the rate window ------------------------------------------------------------------------


def test_window_leaves_out_the_burst_and_measures_the_steady_pace() -> None:
    burst = [0.0] * 10
    steady = [0.005 + i / RATE_PER_S for i in range(3000)]
    rates = stats.window_rates(burst + steady, skip_seconds=1.0, window_seconds=20.0)
    assert rates is not None
    assert rates.window_per_s == pytest.approx(RATE_PER_S)
    assert rates.burst_count == 10 + 100
    assert rates.with_burst_per_s == pytest.approx((10 + 2100) / 21.0)
    assert rates.per_second == [100] * 20


def test_window_of_no_arrivals_is_none() -> None:
    assert stats.window_rates([], skip_seconds=1.0, window_seconds=20.0) is None


def test_count_between_is_half_open() -> None:
    assert stats.count_between([1.0, 2.0, 2.0, 3.0], 2.0, 3.0) == 2


def test_backlog_outlasts_the_window() -> None:
    options = bench.parse_options(["--rate", "50", "--seconds", "4"])
    assert bench.rate_backlog(options) == 50 * (1 + 4 + 10)


# --- verdicts -------------------------------------------------------------------------------


def test_median_skips_what_was_not_measured() -> None:
    assert stats.median_of([3.0, None, 1.0, 2.0]) == 2.0
    assert stats.median_of([None]) is None


def rate_run(per_s: float, problem: str | None = None) -> stats.RateRun:
    return stats.RateRun(limit_per_s=RATE_PER_S, window_per_s=per_s, problem=problem)


def rate_summary(runs: list[stats.RateRun]) -> dict[str, Any]:
    return stats.summarize_rate(runs, limit_per_s=RATE_PER_S, window_seconds=20.0)


def test_rate_passes_within_five_percent_only() -> None:
    assert rate_summary([rate_run(96.0)])["passed"]
    assert not rate_summary([rate_run(94.0)])["passed"]
    assert not rate_summary([rate_run(106.0)])["passed"]


def test_an_incomplete_rate_run_fails_the_scenario() -> None:
    runs = [rate_run(100.0), rate_run(100.0), rate_run(100.0, problem="the server died")]
    summary = rate_summary(runs)
    assert summary["measured_per_s"] == 100.0
    assert not summary["passed"] and summary["problems"] == ["the server died"]


def fast_pair(
    alone: float, beside: float, seconds: float = 12.0
) -> tuple[stats.FastRun, stats.FastRun]:
    return (
        stats.FastRun(beside_slow=False, expected=1, per_s=alone, seconds=seconds),
        stats.FastRun(
            beside_slow=True, expected=1, per_s=beside, seconds=seconds, slow_peak_held=10
        ),
    )


def isolation_summary(pairs: list[tuple[stats.FastRun, stats.FastRun]]) -> dict[str, Any]:
    return stats.summarize_isolation(pairs, max_in_flight=10, slow_seconds=10.0, fast_events=1)


def test_isolation_takes_the_median_of_each_pairs_ratio() -> None:
    pairs = [fast_pair(1000.0, 950.0), fast_pair(1000.0, 500.0), fast_pair(800.0, 760.0)]
    summary = isolation_summary(pairs)
    assert summary["ratio"] == pytest.approx(0.95)
    assert summary["passed"] and not summary["warnings"]


def test_isolation_warns_when_the_fast_run_ends_before_any_slow_answer() -> None:
    summary = isolation_summary([fast_pair(1000.0, 1000.0, seconds=2.0)])
    assert summary["passed"]
    assert "before the first slow answer" in summary["warnings"][0]


# --- the slow receiver ----------------------------------------------------------------------


async def test_slow_receiver_records_at_once_and_answers_late() -> None:
    ledger = receiver.Ledger()
    holding = slow_receiver.Holding()
    server = await slow_receiver.start_listening(ledger, holding, 0, DELAY_SECONDS)
    port = receiver.listening_port(server)
    try:
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        sent_at = time.monotonic()
        for index, (_, writer) in enumerate(connections):
            writer.write(post(b"evt_%d" % index))
            await writer.drain()
        await asyncio.sleep(DELAY_SECONDS / 3)
        assert len(ledger.first_ok) == 3 and holding.now == 3

        expected = len(receiver.RESPONSE_OK)
        answers = [
            await asyncio.wait_for(reader.readexactly(expected), 5) for reader, _ in connections
        ]
        waited = time.monotonic() - sent_at
        for _, writer in connections:
            writer.close()
    finally:
        server.close()
    assert answers == [receiver.RESPONSE_OK] * 3
    assert waited >= DELAY_SECONDS * 0.9
    assert holding.snapshot() == {"holding": 0, "peak": 3}


def test_reset_starts_a_new_peak_from_what_is_still_held() -> None:
    ledger = receiver.Ledger()
    holding = slow_receiver.Holding()
    holding.hold(5)
    holding.release(3)
    slow_receiver.handle_command(ledger, holding, ("reset", 0.0))
    assert slow_receiver.handle_command(ledger, holding, ("holding",)) == (
        True,
        {"holding": 2, "peak": 2},
    )


async def test_a_client_hanging_up_is_no_longer_held() -> None:
    ledger = receiver.Ledger()
    holding = slow_receiver.Holding()
    server = await slow_receiver.start_listening(ledger, holding, 0, DELAY_SECONDS)
    try:
        port = receiver.listening_port(server)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(b"evt_gone"))
        await writer.drain()
        await asyncio.sleep(DELAY_SECONDS / 3)
        assert holding.now == 1
        writer.close()
        await asyncio.sleep(DELAY_SECONDS / 3)
        assert holding.now == 0
        await asyncio.sleep(DELAY_SECONDS)
    finally:
        server.close()
    assert holding.snapshot() == {"holding": 0, "peak": 1}
