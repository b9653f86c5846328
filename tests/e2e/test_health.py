"""Health of a process over HTTP: /healthz, /readyz (its followers run and keep up) and the
Prometheus metrics. On the embedded default (SQLite), every service in one process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contracts.vocabulary import Role
from services.cli.wiring import Platform, http_app, start
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies
from tests.support.processes import rescue_reception

AGENCY = "dong-thap-swc"
RECEPTION = rescue_reception(AGENCY)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[TestClient, Platform, dict[str, str]]]:
    settings = Settings(database_url=None, data_dir=tmp_path / "data")
    platform = start(settings, poll_interval=0.1)
    register_agencies(platform, (AGENCY,))
    tokens = TokenService(settings)
    token = tokens.issue(
        user_id="officer-1", agency_id=AGENCY, province="dong-thap", roles=[Role.INTAKE_OFFICER]
    )
    with TestClient(http_app(platform, tokens)) as client:
        yield client, platform, {"Authorization": f"Bearer {token}"}
    platform.close()


def _metric(text: str, prefix: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    assert found, f"no {prefix} in /metrics"
    return sum(float(line.rsplit(" ", 1)[1]) for line in found)


def test_ready_while_followers_run_and_not_once_one_stops(
    running: tuple[TestClient, Platform, dict[str, str]],
) -> None:
    client, platform, _headers = running
    # One process runs its followers itself: the leader, without an election.
    assert client.get("/healthz").json() == {"status": "ok", "role": "leader"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["role"] == "leader"
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert {"consent", "referral", "projections"} <= set(checks)
    assert all(checks[name]["running"] for name in platform.followers)

    platform.followers["consent"].stop()
    stopped = client.get("/readyz")
    assert stopped.status_code == 503
    assert stopped.json()["checks"]["consent"]["ready"] is False
    assert stopped.headers["retry-after"]
    assert client.get("/healthz").status_code == 200  # alive all the same


def test_metrics_count_requests_by_route_template_and_audited_reads(
    running: tuple[TestClient, Platform, dict[str, str]],
) -> None:
    client, platform, headers = running
    before = client.get("/metrics").text
    audited_before = _metric(before, "ketnoi_read_audit_writes_total")
    created = client.post("/intake/cases", json=RECEPTION, headers=headers)
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    person = {"full_name": "Person Name", "sex": "female", "estimated_age": 30}
    assert client.post(f"/intake/cases/{case_id}/person", json=person, headers=headers).is_success
    assert client.get(f"/intake/cases/{case_id}", headers=headers).json()["person"]
    platform.catch_up()

    text = client.get("/metrics").text
    assert case_id not in text  # route templates, never concrete paths
    route = 'route="/intake/cases/{case_id}"'
    assert _metric(text, f'ketnoi_http_requests_total{{method="GET",{route},status="200"}}') >= 1
    assert _metric(text, f'ketnoi_http_request_duration_seconds_count{{method="GET",{route}}}') >= 1
    assert _metric(text, "ketnoi_read_audit_writes_total") > audited_before
    assert "ketnoi_deadline_escalations_total" in text
    for upstream in ("intake", "consent"):
        lag = f'ketnoi_follower_lag_events{{loop="referral",upstream="{upstream}"}}'
        assert _metric(text, lag) == 0
        assert f'ketnoi_follower_lag_seconds{{loop="projections",upstream="{upstream}"}}' in text
