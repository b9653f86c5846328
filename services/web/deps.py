"""What every page route depends on: the page marker, the signed-in user, the positions its
commands reached kept in the session, and its reads of personal data recorded together."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request

from services.runtime.access import reads_recorded_together
from services.runtime.auth import Principal
from services.web.positions import remember_written
from services.web.session import CSRF_FIELD, check_csrf, check_form, signed_in


def mark_page(request: Request) -> None:
    # Errors of a page are answered with a page, not with a problem document.
    request.state.web = True


def page_user(request: Request) -> Principal:
    principal = signed_in(request)
    request.state.web_user = principal
    return principal


def csrf_checked(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> None:
    check_csrf(request, csrf_token or request.headers.get("x-csrf-token"))


def form_checked(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> None:
    check_form(request, csrf_token)


User = Annotated[Principal, Depends(page_user)]
FormCsrf = Annotated[None, Depends(form_checked)]
Csrf = Annotated[None, Depends(csrf_checked)]
FormText = Annotated[str | None, Form()]


def page_router() -> APIRouter:
    return APIRouter(
        include_in_schema=False,
        # The positions a page's commands reached are kept before its answer leaves, so
        # the next page (a redirect followed at once) waits for them. A page's reads of
        # personal data are stored in one write once it has read, before it is sent.
        dependencies=[
            Depends(mark_page),
            Depends(remember_written, scope="function"),
            Depends(reads_recorded_together, scope="function"),
        ],
    )


__all__ = ["CSRF_FIELD", "Csrf", "FormCsrf", "FormText", "User", "page_router"]
