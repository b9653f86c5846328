"""A token's signature is checked once and its principal reused until the token expires, in a
bounded cache that holds no token."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from contracts.vocabulary import Role
from services.runtime.auth import TokenService, VerifiedTokens
from services.runtime.errors import AuthenticationError, UnverifiableTokenError
from services.runtime.settings import Settings


def service(tmp_path: Path, size: int = 10_000) -> TokenService:
    return TokenService(
        Settings(database_url=None, data_dir=tmp_path / "data", auth_token_cache_size=size)
    )


def token(tokens: TokenService, user: str = "officer-1", ttl: timedelta | None = None) -> str:
    return tokens.issue(
        user_id=user,
        agency_id="dt-police",
        province="dong-thap",
        roles=[Role.INTAKE_OFFICER],
        ttl=ttl,
    )


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature is checked."""
    checked: list[str] = []
    real_decode = jwt.decode

    def decode(raw: str, *args: Any, **kwargs: Any) -> Any:
        checked.append(raw)
        return real_decode(raw, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", decode)
    return checked


def test_a_verified_token_is_not_checked_again(tmp_path: Path, decodes: list[str]) -> None:
    tokens = service(tmp_path)
    raw = token(tokens)
    first = tokens.verify(raw)
    again = tokens.verify(raw)
    assert again == first
    assert first.user_id == "officer-1"
    assert decodes == [raw]
    # The cache is keyed by a digest: it holds no bearer token.
    assert raw.encode() not in repr(tokens.verified._entries).encode()


def test_a_cached_token_is_refused_once_it_expires(tmp_path: Path) -> None:
    tokens = service(tmp_path)
    raw = token(tokens, ttl=timedelta(seconds=1))
    tokens.verify(raw)
    time.sleep(2.1)  # past the token's exp (whole seconds)
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.verify(raw)
    assert len(tokens.verified) == 0


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(
    tmp_path: Path, decodes: list[str]
) -> None:
    tokens = service(tmp_path, size=2)
    a, b, c = (token(tokens, user) for user in ("user-a", "user-b", "user-c"))
    tokens.verify(a)
    tokens.verify(b)
    tokens.verify(a)  # a is used again: b is now the oldest
    tokens.verify(c)
    assert len(tokens.verified) == 2
    decodes.clear()
    tokens.verify(a)
    tokens.verify(c)
    assert decodes == []
    tokens.verify(b)
    assert decodes == [b]


def test_no_cache_checks_every_time(tmp_path: Path, decodes: list[str]) -> None:
    tokens = service(tmp_path, size=0)
    raw = token(tokens)
    tokens.verify(raw)
    tokens.verify(raw)
    assert decodes == [raw, raw]


def test_a_refused_token_is_not_cached(tmp_path: Path, decodes: list[str]) -> None:
    tokens = service(tmp_path)
    raw = token(tokens)
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(UnverifiableTokenError):
            tokens.verify(forged)
    assert decodes == [forged, forged]
    assert len(tokens.verified) == 0


def test_an_entry_past_its_expiry_is_dropped() -> None:
    now = [1000.0]
    cache = VerifiedTokens(4, clock=lambda: now[0])
    principal: Any = object()
    cache.put("token", principal, expires=1010.0, kid=None)
    assert cache.get("token") == (principal, None)
    now[0] = 1010.0
    assert cache.get("token") is None
    assert len(cache) == 0
