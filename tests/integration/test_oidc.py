"""Tokens of an OpenID Connect provider: keys by discovery and JWKS, rotation on an unknown
key id (rate-limited), Keycloak's claim layout, service accounts. The provider is a real
HTTP server on a loopback port serving discovery and JWKS documents."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from contracts.vocabulary import Role
from services.runtime.auth import TokenService
from services.runtime.errors import UnavailableError, UnverifiableTokenError
from services.runtime.settings import Settings


@dataclass
class Provider:
    """Discovery and JWKS on a loopback port; ``published`` are the key ids it serves."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    jwks_requests: int = 0
    url: str = ""

    def add_key(self, kid: str, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/ketnoi"

    def token(self, kid: str, **claims: Any) -> str:
        now = datetime.now(UTC)
        body = {
            "iss": self.issuer,
            "aud": ["ketnoi", "account"],
            "sub": "4f1c7c0e-user",
            "iat": now,
            "exp": now + timedelta(minutes=5),
            "agency": "lao-cai-social-work-centre",
            "province": "lao-cai",
            **claims,
        }
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/realms/ketnoi/.well-known/openid-configuration":
                body = {
                    "issuer": state.issuer,
                    "jwks_uri": f"{state.issuer}/protocol/openid-connect/certs",
                }
            elif self.path == "/realms/ketnoi/protocol/openid-connect/certs":
                state.jwks_requests += 1
                body = state.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _service(provider: Provider, tmp_path: Any, **settings: Any) -> TokenService:
    return TokenService(
        Settings(
            database_url=None,
            data_dir=tmp_path,
            auth_oidc_issuer_url=provider.issuer,
            auth_algorithm="RS256",
            auth_claims="keycloak",
            **settings,
        )
    )


def test_keys_come_from_discovery_and_rotate_on_an_unknown_key_id(
    provider: Provider, tmp_path: Any
) -> None:
    provider.add_key("k1")
    tokens = _service(provider, tmp_path, auth_jwks_min_refresh_seconds=0)
    principal = tokens.verify(provider.token("k1", roles=["case_manager"]))
    assert principal.user_id == "4f1c7c0e-user"
    assert principal.roles == frozenset({Role.CASE_MANAGER})
    assert provider.jwks_requests == 1
    tokens.verify(provider.token("k1", roles=["case_manager"]))
    assert provider.jwks_requests == 1  # cached

    # The provider rotates: a new key is published and tokens are signed with it.
    provider.add_key("k2")
    assert tokens.verify(provider.token("k2", roles=["coordinator"])).roles == {Role.COORDINATOR}
    assert provider.jwks_requests == 2


def test_unknown_key_ids_refresh_the_keys_at_most_once_a_pause(
    provider: Provider, tmp_path: Any
) -> None:
    provider.add_key("k1")
    provider.add_key("forged", publish=False)
    tokens = _service(provider, tmp_path, auth_jwks_min_refresh_seconds=3600)
    tokens.verify(provider.token("k1", roles=["case_manager"]))
    for _ in range(20):
        with pytest.raises(UnverifiableTokenError):
            tokens.verify(provider.token("forged", roles=["admin"]))
    assert provider.jwks_requests == 1  # the made-up key ids cost the provider nothing


def test_one_key_set_per_provider_shared_by_the_api_and_the_sign_in(
    provider: Provider, tmp_path: Any
) -> None:
    """The web's sign-in asks the token service for its provider's keys: the same provider
    (however its URL ends) is the same discovery document and the same keys."""
    provider.add_key("k1")
    tokens = _service(provider, tmp_path, auth_jwks_min_refresh_seconds=3600)
    tokens.verify(provider.token("k1", roles=["case_manager"]))
    sign_in = tokens.provider_keys(provider.issuer + "/")
    assert sign_in is tokens.provider_keys(provider.issuer)
    assert sign_in.metadata()["jwks_uri"].endswith("/protocol/openid-connect/certs")
    assert sign_in.key_for("k1").key_id == "k1"
    assert provider.jwks_requests == 1  # the API's fetch served the sign-in too


def test_keycloak_roles_and_a_service_account(provider: Provider, tmp_path: Any) -> None:
    provider.add_key("k1")
    tokens = _service(provider, tmp_path)
    # Keycloak's own layout: client roles and realm roles, with roles that are not Ketnoi's.
    person = tokens.verify(
        provider.token(
            "k1",
            realm_access={"roles": ["offline_access", "default-roles-ketnoi", "auditor"]},
            resource_access={"ketnoi": {"roles": ["intake_officer"]}, "account": {"roles": ["x"]}},
        )
    )
    assert person.roles == frozenset({Role.AUDITOR, Role.INTAKE_OFFICER})
    # A machine client of an agency (client credentials): no person, the agency on the client.
    machine = tokens.verify(
        provider.token(
            "k1",
            sub="service-account-lao-cai-social-work-centre-api",
            azp="lao-cai-social-work-centre-api",
            resource_access={"ketnoi": {"roles": ["agency_staff"]}},
        )
    )
    assert machine.user_id == "service-account-lao-cai-social-work-centre-api"
    assert machine.agency_id == "lao-cai-social-work-centre"
    assert machine.roles == frozenset({Role.AGENCY_STAFF})


def test_a_provider_that_cannot_be_reached_is_a_503_not_a_refusal(tmp_path: Any) -> None:
    unreachable = Provider(url="http://127.0.0.1:9")  # the discard port: nobody answers
    unreachable.add_key("k1")
    tokens = _service(unreachable, tmp_path)
    with pytest.raises(UnavailableError):
        tokens.verify(unreachable.token("k1", roles=["case_manager"]))
