"""Bounds on input over HTTP: body size (413), list sizes and repeats, agency ids, and 422s
whose size does not grow with the input. On the embedded default (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from contracts.vocabulary import AgencyKind, DataCategory, Role, UrgentNeed
from services.cli.wiring import Platform, http_app, start
from services.runtime.auth import TokenService
from services.runtime.http import MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, MAX_REPORTED_ERRORS
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies

NOW = datetime.now(UTC).replace(microsecond=0)
RECEPTION: dict[str, Any] = {
    "route": "rescued",
    "received_at": (NOW - timedelta(hours=2)).isoformat(),
    "place": {"province": "dong-thap"},
    "receiving_agency": "dong-thap-swc",  # the caller's own agency
}
GRANT: dict[str, Any] = {
    "categories": ["identity"],
    "recipients": [{"kind": "hospital"}],
    "purposes": ["service_provision"],
    "valid_from": (NOW - timedelta(days=1)).isoformat(),
    "valid_until": (NOW + timedelta(days=30)).isoformat(),
    "collection": {
        "method": "written_form",
        "form_reference": "F-1",
        "language": "vi",
        "withdrawal_explained": True,
    },
    "given_by": {"kind": "person"},
}
LIMIT = 64 * 1024


class Api:
    """The app on SQLite, with tokens signed as an identity provider would sign them."""

    def __init__(self, client: TestClient, platform: Platform, key: Ed25519PrivateKey) -> None:
        self.client, self.platform, self.key = client, platform, key

    def token(self, agency_id: Any = "dong-thap-swc", **claims: Any) -> dict[str, str]:
        now = datetime.now(UTC)
        body = {
            "iss": "ketnoi",
            "aud": "ketnoi",
            "sub": "user-1",
            "iat": now,
            "exp": now + timedelta(hours=1),
            "agency": agency_id,
            "agency_kind": "social_work_centre",
            "province": "dong-thap",
            "roles": [r.value for r in Role],
            **claims,
        }
        return {"Authorization": f"Bearer {jwt.encode(body, self.key, algorithm='EdDSA')}"}

    def case(self) -> str:
        r = self.client.post("/intake/cases", json=RECEPTION, headers=self.token())
        assert r.status_code == 201, r.text
        case_id = str(r.json()["case_id"])
        person = {"full_name": "Person Name", "sex": "female", "estimated_age": 30}
        r = self.client.post(f"/intake/cases/{case_id}/person", json=person, headers=self.token())
        assert r.status_code == 201, r.text
        self.platform.catch_up()
        return case_id


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "idp-public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = Settings(
        database_url=None,
        data_dir=tmp_path / "data",
        auth_public_key_file=public,
        max_request_bytes=LIMIT,
    )
    platform = start(settings, run_followers=False)
    register_agencies(platform, ("dong-thap-swc", "dong-thap-police", "dong-thap-hospital"))
    with TestClient(http_app(platform, TokenService(settings))) as client:
        yield Api(client, platform, key)
    platform.close()


def assert_problem(r: Any, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:ketnoi:problem:{slug}"
    return body


# -- agency ids in tokens ---------------------------------------------------------------------


def test_an_agency_id_with_capitals_in_a_token_is_a_401_on_every_kind_of_endpoint(
    api: Api,
) -> None:
    """Regression: withdrawing consent and creating a referral built an AgencyRef from the
    token's agency id inside the route, and answered 500 for ``Dong-Thap-Police``."""
    case_id = api.case()
    grant = api.client.post(f"/consent/cases/{case_id}/grants", json=GRANT, headers=api.token())
    assert grant.status_code == 201, grant.text
    grant_id = grant.json()["grant_id"]
    bad = api.token("Dong-Thap-Police")
    calls = [
        ("POST", "/intake/cases", RECEPTION),
        ("GET", f"/intake/cases/{case_id}", None),
        ("POST", f"/consent/cases/{case_id}/grants/{grant_id}/withdrawal", {}),
        ("GET", f"/consent/cases/{case_id}", None),
        (
            "POST",
            f"/referral/cases/{case_id}/referrals",
            {
                "to_agency": "dong-thap-hospital",
                "service_type": "health_check",
                "categories": ["identity"],
            },
        ),
        ("GET", "/referral/referrals", None),
        ("GET", "/projections/board", None),
    ]
    for method, url, body in calls:
        r = api.client.request(method, url, json=body, headers=bad)
        problem = assert_problem(r, 401, "unauthenticated")
        assert "agency" in problem["detail"]
        assert "lower-case slug" in problem["detail"]
        assert "Dong-Thap-Police" not in r.text  # the claim's value is never echoed
    # Nothing was written by any of them: the grant still stands.
    record = api.client.get(f"/consent/cases/{case_id}", headers=api.token()).json()
    assert [g["status"] for g in record["grants"]] == ["active"]


@pytest.mark.parametrize(
    "agency_id", ["dong_thap_police", "dong.thap", "-police", "police-", "a" * 64, "", 7]
)
def test_an_agency_id_that_is_not_a_slug_in_a_token_is_a_401(api: Api, agency_id: Any) -> None:
    r = api.client.get("/referral/referrals", headers=api.token(agency_id))
    assert_problem(r, 401, "unauthenticated")


def test_token_service_refuses_to_issue_for_an_agency_id_that_is_not_a_slug(
    sqlite_settings: Settings,
) -> None:
    tokens = TokenService(sqlite_settings)
    with pytest.raises(ValueError, match="lower-case slug"):
        tokens.issue(
            user_id="u", agency_id="Dong-Thap-Police", province="dong-thap", roles=[Role.AUDITOR]
        )


# -- agency ids in bodies ---------------------------------------------------------------------


def test_an_agency_id_that_is_not_a_slug_in_a_body_is_a_422_naming_the_field(api: Api) -> None:
    case_id = api.case()
    r = api.client.post(
        "/intake/cases",
        json={**RECEPTION, "receiving_agency": "Dong-Thap-Police"},
        headers=api.token(),
    )
    problem = assert_problem(r, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["receiving_agency"]

    grant = {**GRANT, "recipients": [{"agency_id": "hospital_1"}]}
    r = api.client.post(f"/consent/cases/{case_id}/grants", json=grant, headers=api.token())
    problem = assert_problem(r, 422, "invalid-request")
    assert problem["errors"][0]["field"] == "recipients.0.agency_id"

    parties = [
        {"agency": "dong-thap-police", "role": "from"},
        {"agency": "DT SWC", "role": "to"},
    ]
    for party in parties:
        party["capacity"] = "officer"
    r = api.client.post(
        f"/referral/cases/{case_id}/handovers", json={"parties": parties}, headers=api.token()
    )
    problem = assert_problem(r, 422, "invalid-request")
    assert problem["errors"][0]["field"] == "parties.1.agency"


# -- body size --------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_parsed(api: Api) -> None:
    needs = ["safety"] * (LIMIT // 8)  # about 80 KiB of JSON
    r = api.client.post("/intake/cases", json={**RECEPTION, "needs": needs}, headers=api.token())
    problem = assert_problem(r, 413, "request-too-large")
    assert problem["max_bytes"] == LIMIT


def test_a_chunked_body_over_the_limit_is_refused_with_413(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"route": "rescued", "x": "'
        yield b"a" * LIMIT
        yield b'"}'

    headers = {**api.token(), "Content-Type": "application/json"}
    r = api.client.post("/intake/cases", content=chunks(), headers=headers)
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_problem(r, 413, "request-too-large")


def test_a_chunked_body_within_the_limit_is_accepted(api: Api) -> None:
    import json

    def chunks() -> Iterator[bytes]:
        yield json.dumps(RECEPTION).encode()

    headers = {**api.token(), "Content-Type": "application/json"}
    r = api.client.post("/intake/cases", content=chunks(), headers=headers)
    assert r.status_code == 201, r.text


def test_the_limit_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_request_bytes == 1024 * 1024
    monkeypatch.setenv("KETNOI_MAX_REQUEST_BYTES", "2048")
    assert Settings().max_request_bytes == 2048


# -- lists ------------------------------------------------------------------------------------


def test_a_list_longer_than_its_vocabulary_is_a_422_naming_the_field(api: Api) -> None:
    case_id = api.case()
    needs = [n.value for n in UrgentNeed] * 2
    r = api.client.post(
        f"/intake/cases/{case_id}/needs-assessments", json={"needs": needs}, headers=api.token()
    )
    problem = assert_problem(r, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["needs"]
    assert str(len(UrgentNeed)) in problem["errors"][0]["message"]

    grant = {**GRANT, "categories": [c.value for c in DataCategory] + ["identity"]}
    r = api.client.post(f"/consent/cases/{case_id}/grants", json=grant, headers=api.token())
    problem = assert_problem(r, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["categories"]

    grant = {**GRANT, "recipients": [{"kind": k.value} for k in AgencyKind] * 2}
    r = api.client.post(f"/consent/cases/{case_id}/grants", json=grant, headers=api.token())
    problem = assert_problem(r, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["recipients"]


def test_repeats_in_a_list_of_words_are_stored_once(api: Api) -> None:
    case_id = api.case()
    needs = ["food", "safety", "food", "food"]
    r = api.client.post(
        f"/intake/cases/{case_id}/needs-assessments", json={"needs": needs}, headers=api.token()
    )
    assert r.status_code == 201, r.text
    case = api.client.get(f"/intake/cases/{case_id}", headers=api.token()).json()
    assert case["urgent_needs"] == ["food", "safety"]

    grant = {**GRANT, "categories": ["identity", "identity"], "purposes": ["service_provision"] * 2}
    r = api.client.post(f"/consent/cases/{case_id}/grants", json=grant, headers=api.token())
    assert r.status_code == 201, r.text
    record = api.client.get(f"/consent/cases/{case_id}", headers=api.token()).json()
    assert record["grants"][0]["categories"] == ["identity"]
    assert record["grants"][0]["purposes"] == ["service_provision"]


# -- the size of a 422 ------------------------------------------------------------------------


def test_a_huge_invalid_body_gets_a_bounded_422(api: Api) -> None:
    # Just under the body limit: a thousand unknown fields, a long key, a long bad value.
    unknown = {f"field-{n:05d}-{'x' * 10}": n for n in range(1000)}
    long_key = "k" * 20_000
    body = {**RECEPTION, **unknown, long_key: "Nguyễn Văn A", "route": "x" * 5000}
    r = api.client.post("/intake/cases", json=body, headers=api.token())
    problem = assert_problem(r, 422, "invalid-request")
    errors = problem["errors"]
    assert len(errors) == MAX_REPORTED_ERRORS
    assert problem["errors_omitted"] == 1000 + 2 - MAX_REPORTED_ERRORS
    assert all(len(e["field"]) <= MAX_FIELD_CHARS for e in errors)
    assert all(len(e["message"]) <= MAX_MESSAGE_CHARS for e in errors)
    assert f"and {problem['errors_omitted']} more errors" in problem["detail"]
    assert "Nguyễn Văn A" not in r.text
    assert "x" * 100 not in r.text
    assert len(r.content) < 8 * 1024


def test_a_long_unknown_key_is_clipped_in_the_field_path(api: Api) -> None:
    body = {**RECEPTION, "k" * 20_000: 1}
    r = api.client.post("/intake/cases", json=body, headers=api.token())
    problem = assert_problem(r, 422, "invalid-request")
    [error] = problem["errors"]
    assert error["field"].startswith("kkkk")
    assert error["field"].endswith("…")
    assert len(error["field"]) <= MAX_FIELD_CHARS
    assert problem["errors_omitted"] == 0
