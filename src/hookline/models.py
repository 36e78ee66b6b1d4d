"""The domain records hookline stores and passes between its layers.

Times are UNIX seconds as floats throughout the engine and the stores; the API turns them into
ISO 8601 strings at its edge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from hookline.ids import new_id


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """What the circuit breaker and automatic disabling know about one endpoint."""

    circuit: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    paused_until: float | None = None
    """No attempt starts before this time (circuit cool-down or a receiver's Retry-After)."""
    failing_since: float | None = None
    """When the current run of failures began; None after any success."""


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended; the values double as the metrics label."""

    SUCCESS = "success"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    BLOCKED = "blocked"


@dataclass(slots=True)
class Endpoint:
    """A receiver URL subscribed to some event types."""

    id: str
    url: str
    secret: str
    events: list[str]
    enabled: bool = True
    max_retries: int | None = None
    timeout_seconds: float = 30.0
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    rate_limit: float | None = None
    """Attempts per second; None for no limit."""
    rate_limit_burst: float | None = None
    max_in_flight: int | None = None
    """Attempts in flight at once per instance; None for the service default."""
    health: EndpointHealth = field(default_factory=EndpointHealth)
    disabled_reason: str | None = None
    """Why hookline disabled the endpoint itself; None when a person did, or it is enabled."""
    disabled_at: float | None = None


@dataclass(slots=True)
class NewEvent:
    """An event the API has validated and is about to hand to the store."""

    id: str
    event_type: str
    created_at: float
    body: bytes
    """The exact JSON body every endpoint receives, serialized once."""


@dataclass(slots=True)
class Event:
    id: str
    event_type: str
    created_at: float
    body: bytes


@dataclass(slots=True)
class Delivery:
    """One event on its way to one endpoint."""

    id: str
    event_id: str
    endpoint_id: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: float | None
    leased: bool
    last_error: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None = None
    event_type: str = ""


def pending_delivery(event: NewEvent | Event, endpoint_id: str, now: float) -> Delivery:
    """A new delivery of ``event`` to the endpoint, due at once, not yet attempted."""
    return Delivery(
        id=new_id("dlv"),
        event_id=event.id,
        endpoint_id=endpoint_id,
        status=DeliveryStatus.PENDING,
        attempt_count=0,
        next_attempt_at=now,
        leased=False,
        last_error=None,
        created_at=now,
        updated_at=now,
        event_type=event.event_type,
    )


@dataclass(slots=True)
class Attempt:
    """The record of one HTTP request made for a delivery."""

    delivery_id: str
    number: int
    started_at: float
    duration_ms: float
    outcome: AttemptOutcome
    status_code: int | None
    error: str | None
    response_body: str | None
    response_truncated: bool


@dataclass(slots=True)
class DeadLetter:
    """A delivery that ran out of attempts, kept for inspection and replay."""

    id: str
    delivery_id: str
    event_id: str
    endpoint_id: str
    event_type: str
    payload: Any
    endpoint_url: str
    failure_reason: str
    attempts: int
    created_at: float
    expires_at: float


@dataclass(slots=True)
class AcceptedEvent:
    """What the store answers for one accepted event: its id and the deliveries it made."""

    event_id: str
    deliveries: list[Delivery]
    created: bool
    """False when an idempotent repeat returned an event that already existed."""


@dataclass(slots=True)
class ClaimedDelivery:
    """A due delivery leased to this process, with everything needed to send it."""

    delivery_id: str
    event_id: str
    event_type: str
    body: bytes
    endpoint_id: str
    url: str
    secret: str
    timeout_seconds: float
    headers: dict[str, str]
    max_retries: int | None
    attempt: int
    """The number of this attempt, 1 for the first."""
    lease_token: str
    accepted_at: float
    probe: bool = False
    """True when this attempt is the one probe of a half-open circuit."""
    max_in_flight: int = 1
    """The endpoint's cap on attempts in flight in this process."""


@dataclass(slots=True)
class AttemptResult:
    """What the sender observed; the engine turns it into an :class:`AttemptVerdict`."""

    outcome: AttemptOutcome
    started_at: float
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    response_truncated: bool = False
    retry_after_seconds: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome is AttemptOutcome.SUCCESS

    @property
    def finished_at(self) -> float:
        """When the answer (or the failure) came, in UNIX seconds."""
        return self.started_at + self.duration_ms / 1000


@dataclass(slots=True)
class AttemptVerdict:
    """A finished attempt and what becomes of its delivery, written in one store batch."""

    claim: ClaimedDelivery
    result: AttemptResult
    status: DeliveryStatus
    next_attempt_at: float | None
    dead_letter_expires_at: float | None = None
    """Set when the delivery ran out of attempts and goes to the dead-letter queue."""


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """A circuit transition or an automatic disabling, for logs and metrics."""

    endpoint_id: str
    before: CircuitState
    after: CircuitState
    paused_until: float | None = None
    disabled_reason: str | None = None


@dataclass(slots=True)
class Recorded:
    """What writing a batch of verdicts did."""

    applied: list[bool]
    """Per verdict: False when its lease had been taken over and it was discarded."""
    changes: list[EndpointChange] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HealthWindow:
    """Attempts to one endpoint over a recent window."""

    seconds: float
    attempts: int
    succeeded: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    last_error: str | None
    last_error_at: float | None


class ChangeKind(enum.StrEnum):
    """What happened to a delivery; the values are the stream's ``change`` field."""

    ACCEPTED = "accepted"
    ATTEMPT_FAILED = "attempt_failed"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    REPLAYED = "replayed"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"


CHANGE_AFTER_ATTEMPT = {
    DeliveryStatus.DELIVERED: ChangeKind.DELIVERED,
    DeliveryStatus.PENDING: ChangeKind.ATTEMPT_FAILED,
    DeliveryStatus.FAILED: ChangeKind.DEAD_LETTERED,
}
"""The change an attempt's verdict records, by the delivery's new status."""


@dataclass(frozen=True, slots=True)
class DeliveryChange:
    """One change of one delivery's state, numbered in commit order."""

    seq: int
    delivery_id: str
    event_id: str
    endpoint_id: str
    event_type: str
    change: ChangeKind
    status: DeliveryStatus
    attempt: int
    detail: str | None
    next_attempt_at: float | None
    at: float


@dataclass(slots=True)
class Page:
    """One page of a list, with the cursor that fetches the next (None on the last page)."""

    items: list[Any]
    next_cursor: str | None


@dataclass(slots=True)
class Stats:
    pending: int
    in_flight: int
    delivered: int
    failed: int
    dead_letters: int
    endpoints: int
    endpoints_enabled: int
    circuits_open: int = 0
