"""Signing in to the web app through an OpenID Connect provider (authorisation code with
PKCE; its keys by discovery and JWKS, rotated), and the session and CSRF rules every page
keeps. On PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from services.cli.wiring import http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from services.web.session import SESSION_COOKIE
from tests.support.agencies import register_agencies
from tests.support.oidc import CLIENT_ID, Provider, oidc_provider

pytestmark = pytest.mark.postgres

COORDINATOR = {
    "sub": "dt-coordinator-7",
    "agency": "dong-thap-dolisa",
    "province": "dong-thap",
    "roles": ["coordinator"],
}


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    with oidc_provider(tmp_path, dict(COORDINATOR)) as running:
        yield running


@pytest.fixture
def web(pg_settings: Settings, provider: Provider) -> Iterator[TestClient]:
    settings = pg_settings.model_copy(
        update={
            "pg_pool_size": 2,
            # The API's tokens and the web's sign-in: the same provider, found by discovery.
            "auth_oidc_issuer_url": provider.base,
            "oidc_issuer": provider.base,
            "oidc_client_id": CLIENT_ID,
        }
    )
    migrate(settings)
    platform = start(settings, run_followers=False)
    register_agencies(platform, ["dong-thap-dolisa"])
    with TestClient(http_app(platform, TokenService(settings))) as client:
        yield client
    platform.close()


def _to_provider(web: TestClient) -> str:
    """Start a sign-in; the answer sends the browser to the provider."""
    answer = web.get("/signin/oidc", follow_redirects=False)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith("http://127.0.0.1:")
    asked = parse_qs(urlsplit(location).query)
    assert asked["code_challenge_method"] == ["S256"]
    assert asked["response_type"] == ["code"]
    assert len(asked["code_challenge"][0]) == 43
    return location


def _back_from_provider(location: str) -> str:
    """The provider signs the user in and sends the browser back with a code."""
    answer = httpx.get(location, follow_redirects=False)
    assert answer.status_code == 307
    back = urlsplit(answer.headers["location"])
    return f"{back.path}?{back.query}"


def test_sign_in_through_the_provider_opens_a_session_as_the_tokens_principal(
    web: TestClient, provider: Provider
) -> None:
    page = web.get("/signin")
    assert "/signin/oidc" in page.text
    callback = _back_from_provider(_to_provider(web))
    answer = web.get(callback, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/board"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert provider.issued[0] not in cookie  # the cookie holds a session id, not the token
    board = web.get("/board", headers={"Accept-Language": "en"})
    assert board.status_code == 200
    assert "dt-coordinator-7" in board.text
    assert "Province board" in board.text

    # The same code, or the same state, cannot be used twice.
    again = web.get(callback, follow_redirects=False)
    assert again.status_code == 400


def test_the_providers_answer_may_come_back_to_another_process(
    web: TestClient, provider: Provider
) -> None:
    """Sign-ins under way and sessions are in the database: a process that did not begin
    the sign-in finishes it, and the session it opens is known to the first."""
    settings = web.app.state.settings  # type: ignore[attr-defined]
    other = start(settings, run_followers=False)
    try:
        with TestClient(http_app(other, TokenService(settings))) as second:
            location = _to_provider(web)
            second.cookies.update(web.cookies)  # the same browser, another process
            answer = second.get(_back_from_provider(location), follow_redirects=False)
            assert answer.status_code == 303, answer.text
            web.cookies.update(second.cookies)
            board = web.get("/board", headers={"Accept-Language": "en"})
            assert "dt-coordinator-7" in board.text
    finally:
        other.close()


def test_a_callback_that_is_not_for_this_browsers_attempt_is_refused(
    web: TestClient, provider: Provider
) -> None:
    callback = _back_from_provider(_to_provider(web))
    stranger = TestClient(web.app)  # another browser: no attempt cookie
    assert stranger.get(callback, follow_redirects=False).status_code == 400
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    assert web.get(forged, follow_redirects=False).status_code == 400
    assert provider.tokens_asked == 0  # nothing was exchanged for a forged or stolen answer
    assert web.get("/board", follow_redirects=False).status_code == 303


def test_an_agency_unknown_to_the_directory_cannot_sign_in(
    web: TestClient, provider: Provider
) -> None:
    provider.user["agency"] = "not-registered"
    callback = _back_from_provider(_to_provider(web))
    answer = web.get(callback, follow_redirects=False)
    assert answer.status_code == 401
    assert web.get("/board", follow_redirects=False).headers["location"].startswith("/signin")


def test_forms_without_the_sessions_csrf_token_are_refused(
    web: TestClient, provider: Provider
) -> None:
    web.get(_back_from_provider(_to_provider(web)))
    assert web.post("/signout", data={}).status_code == 403
    assert web.post("/signout", data={"csrf_token": "wrong"}).status_code == 403
    page = web.get("/board").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    out = web.post("/signout", data={"csrf_token": token.group(1)}, follow_redirects=False)
    assert out.status_code == 303
    assert web.get("/board", follow_redirects=False).headers["location"].startswith("/signin")


def test_the_forms_before_signing_in_carry_a_token_of_their_own(web: TestClient) -> None:
    """Sign-in and the language switch come before a session: their forms must send back
    the token of this browser's form cookie, so another site cannot post them."""
    stranger = TestClient(web.app)
    assert stranger.post("/language", data={"language": "en"}).status_code == 403
    page = web.get("/signin")
    assert "ketnoi_form=" in page.headers["set-cookie"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    switched = web.post(
        "/language",
        data={"language": "en", "back": "/signin", "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    assert switched.headers["location"] == "/signin"
    assert "Sign in" in web.get("/signin").text
    away = web.post(
        "/language",
        data={"language": "vi", "back": "//elsewhere.example/x", "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert away.headers["location"] == "/"


def test_sign_in_follows_the_providers_key_rotation_at_most_once_a_pause(
    web: TestClient, provider: Provider
) -> None:
    """The sign-in reads the provider's keys through the same key set as the API's tokens:
    a new key id fetches them again, but not twice within the pause."""
    assert web.get(_back_from_provider(_to_provider(web))).status_code == 200
    assert provider.jwks_requests == 1  # the ID token and the access token: one fetch
    tokens: TokenService = web.app.state.tokens  # type: ignore[attr-defined]
    keys = tokens.provider_keys(provider.base)
    started = keys.clock()
    keys.clock = lambda: started + 1  # within the pause after that fetch

    provider.rotate()
    again = TestClient(web.app)
    refused = again.get(_back_from_provider(_to_provider(again)), follow_redirects=False)
    assert refused.status_code == 401  # signed with a key not fetched yet, and no fetch now
    assert provider.jwks_requests == 1

    keys.clock = lambda: started + 31  # the pause is over
    answer = again.get(_back_from_provider(_to_provider(again)), follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert provider.jwks_requests == 2
    assert again.get("/board").status_code == 200
    # The API takes the new key's access token without fetching again, as does the old
    # session's page (its token signed with the old key, still published).
    bearer = {"Authorization": f"Bearer {provider.issued[-1]}"}
    assert again.get("/projections/board", headers=bearer).status_code == 200
    assert web.get("/board").status_code == 200
    assert provider.jwks_requests == 2
