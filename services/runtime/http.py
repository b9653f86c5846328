"""The HTTP app factory: problem responses (RFC 9457), auth, request ids, one place for errors."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Annotated, Any
from uuid import UUID, uuid4

import structlog
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.vocabulary import Role
from services.runtime.aggregate import CommandContext
from services.runtime.auth import Principal, TokenService
from services.runtime.errors import DomainError, InvalidRequestError
from services.runtime.logging import get_logger

PROBLEM_JSON = "application/problem+json"
log = get_logger("ketnoi.http")


def problem(status: int, slug: str, title: str, detail: str, **extensions: Any) -> JSONResponse:
    body = {"type": f"urn:ketnoi:problem:{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update(extensions)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    response = problem(exc.status, exc.slug, exc.title, exc.detail, **exc.extensions)
    response.headers.update(exc.headers)
    return response


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the input back: it may hold personal data.
    errors = [
        {
            "field": ".".join(str(p) for p in err["loc"] if p != "body") or "body",
            "message": err["msg"],
        }
        for err in exc.errors()
    ]
    fields = ", ".join(e["field"] for e in errors)
    return problem(
        422, "invalid-request", "Invalid request", f"Check these fields: {fields}.", errors=errors
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem(exc.status_code, "http", str(exc.detail), str(exc.detail))


def create_app(
    *,
    title: str,
    routers: Iterable[APIRouter],
    tokens: TokenService,
    description: str = "",
    state: dict[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app with Ketnoi's error mapping, auth and request logging."""
    app = FastAPI(title=title, description=description, version="0.1.0")
    app.state.tokens = tokens
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for router in routers:
        app.include_router(router)
    return app


class RequestContextMiddleware:
    """Binds a correlation id to the request's logs and logs one line per request.

    Plain ASGI rather than BaseHTTPMiddleware, which costs a task and two streams a request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        raw = headers.get(b"x-correlation-id")
        correlation_id = _correlation_id(raw.decode("latin-1") if raw else None)
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-correlation-id", str(correlation_id).encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=str(correlation_id)):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                # The route template, never the concrete path.
                route = scope.get("route")
                log.info(
                    "request",
                    method=scope["method"],
                    route=getattr(route, "path", "?"),
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )


def _correlation_id(header: str | None) -> UUID:
    if header:
        try:
            return UUID(header)
        except ValueError:
            pass
    return uuid4()


IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{8,128}$"


def command_context(
    request: Request,
    principal: Principal,
    actor_roles: tuple[Role, ...],
    idempotency_key: str | None,
) -> CommandContext:
    """The context of a command: the actor in the first allowed role, and the retry key."""
    if idempotency_key is not None and not re.match(IDEMPOTENCY_KEY_PATTERN, idempotency_key):
        raise InvalidRequestError(
            "Idempotency-Key",
            "Idempotency-Key must be 8 to 128 letters, digits or . _ : - (a UUID is ideal).",
        )
    return CommandContext(
        actor=principal.acting_as(*actor_roles),
        correlation_id=getattr(request.state, "correlation_id", None),
        idempotency_key=idempotency_key,
    )


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe key: a retried request with the same key returns the first "
        "result and changes nothing.",
    ),
]
