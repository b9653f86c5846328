"""Who is signed in to the web app: a session cookie mapped, on the server, to an access
token, and from it to the same ``Principal`` the API's bearer tokens give.

The cookie holds a random id and nothing else; it is HttpOnly, SameSite=Lax, and Secure
wherever the app is reached over HTTPS (always in production). Each session has its own
CSRF token, which every form sends back. Sessions live in the memory of the process that
serves the pages: signing out, or a restart, ends them.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from contracts.vocabulary import Role
from services.runtime.auth import Principal, TokenService, in_directory
from services.runtime.errors import AuthenticationError
from services.runtime.settings import Environment

SESSION_COOKIE = "ketnoi_session"
# Forms sent before signing in (sign-in, language) carry a token that must match this cookie.
FORM_COOKIE = "ketnoi_form"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class DemoUser:
    """A user of the embedded demo, listed on its sign-in page."""

    user_id: str
    agency_id: str
    province: str
    role: Role


@dataclass
class Session:
    token: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Session id -> the user's access token, for as long as the token lives."""

    lifetime_seconds: float = 12 * 3600
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, token: str) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            for stale in [k for k, s in self._by_id.items() if s.expires < now]:
                del self._by_id[stale]
            self._by_id[session_id] = Session(
                token, secrets.token_urlsafe(32), now + self.lifetime_seconds
            )
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is None or session.expires < time.monotonic():
                self._by_id.pop(session_id, None)
                return None
            return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._by_id.pop(session_id, None)


class SignInRequiredError(Exception):
    """The page needs a signed-in user; the app answers with the sign-in page."""


class CsrfRejectedError(Exception):
    """A form came back without its session's CSRF token."""


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.web_sessions
    return sessions


def current_session(request: Request) -> Session | None:
    return sessions_of(request).get(request.cookies.get(SESSION_COOKIE))


def signed_in(request: Request) -> Principal:
    """The signed-in user as the API would see their token: verified, and their agency in
    the directory and active. Raises SignInRequiredError otherwise."""
    session = current_session(request)
    if session is None:
        raise SignInRequiredError
    tokens: TokenService = request.app.state.tokens
    try:
        principal = tokens.verify(session.token)
        return in_directory(principal, request.app.state.agencies)
    except AuthenticationError:
        sessions_of(request).close(request.cookies.get(SESSION_COOKIE))
        raise SignInRequiredError from None


def check_csrf(request: Request, submitted: str | None) -> None:
    """Raises CsrfRejectedError unless ``submitted`` is the session's CSRF token."""
    session = current_session(request)
    if session is None:
        raise SignInRequiredError
    if not submitted or not hmac.compare_digest(submitted, session.csrf):
        raise CsrfRejectedError


def form_token(request: Request) -> str:
    """The token a page's forms send back: the session's, or before signing in the one of
    this browser's form cookie (made here when missing, set on the response by render)."""
    session = current_session(request)
    if session is not None:
        return session.csrf
    token = request.cookies.get(FORM_COOKIE) or getattr(request.state, "new_form_token", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_form_token = token
    return token


def check_form(request: Request, submitted: str | None) -> None:
    """A form that may come before signing in: the session's token when there is a session,
    else the form cookie's. Raises CsrfRejectedError."""
    if current_session(request) is not None:
        check_csrf(request, submitted)
        return
    expected = request.cookies.get(FORM_COOKIE)
    if not submitted or not expected or not hmac.compare_digest(submitted, expected):
        raise CsrfRejectedError


def cookie_options(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    secure = request.url.scheme == "https" or settings.environment is Environment.PRODUCTION
    return {"httponly": True, "samesite": "lax", "secure": secure, "path": "/"}
