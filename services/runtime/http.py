"""The HTTP app factory: problem responses (RFC 9457), auth, request ids, one place for errors."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Mapping
from typing import Annotated, Any
from uuid import UUID, uuid4

import eventsourcing.persistence
import psycopg
import structlog
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.vocabulary import Role
from services.runtime.aggregate import CommandContext
from services.runtime.auth import Principal, TokenService
from services.runtime.docs import serve_docs
from services.runtime.errors import DomainError, InvalidRequestError
from services.runtime.hardening import EdgeMiddleware, Guard
from services.runtime.health import router as health_router
from services.runtime.logging import get_logger
from services.runtime.metrics import LATENCY, REQUESTS
from services.runtime.positions import PositionMiddleware, document_response_header
from services.runtime.settings import Settings

PROBLEM_JSON = "application/problem+json"
log = get_logger("ketnoi.http")


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {"type": f"urn:ketnoi:problem:{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update(extensions)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _problem_of(exc: DomainError) -> JSONResponse:
    return problem(exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extensions)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return _problem_of(exc)


# A 422 says what to fix, in a size that does not grow with the input.
MAX_REPORTED_ERRORS = 20
MAX_FIELD_CHARS = 120
MAX_FIELD_PART_CHARS = 40
MAX_MESSAGE_CHARS = 200


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_path(loc: Iterable[Any]) -> str:
    # Keys of the input (an unknown field's name) are clipped like everything else.
    path = ".".join(_clip(str(p), MAX_FIELD_PART_CHARS) for p in loc if p != "body")
    return _clip(path, MAX_FIELD_CHARS) or "body"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the input back: it may hold personal data. Only the first errors are
    # reported, each clipped, with a count of the rest.
    found = exc.errors()
    errors = [
        {"field": _field_path(err["loc"]), "message": _clip(str(err["msg"]), MAX_MESSAGE_CHARS)}
        for err in found[:MAX_REPORTED_ERRORS]
    ]
    omitted = len(found) - len(errors)
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    more = f" and {omitted} more errors" if omitted else ""
    return problem(
        422,
        "invalid-request",
        "Invalid request",
        f"Check these fields: {fields}{more}.",
        errors=errors,
        errors_omitted=omitted,
    )


# What a database that is down or restarting raises: the store's driver, and the event
# store's own wrapping of it. Answered 503 with Retry-After; the connections recover alone.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
    eventsourcing.persistence.ConnectionUnavailableError,
)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database_unavailable", error=type(exc).__name__, path_route=_route(request))
    return problem(
        503,
        "unavailable",
        "Not available right now",
        "Ketnoi cannot reach its database at the moment; try again in a few seconds.",
        {"Retry-After": "2"},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Logged by the server as well; the client gets a problem, never a stack trace.
    log.error("unexpected_error", error=type(exc).__name__, path_route=_route(request))
    return problem(
        500,
        "internal-error",
        "Internal error",
        "Something went wrong on Ketnoi's side; the request may be retried. If it keeps "
        "failing, tell your administrator the correlation id of this response.",
    )


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "?"))


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
    """A FastAPI app with Ketnoi's error mapping, auth, request logging and body limit.

    The settings are ``state["settings"]`` when given, else the token service's.
    """
    # The documentation pages are served from local files (services/runtime/docs.py).
    app = FastAPI(
        title=title, description=description, version="0.1.0", docs_url=None, redoc_url=None
    )
    serve_docs(app)
    app.state.tokens = tokens
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)

    settings = (state or {}).get("settings")
    if not isinstance(settings, Settings):
        settings = tokens.settings
    guard = Guard(settings)
    app.state.guard = guard
    # Added first, so it runs inside the request context and its 413s are logged too.
    app.add_middleware(
        RequestBodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        timeout=settings.http_body_timeout_seconds,
    )
    app.add_middleware(PositionMiddleware)
    app.add_middleware(EdgeMiddleware, guard=guard, refuse=_problem_of)
    app.add_middleware(RequestContextMiddleware)

    app.state.settings = settings
    app.include_router(health_router)
    for router in routers:
        app.include_router(router)
    document_response_header(app)
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
                # The route template, never the concrete path (ids stay out of labels).
                route = getattr(scope.get("route"), "path", "unmatched")
                elapsed = time.perf_counter() - started
                REQUESTS.labels(route, scope["method"], str(status)).inc()
                LATENCY.labels(route, scope["method"]).observe(elapsed)
                log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    status=status,
                    ms=round(elapsed * 1000, 1),
                )


class RequestBodyLimitMiddleware:
    """Refuses a request body over ``max_bytes`` with 413, and one that does not arrive
    whole within ``timeout`` seconds with 408, before anything parses it.

    A declared Content-Length over the limit is refused without reading the body. Any other
    body is read here, counting, up to the limit and handed on whole; the first byte over the
    limit ends the reading with 413, and a client trickling its body too slowly is cut off
    (it would otherwise hold a worker for as long as it likes). Plain ASGI, like the
    middleware above.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await self._too_slow(scope, receive, send)
                return
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "request-too-large",
            "Request too large",
            f"The request body is larger than {self.max_bytes} bytes, the most this service "
            "accepts; send less (split a long list or text).",
            max_bytes=self.max_bytes,
        )
        # The rest of the body is never read: the connection cannot be reused.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def _too_slow(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            408,
            "request-timeout",
            "Request body too slow",
            f"The request body did not arrive within {self.timeout:g} seconds; send it again "
            "on a better connection.",
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we are called
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


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
