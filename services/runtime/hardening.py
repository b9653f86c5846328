"""Protection at the HTTP edge: security headers on every response, rate limits per client
address and per principal (429 with Retry-After), and a lockout of an address that keeps
presenting tokens Ketnoi refuses.

Limits are token buckets kept in the process's memory: each process enforces its own share,
so behind a load balancer with N replicas a client gets up to N times the rate. That bounds
what one client can do to one process, which is what they are for.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime.errors import DomainError
from services.runtime.settings import Settings

# Probes and scrapes are never limited: an orchestrator must always be able to ask.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# Everything Ketnoi serves comes from Ketnoi itself; no page may be framed by another site.
# Styles may be inline (the pages' bars, htmx's indicator style); scripts never.
CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; "
    "frame-ancestors 'none'; style-src 'self' 'unsafe-inline'"
)
# The pages' own assets (no personal data) may be cached; everything else may not.
STATIC_PREFIX = "/static/"
# The API's documentation (Swagger UI, ReDoc: served by Ketnoi, services/runtime/docs.py)
# starts with an inline script and ReDoc runs a worker from a blob; images come from this
# site only (ReDoc's bundle would show its maker's logo from a CDN), so nothing leaves the
# office.
DOCS_CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
    "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:"
)
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000"),
)


class RateLimitedError(DomainError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(detail, retry_after=seconds)
        self.headers = {"Retry-After": str(seconds)}


class LockedOutError(RateLimitedError):
    slug = "locked-out"
    title = "Locked out after repeated failed sign-ins"


class TokenBuckets:
    """A token bucket per key: ``rate`` a second, up to ``burst``; rate 0 allows everything."""

    max_keys: ClassVar[int] = 100_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0 when allowed, else the seconds until one is due."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > self.max_keys:
                self._forget_full(now)
            return 0.0

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: forget those.
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}


class Lockout:
    """Counts refused tokens per address; ``limit`` of them within ``window`` seconds lock
    the address out for ``lockout`` seconds. A limit of 0 never locks anyone out."""

    def __init__(self, limit: int, window: float, lockout: float) -> None:
        self.limit, self.window, self.lockout = limit, window, lockout
        self._failures: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """Raises LockedOutError while ``address`` is locked out."""
        if self.limit <= 0:
            return
        with self._lock:
            until = self._until.get(address)
            left = (until or 0) - time.monotonic()
            if until is not None and left <= 0:
                del self._until[address]
        if until is not None and left > 0:
            raise LockedOutError(
                "Too many refused access tokens came from this address; wait before trying "
                "again, with a valid token.",
                left,
            )

    def failed(self, address: str) -> None:
        if self.limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            failures = self._failures.setdefault(address, deque())
            failures.append(now)
            while failures and failures[0] < now - self.window:
                failures.popleft()
            if len(failures) >= self.limit:
                self._until[address] = now + self.lockout
                del self._failures[address]
            if len(self._failures) > TokenBuckets.max_keys:
                self._failures = {
                    a: f for a, f in self._failures.items() if f and f[-1] >= now - self.window
                }


class Guard:
    """The limits of one app: per address, per principal, and the sign-in lockout."""

    def __init__(self, settings: Settings) -> None:
        self.addresses = TokenBuckets(
            settings.rate_limit_per_address, settings.rate_limit_address_burst
        )
        self.principals = TokenBuckets(
            settings.rate_limit_per_principal, settings.rate_limit_principal_burst
        )
        self.lockout = Lockout(
            settings.auth_failure_limit,
            settings.auth_failure_window_seconds,
            settings.auth_lockout_seconds,
        )

    def principal(self, key: str) -> None:
        """Raises RateLimitedError when the principal ``key`` sends too fast."""
        wait = self.principals.take(key)
        if wait:
            raise RateLimitedError(
                "You are sending requests faster than Ketnoi accepts from one user; "
                "slow down and retry after the time in Retry-After.",
                wait,
            )


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def secured(path: str, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A response's headers for ``path`` with the security headers it does not set itself.

    ``Cache-Control: no-store`` goes on every response that does not set its own, but the
    pages' static assets: answers about people must never sit in a shared or browser cache.
    """
    out = list(headers)
    names = {name.lower() for name, _ in out}
    out += [h for h in SECURITY_HEADERS if h[0] not in names]
    if b"content-security-policy" not in names:
        out.append((b"content-security-policy", (DOCS_CSP if path in DOCS_PATHS else CSP).encode()))
    if b"cache-control" not in names:
        static = path.startswith(STATIC_PREFIX)
        out.append((b"cache-control", b"public, max-age=3600" if static else b"no-store"))
    return out


class EdgeMiddleware:
    """Security headers on every response (``secured``), and the per-address rate limit."""

    def __init__(
        self, app: ASGIApp, guard: Guard, refuse: Callable[[DomainError], ASGIApp]
    ) -> None:
        self.app = app
        self.guard = guard
        self.refuse = refuse  # the app's problem response for an error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = secured(path, message.get("headers") or [])
            await send(message)

        if path not in UNLIMITED_PATHS:
            wait = self.guard.addresses.take(client_address(scope))
            if wait:
                error = RateLimitedError(
                    "Too many requests from your address; retry after the time in Retry-After.",
                    wait,
                )
                await self.refuse(error)(scope, receive, send_secured)
                return
        await self.app(scope, receive, send_secured)
