"""HTTP routes for forgetting a person: one person asks for the erasure, another approves it."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request

from contracts.access_policy import Action
from contracts.erasure import ErasureReason
from services.intake.api import Body, CommandResult, Intake, allowed
from services.runtime.access import roles_for
from services.runtime.auth import CurrentPrincipal
from services.runtime.http import IdempotencyKey, command_context

erasure = APIRouter(prefix="/intake/cases/{case_id}/erasure", tags=["intake: forgetting"])


class ErasureCreate(Body):
    reason: ErasureReason


class ErasureRequestedPublic(CommandResult):
    request_id: UUID


class ErasedPublic(CommandResult):
    erased: bool


@erasure.post(
    "",
    status_code=201,
    response_model=ErasureRequestedPublic,
    summary="Ask for the erasure of the case's person (a second person approves it)",
)
def request_erasure(
    case_id: UUID,
    body: ErasureCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """The person asked to be forgotten, the retention period ran out, or the law requires
    it. Nothing is erased until another person approves."""
    ctx = command_context(request, principal, roles_for(Action.REQUEST_ERASURE), idempotency_key)
    return intake.request_erasure(
        ctx, case_id, body.reason, scope=allowed(principal, Action.REQUEST_ERASURE)
    )


@erasure.post(
    "/approval",
    response_model=ErasedPublic,
    summary="Approve an erasure asked for by someone else: the person's data key is destroyed",
)
def approve_erasure(
    case_id: UUID,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Destroys the person's data key: nothing personal about them reads any more, in any
    log, read model or export, and every agency their data went to is told on its feed.
    Irreversible. Refused (409) to the person who asked for it."""
    ctx = command_context(request, principal, roles_for(Action.APPROVE_ERASURE), idempotency_key)
    return intake.approve_erasure(ctx, case_id, scope=allowed(principal, Action.APPROVE_ERASURE))
