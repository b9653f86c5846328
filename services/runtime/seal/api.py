"""The seal on the API, for auditors: the latest checkpoints, a verification of every log
now, the inclusion proof of an event, and the consistency proof between two checkpoints of a
log. None of it holds personal data."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from contracts.vocabulary import Role
from services.runtime.auth import CurrentPrincipal
from services.runtime.errors import NotFoundError
from services.runtime.seal.keys import seal_signer
from services.runtime.seal.operations import (
    SealOperationError,
    latest_checkpoints,
    prove,
    prove_consistency,
    verify_report,
)
from services.runtime.settings import Settings

router = APIRouter(prefix="/seal", tags=["seal"])


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CurrentSettings = Annotated[Settings, Depends(_settings)]


class CheckpointPublic(BaseModel):
    log: str
    size: int
    checkpoint: str | None


class LogVerification(BaseModel):
    log: str
    ok: bool
    size: int
    checkpoints: int
    checkpoints_verified: int
    problems: list[str]
    last_checkpoint: str | None


@router.get("/checkpoints", summary="The latest signed checkpoint of every log (auditors)")
def checkpoints(settings: CurrentSettings, principal: CurrentPrincipal) -> list[CheckpointPublic]:
    principal.require(Role.AUDITOR)
    return [
        CheckpointPublic(log=log, size=size, checkpoint=text)
        for log, size, text in latest_checkpoints(settings)
    ]


@router.post("/verify", summary="Recompute every log's tree and check its checkpoints (auditors)")
def verify(settings: CurrentSettings, principal: CurrentPrincipal) -> list[LogVerification]:
    principal.require(Role.AUDITOR)
    reports = verify_report(settings, [seal_signer(settings).verifier])
    return [
        LogVerification(
            log=r.log,
            ok=r.ok,
            size=r.size,
            checkpoints=r.checkpoints,
            checkpoints_verified=r.checkpoints_verified,
            problems=[p.describe() for p in r.problems[:100]],
            last_checkpoint=r.last_checkpoint,
        )
        for r in reports
    ]


@router.get(
    "/proofs/{event_id}", summary="An event's inclusion proof against a checkpoint (auditors)"
)
def proof(event_id: UUID, settings: CurrentSettings, principal: CurrentPrincipal) -> dict[str, Any]:
    principal.require(Role.AUDITOR)
    try:
        return prove(settings, event_id).as_json()
    except SealOperationError as exc:
        raise NotFoundError(str(exc)) from None


@router.get(
    "/consistency/{log}",
    summary="The proof that a later checkpoint of a log extends an earlier one (auditors)",
)
def consistency(
    log: str,
    settings: CurrentSettings,
    principal: CurrentPrincipal,
    old: Annotated[int, Query(ge=1, description="The size of the earlier checkpoint.")],
    new: Annotated[
        int | None, Query(ge=1, description="The size of the later one (default: latest).")
    ] = None,
) -> dict[str, Any]:
    principal.require(Role.AUDITOR)
    try:
        return prove_consistency(settings, log, old, new).as_json()
    except SealOperationError as exc:
        raise NotFoundError(str(exc)) from None
