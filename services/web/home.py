"""Sign-in, sign-out, the language switch, and each user's home page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from contracts.vocabulary import Role
from services.runtime.auth import Principal, TokenService
from services.runtime.settings import Settings
from services.web.deps import Csrf, FormCsrf, page_router
from services.web.i18n import LANGUAGE_COOKIE, LOCALES
from services.web.render import render
from services.web.session import (
    SESSION_COOKIE,
    DemoUser,
    SignInRequiredError,
    close_session,
    cookie_options,
    sessions_of,
    signed_in,
)

router = page_router()

HOMES = {
    Role.COORDINATOR: "/board",
    Role.CASE_MANAGER: "/cases",
    Role.HEALTH_WORKER: "/cases",
    Role.SUPERVISOR: "/cases",
    Role.AGENCY_STAFF: "/inbox",
    Role.INTAKE_OFFICER: "/reception",
    Role.AUDITOR: "/audit",
    Role.ADMIN: "/statistics",
}


def local_path(address: str | None) -> str | None:
    """``address`` when it is a path of this site (with its query), else None."""
    if not address:
        return None
    target = urlsplit(address)
    local = target.path.startswith("/") and not target.path.startswith(("//", "/\\"))
    if not local or target.netloc or target.scheme:
        return None
    return target.path + (f"?{target.query}" if target.query else "")


def home_of(principal: Principal) -> str:
    for role, path in HOMES.items():
        if role in principal.roles:
            return path
    return "/signin"


@router.get("/")
def root(request: Request) -> Response:
    try:
        principal = signed_in(request)
    except SignInRequiredError:
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse(home_of(principal), status_code=303)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _demo_users(request: Request) -> tuple[DemoUser, ...]:
    users: tuple[DemoUser, ...] = request.app.state.demo_users
    return users


@router.get("/signin")
def sign_in_page(
    request: Request, next_page: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    users = sorted(_demo_users(request), key=lambda u: (u.province, u.role, u.agency_id))
    return render(
        request,
        "signin.html",
        users=users,
        oidc=bool(_settings(request).oidc_issuer),
        next=local_path(next_page) or "",
    )


@router.post("/signin")
def sign_in(
    request: Request,
    user_id: Annotated[str, Form()],
    _csrf: FormCsrf,
    next_page: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    """The embedded demo signs in any of its listed users; nothing else can be named here."""
    chosen = next((u for u in _demo_users(request) if u.user_id == user_id), None)
    if chosen is None:
        return render(
            request,
            "signin.html",
            400,
            users=_demo_users(request),
            oidc=bool(_settings(request).oidc_issuer),
            unknown=True,
        )
    tokens: TokenService = request.app.state.tokens
    token = tokens.issue(
        user_id=chosen.user_id,
        agency_id=chosen.agency_id,
        province=chosen.province,
        roles=[chosen.role],
    )
    session_id = sessions_of(request).open(token)
    principal = tokens.verify(token)
    response = RedirectResponse(local_path(next_page) or home_of(principal), status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, **cookie_options(request))
    return response


@router.post("/signout")
def sign_out(request: Request, _csrf: Csrf) -> Response:
    close_session(request)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, **cookie_options(request))
    return response


@router.post("/language")
def switch_language(
    request: Request,
    _csrf: FormCsrf,
    language: Annotated[str, Form()],
    back: Annotated[str, Form()] = "/",
) -> Response:
    """The user's setting, kept in a cookie; back to the page they were on (this site's)."""
    response = RedirectResponse(local_path(back) or "/", status_code=303)
    if language in LOCALES:
        options = cookie_options(request)
        response.set_cookie(LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600, **options)
    return response
