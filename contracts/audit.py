"""Events of the audit log: every read of personal data, who made it and on what basis.

A read is a fact of its own, stored before the data leaves the service, in a log of its own
(``audit``). It names the case and, where known, the person by id, and the categories read;
it never holds a personal value. Each read is its own originator (a random id, version 1).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import Field, model_validator

from contracts.envelope import Event
from contracts.personal import ERASED_TEXT, Personal
from contracts.vocabulary import DataCategory

# A read path's stable name: dotted lower-case words, e.g. "intake.case", "projections.replay".
READ_PATH_PATTERN = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"


class ReadBasis(StrEnum):
    """Why the reader was allowed to see the data."""

    GRANT = "grant"  # consent grant(s) in force allowed it
    OVERRIDE = "override"  # an approved emergency override (vital interest)
    BREAK_GLASS = "break_glass"  # an emergency read with a reason, flagged for review
    OWN_CASE = "own_case"  # the reader's agency holds the case (receiving or case manager's)
    AUDIT = "audit"  # an auditor's replay or check
    # A family member referred on the person's case consented, for themselves, to this
    # recipient reading their details (contracts.referral.FamilyMemberConsent).
    FAMILY_MEMBER_CONSENT = "family_member_consent"


class PersonalDataRead(Event):
    """Someone read these categories of one case's personal data, on this basis.

    The envelope's ``actor`` is the reader and ``correlation_id`` the request. ``grant_ids``
    go with a ``grant`` basis only, ``override_id`` with ``override`` only and ``reason`` with
    ``break_glass`` only, each required there.
    """

    event_type = "org.ketnoi.audit.personal_data_read"

    case_id: UUID
    person_id: UUID | None = None
    categories: tuple[DataCategory, ...] = Field(min_length=1, max_length=len(DataCategory))
    basis: ReadBasis
    grant_ids: tuple[UUID, ...] = Field(default=(), max_length=100)
    override_id: UUID | None = None
    # A break-glass reason tends to describe the person: encrypted when person_id is known,
    # and read as erased text once the person is erased (a break-glass read keeps a reason).
    reason: Annotated[str | None, Personal(erased=ERASED_TEXT)] = Field(
        default=None, max_length=1000
    )
    what: str = Field(
        max_length=80, pattern=READ_PATH_PATTERN, description="the read path, e.g. intake.case"
    )

    @model_validator(mode="after")
    def _basis_fits(self) -> PersonalDataRead:
        if len(set(self.categories)) != len(self.categories):
            msg = "name each category once"
            raise ValueError(msg)
        if len(set(self.grant_ids)) != len(self.grant_ids):
            msg = "name each grant once"
            raise ValueError(msg)
        basis = self.basis
        if (basis is ReadBasis.GRANT) != bool(self.grant_ids):
            msg = "grant_ids are required with a grant basis, and only with it"
            raise ValueError(msg)
        if (basis is ReadBasis.OVERRIDE) != (self.override_id is not None):
            msg = "override_id is required with an override basis, and only with it"
            raise ValueError(msg)
        if basis is ReadBasis.BREAK_GLASS:
            wrong = self.reason is None or not self.reason.strip()
        else:
            wrong = self.reason is not None
        if wrong:
            msg = "a reason is required with a break_glass basis, and only with it"
            raise ValueError(msg)
        return self


AUDIT_EVENTS: tuple[type[Event], ...] = (PersonalDataRead,)
