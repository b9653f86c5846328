"""Tokens of an OpenID Connect identity provider (Keycloak, or any other).

The provider's signing keys come from its JWKS, found by discovery from the issuer URL
(``<issuer>/.well-known/openid-configuration``). Keys rotate: a token signed with a key id
not seen yet makes the keys be fetched again, at most once every
``KETNOI_AUTH_JWKS_MIN_REFRESH_SECONDS`` (tokens with made-up key ids must not turn Ketnoi
into a flood of requests to the provider), and the keys are refreshed anyway once they are
``KETNOI_AUTH_JWKS_MAX_AGE_SECONDS`` old.

The claims are read in Ketnoi's layout (``sub``, ``agency``, ``province``, ``roles``) or in
Keycloak's, where the roles are a client's roles (``resource_access.<client>.roles``) or the
realm's (``realm_access.roles``), and roles that are not Ketnoi's (``offline_access``,
``default-roles-…``) are left out. A service account (client credentials) is a principal like
any other: its ``sub`` is the account, its agency and province are claims fixed on the client.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from contracts.vocabulary import Role
from services.runtime.errors import UnavailableError, UnverifiableTokenError
from services.runtime.logging import get_logger

log = get_logger("ketnoi.oidc")
Fetch = Callable[[str], Mapping[str, Any]]
KNOWN_ROLES = frozenset(r.value for r in Role)


def fetch_json(url: str, timeout: float = 5.0) -> Mapping[str, Any]:
    """GET a JSON document (discovery, JWKS); raises OSError or ValueError."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        document: Mapping[str, Any] = json.loads(response.read())
    return document


class ProviderKeys:
    """The identity provider's signing keys by key id, fetched and rotated as needed."""

    def __init__(
        self,
        issuer_url: str,
        *,
        min_refresh_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        fetch: Fetch = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer_url = issuer_url.rstrip("/")
        self.min_refresh = min_refresh_seconds
        self.max_age = max_age_seconds
        self.fetch = fetch
        self.clock = clock
        self.issuer: str | None = None
        self.fetches = 0  # JWKS fetches so far (discovery not counted)
        self._discovery: Mapping[str, Any] | None = None
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def metadata(self) -> Mapping[str, Any]:
        """The provider's discovery document (its endpoints), read once.

        Raises UnavailableError (503) while the provider cannot be reached.
        """
        with self._lock:
            if self._discovery is None:
                try:
                    self._discover()
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("oidc_discovery_unavailable", error=type(exc).__name__)
                    raise UnavailableError(
                        "Ketnoi cannot reach the identity provider; try again in a moment."
                    ) from None
            assert self._discovery is not None
            return self._discovery

    def _discover(self) -> None:
        discovery = self.fetch(f"{self.issuer_url}/.well-known/openid-configuration")
        self._jwks_uri = str(discovery["jwks_uri"])
        self.issuer = str(discovery.get("issuer") or self.issuer_url)
        self._discovery = discovery

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key with this id; raises UnverifiableTokenError for a key the provider does
        not publish, UnavailableError (503) while the provider cannot be reached."""
        with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.max_age
            unknown = kid is None or kid not in self._keys
            may_refresh = self._fetched_at is None or now - self._fetched_at >= self.min_refresh
            if stale or (unknown and may_refresh):
                self._refresh(now)
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            if kid is not None and kid in self._keys:
                return self._keys[kid]
        raise UnverifiableTokenError(
            "The access token is signed with a key the identity provider does not publish; "
            "sign in again."
        )

    def publishes(self, kid: str | None) -> bool | None:
        """Whether the keys as last fetched, if not stale, hold this key; None when only
        ``key_for`` (which may fetch them) can tell."""
        with self._lock:
            if self._fetched_at is None or self.clock() - self._fetched_at > self.max_age:
                return None
            if kid is None:
                return len(self._keys) == 1
            return kid in self._keys

    def _refresh(self, now: float) -> None:
        try:
            if self._jwks_uri is None:
                self._discover()
            assert self._jwks_uri is not None
            document = self.fetch(self._jwks_uri)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("jwks_unavailable", error=type(exc).__name__)
            if self._keys and self._fetched_at is not None:
                self._fetched_at = now  # keep the keys we have; ask again after the pause
                return
            raise UnavailableError(
                "Ketnoi cannot reach the identity provider to check your token; "
                "try again in a moment."
            ) from None
        keys = {}
        for jwk in jwt.PyJWKSet.from_dict(dict(document)).keys:
            if jwk.key_id and jwk.public_key_use in (None, "sig"):
                keys[jwk.key_id] = jwk
        self.fetches += 1
        added = set(keys) - set(self._keys)
        if added and self._keys:
            log.info(
                "jwks_rotated", added=sorted(added), removed=sorted(set(self._keys) - set(keys))
            )
        self._keys = keys
        self._fetched_at = now


def principal_claims(claims: Mapping[str, Any], layout: str, roles_client: str) -> dict[str, Any]:
    """The principal's fields from a token's claims, in Ketnoi's or Keycloak's layout."""
    fields: dict[str, Any] = {
        "user_id": claims["sub"],
        "agency_id": claims.get("agency", ""),
        "agency_kind": claims.get("agency_kind"),
        "province": claims.get("province", ""),
    }
    if layout != "keycloak":
        fields["roles"] = frozenset(claims.get("roles") or ())
        return fields
    found: set[str] = set()
    for source in (
        claims.get("roles"),
        (claims.get("resource_access") or {}).get(roles_client, {}).get("roles"),
        (claims.get("realm_access") or {}).get("roles"),
    ):
        if isinstance(source, list):
            found.update(str(role) for role in source)
    fields["roles"] = frozenset(found & KNOWN_ROLES)
    return fields
