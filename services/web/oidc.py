"""Sign-in through the organisation's OpenID Connect provider: the authorisation-code flow
with PKCE (S256), a state and a nonce per attempt, kept on the server.

The provider's endpoints and signing keys come from its discovery document and JWKS, through
the same ``ProviderKeys`` as the API's bearer tokens (one per provider in the process): a
token signed with a key id not seen yet makes the keys be fetched again, at most once every
``KETNOI_AUTH_JWKS_MIN_REFRESH_SECONDS``, so the provider may rotate its keys at any time.
The provider's access token is verified as every bearer token is (``TokenService.verify``:
its key, issuer and audience), so the web session maps to exactly the ``Principal`` the
API would give the same token: user (``sub``), agency, province and roles are the token's
claims, and the agency must be active in the directory. The ID token's signature (by the
provider's published keys), audience, issuer and nonce are checked too.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

import jwt
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from services.runtime.auth import TokenService, in_directory
from services.runtime.errors import AuthenticationError
from services.runtime.oidc import ProviderKeys
from services.runtime.settings import Settings
from services.web.deps import page_router
from services.web.home import home_of
from services.web.render import render
from services.web.session import SESSION_COOKIE, cookie_options, sessions_of

router = page_router()
ATTEMPT_COOKIE = "ketnoi_signin"
ATTEMPT_SECONDS = 600
HTTP_TIMEOUT = 10


@dataclass(frozen=True)
class Attempt:
    """A sign-in under way, kept by its state in the session store (any process may take
    the provider's answer), used once."""

    verifier: str
    nonce: str
    redirect_uri: str


def _post_form(url: str, data: dict[str, str]) -> dict[str, Any]:
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
        found: dict[str, Any] = json.loads(answer.read())
        return found


def provider(request: Request, settings: Settings) -> ProviderKeys:
    """The sign-in provider's discovery document and keys, shared with the API's tokens."""
    assert settings.oidc_issuer
    tokens: TokenService = request.app.state.tokens
    return tokens.provider_keys(settings.oidc_issuer)


def enabled(settings: Settings) -> bool:
    return bool(settings.oidc_issuer)


@router.get("/signin/oidc")
def start_sign_in(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if not settings.oidc_issuer or not settings.oidc_client_id:
        return render(request, "error.html", 404, status=404, slug="not-found")
    verifier = generate_token(64)
    nonce = generate_token(32)
    redirect_uri = str(request.url_for("finish_sign_in"))
    attempt = Attempt(verifier, nonce, redirect_uri)
    state = sessions_of(request).open_sign_in(asdict(attempt), ATTEMPT_SECONDS)
    url = prepare_grant_uri(
        provider(request, settings).metadata()["authorization_endpoint"],
        client_id=settings.oidc_client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=settings.oidc_scope,
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(ATTEMPT_COOKIE, state, max_age=ATTEMPT_SECONDS, **cookie_options(request))
    return response


@router.get("/signin/callback", name="finish_sign_in")
def finish_sign_in(request: Request, state: str = "", code: str = "") -> Response:
    """The provider sends the browser back here with a code for this attempt."""
    settings: Settings = request.app.state.settings
    taken = sessions_of(request).take_sign_in(state) if state else None
    attempt = Attempt(**taken) if taken is not None else None
    if (
        not settings.oidc_issuer
        or not code
        or attempt is None
        or not secrets.compare_digest(request.cookies.get(ATTEMPT_COOKIE, ""), state)
    ):
        return render(request, "signin.html", 400, users=(), oidc=enabled(settings), failed=True)
    try:
        principal, access_token = _redeem(request, settings, code, attempt)
    except (AuthenticationError, OSError, KeyError, ValueError, jwt.InvalidTokenError):
        return render(request, "signin.html", 401, users=(), oidc=True, failed=True)
    response = RedirectResponse(home_of(principal), status_code=303)
    options = cookie_options(request)
    response.set_cookie(SESSION_COOKIE, sessions_of(request).open(access_token), **options)
    response.delete_cookie(ATTEMPT_COOKIE, **options)
    return response


def _redeem(request: Request, settings: Settings, code: str, attempt: Attempt) -> tuple[Any, str]:
    """Exchange the code (with the PKCE verifier) for tokens and check them."""
    assert settings.oidc_issuer
    assert settings.oidc_client_id
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": attempt.redirect_uri,
        "client_id": settings.oidc_client_id,
        "code_verifier": attempt.verifier,
    }
    if settings.oidc_client_secret:
        form["client_secret"] = settings.oidc_client_secret
    keys = provider(request, settings)
    tokens = _post_form(str(keys.metadata()["token_endpoint"]), form)
    verifier: TokenService = request.app.state.tokens
    # The ID token: signed with a key the provider publishes (a new key id fetches them
    # again), from this provider, for this client, for this attempt.
    id_token = str(tokens["id_token"])
    key = keys.key_for(jwt.get_unverified_header(id_token).get("kid")).key
    claims = jwt.decode(
        id_token,
        key,
        algorithms=[settings.auth_algorithm],
        audience=settings.oidc_client_id,
        issuer=keys.issuer or settings.oidc_issuer,
        options={"require": ["exp", "sub", "aud", "iss", "nonce"]},
    )
    if not secrets.compare_digest(str(claims["nonce"]), attempt.nonce):
        raise AuthenticationError("The sign-in answer is not for this attempt.")
    access_token = str(tokens["access_token"])
    principal = in_directory(verifier.verify(access_token), request.app.state.agencies)
    return principal, access_token
