"""The HTTP app factory: problem responses (RFC 9457), auth, request ids, one place for errors."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Annotated, Any
from uuid import UUID, uuid4

import psycopg
import structlog
from eventsourcing.persistence import OperationalError as StoreOperationalError
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
from services.runtime.positions import PositionMiddleware, document_response_header
from services.runtime.settings import Settings

PROBLEM_JSON = "application/problem+json"
log = get_logger("ketnoi.http")


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {"type": f"urn:ketnoi:problem:{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update(extensions)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = getattr(exc, "headers", None)
    return problem(exc.status, exc.slug, exc.title, exc.detail, headers, **exc.extensions)


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


async def _storage_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    # The database went away (a restart, a failover): nothing was decided; ask again soon.
    log.warning("storage_unavailable", error=type(exc).__name__)
    return problem(
        503,
        "unavailable",
        "Not available right now",
        "Ketnoi cannot reach its database at this moment; try again in a moment.",
        {"Retry-After": "1"},
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
    """A FastAPI app with Ketnoi's error mapping, auth, request logging and body limit.

    The settings are ``state["settings"]`` when given, else the token service's.
    """
    app = FastAPI(title=title, description=description, version="0.1.0")
    app.state.tokens = tokens
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for storage_error in (StoreOperationalError, psycopg.OperationalError):
        app.add_exception_handler(storage_error, _storage_unavailable)

    settings = (state or {}).get("settings")
    if not isinstance(settings, Settings):
        settings = tokens.settings
    # Added first, so it runs inside the request context and its 413s are logged too.
    app.add_middleware(RequestBodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(PositionMiddleware)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

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
                # The route template, never the concrete path.
                route = scope.get("route")
                log.info(
                    "request",
                    method=scope["method"],
                    route=getattr(route, "path", "?"),
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )


class RequestBodyLimitMiddleware:
    """Refuses a request body over ``max_bytes`` with 413 before anything parses it.

    A declared Content-Length over the limit is refused without reading the body. A body
    without one (chunked) is read here, counting, up to the limit and handed on whole; the
    first byte over the limit ends the reading with 413. Plain ASGI, like the middleware
    above.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
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
