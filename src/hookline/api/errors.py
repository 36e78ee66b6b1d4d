"""Every error the API answers is JSON: ``{"error": {"code", "message", "details"?}}``."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from hookline.api.render import JSON
from hookline.errors import QueueFull, RequestError, StoreUnavailable

STORE_RETRY_AFTER_SECONDS = 5
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

log = structlog.get_logger(__name__)


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> JSON:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSON({"error": body}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(Exception, _unexpected)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    response = error_response(exc.status_code, exc.code, exc.message)
    if isinstance(exc, QueueFull):
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
    if exc.status_code == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    content_type = request.headers.get("content-type", "")
    if request.method in ("POST", "PATCH", "PUT") and "json" not in content_type:
        return error_response(
            415,
            "unsupported_media_type",
            "Send the request body as JSON with 'Content-Type: application/json'.",
        )
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(
            400, "invalid_json", "The request body is not valid JSON.", _details(errors)
        )
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "invalid input")).removeprefix("Value error, ")
    summary = f"{where}: {message}" if where else message
    return error_response(422, "invalid_input", f"Invalid request: {summary}.", _details(errors))


def _details(errors: list[Any]) -> list[dict[str, Any]]:
    # Echoing the input back could repeat a secret; location and message are enough.
    return [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))}
        for error in errors
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: "No such route.", 405: "This route does not accept that method."}
    response = error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message.get(exc.status_code, str(exc.detail)),
    )
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        # The router reports only the first route whose path matched; a resource served by
        # several routes (GET and PATCH on /webhooks/{id}) must list them all (RFC 9110 15.5.6).
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("store unavailable", action="store_unavailable", error=str(exc))
    response = error_response(
        503,
        "store_unavailable",
        "The store is unavailable right now; nothing was changed. Retry shortly.",
    )
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER_SECONDS)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error", action="internal_error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "Something went wrong on our side.")
