"""The access gate: every service asks the one policy (``contracts.access_policy``) through
these few functions, and every read of a person's data is recorded before it is returned.

Services pass in the ties their own log knows and the error that says "no such case" in
their words; the gate turns the policy's answer into that 404 (the case does not exist for
this principal), a 403 (it does, and this is not theirs to do), or the role to act in.

A request's reads are stored one by one as they are made, or, in a request that depends on
``reads_recorded_together`` (every web page), together in one write once the route has
read and before its answer leaves; either way nothing is sent that was read without its record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

from fastapi import Request

from contracts.access_policy import RULES, Action, CaseTies, Sight, permits
from contracts.envelope import Actor
from contracts.vocabulary import Role
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError, PermissionDeniedError


def roles_for(action: Action) -> tuple[Role, ...]:
    """The roles that may perform ``action`` at all, in the order a principal acts in them."""
    return tuple(r for r in Role if r in RULES[action].roles)


def check(
    principal: Principal,
    ties: CaseTies,
    action: Action,
    not_found: Callable[[], NotFoundError],
) -> Role:
    """The role ``principal`` acts in. Raises PermissionDeniedError when the principal's roles
    may never do this (whatever the case) or the case is theirs to see but not to change, and
    ``not_found()`` when the case does not exist for them."""
    permission = permits(principal.asker, ties, action)
    if permission.allowed:
        assert permission.role is not None
        return permission.role
    if permission.by_role or permission.visible:
        raise PermissionDeniedError(permission.reason)
    raise not_found()


def record_read(
    request: Request,
    principal: Principal,
    sight: Sight,
    *,
    case_id: UUID,
    what: str,
    person_id: UUID | None = None,
    reason: str | None = None,
) -> None:
    """Record a read of personal data durably, before the response leaves; nothing is
    recorded when the sight holds no category (a read of progress only).

    In a request whose reads are recorded together (``reads_recorded_together``), the read
    is added to the request's batch, stored with the others before the answer leaves."""
    if sight.basis is None or not sight.categories:
        return
    assert sight.role is not None
    audit: Any = request.app.state.read_audit
    audit.record(
        actor=Actor(user_id=principal.user_id, agency_id=principal.agency_id, role=sight.role),
        case_id=case_id,
        categories=sorted(sight.categories),
        basis=sight.basis,
        what=what,
        person_id=person_id,
        grant_ids=sight.grant_ids,
        override_id=sight.override_id,
        reason=reason,
        correlation_id=getattr(request.state, "correlation_id", None),
        batch=getattr(request.state, "read_batch", None),
    )


def flush_reads(request: Request) -> None:
    """Store now the reads this request has made so far, for a route that goes on to read the
    audit log itself (the person's copy lists its own read). Raises ReadAuditUnavailableError
    when they cannot be stored."""
    batch = getattr(request.state, "read_batch", None)
    if batch is not None:
        batch.flush()


def reads_recorded_together(request: Request) -> Iterator[None]:
    """A route dependency (``scope="function"``): the route's reads of personal data are
    stored together, in one write of the read audit, when the route returns and before its
    answer is sent. When they cannot be stored the answer is not sent: the route's exit
    raises ReadAuditUnavailableError (503) instead. Reads made before a route failed are
    stored too, erring on the side of the record."""
    audit: Any = getattr(request.app.state, "read_audit", None)
    if audit is None:
        yield
        return
    batch = audit.batch()
    request.state.read_batch = batch
    try:
        yield
    finally:
        request.state.read_batch = None
        batch.flush()
