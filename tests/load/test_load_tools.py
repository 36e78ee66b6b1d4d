"""Checks of the load test's own parts: the maths, the options, and the receiver's HTTP framing.

Run with ``python -m pytest tests/load`` (they are not in the default test paths).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import receiver
import webhook_load_test
from load_stats import delivery_latencies, latency_percentiles_ms, percentile, summary_line

POST_HEAD = (
    b"POST /hook/0 HTTP/1.1\r\nHost: x\r\nwebhook-id: %s\r\nX-Webhook-Attempt: %s\r\n"
    b"Content-Length: %d\r\n\r\n"
)


def post(webhook_id: bytes, body: bytes = b'{"a":1}', attempt: bytes = b"1") -> bytes:
    return POST_HEAD % (webhook_id, attempt, len(body)) + body


class RecordingTransport:
    """Collects what the protocol writes, standing in for a socket."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return None

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def connect(ledger: receiver.Ledger) -> tuple[receiver.ReceiverProtocol, RecordingTransport]:
    protocol = receiver.ReceiverProtocol(ledger)
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


# --- maths --------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 4.0
    assert percentile(values, 0.5) == pytest.approx(2.5)
    assert percentile(values, 0.99) == pytest.approx(3.97)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 0.95) == 7.0


def test_percentile_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_latency_percentiles_are_in_milliseconds_and_none_when_empty() -> None:
    figures = latency_percentiles_ms([0.010] * 99 + [1.0])
    assert figures["p50_ms"] == pytest.approx(10.0)
    assert figures["p99_ms"] == pytest.approx(10.0 + 0.01 * 990.0)
    assert latency_percentiles_ms([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}


def test_latencies_join_on_event_or_delivery_id_and_skip_ceiling_paths() -> None:
    first_ok = {
        ("/hook/0", "evt_1"): 10.5,
        ("/hook/1", "dlv_2"): 11.0,
        ("/hook/0", "evt_unknown"): 12.0,
        ("/ceiling", "evt_1"): 99.0,
    }
    accepted_at = {"evt_1": 10.0, "dlv_2": 10.25}
    latencies, unmatched = delivery_latencies(first_ok, accepted_at)
    assert sorted(latencies) == [0.5, 0.75]
    assert unmatched == 1


def test_summary_line_marks_an_incomplete_run() -> None:
    report = {
        "ceiling_per_s": 8000.0,
        "hookline_per_s": 4000.0,
        "ratio": 0.5,
        "ingest_per_s": None,
        "p50_ms": 12.0,
        "p95_ms": 40.0,
        "p99_ms": 80.4,
        "peak_rss_mb": 75.2,
        "duplicates": 0,
        "complete": False,
        "hookline": {},
        "server_exit_code": 0,
        "settings": {"deliveries": 500, "fanout": 2},
    }
    line = summary_line(report)
    assert line.startswith("ceiling 8000/s | hookline 4000/s (ratio 0.50) | ingest n/a")
    assert "p99 80 ms" in line and "N=500 K=2" in line and line.endswith("INCOMPLETE")


# --- options ------------------------------------------------------------------------------


def test_options_default_to_a_batch_run_of_fifty_thousand() -> None:
    options = webhook_load_test.parse_options([])
    assert (options.deliveries, options.fanout, options.rate) == (50_000, 1, None)
    assert (options.batch_size, options.concurrency, options.timeout) == (100, 64, 300.0)


def test_server_env_options_become_a_mapping() -> None:
    options = webhook_load_test.parse_options(
        ["--server-env", "A=1", "--server-env", "B=x=y", "--fanout", "3"]
    )
    assert options.server_env_map == {"A": "1", "B": "x=y"}
    assert webhook_load_test.settings_of(options)["server_env"] == {"A": "1", "B": "x=y"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--fail-rate", "1.0"],
        ["--deliveries", "0"],
        ["--rate", "0"],
        ["--server-env", "NOEQUALS"],
    ],
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        webhook_load_test.parse_options(argv)


# --- receiver framing ---------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_one_write() -> None:
    ledger = receiver.Ledger()
    protocol, transport = connect(ledger)
    protocol.data_received(post(b"evt_1") + post(b"evt_2") + post(b"evt_3"))
    assert bytes(transport.written) == receiver.RESPONSE_OK * 3
    assert set(ledger.first_ok) == {("/hook/0", f"evt_{i}") for i in (1, 2, 3)}
    assert not transport.closed


def test_a_request_split_at_every_byte_is_still_framed() -> None:
    ledger = receiver.Ledger()
    protocol, transport = connect(ledger)
    for byte in post(b"evt_1", body=b"x" * 50) + post(b"evt_2"):
        protocol.data_received(bytes([byte]))
    assert bytes(transport.written) == receiver.RESPONSE_OK * 2
    assert ledger.requests == 2


def test_chunked_body_is_consumed_before_the_next_request() -> None:
    ledger = receiver.Ledger()
    protocol, transport = connect(ledger)
    chunked = (
        b"POST /hook/1 HTTP/1.1\r\nwebhook-id: evt_c\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: y\r\n\r\n"
    )
    protocol.data_received(chunked + post(b"evt_after"))
    assert bytes(transport.written) == receiver.RESPONSE_OK * 2
    assert ("/hook/1", "evt_c") in ledger.first_ok and ("/hook/0", "evt_after") in ledger.first_ok


def test_repeat_success_counts_as_duplicate() -> None:
    ledger = receiver.Ledger()
    protocol, _ = connect(ledger)
    protocol.data_received(post(b"evt_1") + post(b"evt_1", attempt=b"2"))
    assert ledger.duplicates == 1 and len(ledger.first_ok) == 1


def test_first_attempts_fail_at_the_configured_rate_and_retries_succeed() -> None:
    ledger = receiver.Ledger(fail_rate=0.5)
    protocol, transport = connect(ledger)
    protocol.data_received(b"".join(post(b"evt_%d" % i) for i in range(400)))
    assert 120 < ledger.failed_first_attempts < 280
    assert len(ledger.first_ok) == 400 - ledger.failed_first_attempts

    protocol.data_received(b"".join(post(b"evt_%d" % i, attempt=b"2") for i in range(400)))
    assert len(ledger.first_ok) == 400 and ledger.duplicates == 400 - ledger.failed_first_attempts
    assert transport.written.count(b" 503 ") == ledger.failed_first_attempts


def test_connection_close_is_honoured() -> None:
    protocol, transport = connect(receiver.Ledger())
    request = post(b"evt_1").replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    protocol.data_received(request + post(b"evt_ignored"))
    assert bytes(transport.written) == receiver.RESPONSE_OK_CLOSE
    assert transport.closed


def test_garbage_gets_400_and_a_closed_connection() -> None:
    protocol, transport = connect(receiver.Ledger())
    protocol.data_received(b"NONSENSE\r\n\r\n")
    assert bytes(transport.written) == receiver.RESPONSE_BAD_REQUEST
    assert transport.closed


async def test_receiver_answers_over_a_real_socket() -> None:
    ledger = receiver.Ledger()
    server = await receiver.start_listening(ledger, 0)
    port = receiver.listening_port(server)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(b"evt_1") + post(b"evt_2"))
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(len(receiver.RESPONSE_OK) * 2), 5)
        writer.close()
    finally:
        server.close()
    assert answer == receiver.RESPONSE_OK * 2
    assert len(ledger.first_ok) == 2


def test_free_port_is_bindable() -> None:
    from hookline_server import free_port

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", free_port()))
