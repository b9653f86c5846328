"""Templates: one Jinja2 environment, translated through Babel, rendered per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.web.i18n import (
    LOCALES,
    choose_locale,
    day,
    gettext,
    ngettext,
    score,
    use_locale,
    when,
)
from services.web.labels import country, label, province
from services.web.session import (
    CSRF_FIELD,
    FORM_COOKIE,
    cookie_options,
    form_token,
)

TEMPLATES = Path(__file__).parent / "templates"

env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
env.filters["when"] = when
env.filters["day"] = day
env.filters["score"] = score
env.filters["label"] = label
env.filters["province"] = province
env.filters["tr"] = gettext  # a message chosen in code (marked there with N_)
env.filters["country"] = country


def agency_name(request: Request, agency_id: str | None, locale: str) -> str:
    """The agency's name from the directory, in the page's language."""
    if not agency_id:
        return ""
    known = request.app.state.agencies.lookup(agency_id)
    if known is None:
        return agency_id
    return str(known.name_vi if locale == "vi" else known.name_en)


def context(request: Request, **values: Any) -> dict[str, Any]:
    locale = choose_locale(request)
    use_locale(locale)
    user = getattr(request.state, "web_user", None)
    return {
        "request": request,
        "locale": locale,
        "locales": LOCALES,
        "user": user,
        "has_role": lambda *roles: user is not None and any(r in user.roles for r in roles),
        "csrf_field": CSRF_FIELD,
        "csrf": form_token(request),
        "agency": lambda agency_id: agency_name(request, agency_id, locale),
        **values,
    }


def render(
    request: Request,
    name: str,
    status_code: int = 200,
    *,
    block: str | None = None,
    **values: Any,
) -> HTMLResponse:
    """The page ``name`` (or only its ``block``, for an htmx update) in the user's language."""
    template = env.get_template(name)
    ctx = context(request, **values)
    if block is None:
        html = template.render(ctx)
    else:
        html = "".join(template.blocks[block](template.new_context(ctx)))
    response = HTMLResponse(
        html,
        status_code=status_code,
        headers={"Content-Language": ctx["locale"], "Cache-Control": "no-store"},
    )
    made = getattr(request.state, "new_form_token", None)
    if made:
        response.set_cookie(FORM_COOKIE, made, **cookie_options(request))
    return response
