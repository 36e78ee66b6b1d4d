"""Request and response bodies of the HTTP API.

Requests forbid unknown fields, so a misspelt option is an error rather than silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hookline.subscriptions import validate_event_type, validate_pattern

MAX_TIMEOUT_SECONDS = 300.0
MAX_RETRIES_LIMIT = 50
MAX_HEADERS = 20
MAX_METADATA_KEYS = 50
MAX_RATE_LIMIT = 100_000.0
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_EVENT_ID = re.compile(r"[A-Za-z0-9_.:\-]+")
# Headers hookline sets itself; letting an endpoint override them would break signatures.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "transfer-encoding",
        "connection",
        "x-webhook-signature",
        "x-webhook-event",
        "x-webhook-delivery",
        "x-webhook-attempt",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)

Text = Annotated[str, Field(max_length=1000)]


def _no_line_breaks(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must not contain CR or LF characters")
    return value


def _sendable_as_json(value: Any) -> Any:
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"cannot be sent as JSON ({exc})") from exc
    # The request parser accepts NaN and Infinity, which JSON cannot spell; orjson writes them
    # as null, so the receiver would get other data than was sent. Only then is a null there.
    if b"null" in encoded and orjson.loads(encoded) != value:
        raise ValueError("cannot be sent as JSON (NaN and Infinity are not JSON numbers)")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointFields(Strict):
    """The fields an endpoint can be created or updated with."""

    url: str | None = Field(None, max_length=2048, examples=["https://example.com/webhooks"])
    secret: str | None = Field(None, min_length=8, max_length=256)
    events: list[str] | None = Field(None, min_length=1, max_length=100, examples=[["order.*"]])
    enabled: bool | None = None
    max_retries: int | None = Field(None, ge=0, le=MAX_RETRIES_LIMIT)
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS)
    description: Text | None = None
    metadata: dict[str, Text] | None = Field(None, max_length=MAX_METADATA_KEYS)
    headers: dict[str, Text] | None = Field(None, max_length=MAX_HEADERS)
    rate_limit: float | None = Field(
        None, gt=0, le=MAX_RATE_LIMIT, description="Attempts per second; leave out for no limit."
    )
    rate_limit_burst: float | None = Field(
        None, ge=1, le=MAX_RATE_LIMIT, description="Attempts allowed at once above the rate."
    )
    max_in_flight: int | None = Field(
        None, ge=1, le=1000, description="Attempts in flight at once, per instance."
    )

    @field_validator("events")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for pattern in value:
                validate_pattern(pattern)
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("secret must be printable text without line breaks")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            _no_line_breaks(key, "metadata keys")
            _no_line_breaks(item, "metadata values")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, item in (value or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by hookline and cannot be overridden")
            _no_line_breaks(item, f"header {name!r}")
        return value


class EndpointCreate(EndpointFields):
    url: str = Field(..., max_length=2048, examples=["https://example.com/webhooks"])
    events: list[str] = Field(..., min_length=1, max_length=100, examples=[["order.*"]])


class EndpointUpdate(EndpointFields):
    """Only the fields present are changed."""


class CircuitOut(BaseModel):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    paused_until: str | None
    failing_since: str | None


class EndpointOut(BaseModel):
    id: str
    url: str
    events: list[str]
    enabled: bool
    max_retries: int | None
    timeout: float
    description: str | None
    metadata: dict[str, str]
    headers: dict[str, str]
    rate_limit: float | None
    rate_limit_burst: float | None
    max_in_flight: int | None
    circuit: CircuitOut
    disabled_reason: str | None
    disabled_at: str | None
    created_at: str
    updated_at: str


class HealthWindowOut(BaseModel):
    window: Literal["1h", "24h"]
    attempts: int
    succeeded: int
    success_rate: float | None
    latency_ms: dict[str, float | None]
    last_error: str | None
    last_error_at: str | None


class EndpointHealthOut(BaseModel):
    endpoint_id: str
    enabled: bool
    circuit: CircuitOut
    disabled_reason: str | None
    windows: list[HealthWindowOut]


class EndpointCreated(EndpointOut):
    secret: str = Field(description="Shown only in this response; store it now.")


class EventIn(Strict):
    event_type: str = Field(..., examples=["user.created"])
    payload: Any = Field(..., examples=[{"user_id": 42}])
    id: str | None = Field(None, min_length=1, max_length=128)

    @field_validator("event_type")
    @classmethod
    def _event_type(cls, value: str) -> str:
        return validate_event_type(value)

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        return _sendable_as_json(value)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _EVENT_ID.fullmatch(value):
            raise ValueError("id may use only A-Z, a-z, 0-9, '_', '.', ':' and '-'")
        return value


class EventBatchIn(Strict):
    events: list[EventIn] = Field(..., min_length=1)


class DeliverySummary(BaseModel):
    id: str
    endpoint_id: str
    status: Literal["pending", "delivered", "failed"]


class EventAccepted(BaseModel):
    id: str
    deliveries: list[DeliverySummary]


class EventBatchAccepted(BaseModel):
    events: list[EventAccepted]


class AttemptOut(BaseModel):
    number: int
    started_at: str
    duration_ms: float
    outcome: str
    status_code: int | None
    error: str | None
    response_body: str | None
    response_truncated: bool


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    endpoint_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    in_flight: bool
    next_attempt_at: str | None
    last_error: str | None
    created_at: str
    updated_at: str
    delivered_at: str | None


class DeliveryDetail(DeliveryOut):
    attempts: list[AttemptOut]


class EventOut(BaseModel):
    id: str
    event_type: str
    created_at: str
    payload: Any
    deliveries: list[DeliveryOut]


class DeadLetterOut(BaseModel):
    id: str
    delivery_id: str
    event_id: str
    endpoint_id: str
    event_type: str
    payload: Any
    endpoint_url: str
    failure_reason: str
    attempts: int
    created_at: str
    expires_at: str


class BulkReplayIn(Strict):
    endpoint_id: str | None = None
    event_type: str | None = None
    limit: int = Field(1000, ge=1, le=10_000)


class BulkReplayOut(BaseModel):
    replayed: int
    deliveries: list[DeliverySummary]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
