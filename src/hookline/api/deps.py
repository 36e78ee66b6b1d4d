"""FastAPI dependencies: the running service and the API-key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from hookline.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_api_key(
    service: ServiceDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Reject the request with 401 unless it carries a valid ``Authorization: Bearer`` key."""
    assert service.api_keys is not None, "the service has not started"
    service.api_keys.check(authorization)
