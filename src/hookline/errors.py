"""The exceptions hookline raises, one tree under :class:`HooklineError`.

    HooklineError
    ├── ConfigError                 a setting is missing or has a value we cannot use
    ├── StoreError                  the store could not do what was asked
    │   ├── StoreUnavailable        it cannot be reached or cannot commit right now (retryable)
    │   └── SchemaTooNew            the database was written by a newer hookline
    ├── RequestError                the caller asked for something wrong (answered with a 4xx)
    │   ├── InvalidInput            422: a value breaks a rule
    │   │   ├── InvalidEndpointURL  422: not an http(s) URL we can deliver to
    │   │   └── BlockedDestination  422: the URL points at a network we refuse to reach
    │   ├── NotFound                404
    │   ├── Conflict                409: the request clashes with what is already stored
    │   ├── PayloadTooLarge         413
    │   ├── Unauthorized            401
    │   └── QueueFull               503 with Retry-After: pending deliveries reached the limit
    ├── SenderProcessError          a process that makes attempts could not be started
    └── DeliveryError               one attempt to deliver failed
        ├── RetryableDeliveryError  timeout, connection or TLS error, 5xx, 429
        └── PermanentDeliveryError  the destination is blocked or the URL unusable

Errors coming from aiohttp, sqlite3 and asyncpg are turned into these where they enter our
code, so nothing else leaks out through the API.
"""

from __future__ import annotations


class HooklineError(Exception):
    """Root of every exception hookline raises on purpose."""


class ConfigError(HooklineError):
    """A setting has a value hookline cannot start with."""


class SenderProcessError(HooklineError):
    """A child process that makes attempts could not be started."""


class StoreError(HooklineError):
    """The store failed to carry out an operation."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or cannot commit right now; the caller may try again."""


class SchemaTooNew(StoreError):
    """The database schema is newer than this release understands."""


class RequestError(HooklineError):
    """A request that the API answers with a 4xx (or 503) and a JSON error body."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(RequestError):
    status_code = 422
    code = "invalid_input"


class InvalidEndpointURL(InvalidInput):
    code = "invalid_url"


class BlockedDestination(InvalidInput):
    code = "blocked_destination"


class NotFound(RequestError):
    status_code = 404
    code = "not_found"


class Conflict(RequestError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(RequestError):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(RequestError):
    status_code = 401
    code = "unauthorized"


class QueueFull(RequestError):
    status_code = 503
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DeliveryError(HooklineError):
    """One delivery attempt failed."""


class RetryableDeliveryError(DeliveryError):
    """The attempt failed in a way that a later attempt may not."""


class PermanentDeliveryError(DeliveryError):
    """The attempt cannot succeed as configured, such as a blocked destination."""
