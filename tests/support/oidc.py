"""A small OpenID Connect provider for tests: discovery, its keys as a JWKS, an
authorisation endpoint that signs the user in at once, and a token endpoint that checks the
PKCE verifier.

It signs with an Ed25519 key named by a key id, published in its JWKS (``rotate`` replaces
it with a new one), and puts Ketnoi's claims (agency, province, roles) in its access
tokens, whose issuer is the provider's own."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Form, HTTPException
from fastapi.responses import RedirectResponse

from tests.support.processes import free_port

CLIENT_ID = "ketnoi-web"


@dataclass
class Provider:
    base: str
    user: dict[str, Any]
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    current: str = ""
    issued: list[str] = field(default_factory=list)
    tokens_asked: int = 0
    jwks_requests: int = 0

    def rotate(self) -> str:
        """Sign with a new key from now on, published beside the old; returns its id."""
        self.current = f"key-{len(self.keys) + 1}"
        self.keys[self.current] = Ed25519PrivateKey.generate()
        return self.current

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "EdDSA"})
        return {"keys": keys}


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@contextmanager
def oidc_provider(tmp_path: Path, user: dict[str, Any]) -> Iterator[Provider]:
    """Serve the provider on a loopback port; ``user`` holds the claims it signs in with."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = Provider(base, user)
    provider.rotate()
    codes: dict[str, dict[str, str]] = {}
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "code_challenge_methods_supported": ["S256"],
        }

    @app.get("/jwks")
    def jwks() -> dict[str, Any]:
        provider.jwks_requests += 1
        return provider.jwks()

    @app.get("/authorize")
    def authorize(
        client_id: str,
        redirect_uri: str,
        state: str,
        nonce: str,
        code_challenge: str,
        code_challenge_method: str,
        response_type: str,
    ) -> RedirectResponse:
        assert client_id == CLIENT_ID
        assert response_type == "code"
        assert code_challenge_method == "S256"
        code = secrets.token_urlsafe(16)
        codes[code] = {"challenge": code_challenge, "nonce": nonce, "redirect": redirect_uri}
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}")

    @app.post("/token")
    def token(
        grant_type: Annotated[str, Form()],
        code: Annotated[str, Form()],
        redirect_uri: Annotated[str, Form()],
        client_id: Annotated[str, Form()],
        code_verifier: Annotated[str, Form()],
    ) -> dict[str, Any]:
        provider.tokens_asked += 1
        asked = codes.pop(code, None)  # a code is good once
        if (
            asked is None
            or grant_type != "authorization_code"
            or client_id != CLIENT_ID
            or redirect_uri != asked["redirect"]
            or _s256(code_verifier) != asked["challenge"]
        ):
            raise HTTPException(400, "invalid_grant")
        now = datetime.now(UTC)
        common = {"sub": provider.user["sub"], "iat": now, "exp": now + timedelta(hours=1)}
        key, named = provider.keys[provider.current], {"kid": provider.current}
        access = jwt.encode(
            {**common, "iss": base, "aud": "ketnoi", **provider.user},
            key,
            algorithm="EdDSA",
            headers=named,
        )
        identity = jwt.encode(
            {**common, "iss": base, "aud": CLIENT_ID, "nonce": asked["nonce"]},
            key,
            algorithm="EdDSA",
            headers=named,
        )
        provider.issued.append(access)
        return {"access_token": access, "id_token": identity, "token_type": "Bearer"}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="oidc-provider", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test identity provider did not start"
        time.sleep(0.05)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=20)
