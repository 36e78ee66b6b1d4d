"""What the main process and its sending processes say to each other over a local socket.

A frame is a 4-byte length and a pickled list of messages. Messages pile up while the event
loop is busy and leave together at the end of the loop's turn, so a busy sender costs one
write and one read per batch rather than per attempt. Pickle is safe here because both ends
are hookline processes started by the same program; nothing else can reach the socket.

:class:`WorkerConfig` is the other thing they share: the settings a sending process starts
with, passed on its command line as JSON.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import pickle
import struct
from dataclasses import dataclass
from typing import Any

from hookline.destinations import DestinationPolicy
from hookline.models import AttemptOutcome, AttemptResult, ClaimedDelivery

FRAME_HEADER = struct.Struct("!I")

AttemptMessage = tuple[int, str, str, str, bytes, str, str, str, float, dict[str, str], int]
ResultMessage = tuple[
    int, str, float, float, int | None, str | None, str | None, bool, float | None
]


class FrameWriter:
    """Queues messages and writes whatever has gathered once per turn of the event loop."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._outbox: list[Any] = []

    def put(self, message: Any) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def close(self) -> None:
        self._flush()
        self._writer.close()

    async def closed(self) -> None:
        await self._writer.wait_closed()

    def _flush(self) -> None:
        if not self._outbox or self._writer.is_closing():
            return
        payload = pickle.dumps(self._outbox, protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox = []
        self._writer.write(FRAME_HEADER.pack(len(payload)) + payload)


async def read_frame(reader: asyncio.StreamReader) -> list[Any] | None:
    """The next frame's messages, or None once the other end has closed the socket."""
    try:
        header = await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    (length,) = FRAME_HEADER.unpack(header)
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None  # the other end died mid-frame; its messages are lost either way
    messages: list[Any] = pickle.loads(payload)
    return messages


def attempt_message(request_id: int, claim: ClaimedDelivery) -> AttemptMessage:
    """Only what sending needs: the lease and the store's bookkeeping stay behind."""
    return (
        request_id,
        claim.delivery_id,
        claim.event_id,
        claim.event_type,
        claim.body,
        claim.endpoint_id,
        claim.url,
        claim.secret,
        claim.timeout_seconds,
        claim.headers,
        claim.attempt,
    )


def claim_from_message(message: AttemptMessage) -> tuple[int, ClaimedDelivery]:
    request_id, delivery_id, event_id, event_type, body, endpoint_id, url, secret = message[:8]
    timeout_seconds, headers, attempt = message[8:]
    claim = ClaimedDelivery(
        delivery_id=delivery_id,
        event_id=event_id,
        event_type=event_type,
        body=body,
        endpoint_id=endpoint_id,
        url=url,
        secret=secret,
        timeout_seconds=timeout_seconds,
        headers=headers,
        max_retries=None,
        attempt=attempt,
        lease_token="",
        accepted_at=0.0,
    )
    return request_id, claim


def result_message(request_id: int, result: AttemptResult) -> ResultMessage:
    return (
        request_id,
        result.outcome.value,
        result.started_at,
        result.duration_ms,
        result.status_code,
        result.error,
        result.response_body,
        result.response_truncated,
        result.retry_after_seconds,
    )


def result_from_message(message: ResultMessage) -> tuple[int, AttemptResult]:
    request_id, outcome, started_at, duration_ms, status_code, error, body = message[:7]
    truncated, retry_after_seconds = message[7:]
    result = AttemptResult(
        AttemptOutcome(outcome),
        started_at,
        duration_ms,
        status_code=status_code,
        error=error,
        response_body=body,
        response_truncated=truncated,
        retry_after_seconds=retry_after_seconds,
    )
    return request_id, result


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a sending process needs from the main process's settings."""

    allowed_networks: tuple[str, ...]
    https_only: bool
    max_connections: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "allowed_networks": list(self.allowed_networks),
                "https_only": self.https_only,
                "max_connections": self.max_connections,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        values: dict[str, Any] = json.loads(text)
        return cls(
            tuple(values["allowed_networks"]), values["https_only"], values["max_connections"]
        )

    def destinations(self) -> DestinationPolicy:
        networks = [ipaddress.ip_network(network) for network in self.allowed_networks]
        return DestinationPolicy(networks, https_only=self.https_only)
