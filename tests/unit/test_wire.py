"""The messages between the main process and its sending processes survive the trip intact."""

from __future__ import annotations

import asyncio
import socket

from hookline.delivery.wire import (
    FrameWriter,
    attempt_message,
    claim_from_message,
    read_frame,
    result_from_message,
    result_message,
)
from hookline.models import AttemptOutcome, AttemptResult, ClaimedDelivery


def test_an_attempt_keeps_everything_sending_needs() -> None:
    claim = ClaimedDelivery(
        delivery_id="dlv_1",
        event_id="evt_1",
        event_type="payment.failed",
        body=b'{"data":{"amount":12}}',
        endpoint_id="ep_1",
        url="https://example.com/hooks",
        secret="whsec_abc",
        timeout_seconds=7.5,
        headers={"X-Tenant": "acme"},
        max_retries=3,
        attempt=4,
        lease_token="lease",
        accepted_at=1.0,
    )

    request_id, copy = claim_from_message(attempt_message(42, claim))

    assert request_id == 42
    sent = ("delivery_id", "event_id", "event_type", "body", "endpoint_id", "url", "secret")
    sent += ("timeout_seconds", "headers", "attempt")
    assert {name: getattr(copy, name) for name in sent} == {
        name: getattr(claim, name) for name in sent
    }
    assert copy.lease_token == ""  # the lease never leaves the main process


def test_a_result_comes_back_whole() -> None:
    result = AttemptResult(
        AttemptOutcome.HTTP_ERROR,
        1700000000.5,
        12.25,
        status_code=429,
        error="HTTP 429: Too Many Requests",
        response_body="slow down",
        response_truncated=True,
        retry_after_seconds=30.0,
    )

    request_id, copy = result_from_message(result_message(7, result))

    assert (request_id, copy) == (7, result)


async def test_messages_put_in_one_turn_travel_in_one_frame() -> None:
    left, right = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=left)
    reader, other_writer = await asyncio.open_unix_connection(sock=right)
    frames = FrameWriter(writer)

    for number in range(3):
        frames.put(("message", number))
    first = await read_frame(reader)
    frames.put("later")
    second = await read_frame(reader)
    frames.close()
    ended = await read_frame(reader)

    assert first == [("message", 0), ("message", 1), ("message", 2)]
    assert second == ["later"]
    assert ended is None
    other_writer.close()
    await frames.closed()
