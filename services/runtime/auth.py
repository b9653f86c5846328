"""JWT bearer tokens: who the user is, their agency, province and roles.

Production verifies tokens with the identity provider's public key. The embedded default
keeps an Ed25519 key pair under its data directory and signs tokens with ``ketnoi token``;
the server verifies both the same way, with a public key only.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.access_policy import Asker
from contracts.envelope import Actor, AgencyId
from contracts.vocabulary import AgencyKind, Role
from services.runtime.errors import (
    AuthenticationError,
    PermissionDeniedError,
    UnverifiableTokenError,
)
from services.runtime.files import private_dir
from services.runtime.hardening import Guard, client_address
from services.runtime.oidc import ProviderKeys, principal_claims
from services.runtime.settings import Environment, Settings, SettingsError

if TYPE_CHECKING:
    from services.runtime.agencies import AgencyLookup, KnownAgency

NATIONAL = "*"  # the province of users who work across provinces


class Principal(BaseModel):
    """The authenticated user, as the token says and the server checked."""

    model_config = ConfigDict(frozen=True)

    user_id: str = Field(min_length=1, max_length=120)
    agency_id: AgencyId
    agency_kind: AgencyKind | None = None
    province: str = Field(min_length=1, max_length=60)
    roles: frozenset[Role] = Field(min_length=1)

    def acting_as(self, *allowed: Role) -> Actor:
        """The actor for a command that one of ``allowed`` may perform.

        Raises PermissionDeniedError naming the roles that may.
        """
        for role in allowed:
            if role in self.roles:
                return Actor(user_id=self.user_id, agency_id=self.agency_id, role=role)
        names = ", ".join(r.value for r in allowed)
        raise PermissionDeniedError(f"This needs one of the roles: {names}.")

    def require(self, *allowed: Role) -> Role:
        return self.acting_as(*allowed).role

    def covers_province(self, province: str) -> bool:
        return self.province in (NATIONAL, province)

    @property
    def asker(self) -> Asker:
        """The principal as the access policy sees it."""
        return Asker(self.user_id, self.agency_id, self.province, self.roles)


class VerifiedTokens:
    """The principals of tokens verified lately, each kept until its token expires.

    Bounded (the least recently used go first) and keyed by a digest of the token, so the
    cache holds no bearer token. What is cached is the signature and claims check alone:
    the address lockout, the agency directory and the rate limits are checked on every
    request as before.
    """

    def __init__(self, size: int, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[Principal, float, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[Principal, str | None] | None:
        """The principal and signing key id of a token verified before and not yet expired."""
        if not self.size:
            return None
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            principal, expires, kid = entry
            if self.clock() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return principal, kid

    def put(self, token: str, principal: Principal, expires: float, kid: str | None) -> None:
        if not self.size:
            return
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            self._entries[key] = (principal, expires, kid)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class TokenService:
    """Issues (development only) and verifies access tokens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A token's signature is checked once; until it expires its principal is reused.
        self.verified = VerifiedTokens(settings.auth_token_cache_size)
        self._signing_key: Any | None = None
        self._provider: ProviderKeys | None = None
        self._public_key: Any = None
        self._providers: dict[str, ProviderKeys] = {}
        self._providers_lock = threading.Lock()
        if settings.auth_oidc_issuer_url is not None:
            # The provider's keys, found by discovery and rotated (fetched when first needed).
            self._provider = self.provider_keys(settings.auth_oidc_issuer_url)
        elif (
            settings.environment is Environment.DEVELOPMENT
            and settings.auth_public_key_file is None
        ):
            self._signing_key = load_or_create_ed25519_key(settings.signing_key_path())
            self._public_key = self._signing_key.public_key()
        else:
            path = settings.public_key_path()
            try:
                self._public_key = serialization.load_pem_public_key(path.read_bytes())
            except FileNotFoundError:
                msg = f"no public key at {path}; set KETNOI_AUTH_PUBLIC_KEY_FILE"
                raise SettingsError(msg) from None

    def provider_keys(self, issuer_url: str) -> ProviderKeys:
        """The discovery document and rotating keys of the provider at ``issuer_url``: one
        set per provider in this process, shared by the API's tokens and the web's sign-in
        (the same provider, the same keys and the same pause between fetches)."""
        url = issuer_url.rstrip("/")
        with self._providers_lock:
            if url not in self._providers:
                self._providers[url] = ProviderKeys(
                    url,
                    min_refresh_seconds=self.settings.auth_jwks_min_refresh_seconds,
                    max_age_seconds=self.settings.auth_jwks_max_age_seconds,
                )
            return self._providers[url]

    @property
    def public_key(self) -> Any:
        """The key tokens are verified with (the identity provider's, in production)."""
        return self._public_key

    def issue(
        self,
        *,
        user_id: str,
        agency_id: str,
        province: str,
        roles: Iterable[Role],
        agency_kind: AgencyKind | None = None,
        ttl: timedelta | None = None,
    ) -> str:
        """Sign a token with the local key (embedded default only).

        Raises SettingsError when this installation signs no tokens, and ValueError naming
        the claim when a value is not one Ketnoi accepts (an agency id that is not a slug).
        """
        if self._signing_key is None:
            msg = "this installation verifies tokens from an identity provider and signs none"
            raise SettingsError(msg)
        try:
            principal = Principal(
                user_id=user_id,
                agency_id=agency_id,
                agency_kind=agency_kind,
                province=province,
                roles=frozenset(roles),
            )
        except ValidationError as exc:
            raise ValueError(_claims_problem(exc)) from None
        now = datetime.now(UTC)
        lifetime = ttl or timedelta(minutes=self.settings.token_ttl_minutes)
        claims = {
            "iss": self.settings.auth_issuer,
            "aud": self.settings.auth_audience,
            "sub": principal.user_id,
            "iat": now,
            "exp": now + lifetime,
            "agency": principal.agency_id,
            "agency_kind": principal.agency_kind.value if principal.agency_kind else None,
            "province": principal.province,
            "roles": sorted(r.value for r in principal.roles),
        }
        return jwt.encode(claims, self._signing_key, algorithm="EdDSA")

    def verified_before(self, token: str) -> Principal | None:
        """The principal of a token verified before and not expired, when telling needs no
        fetch of the provider's keys; else None (``verify`` tells)."""
        cached = self.verified.get(token)
        if cached is None:
            return None
        principal, kid = cached
        if self._provider is not None and not self._provider.publishes(kid):
            return None
        return principal

    def verify(self, token: str) -> Principal:
        """The principal a token names; raises AuthenticationError saying why it is refused."""
        cached = self.verified.get(token)
        if cached is not None:
            principal, kid = cached
            if self._provider is not None:
                # A key the provider no longer publishes refuses its tokens, cached or not.
                self._provider.key_for(kid)
            return principal
        key, issuer, kid = self._public_key, self.settings.auth_issuer, None
        if self._provider is not None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.InvalidTokenError:
                raise UnverifiableTokenError("The access token is not valid for Ketnoi.") from None
            key = self._provider.key_for(kid).key
            issuer = self._provider.issuer or issuer
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.settings.auth_algorithm],
                audience=self.settings.auth_audience,
                issuer=issuer,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("The access token has expired; sign in again.") from None
        except jwt.InvalidTokenError:
            raise UnverifiableTokenError("The access token is not valid for Ketnoi.") from None
        settings = self.settings
        fields = principal_claims(
            claims, settings.auth_claims, settings.auth_roles_client or settings.auth_audience
        )
        try:
            principal = Principal(**fields)
        except ValidationError as exc:
            raise AuthenticationError(_claims_problem(exc)) from None
        self.verified.put(token, principal, float(claims["exp"]), kid)
        return principal


_CLAIMS = {
    "user_id": "sub",
    "agency_id": "agency",
    "agency_kind": "agency_kind",
    "province": "province",
    "roles": "roles",
}


def _claims_problem(exc: ValidationError) -> str:
    """What is wrong with a token's claims, naming the claims but never echoing their values."""
    fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
    if fields == ["agency_id"]:
        return (
            "The access token's agency claim is not an agency id Ketnoi knows: it must be a "
            "lower-case slug such as dong-thap-police (letters, digits and inner hyphens, at "
            "most 63 characters). Ask the identity provider's administrator to correct it."
        )
    claims = ", ".join(_CLAIMS.get(f, f) for f in fields)
    return (
        f"The access token's claims are missing or not valid for Ketnoi ({claims}); it needs "
        "a user, an agency id (a lower-case slug), a province and at least one known role."
    )


def load_or_create_ed25519_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file, created (readable by its owner only) when
    missing; raises SettingsError when the file holds another kind of key."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            msg = f"{path} is not an Ed25519 private key"
            raise SettingsError(msg)
        return key
    private_dir(path.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created readable by the owner only; O_EXCL so two processes never overwrite each other.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_ed25519_key(path)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


_bearer = HTTPBearer(auto_error=False)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the principal of the request's bearer token, or 401.

    An address that presented too many refused tokens lately is locked out (429), and a
    principal sending faster than its rate limit is refused (429), when the app has a guard.

    Where the app knows the agency directory (``app.state.agencies``), the token's agency
    must be in it and active, and the principal's agency kind is the directory's: a token's
    ``agency_kind`` claim is only checked against it, and a disagreement is refused.

    A token verified before, whose agency the directory's copy in memory knows, is checked
    here in the event loop; anything that may need I/O (a signature to check, the provider's
    keys or the directory log to read) runs in the thread pool.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("Send an access token as 'Authorization: Bearer <token>'.")
    guard: Guard | None = getattr(request.app.state, "guard", None)
    address = client_address(request.scope)
    if guard is not None:
        guard.lockout.check(address)
    tokens: TokenService = request.app.state.tokens
    agencies: AgencyLookup | None = getattr(request.app.state, "agencies", None)
    principal = _known(tokens, agencies, credentials.credentials)
    if principal is None:
        principal = await run_in_threadpool(
            _verify, tokens, agencies, credentials.credentials, guard, address
        )
    if guard is not None:
        guard.principal(f"{principal.agency_id}/{principal.user_id}")
    return principal


def _known(tokens: TokenService, agencies: AgencyLookup | None, token: str) -> Principal | None:
    """The principal, when the token and its agency are known without I/O; else None."""
    principal = tokens.verified_before(token)
    if principal is None or agencies is None:
        return principal
    peek = getattr(agencies, "peek", None)
    known = peek(principal.agency_id) if peek is not None else None
    if known is None:
        return None
    return _as_in_directory(principal, known)


def _verify(
    tokens: TokenService,
    agencies: AgencyLookup | None,
    token: str,
    guard: Guard | None,
    address: str,
) -> Principal:
    try:
        principal = tokens.verify(token)
        if agencies is not None:
            principal = in_directory(principal, agencies)
    except UnverifiableTokenError:
        # Only tokens that fail verification count: an expired one or an agency since
        # deactivated is no sign of guessing, and may come from a whole office's address.
        if guard is not None:
            guard.lockout.failed(address)
        raise
    return principal


def in_directory(principal: Principal, agencies: AgencyLookup) -> Principal:
    """The principal with its agency's kind from the directory.

    Raises AuthenticationError when the agency is not in the directory (the platform's own
    reserved id never is), is inactive, or is of another kind than the token claims.
    """
    known = agencies.lookup(principal.agency_id)
    if known is None:
        raise AuthenticationError(
            f"The access token names the agency {principal.agency_id!r}, which is not in the "
            "agency directory; ask an administrator to register it."
        )
    return _as_in_directory(principal, known)


def _as_in_directory(principal: Principal, known: KnownAgency) -> Principal:
    """The principal with its agency's kind from the directory entry ``known``; raises
    AuthenticationError when that agency is inactive or of another kind."""
    if not known.active:
        raise AuthenticationError(
            f"The agency {principal.agency_id!r} is inactive in the agency directory; its "
            "users cannot sign in until an administrator reactivates it."
        )
    if principal.agency_kind is not None and principal.agency_kind is not known.kind:
        raise AuthenticationError(
            f"The access token says the agency {principal.agency_id!r} is a "
            f"{principal.agency_kind.value}, but the agency directory says it is a "
            f"{known.kind.value}; ask for a new token."
        )
    return principal.model_copy(update={"agency_kind": known.kind})


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
