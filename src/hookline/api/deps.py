"""FastAPI dependencies: the running service, and the bearer scheme shown in the docs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from hookline.service import Service


async def get_service(request: Request) -> Service:
    """The service the app runs.

    Async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, which cost a
    thread hop on every request.
    """
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


# Only for the OpenAPI document (the "Authorize" button in /docs); the key itself is checked
# by ApiKeyGuard before the request reaches any route, so bodies of unauthenticated requests
# are never parsed.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key from API_KEYS.")
