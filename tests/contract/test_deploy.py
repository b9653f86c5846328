"""The deployment artefacts agree with the code: the compose file names every component and
parses (``docker-compose config``, no daemon needed); the Keycloak realm carries the roles
and the claims Ketnoi reads."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from contracts.vocabulary import Role
from services.runtime.auth import _CLAIMS
from services.runtime.settings import SERVICES
from tests.conftest import missing_service

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
REALM = DEPLOY / "keycloak" / "ketnoi-realm.json"
KETNOI_CONTAINERS = {*SERVICES, "relay", "web"}


def _compose_config() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        missing_service("no docker-compose to check deploy/compose.yaml (apt-get install it)")
    assert binary is not None
    done = subprocess.run(
        [binary, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_the_compose_file_parses_and_names_every_component() -> None:
    services = _compose_config()["services"]
    assert {"postgres", "kafka", "keycloak", "migrate"} | KETNOI_CONTAINERS <= set(services)
    kraft = services["kafka"]["environment"]
    assert kraft["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "--import-realm" in " ".join(services["keycloak"]["entrypoint"])
    for name in KETNOI_CONTAINERS:
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert "/readyz" in " ".join(service["healthcheck"]["test"]), name
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        # Secrets come as files, never as values in the environment.
        assert {s["source"] for s in service["secrets"]} >= {"db_password"}
        assert not any("PASSWORD=" in str(v) for v in (service.get("environment") or {}))
    assert " ".join(services["relay"]["command"]).startswith("feed")
    # Keys by discovery from the realm, in Keycloak's claim layout.
    ketnoi_env = services["intake"]["environment"]
    assert ketnoi_env["KETNOI_AUTH_OIDC_ISSUER_URL"] == "http://keycloak:8080/realms/ketnoi"
    assert ketnoi_env["KETNOI_AUTH_CLAIMS"] == "keycloak"
    assert ketnoi_env["KETNOI_DATABASE_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert services["relay"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in SERVICES:
        assert services[name]["command"][:2] == ["serve", name]
    # The web app signs people in through the realm's web client, which sends them back to it.
    web = services["web"]
    assert web["command"][:2] == ["serve", "all"]
    assert web["environment"]["KETNOI_OIDC_CLIENT_ID"] == "ketnoi-web"
    (published,) = [p["published"] for p in web["ports"]]
    (client,) = [
        c for c in json.loads(REALM.read_text())["clients"] if c["clientId"] == "ketnoi-web"
    ]
    assert client["redirectUris"] == [f"http://localhost:{published}/*"]


def test_the_realm_carries_ketnoi_roles_and_claims() -> None:
    realm = json.loads(REALM.read_text())
    roles = {r["name"] for r in realm["roles"]["client"]["ketnoi"]}
    assert roles == {r.value for r in Role}
    claims_read = {_CLAIMS[k] for k in ("agency_id", "province", "roles")}
    for client in realm["clients"]:
        if client.get("bearerOnly"):
            continue
        mapped = {
            m["config"]["claim.name"]
            for m in client["protocolMappers"]
            if "claim.name" in m["config"]
        }
        assert claims_read <= mapped, client["clientId"]
        audiences = [m["config"].get("included.custom.audience") for m in client["protocolMappers"]]
        assert "ketnoi" in audiences, client["clientId"]
    for user in realm["users"]:
        assert set(user["clientRoles"]["ketnoi"]) <= roles
