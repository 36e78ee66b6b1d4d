"""One HTTP attempt: sign the body, POST it, and describe what came back.

:class:`HttpSender` makes attempts in the process it runs in: the main process, or each of
the sending processes of :mod:`hookline.delivery.process_sender`. A single aiohttp session
is shared by every attempt, so connections to a receiver are kept alive and reused.
Redirects are never followed: a receiver that moved must be updated by its owner, and
following a redirect could lead past the destination guard.
"""

from __future__ import annotations

import email.utils
import http
import time

import aiohttp

from hookline import __version__
from hookline.delivery.resolver import GuardedResolver
from hookline.destinations import DestinationPolicy
from hookline.errors import BlockedDestination, InvalidEndpointURL
from hookline.models import AttemptOutcome, AttemptResult, ClaimedDelivery
from hookline.signing import Signer

RESPONSE_BODY_LIMIT_BYTES = 4096
DNS_CACHE_SECONDS = 10
USER_AGENT = f"hookline/{__version__}"
_SIGNER_CACHE_LIMIT = 10_000


class HttpSender:
    """Sends attempts over one shared, keep-alive aiohttp session, in this process."""

    def __init__(self, destinations: DestinationPolicy, max_connections: int) -> None:
        self._destinations = destinations
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._signers: dict[str, Signer] = {}
        self._checked_urls: set[str] = set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            # No per-host cap here: several endpoints often share one host, and a slow one must
            # not use up the others' connections. The engine caps attempts per endpoint instead.
            limit_per_host=0,
            resolver=GuardedResolver(self._destinations),
            ttl_dns_cache=DNS_CACHE_SECONDS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Receivers see exactly our User-Agent, and we never decompress what we discard.
            skip_auto_headers=("User-Agent",),
            auto_decompress=False,
        )

    def problems(self) -> list[str]:
        return [] if self._session is not None else ["the HTTP session is not open"]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, claim: ClaimedDelivery) -> AttemptResult:
        """Make one attempt for ``claim``; never raises for anything the receiver does."""
        assert self._session is not None, "HttpSender.start() was not called"
        started_at = time.time()
        clock = time.perf_counter()
        try:
            self._check_literal_destination(claim.url)
            result = await self._post(claim, started_at)
        except (BlockedDestination, InvalidEndpointURL) as exc:
            # Neither goes away by waiting: the attempt is final and the delivery is parked.
            result = AttemptResult(AttemptOutcome.BLOCKED, started_at, 0.0, error=exc.message)
        except TimeoutError:
            result = AttemptResult(
                AttemptOutcome.TIMEOUT,
                started_at,
                0.0,
                error=f"No complete answer within the endpoint's {claim.timeout_seconds:g} s "
                "timeout.",
            )
        except aiohttp.ClientError as exc:
            result = _connection_failure(exc, started_at)
        result.duration_ms = (time.perf_counter() - clock) * 1000
        return result

    def _check_literal_destination(self, url: str) -> None:
        # aiohttp does not ask the resolver about IP-literal hosts, so check those URLs here.
        # The allow list cannot change while we run, so a URL that passed once passes again.
        if url not in self._checked_urls:
            self._destinations.check_url(url)
            if len(self._checked_urls) < _SIGNER_CACHE_LIMIT:
                self._checked_urls.add(url)

    async def _post(self, claim: ClaimedDelivery, started_at: float) -> AttemptResult:
        assert self._session is not None
        headers = self._headers(claim, int(started_at))
        # The total timeout runs until the response is released, so it also bounds a receiver
        # that sends its answer one byte at a time.
        timeout = aiohttp.ClientTimeout(total=claim.timeout_seconds)
        async with self._session.post(
            claim.url, data=claim.body, headers=headers, allow_redirects=False, timeout=timeout
        ) as response:
            body, truncated = await _read_prefix(response)
        status = response.status
        if 200 <= status < 300:
            return AttemptResult(
                AttemptOutcome.SUCCESS,
                started_at,
                0.0,
                status_code=status,
                response_body=body,
                response_truncated=truncated,
            )
        return AttemptResult(
            AttemptOutcome.HTTP_ERROR,
            started_at,
            0.0,
            status_code=status,
            error=_describe_status(status, response),
            response_body=body,
            response_truncated=truncated,
            retry_after_seconds=_retry_after(status, response, started_at),
        )

    def _headers(self, claim: ClaimedDelivery, timestamp: int) -> dict[str, str]:
        signer = self._signers.get(claim.secret)
        if signer is None:
            signer = Signer(claim.secret)
            if len(self._signers) < _SIGNER_CACHE_LIMIT:
                self._signers[claim.secret] = signer
        return {
            **claim.headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Webhook-Event": claim.event_type,
            "X-Webhook-Delivery": claim.delivery_id,
            "X-Webhook-Attempt": str(claim.attempt),
            **signer.headers(claim.event_id, timestamp, claim.body),
        }


async def _read_prefix(response: aiohttp.ClientResponse) -> tuple[str | None, bool]:
    """Read at most the first 4 KiB of the answer, decoded so it can be stored as text."""
    chunks: list[bytes] = []
    size = 0
    while size <= RESPONSE_BODY_LIMIT_BYTES:
        chunk = await response.content.read(RESPONSE_BODY_LIMIT_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    raw = b"".join(chunks)
    truncated = len(raw) > RESPONSE_BODY_LIMIT_BYTES
    if not raw:
        return None, False
    # Receivers answer in any encoding; keep undecodable bytes visible as \xNN escapes.
    return raw[:RESPONSE_BODY_LIMIT_BYTES].decode("utf-8", "backslashreplace"), truncated


def _describe_status(status: int, response: aiohttp.ClientResponse) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = response.reason or "Unknown Status"
    text = f"HTTP {status}: {phrase}"
    if 300 <= status < 400:
        location = response.headers.get("Location", "")[:200]
        text += f" (redirect to {location!r} not followed; update the endpoint URL)"
    return text


def _retry_after(status: int, response: aiohttp.ClientResponse, now: float) -> float | None:
    """Return the wait a 429 or 503 asks for in ``Retry-After`` (RFC 9110 10.2.3), if any."""
    if status not in (429, 503):
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - now, 0.0)


def _connection_failure(exc: aiohttp.ClientError, started_at: float) -> AttemptResult:
    cause = getattr(exc, "os_error", None) or exc.__cause__
    if isinstance(cause, BlockedDestination):
        return AttemptResult(AttemptOutcome.BLOCKED, started_at, 0.0, error=cause.message)
    if isinstance(exc, aiohttp.ClientSSLError):
        error = f"TLS error: {exc}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = f"Connection failed: {exc}"
    else:
        error = f"{type(exc).__name__}: {exc}"
    return AttemptResult(AttemptOutcome.CONNECTION_ERROR, started_at, 0.0, error=error[:1000])
