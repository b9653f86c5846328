"""The web app: server-rendered pages for the people who use Ketnoi, on the same FastAPI
app as the API. Pages call the services' own gated entry points (the route functions of each
service's ``api``, which ask the access gate and record every read), never a store."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from services.runtime.errors import DomainError
from services.runtime.web_sessions import SessionStore
from services.web.render import render
from services.web.session import CsrfRejectedError, DemoUser, SignInRequiredError

STATIC = Path(__file__).parent / "static"


def mount_web(app: FastAPI, sessions: SessionStore, demo_users: Sequence[DemoUser] = ()) -> None:
    """Serve the pages, their assets and their error pages on ``app``, with its sessions
    kept in ``sessions``.

    ``demo_users`` are listed on the embedded demo's sign-in page; without them the page
    says that sign-in goes through the identity provider.
    """
    from services.web import (
        assessments,
        board,
        cases,
        casework,
        consent,
        home,
        loop,
        oidc,
        overrides,
        oversight,
        person_copy,
        planning,
        referrals,
        referring,
        seal,
        work,
    )

    app.state.web_sessions = sessions
    app.state.demo_users = tuple(demo_users)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    # The override, progress and feedback routes before a referral's answers (/{action}).
    routers = (
        home,
        oidc,
        board,
        cases,
        casework,
        assessments,
        planning,
        consent,
        person_copy,
        seal,
        work,
        overrides,
        loop,
        oversight,
        referring,
        referrals,
    )
    for module in routers:
        app.include_router(module.router)

    api_domain_error = app.exception_handlers[DomainError]

    async def domain_error(request: Request, exc: Exception) -> Response:
        if not getattr(request.state, "web", False):
            answered = api_domain_error(request, exc)
            assert inspect.isawaitable(answered)
            response: Response = await answered
            return response
        assert isinstance(exc, DomainError)
        page = render(request, "error.html", exc.status, status=exc.status, slug=exc.slug)
        page.headers.update(exc.headers)  # Retry-After on a 429 or a 503, as the API gives
        return page

    async def sign_in_required(request: Request, _exc: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/signin"})
        # Back to the page asked for once signed in (its path only: no personal data).
        asked = urlencode({"next": request.url.path}) if request.method == "GET" else ""
        return RedirectResponse(f"/signin?{asked}" if asked else "/signin", status_code=303)

    async def csrf_rejected(request: Request, _exc: Exception) -> Response:
        return render(request, "error.html", 403, status=403, slug="csrf")

    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(SignInRequiredError, sign_in_required)
    app.add_exception_handler(CsrfRejectedError, csrf_rejected)
