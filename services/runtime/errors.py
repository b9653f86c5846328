"""Errors a user can cause, each with an HTTP status and a message that says what to do.

Services subclass these (``CaseNotFound(NotFoundError)``); the HTTP layer maps them to RFC 9457
problems in one place, so routes never build error responses themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error a request can cause."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"
    # Extra response headers of the problem (e.g. Retry-After on a 503).
    headers: Mapping[str, str] = {}

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class NotFoundError(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class RuleViolationError(DomainError):
    """The request is well formed but the rules forbid it in the current state."""

    status = 409
    slug = "rule-violation"
    title = "Not allowed in the current state"

    def __init__(self, detail: str, *, allowed: Sequence[str] = (), **extensions: Any) -> None:
        super().__init__(detail, allowed=list(allowed), **extensions)
        self.allowed = list(allowed)


class ConcurrentChangeError(DomainError):
    status = 409
    slug = "concurrent-change"
    title = "Changed meanwhile"


class InvalidRequestError(DomainError):
    """Input that passes the schema but not the domain's checks, naming the field."""

    status = 422
    slug = "invalid-request"
    title = "Invalid request"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, errors=[{"field": field, "message": detail}])
        self.field = field


class IdempotencyKeyReusedError(DomainError):
    status = 422
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused for a different request"


class AuthenticationError(DomainError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class UnverifiableTokenError(AuthenticationError):
    """A token that is malformed, not signed by the identity provider, or not for Ketnoi:
    what guessing or forging looks like (an expired token is not one)."""


class PermissionDeniedError(DomainError):
    status = 403
    slug = "forbidden"
    title = "Not permitted"


class UnavailableError(DomainError):
    """Ketnoi cannot answer safely right now; the client should retry after a moment."""

    status = 503
    slug = "unavailable"
    title = "Not available right now"
    headers: Mapping[str, str] = {"Retry-After": "1"}
