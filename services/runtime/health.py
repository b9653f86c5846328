"""Health of a process: ``/healthz`` (it lives), ``/readyz`` (it can do its work), ``/metrics``.

Ready means: its database answers, every loop that follows an upstream log runs without an
error, and none lags more than ``KETNOI_READY_MAX_LAG_SECONDS`` behind. An orchestrator
sends traffic only to a ready process and restarts one that stops living.

Of several worker processes (``ketnoi serve --workers``) one, the ``leader``, runs the loops;
the others are on ``standby`` (``leadership.py``), and so of several relays (``ketnoi feed``).
Both endpoints name the process's role; a standby is ready when its database answers and the
leader's loops keep up (their positions are in the database), without running them itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import psycopg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.runtime.logging import get_logger
from services.runtime.metrics import CONTENT_TYPE, Lagging, exposition
from services.runtime.settings import Settings

log = get_logger("ketnoi.health")
router = APIRouter(tags=["health"], include_in_schema=False)


def database_problem(settings: Settings) -> str | None:
    """Why the database does not answer, or None when it does (always, embedded)."""
    target = settings.postgres
    if target is None:
        return None
    try:
        with psycopg.connect(target.conninfo(), connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: the database does not answer"
    return None


def readiness(
    settings: Settings, loops: Mapping[str, Lagging], role: str | None = None
) -> tuple[bool, dict[str, Any]]:
    """Whether the process is ready, and what each check found (no personal data). A
    ``standby`` worker does not run the loops: only their lag counts."""
    problem = database_problem(settings)
    checks: dict[str, Any] = {"database": problem or "ok"}
    runs = role != "standby"
    ready = problem is None
    bound = settings.ready_max_lag_seconds
    for name, loop in loops.items():
        found: dict[str, Any] = {"running": loop.running}
        if loop.error is not None:
            found["error"] = type(loop.error).__name__
        try:
            found["lag_seconds"] = {lag.upstream: round(lag.seconds, 3) for lag in loop.lag()}
        except Exception as exc:
            found["lag_seconds"] = None
            found["error"] = type(exc).__name__
        behind = found["lag_seconds"] is None or any(
            s > bound for s in found["lag_seconds"].values()
        )
        ok = (loop.running or not runs) and not behind
        found["ready"] = ok
        ready = ready and ok
        checks[name] = found
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
    if role is not None:
        body["role"] = role
    return ready, body


def _loops(request: Request) -> Mapping[str, Lagging]:
    loops: Mapping[str, Lagging] = getattr(request.app.state, "followers", None) or {}
    return loops


def _role(request: Request) -> str | None:
    role: Callable[[], str] | None = getattr(request.app.state, "role", None)
    return role() if role is not None else None


@router.get("/healthz")
def healthz(request: Request) -> dict[str, str]:
    """The process lives and answers HTTP; and its role, ``leader`` or ``standby``."""
    role = _role(request)
    return {"status": "ok"} if role is None else {"status": "ok", "role": role}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    ready, body = readiness(request.app.state.settings, _loops(request), _role(request))
    if ready:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registries = [getattr(request.app.state, "metrics_registry", None)]
    return Response(exposition(*[r for r in registries if r]), media_type=CONTENT_TYPE)


def serve_health(
    settings: Settings,
    host: str,
    port: int,
    loops: Callable[[], Mapping[str, Lagging]],
    registry: Any,
    role: Callable[[], str] | None = None,
) -> Callable[[], None]:
    """Serve /healthz, /readyz and /metrics from a thread, for a process without an HTTP API
    (the relay); returns how to stop it. ``role`` names it ``leader`` or ``standby`` when it
    competes with others for a lock (relays on PostgreSQL)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "ketnoi"
        sys_version = ""

        def do_GET(self) -> None:
            named = role() if role is not None else None
            if self.path == "/healthz":
                alive = {"status": "ok"} if named is None else {"status": "ok", "role": named}
                self._send(200, orjson.dumps(alive), "application/json")
            elif self.path == "/readyz":
                ready, body = readiness(settings, loops(), named)
                self._send(200 if ready else 503, orjson.dumps(body), "application/json")
            elif self.path == "/metrics":
                self._send(200, exposition(registry), CONTENT_TYPE)
            else:
                self._send(404, b'{"status":404}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the relay's own lines

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
    thread.start()
    log.info("health_listening", host=host, port=port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
