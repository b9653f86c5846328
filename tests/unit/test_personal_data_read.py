"""The read event's rules: a basis and the fields it needs go together, nothing else does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import ValidationError

from contracts.audit import PersonalDataRead, ReadBasis
from contracts.envelope import Actor
from contracts.vocabulary import DataCategory, Role
from services.runtime.auth import TokenService
from services.runtime.http import create_app
from services.runtime.read_audit import ReadAuditUnavailableError
from services.runtime.settings import Settings

ACTOR = Actor(user_id="cw-1", agency_id="dong-thap-swc", role=Role.CASE_MANAGER)


def read(**fields: Any) -> PersonalDataRead:
    base: dict[str, Any] = {
        "originator_id": uuid4(),
        "originator_version": 1,
        "timestamp": datetime(2026, 3, 1, tzinfo=UTC),
        "actor": ACTOR,
        "case_id": uuid4(),
        "categories": (DataCategory.IDENTITY,),
        "basis": ReadBasis.OWN_CASE,
        "what": "intake.case",
    }
    return PersonalDataRead(**{**base, **fields})


def test_each_basis_with_what_it_needs_is_accepted() -> None:
    assert read().basis is ReadBasis.OWN_CASE
    assert read(basis=ReadBasis.AUDIT, what="projections.replay").basis is ReadBasis.AUDIT
    grant = uuid4()
    assert read(basis=ReadBasis.GRANT, grant_ids=(grant,)).grant_ids == (grant,)
    override = uuid4()
    assert read(basis=ReadBasis.OVERRIDE, override_id=override).override_id == override
    glass = read(basis=ReadBasis.BREAK_GLASS, reason="unconscious at the border post")
    assert glass.reason == "unconscious at the border post"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"basis": ReadBasis.BREAK_GLASS}, "reason is required"),
        ({"basis": ReadBasis.BREAK_GLASS, "reason": "   "}, "reason is required"),
        ({"reason": "just looking"}, "reason is required with a break_glass basis, and only"),
        ({"basis": ReadBasis.GRANT}, "grant_ids are required"),
        ({"grant_ids": (uuid4(),)}, "grant_ids are required with a grant basis, and only"),
        ({"basis": ReadBasis.OVERRIDE}, "override_id is required"),
        ({"override_id": uuid4()}, "override_id is required with an override basis, and only"),
        ({"categories": ()}, "at least 1 item"),
        ({"categories": (DataCategory.HEALTH, DataCategory.HEALTH)}, "each category once"),
        ({"what": "Intake case"}, "pattern"),
        ({"what": "intake"}, "pattern"),
        ({"basis": ReadBasis.BREAK_GLASS, "reason": "x" * 1001}, "at most 1000"),
    ],
)
def test_a_basis_without_its_fields_or_with_others_is_refused(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        read(**fields)


def test_an_unrecordable_read_is_a_503_problem_with_retry_after(tmp_path: Any) -> None:
    router = APIRouter()

    @router.get("/data")
    def data() -> None:
        raise ReadAuditUnavailableError()

    settings = Settings(database_url=None, data_dir=tmp_path)
    client = TestClient(create_app(title="t", routers=[router], tokens=TokenService(settings)))
    response = client.get("/data")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:ketnoi:problem:read-audit-unavailable"
    assert "Try again" in body["detail"]
