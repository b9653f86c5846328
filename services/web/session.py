"""Who is signed in to the web app: a session cookie mapped, on the server, to an access
token, and from it to the same ``Principal`` the API's bearer tokens give.

The cookie holds a random id and nothing else; it is HttpOnly, SameSite=Lax, and Secure
wherever the app is reached over HTTPS (always in production). Each session has its own
CSRF token, which every form sends back. Sessions are kept in the platform's database
(``services.runtime.web_sessions``), so every process serving the pages knows them and a
restart ends none; signing out, or the session's expiry, does.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from contracts.vocabulary import Role
from services.runtime.auth import Principal, TokenService, in_directory
from services.runtime.errors import AuthenticationError
from services.runtime.settings import Environment
from services.runtime.web_sessions import Session, SessionStore

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


class SignInRequiredError(Exception):
    """The page needs a signed-in user; the app answers with the sign-in page."""


class CsrfRejectedError(Exception):
    """A form came back without its session's CSRF token."""


def sessions_of(request: Request) -> SessionStore:
    sessions: SessionStore = request.app.state.web_sessions
    return sessions


_UNREAD = object()


def current_session(request: Request) -> Session | None:
    """The request's session (read from the store once per request)."""
    found = getattr(request.state, "web_session", _UNREAD)
    if found is _UNREAD:
        found = sessions_of(request).get(request.cookies.get(SESSION_COOKIE))
        request.state.web_session = found
    assert found is None or isinstance(found, Session)
    return found


def close_session(request: Request) -> None:
    """End the request's session (signing out, or a token no longer accepted)."""
    sessions_of(request).close(request.cookies.get(SESSION_COOKIE))
    request.state.web_session = None


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
        close_session(request)
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
