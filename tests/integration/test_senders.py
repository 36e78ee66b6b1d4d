"""Both ways of making attempts, in this process and in child processes, against a real
receiver: one suite, so they cannot drift apart. Then what only the child processes can do
wrong: die mid-attempt, outlive the main process."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hookline.delivery.http_sender import HttpSender
from hookline.delivery.on_demand_sender import START_RATE_PER_SECOND as START_RATE
from hookline.delivery.on_demand_sender import OnDemandSender
from hookline.delivery.process_sender import ProcessSender
from hookline.delivery.sender import Sender
from hookline.delivery.wire import WorkerConfig
from hookline.destinations import DestinationPolicy
from hookline.models import AttemptOutcome, ClaimedDelivery
from hookline.signing import Signer
from tests.processes import ServerProcess
from tests.receivers import Receiver, Reply

LOCAL_NETWORKS = ("127.0.0.0/8",)
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WAIT_SECONDS = 10.0


def claim_for(url: str, **overrides: Any) -> ClaimedDelivery:
    values: dict[str, Any] = {
        "delivery_id": "dlv_1",
        "event_id": "evt_1",
        "event_type": "user.created",
        "body": b'{"id":"evt_1","event":"user.created","data":{}}',
        "endpoint_id": "ep_1",
        "url": url,
        "secret": SECRET,
        "timeout_seconds": 5.0,
        "headers": {"X-Tenant": "acme"},
        "max_retries": None,
        "attempt": 1,
        "lease_token": "lease",
        "accepted_at": time.time(),
    }
    values.update(overrides)
    return ClaimedDelivery(**values)


SENDERS = ["in-process", "child-process", "on-demand"]


def make_sender(kind: str, allowed: tuple[str, ...] = LOCAL_NETWORKS) -> Sender:
    networks = [ipaddress.ip_network(network) for network in allowed]
    local = HttpSender(DestinationPolicy(networks), max_connections=16)
    config = WorkerConfig(allowed, https_only=False, max_connections=16)
    if kind == "in-process":
        return local
    if kind == "child-process":
        return ProcessSender(config, 1)
    return OnDemandSender(local, lambda: ProcessSender(config, 1))


@pytest.fixture(params=SENDERS)
async def sender(request: pytest.FixtureRequest) -> AsyncIterator[Sender]:
    made = make_sender(request.param)
    await made.start()
    yield made
    await made.close()


async def test_success_is_signed_and_carries_the_endpoint_headers(
    sender: Sender, receiver: Receiver
) -> None:
    claim = claim_for(receiver.url())

    result = await sender.send(claim)

    assert result.outcome is AttemptOutcome.SUCCESS
    assert result.status_code == 200
    assert result.response_body == "ok"
    assert result.duration_ms > 0
    (got,) = await receiver.wait_for(1)
    assert got.body == claim.body
    assert got.headers["X-Tenant"] == "acme"
    assert got.headers["X-Webhook-Delivery"] == "dlv_1"
    assert got.headers["X-Webhook-Attempt"] == "1"
    timestamp = int(got.headers["webhook-timestamp"])
    expected = Signer(SECRET).headers("evt_1", timestamp, claim.body)
    assert got.headers["X-Webhook-Signature"] == expected["X-Webhook-Signature"]
    assert got.headers["webhook-signature"] == expected["webhook-signature"]


async def test_an_error_status_keeps_the_body_and_retry_after(
    sender: Sender, receiver: Receiver
) -> None:
    receiver.script = lambda _: Reply(503, b"busy", {"Retry-After": "7"})

    result = await sender.send(claim_for(receiver.url()))

    assert result.outcome is AttemptOutcome.HTTP_ERROR
    assert result.status_code == 503
    assert result.error == "HTTP 503: Service Unavailable"
    assert result.response_body == "busy"
    assert result.retry_after_seconds == 7.0


async def test_a_long_answer_is_cut_at_4_kib(sender: Sender, receiver: Receiver) -> None:
    receiver.script = lambda _: Reply(200, b"x" * 10_000)

    result = await sender.send(claim_for(receiver.url()))

    assert result.response_body == "x" * 4096
    assert result.response_truncated is True


async def test_a_slow_receiver_times_out(sender: Sender, receiver: Receiver) -> None:
    receiver.script = lambda _: Reply(delay_seconds=1.5)

    result = await sender.send(claim_for(receiver.url(), timeout_seconds=0.5))

    assert result.outcome is AttemptOutcome.TIMEOUT
    assert result.error is not None and "0.5 s" in result.error
    assert result.duration_ms < 1_400


async def test_a_closed_port_is_a_connection_error(sender: Sender) -> None:
    result = await sender.send(claim_for("http://127.0.0.1:9/hook"))

    assert result.outcome is AttemptOutcome.CONNECTION_ERROR
    assert result.error is not None and result.error.startswith("Connection failed")


@pytest.mark.parametrize("kind", SENDERS)
async def test_a_destination_outside_the_allowed_networks_is_blocked(
    kind: str, receiver: Receiver
) -> None:
    blocked = make_sender(kind, allowed=())
    await blocked.start()
    try:
        result = await blocked.send(claim_for(receiver.url()))
    finally:
        await blocked.close()

    assert result.outcome is AttemptOutcome.BLOCKED
    assert receiver.received == []


async def test_an_unusable_url_is_final(sender: Sender) -> None:
    result = await sender.send(claim_for("http://exa mple.com/hook"))

    assert result.outcome is AttemptOutcome.BLOCKED
    assert result.error is not None and "whitespace" in result.error


async def test_attempts_run_concurrently(sender: Sender, receiver: Receiver) -> None:
    receiver.script = lambda _: Reply(delay_seconds=0.5)
    claims = [claim_for(receiver.url(), delivery_id=f"dlv_{n}") for n in range(10)]

    started = time.monotonic()
    results = await asyncio.gather(*(sender.send(claim) for claim in claims))

    assert [r.outcome for r in results] == [AttemptOutcome.SUCCESS] * 10
    assert time.monotonic() - started < 0.5 * 10 / 2
    assert sorted(r.headers["X-Webhook-Delivery"] for r in receiver.received) == sorted(
        c.delivery_id for c in claims
    )


async def test_on_demand__hands_over_to_a_child_once_the_rate_calls_for_it(
    receiver: Receiver,
) -> None:
    sender = make_sender("on-demand")
    assert isinstance(sender, OnDemandSender)
    await sender.start()
    try:
        quiet = await sender.send(claim_for(receiver.url()))
        assert quiet.outcome is AttemptOutcome.SUCCESS
        assert not sender.handed_over

        burst = [claim_for(receiver.url(), delivery_id=f"dlv_{n}") for n in range(START_RATE)]
        results = await asyncio.gather(*(sender.send(claim) for claim in burst))
        assert {result.outcome for result in results} == {AttemptOutcome.SUCCESS}
        assert await asyncio.wait_for(sender.wait_for_hand_over(), WAIT_SECONDS)

        after = await sender.send(claim_for(receiver.url(), delivery_id="dlv_after"))
        assert after.outcome is AttemptOutcome.SUCCESS
        assert sender.problems() == []
    finally:
        await sender.close()
    assert len(receiver.received) == START_RATE + 2


async def test_a_killed_child_fails_its_attempts_and_is_replaced(receiver: Receiver) -> None:
    sender = ProcessSender(WorkerConfig(LOCAL_NETWORKS, False, 16), 1)
    await sender.start()
    try:
        receiver.script = lambda _: Reply(delay_seconds=2.0)
        (first_pid,) = sender.pids
        in_flight = asyncio.create_task(sender.send(claim_for(receiver.url())))
        await receiver.wait_for(1)

        os.kill(first_pid, signal.SIGKILL)
        lost = await asyncio.wait_for(in_flight, WAIT_SECONDS)

        assert lost.outcome is AttemptOutcome.CONNECTION_ERROR
        assert lost.error is not None and "will be retried" in lost.error
        receiver.script = lambda _: Reply()
        again = await asyncio.wait_for(sender.send(claim_for(receiver.url())), WAIT_SECONDS)
        assert again.outcome is AttemptOutcome.SUCCESS
        assert sender.pids and sender.pids != [first_pid]
    finally:
        await sender.close()


async def test_closing_stops_the_children(receiver: Receiver) -> None:
    sender = ProcessSender(WorkerConfig(LOCAL_NETWORKS, False, 16), 2)
    await sender.start()
    pids = sender.pids

    await sender.close()

    assert len(pids) == 2
    for pid in pids:
        assert not _alive(pid)


async def test_children_ignore_ctrl_c_until_the_main_process_closes_them(
    receiver: Receiver,
) -> None:
    sender = ProcessSender(WorkerConfig(LOCAL_NETWORKS, False, 16), 1)
    await sender.start()
    try:
        (pid,) = sender.pids
        # An answered attempt shows the child is past start-up, where its handlers are set.
        first = await asyncio.wait_for(sender.send(claim_for(receiver.url())), WAIT_SECONDS)
        assert first.outcome is AttemptOutcome.SUCCESS

        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        result = await asyncio.wait_for(sender.send(claim_for(receiver.url())), WAIT_SECONDS)

        assert result.outcome is AttemptOutcome.SUCCESS
        assert sender.pids == [pid]
    finally:
        await sender.close()


async def test_a_killed_server_takes_its_sending_process_with_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, WEBHOOK_SENDER_PROCESSES="1")
    await server.start()
    try:
        assert server.process is not None
        children = _children_of(server.process.pid)
        assert len(children) == 1

        server.kill()
    finally:
        server.ensure_stopped()

    assert await _gone_within(children[0], WAIT_SECONDS)


def _children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [
            int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        ]
    return found


async def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
