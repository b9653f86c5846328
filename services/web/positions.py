"""The web app passes positions on, as an API client passes ``Ketnoi-Position``.

The pages call the services' route functions in this process, so no header travels between
them: instead the session remembers the positions its own commands reached in each log
(noted by the services as they write, ``services.runtime.positions.note_written``), and a
page reaches every service through ``service``, which first lets that service read the logs
it follows up to those positions, within ``KETNOI_POSITION_WAIT_TIMEOUT`` for the whole
request. A consent granted on one page is then known to the referral service on the next,
whatever its follower was doing. Past the bound the page says that Ketnoi is still catching
up (503, Retry-After), rather than answering 404 or 409 for what the user has just done.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from services.runtime import positions
from services.runtime.errors import UnavailableError
from services.web.session import SESSION_COOKIE, current_session, sessions_of


class CatchingUpError(UnavailableError):
    """A service has not yet read what this session's commands wrote; try again shortly."""

    slug = "catching-up"
    title = "Still catching up"


def service(request: Request, name: str) -> Any:
    """The application of the service ``name`` (intake, consent, referral, projections),
    once it has read each log it follows as far as this session's commands wrote it.

    Raises CatchingUpError (503) when it cannot within the request's bound.
    """
    state = request.app.state
    session = current_session(request)
    reached = positions.merged(
        session.positions if session is not None else {}, positions.written()
    )
    if reached:
        deadline = getattr(request.state, "positions_deadline", None)
        if deadline is None:
            deadline = time.monotonic() + state.settings.position_wait_timeout
            request.state.positions_deadline = deadline
        try:
            positions.reach(state, name, reached, max(deadline - time.monotonic(), 0.0))
        except UnavailableError as exc:
            raise CatchingUpError(
                "Ketnoi is still catching up with what you have just done; try again in a moment.",
                waiting_for=name,
            ) from exc
    return getattr(state, name)


def remember_written(request: Request) -> Iterator[None]:
    """A page dependency: the positions the page's commands reached are kept in the session
    (also when a later step of the page failed), before its answer leaves."""
    try:
        yield
    finally:
        written = positions.written()
        session_id = request.cookies.get(SESSION_COOKIE)
        if written and session_id and current_session(request) is not None:
            sessions_of(request).note_positions(session_id, written)
