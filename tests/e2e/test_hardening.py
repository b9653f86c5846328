"""Protection at the edge: security headers, rate limits (429 + Retry-After), the lockout
after refused tokens, a request head or body that trickles in too slowly (408), the
connection limit's 503, private data files, and a missing key file reported as a
configuration error. On the embedded default (SQLite); the head and the connection limit
against a served process, over raw sockets."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from contracts.vocabulary import Role
from services.cli.wiring import Platform, http_app, start
from services.runtime.auth import TokenService
from services.runtime.http import RequestBodyLimitMiddleware
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies
from tests.support.processes import KETNOI, free_port, ketnoi_server

AGENCY = "dong-thap-swc"


def _platform(tmp_path: Path, **limits: Any) -> tuple[Platform, Settings]:
    settings = Settings(database_url=None, data_dir=tmp_path / "data", **limits)
    platform = start(settings, ("directory",), run_followers=False)
    register_agencies(platform, (AGENCY,))
    return platform, settings


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[TestClient, TokenService]]:
    platform, settings = _platform(
        tmp_path,
        rate_limit_per_principal=0.001,
        rate_limit_principal_burst=3,
        rate_limit_per_address=0,
        auth_failure_limit=3,
        auth_lockout_seconds=600,
    )
    tokens = TokenService(settings)
    with TestClient(http_app(platform, tokens)) as client:
        yield client, tokens
    platform.close()


def _bearer(tokens: TokenService, user: str) -> dict[str, str]:
    token = tokens.issue(user_id=user, agency_id=AGENCY, province="dong-thap", roles=[Role.ADMIN])
    return {"Authorization": f"Bearer {token}"}


def assert_problem(r: Any, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"urn:ketnoi:problem:{slug}"


def test_every_response_carries_the_security_headers(
    limited: tuple[TestClient, TokenService],
) -> None:
    client, tokens = limited
    for r in (
        client.get("/directory/agencies", headers=_bearer(tokens, "admin-1")),
        client.get("/directory/agencies"),  # a 401 too
        client.get("/healthz"),
        client.get("/no-such-route"),
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-frame-options"] == "DENY"


def test_a_principal_over_its_rate_is_refused_with_retry_after(
    limited: tuple[TestClient, TokenService],
) -> None:
    client, tokens = limited
    fast, other = _bearer(tokens, "admin-1"), _bearer(tokens, "admin-2")
    for _ in range(3):  # the burst
        assert client.get("/directory/agencies", headers=fast).status_code == 200
    refused = client.get("/directory/agencies", headers=fast)
    assert_problem(refused, 429, "rate-limited")
    assert int(refused.headers["retry-after"]) >= 1
    # Another user of the same agency has a bucket of its own; probes are never limited.
    assert client.get("/directory/agencies", headers=other).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_an_address_is_locked_out_after_repeated_refused_tokens(
    limited: tuple[TestClient, TokenService],
) -> None:
    client, tokens = limited
    for _ in range(3):
        r = client.get("/directory/agencies", headers={"Authorization": "Bearer not.a.token"})
        assert_problem(r, 401, "unauthenticated")
    # Now even a valid token from that address waits out the lockout.
    locked = client.get("/directory/agencies", headers=_bearer(tokens, "admin-1"))
    assert_problem(locked, 429, "locked-out")
    assert int(locked.headers["retry-after"]) > 500


def test_an_address_over_its_rate_is_refused(tmp_path: Path) -> None:
    platform, settings = _platform(
        tmp_path, rate_limit_per_address=0.001, rate_limit_address_burst=2
    )
    with TestClient(http_app(platform, TokenService(settings))) as client:
        assert client.get("/no-such-route").status_code == 404
        assert client.get("/no-such-route").status_code == 404
        refused = client.get("/directory/agencies")
        assert_problem(refused, 429, "rate-limited")
        assert "retry-after" in refused.headers
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert client.get("/healthz").status_code == 200
    platform.close()


def test_a_body_that_trickles_in_too_slowly_is_cut_off() -> None:
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def trickle() -> Message:
        await asyncio.sleep(3600)  # a client that never finishes its body
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
    middleware = RequestBodyLimitMiddleware(app, max_bytes=1024, timeout=0.2)
    asyncio.run(asyncio.wait_for(middleware(scope, trickle, send), timeout=10))
    assert sent[0]["status"] == 408
    assert not reached  # the route never saw the request


def test_data_files_and_keys_are_private(tmp_path: Path) -> None:
    platform, settings = _platform(tmp_path)
    TokenService(settings)  # creates the development signing key
    platform.close()
    data = settings.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.iterdir() if p.suffix in {".sqlite", ".pem"}]
    assert {p.name for p in files} >= {"directory.sqlite", "audit.sqlite", "auth-signing-key.pem"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_missing_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    import subprocess

    missing = tmp_path / "nowhere" / "idp-public-key.pem"
    done = subprocess.run(
        [*KETNOI, "serve", "directory", "--port", "1"],
        env={
            "PATH": "/usr/bin:/bin",
            "KETNOI_DATA_DIR": str(tmp_path / "data"),
            "KETNOI_AUTH_PUBLIC_KEY_FILE": str(missing),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Configuration error" in done.stderr
    assert "KETNOI_AUTH_PUBLIC_KEY_FILE" in done.stderr
    assert "Traceback" not in done.stderr


def _served(tmp_path: Path, name: str, **settings: str) -> Any:
    """``ketnoi serve directory`` as a process of its own, on the embedded default."""
    env = {"KETNOI_DATABASE_URL": "", "KETNOI_DATA_DIR": str(tmp_path / f"{name}-data")}
    env.update({f"KETNOI_{key.upper()}": value for key, value in settings.items()})
    return ketnoi_server(
        "serve", "directory", port=free_port(), env=env, log=tmp_path / f"{name}.log"
    )


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _read_to_end(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    conn.settimeout(60)  # far past every bound here: a server that never closes fails
    received = b""
    while chunk := conn.recv(4096):
        received += chunk
    return received


def _headers(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


def test_a_request_head_that_trickles_in_is_cut_off(tmp_path: Path) -> None:
    """uvicorn alone would wait for a head sent a byte at a time as long as it keeps
    coming; a served Ketnoi closes the connection once the bound is past, mid-head."""
    with _served(tmp_path, "slow", http_header_timeout_seconds="1") as (_proc, base):
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 300 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", _port(base))) as slow:
            sent, cut = 0, False
            # A byte every 0.1 s: the whole head would take 30 s, thirty times the bound.
            while sent < len(head):
                readable, _, _ = select.select([slow], [], [], 0.1)
                if readable:
                    cut = True
                    break
                try:
                    slow.sendall(head[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                    break
                sent += 1
            assert cut
            assert sent < len(head)  # cut off before the head was whole

        # A client that connects and sends nothing, or stops within the head of its next
        # request on a kept-alive connection, is answered 408 with the security headers.
        with socket.create_connection(("127.0.0.1", _port(base))) as idle:
            answer = _read_to_end(idle)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert _headers(answer)["x-content-type-options"] == "nosniff"
        with socket.create_connection(("127.0.0.1", _port(base))) as kept:
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while b'"ok"' not in first and b"\r\n\r\n{" not in first:
                first += kept.recv(4096)
            assert first.startswith(b"HTTP/1.1 200 ")
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            answer = _read_to_end(kept)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert "frame-ancestors 'none'" in _headers(answer)["content-security-policy"]
        # A whole request is served as ever.
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_past_the_connection_limit_the_503_carries_the_security_headers(
    tmp_path: Path,
) -> None:
    with _served(tmp_path, "full", http_max_connections="2", http_header_timeout_seconds="120") as (
        _proc,
        base,
    ):
        address = ("127.0.0.1", _port(base))
        # Two connections held open (accepted before the third: the queue is in order).
        with (
            socket.create_connection(address),
            socket.create_connection(address),
            socket.create_connection(address) as third,
        ):
            third.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = _read_to_end(third)
    assert answer.startswith(b"HTTP/1.1 503 ")
    headers = _headers(answer)
    assert headers["content-type"] == "application/problem+json"
    assert headers["retry-after"] == "1"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["type"] == "urn:ketnoi:problem:unavailable"
