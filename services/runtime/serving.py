"""Serving an app with uvicorn, and the limits uvicorn does not keep by itself.

uvicorn waits for a request's head as long as the client cares to send it: one that sends
its headers a byte at a time holds a connection (and a place under the connection limit)
for ever, and so does one that connects and sends nothing. Each connection here has
``KETNOI_HTTP_HEADER_TIMEOUT_SECONDS`` to send a whole request head, from the moment it
connects or from the first byte of its next request on a kept-alive connection; past it the
connection is answered 408 and closed. (The body has its own bound, in the app:
``RequestBodyLimitMiddleware``.)

Past ``KETNOI_HTTP_MAX_CONNECTIONS`` uvicorn answers 503 by itself, without the headers
every other response carries; here the same limit answers a problem document with them.

``serve_workers`` serves with several processes sharing one port (``ketnoi serve
--workers``): uvicorn's supervisor binds the socket, starts each worker (a new interpreter,
which builds its own app from the factory it is named) and starts again one that dies or
stops answering its pings for 30 seconds.

Once an app is built, ``settle_heap`` moves what starting left alive (modules, routes,
schemas, templates, catalogues, the services) out of the cycle collector's reach: a full
collection otherwise walks all of it, a pause of tens of milliseconds that falls inside
whichever request allocates at that moment.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, ClassVar

import h11
import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.runtime.hardening import secured
from services.runtime.logging import get_logger
from services.runtime.settings import Settings

log = get_logger("ketnoi.http")

_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n"
_OVER_LIMIT = orjson.dumps(
    {
        "type": "urn:ketnoi:problem:unavailable",
        "title": "Not available right now",
        "status": 503,
        "detail": "Ketnoi is serving as many connections as it may; try again in a moment.",
    }
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a bound on the time to send a request head, and
    its connection limit answered with the security headers. ``protocol_for`` sets the
    bound."""

    header_timeout: ClassVar[float] = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        limit = self.limit_concurrency
        if limit is not None:
            # uvicorn's own check would answer 503 itself: the app's guard does, instead.
            self.limit_concurrency = None
            self.app = _limited(self.app, limit, self.connections, self.tasks)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the first bytes of a next request on this connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_timer()  # the head is whole (or the connection is done)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        log.warning("request_head_too_slow", seconds=self.header_timeout)
        head = _TOO_SLOW + b"".join(
            name + b": " + value + b"\r\n" for name, value in secured("", [])
        )
        self.transport.write(head + b"\r\n")
        self.transport.close()


def _limited(app: ASGIApp, limit: int, connections: set[Any], tasks: set[Any]) -> ASGIApp:
    """``app`` behind uvicorn's connection limit (the same count: this request's own task
    is among ``tasks`` here, uvicorn counts before adding it)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (len(connections) >= limit or len(tasks) > limit):
            log.warning("connection_limit_reached", limit=limit)
            headers = [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(_OVER_LIMIT)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ]
            start = {"type": "http.response.start", "status": 503}
            await send({**start, "headers": secured(scope.get("path", ""), headers)})
            await send({"type": "http.response.body", "body": _OVER_LIMIT})
            return
        await app(scope, receive, send)

    return guarded


def settle_heap() -> None:
    """After start-up, before serving: collect what starting left as garbage, then freeze
    the rest (``gc.freeze``), so the cycle collector's full collections walk only what the
    process makes while serving. What is frozen is kept for the process's life: start-up's
    objects are."""
    gc.collect()
    gc.freeze()


def protocol_for(settings: Settings) -> type[GuardedH11Protocol]:
    """The HTTP protocol class with this installation's bound on a request head."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": settings.http_header_timeout_seconds},
    )


class WorkerH11Protocol(GuardedH11Protocol):
    """The protocol of a worker process, named by reference (the supervisor passes its
    configuration to each new process); its factory sets the bound (``configure_worker``)."""


def configure_worker(settings: Settings) -> None:
    """In a worker process: this installation's bound on a request head."""
    WorkerH11Protocol.header_timeout = settings.http_header_timeout_seconds


def serve_workers(factory: str, settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve with ``workers`` processes on one port until stopped, each building its app by
    calling ``factory`` (``module:function``); otherwise as ``serve``. A worker that dies is
    started again."""
    uvicorn.run(
        factory,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        http=WorkerH11Protocol,
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_max_connections,
        timeout_graceful_shutdown=10,
        # The supervisor kills a worker that does not answer its ping in time and starts
        # another: a busy worker on a loaded machine may take seconds to answer, and killing
        # it drops every request it holds.
        timeout_worker_healthcheck=30,
    )


def serve(app: ASGIApp, settings: Settings, host: str, port: int) -> None:
    """Serve ``app`` until stopped: no server banner; slow, idle and surplus clients cut
    off (a request head within ``http_header_timeout_seconds``, idle keep-alive
    connections after ``http_keep_alive_seconds``, at most ``http_max_connections``)."""
    settle_heap()
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol_for(settings),
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_max_connections,
        timeout_graceful_shutdown=10,
    )
