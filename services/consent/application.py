"""The consent service: follows intake to know each case, and records the person's consent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from contracts.consent import Collection, ConsentGiver, Recipient, consent_record_id
from contracts.consent_decision import ConsentDecision, local_date
from contracts.envelope import AgencyRef, Event
from contracts.intake import (
    CaseClosed,
    CaseManagerAssigned,
    CaseReopened,
    PersonDetailsCorrected,
    PersonRegistered,
    ReceptionRecorded,
    StageChanged,
)
from contracts.vocabulary import CaseStage, DataCategory, Purpose
from services.consent.domain import (
    ConsentRecord,
    ConsentRecordNotFoundError,
    adult_on,
    estimated_adult_on,
)
from services.runtime.aggregate import CommandContext, utcnow
from services.runtime.application import Result
from services.runtime.follower import FollowingApplication, Processing

Scope = Callable[[ConsentRecord], None]


class ConsentService(FollowingApplication):
    """Consent records of cases; follows the intake log."""

    name = "consent"
    follows: ClassVar[dict[str, tuple[type[Event], ...]]] = {
        "intake": (
            ReceptionRecorded,
            CaseManagerAssigned,
            PersonRegistered,
            PersonDetailsCorrected,
            StageChanged,
            CaseClosed,
            CaseReopened,
        ),
    }

    # -- following intake ------------------------------------------------------------------

    def policy(self, upstream: str, event: Event, processing: Processing) -> None:
        # The upstream event's own time: replaying the log gives the same record.
        ctx = CommandContext(
            actor=event.actor,
            at=event.timestamp,
            caused_by=event.event_id,
            correlation_id=event.correlation_id,
        )
        if isinstance(event, ReceptionRecorded):
            record = ConsentRecord.open(
                ctx,
                case_id=event.originator_id,
                person_id=event.person_id,
                province=event.place.province,
                received_at=event.received_at,
                receiving_agency_id=event.receiving_agency.agency_id,
            )
            processing.collect_events(record)
            return
        record = self.load(ConsentRecord, consent_record_id(event.originator_id))
        if isinstance(event, PersonRegistered | PersonDetailsCorrected):
            details = event.details
            if details.date_of_birth is not None:
                turns_18 = adult_on(details.date_of_birth) if event.minor else None
                record.note_age(ctx, minor=event.minor, adult_on=turns_18, estimated=False)
            elif details.estimated_age is not None:
                assert record.received_at is not None
                received = local_date(record.received_at)
                turns_18 = estimated_adult_on(details.estimated_age, received)
                record.note_age(ctx, minor=event.minor, adult_on=turns_18, estimated=True)
            # Else no age to note: the person was erased before this service read the details
            # (they read as erased), and a follower must not stall on that.
        elif isinstance(event, CaseManagerAssigned):
            record.note_case_manager(ctx, event.agency.agency_id)
        elif isinstance(event, StageChanged):
            record.note_stage(ctx, event.to_stage)
        elif isinstance(event, CaseClosed):
            record.note_stage(ctx, CaseStage.CLOSED)
        elif isinstance(event, CaseReopened):
            record.note_stage(ctx, event.to_stage)
        processing.collect_events(record)

    # -- reading -------------------------------------------------------------------------

    def get_record(self, case_id: UUID) -> ConsentRecord:
        """A case's consent record; raises ConsentRecordNotFoundError."""
        try:
            return self.load(ConsentRecord, consent_record_id(case_id))
        except AggregateNotFoundError:
            raise ConsentRecordNotFoundError(case_id) from None

    def decide(
        self,
        case_id: UUID,
        *,
        recipient: AgencyRef,
        purpose: Purpose,
        categories: tuple[DataCategory, ...],
        at: datetime | None = None,
        scope: Scope | None = None,
    ) -> ConsentDecision:
        record = self.get_record(case_id)
        if scope is not None:
            scope(record)
        return record.decide(recipient, purpose, categories, at or utcnow())

    # -- commands ------------------------------------------------------------------------

    def _on_record(
        self,
        ctx: CommandContext,
        case_id: UUID,
        command: str,
        request: dict[str, Any],
        change: Callable[[ConsentRecord], dict[str, Any]],
        scope: Scope | None,
    ) -> Result:
        def run() -> tuple[list[Any], Result]:
            record = self.get_record(case_id)
            if scope is not None:
                scope(record)
            extra = change(record)
            return [record], {"case_id": str(case_id), "version": record.version, **extra}

        return self.execute(ctx, command, {"case_id": str(case_id), **request}, run)

    def grant(
        self,
        ctx: CommandContext,
        case_id: UUID,
        *,
        categories: tuple[DataCategory, ...],
        recipients: tuple[Recipient, ...],
        purposes: tuple[Purpose, ...],
        valid_from: datetime,
        valid_until: datetime,
        collection: Collection,
        given_by: ConsentGiver,
        child_views: str | None = None,
        scope: Scope | None = None,
    ) -> Result:
        request = {
            "categories": [c.value for c in categories],
            "recipients": [r.model_dump(mode="json") for r in recipients],
            "purposes": [p.value for p in purposes],
            "valid_from": valid_from.isoformat(),
            "valid_until": valid_until.isoformat(),
            "collection": collection.model_dump(mode="json"),
            "given_by": given_by.model_dump(mode="json"),
            "child_views": child_views,
        }

        def change(record: ConsentRecord) -> dict[str, Any]:
            grant_id = record.grant(
                ctx,
                categories=categories,
                recipients=recipients,
                purposes=purposes,
                valid_from=valid_from,
                valid_until=valid_until,
                collection=collection,
                given_by=given_by,
                child_views=child_views,
            )
            return {"grant_id": str(grant_id)}

        return self._on_record(ctx, case_id, "grant_consent", request, change, scope)

    def refuse(
        self,
        ctx: CommandContext,
        case_id: UUID,
        *,
        recipients: tuple[Recipient, ...],
        categories: tuple[DataCategory, ...] = (),
        purposes: tuple[Purpose, ...] = (),
        except_purposes: tuple[Purpose, ...] = (),
        statement: str | None = None,
        scope: Scope | None = None,
    ) -> Result:
        request = {
            "recipients": [r.model_dump(mode="json") for r in recipients],
            "categories": [c.value for c in categories],
            "purposes": [p.value for p in purposes],
            "except_purposes": [p.value for p in except_purposes],
            "statement": statement,
        }

        def change(record: ConsentRecord) -> dict[str, Any]:
            refusal_id = record.refuse(
                ctx,
                recipients=recipients,
                categories=categories,
                purposes=purposes,
                except_purposes=except_purposes,
                statement=statement,
            )
            return {"refusal_id": str(refusal_id)}

        return self._on_record(ctx, case_id, "refuse_consent", request, change, scope)

    def withdraw(
        self,
        ctx: CommandContext,
        case_id: UUID,
        grant_id: UUID,
        *,
        heard_by: AgencyRef,
        reason: str | None = None,
        scope: Scope | None = None,
    ) -> Result:
        request = {
            "grant_id": str(grant_id),
            "heard_by": heard_by.model_dump(mode="json"),
            "reason": reason,
        }

        def change(record: ConsentRecord) -> dict[str, Any]:
            record.withdraw(ctx, grant_id, heard_by, reason)
            return {"grant_id": str(grant_id)}

        return self._on_record(ctx, case_id, "withdraw_consent", request, change, scope)

    def renew(
        self,
        ctx: CommandContext,
        case_id: UUID,
        grant_id: UUID,
        *,
        valid_until: datetime,
        collection: Collection,
        scope: Scope | None = None,
    ) -> Result:
        request = {
            "grant_id": str(grant_id),
            "valid_until": valid_until.isoformat(),
            "collection": collection.model_dump(mode="json"),
        }

        def change(record: ConsentRecord) -> dict[str, Any]:
            record.renew(ctx, grant_id, valid_until, collection)
            return {"grant_id": str(grant_id)}

        return self._on_record(ctx, case_id, "renew_consent", request, change, scope)

    def lift_refusal(
        self,
        ctx: CommandContext,
        case_id: UUID,
        refusal_id: UUID,
        *,
        collection: Collection,
        scope: Scope | None = None,
    ) -> Result:
        request = {"refusal_id": str(refusal_id), "collection": collection.model_dump(mode="json")}

        def change(record: ConsentRecord) -> dict[str, Any]:
            record.lift_refusal(ctx, refusal_id, collection)
            return {"refusal_id": str(refusal_id)}

        return self._on_record(ctx, case_id, "lift_refusal", request, change, scope)
