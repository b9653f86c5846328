"""Positions in the logs, passed between a client and the services (``Ketnoi-Position``).

A command's response names the position its events reached in the service's log
(``Ketnoi-Position: intake=5295``), merged with the positions the request brought, so a client
that passes on the last value it received carries everything it has caused. A service that
follows one of the logs named waits, within ``KETNOI_POSITION_WAIT_TIMEOUT``, until it has
read that far before it decides (``services.cli.wiring`` puts the wait before every route of a
service); past the bound it answers 503 with ``Retry-After``. Logs the service does not follow,
its own included, are ignored: a client may send one merged value to every service.

The value is a comma-separated list of ``log=position`` (a log's name in lower case, a
position a whole number); several header lines are one list. Anything else is refused with
422, never guessed at. A log named twice counts at its highest position.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime.errors import InvalidRequestError

HEADER = "Ketnoi-Position"
_HEADER_KEY = HEADER.lower().encode("latin-1")
MAX_LOGS = 16
MAX_POSITION = 2**63 - 1  # PostgreSQL's bigint, the notification ids' type
_ENTRY = re.compile(r"([a-z][a-z0-9_]{0,39})=([0-9]{1,19})")

Positions = dict[str, int]

DESCRIPTION = (
    "Positions in the logs this client's earlier commands reached, as the `Ketnoi-Position` "
    "header of their responses gave them (e.g. `intake=5295,consent=812`). A service that "
    "follows one of these logs waits, briefly, until it has read that far before answering, "
    "so it never answers 404 or 409 for something the client has just done elsewhere; past "
    "the bound it answers 503 with Retry-After. Logs it does not follow are ignored."
)


class InvalidPositionError(InvalidRequestError):
    """The ``Ketnoi-Position`` header is not a list of ``log=position``."""

    def __init__(self) -> None:
        super().__init__(
            HEADER,
            f"{HEADER} must be a comma-separated list of log=position (at most {MAX_LOGS}), "
            "e.g. intake=5295,consent=812: pass on the value of the last response unchanged.",
        )


def parse(values: Iterable[str]) -> Positions:
    """The positions named by the header's values (several lines are one list).

    Raises InvalidPositionError on anything but ``log=position`` entries.
    """
    found: Positions = {}
    entries = [entry.strip() for value in values for entry in value.split(",")]
    if len(entries) > MAX_LOGS:
        raise InvalidPositionError
    for entry in entries:
        matched = _ENTRY.fullmatch(entry)
        if matched is None:
            raise InvalidPositionError
        name, number = matched[1], int(matched[2])
        if number > MAX_POSITION:
            raise InvalidPositionError
        found[name] = max(number, found.get(name, 0))
    return found


def render(positions: Mapping[str, int]) -> str:
    """The header's value for these positions, by log name."""
    return ",".join(f"{name}={positions[name]}" for name in sorted(positions))


def merged(*many: Mapping[str, int]) -> Positions:
    """Each log at the highest of its positions."""
    out: Positions = {}
    for positions in many:
        for name, number in positions.items():
            out[name] = max(number, out.get(name, 0))
    return out


@dataclass
class _Request:
    asked: Positions = field(default_factory=dict)
    written: Positions = field(default_factory=dict)


# Set by PositionMiddleware for each request; the object is shared with the worker thread
# that runs the route (it runs in a copy of the request's context), so what the route's
# commands write is seen here when the response starts.
_current: ContextVar[_Request | None] = ContextVar("ketnoi_positions", default=None)


def note_written(log: str, position: int) -> None:
    """Record that the current request's command wrote ``log`` up to ``position``.

    Does nothing outside a request (background work, the command line).
    """
    current = _current.get()
    if current is not None:
        current.written[log] = max(position, current.written.get(log, 0))


def asked(scope: Scope) -> Positions:
    """The positions the request named; raises InvalidPositionError when malformed."""
    values = [
        value.decode("latin-1") for name, value in scope.get("headers") or () if name == _HEADER_KEY
    ]
    return parse(values) if values else {}


class PositionMiddleware:
    """Adds ``Ketnoi-Position`` to every response whose request wrote to a log: the positions
    written, merged with those the request named. Plain ASGI, like the other middlewares."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            request = _Request(asked=asked(scope))
        except InvalidPositionError:
            request = _Request()  # the route's own check refuses it (422)
        token = _current.set(request)

        async def send_with_position(message: Message) -> None:
            if message["type"] == "http.response.start" and request.written:
                value = render(merged(request.asked, request.written))
                message["headers"] = [
                    *message.get("headers", []),
                    (_HEADER_KEY, value.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_position)
        finally:
            _current.reset(token)


class Reader(Protocol):
    """What follows upstream logs in a process (a follower, the projector)."""

    def follows(self, upstream: str) -> bool: ...

    def reach(self, upstream: str, timeout: float, up_to: int | None = None) -> None: ...


def reach(state: Any, service: str, positions: Mapping[str, int], timeout: float) -> None:
    """Read each log ``service`` follows in this process (``state``: an app's state, with
    its ``followers`` and ``agencies``) up to its position in ``positions``, within
    ``timeout`` seconds in all; logs it does not follow, its own included, are ignored.

    Raises UnavailableError (503, naming the log) past the bound.
    """
    deadline = time.monotonic() + timeout
    reader: Reader | None = getattr(state, "followers", {}).get(service)
    agencies = getattr(state, "agencies", None)
    for log, up_to in positions.items():
        if log == "directory" and agencies is not None:
            # Every process keeps the directory in memory: read it again when behind.
            if agencies.position < up_to:
                agencies.refresh()
        elif reader is not None and log != service and reader.follows(log):
            reader.reach(log, max(deadline - time.monotonic(), 0.0), up_to)


def written() -> Positions:
    """The positions the current request's commands wrote so far (empty outside one)."""
    current = _current.get()
    return dict(current.written) if current is not None else {}


def wait_for_positions(service: str) -> Callable[..., Awaitable[None]]:
    """A route dependency: the request's positions checked, and each log ``service`` follows
    read up to its position before the route decides.

    Raises InvalidPositionError (422), and UnavailableError (503) past the bound. Async: a
    request that names no position (most) goes on without a turn in the thread pool; the
    waiting itself runs there.
    """

    async def wait(
        request: Request,
        position: Annotated[str | None, Header(alias=HEADER, description=DESCRIPTION)] = None,
    ) -> None:
        positions = asked(request.scope) if position is not None else {}
        if positions:
            state = request.app.state
            timeout: float = state.settings.position_wait_timeout
            await run_in_threadpool(reach, state, service, positions, timeout)

    return wait


RESPONSE_DESCRIPTION = (
    "The position this command's events reached in the service's log, with the positions the "
    "request named (e.g. `consent=812,intake=5295`). Pass it on, unchanged, as the "
    "`Ketnoi-Position` header of the next request, to any service."
)


def document_response_header(app: FastAPI) -> None:
    """Name ``Ketnoi-Position`` among the headers of every command's success in OpenAPI."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method not in {"post", "put", "patch", "delete"}:
                    continue
                for status, response in operation.get("responses", {}).items():
                    if status.startswith("2"):
                        response.setdefault("headers", {})[HEADER] = {
                            "description": RESPONSE_DESCRIPTION,
                            "schema": {"type": "string", "example": "intake=5295"},
                        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
