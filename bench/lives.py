"""The steps of a case's life as the services' aggregates take them, shared by the benches.

``bench/history.py`` (a realistic national history, random but deterministic) and
``bench/rebuild_rate.py`` (one fixed shape of life, many times) build the same aggregates:
``Case``, ``ConsentRecord``, ``CaseFile``, ``Referral`` and ``Handover``. Each step here is
one or a few of those aggregates' own commands with the parts both benches fix (the person's
nationality and language, who a grant covers and for what, a referral's purpose and
deadlines, the parties of the reception handover); what varies (the instant and the actor of
each step, the province, the service) is the caller's. Each ``ctx`` argument is used in
order, so a caller whose contexts move a clock keeps its clock.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from contracts.consent import (
    Collection,
    ConsentGiver,
    GiverKind,
    Recipient,
    RecipientGroup,
)
from contracts.envelope import AgencyRef
from contracts.intake import PersonDetails
from contracts.referral import HandoverKind, HandoverParty, PartyRole, Urgency
from contracts.vocabulary import DataCategory, Purpose, ServiceType, Sex
from services.consent.domain import ConsentRecord
from services.intake.domain import Case
from services.referral.domain import CaseFile, Handover, Referral
from services.referral.settings import DEFAULT_DEADLINES, OTHERWISE
from services.runtime.aggregate import CommandContext


def register_person(case: Case, ctx: CommandContext, n: int, sex: Sex, age: int) -> None:
    """The person of case ``n``: named ``Person n`` (the name is what erasure and the
    encryption of personal fields act on), Vietnamese."""
    case.register_person(
        ctx,
        PersonDetails(
            full_name=f"Person {n}",
            sex=sex,
            estimated_age=age,
            nationality="VN",
            languages=("vi",),
        ),
    )


def open_consent(
    ctx: CommandContext,
    age_ctx: CommandContext,
    case: Case,
    *,
    province: str,
    received_at: datetime,
    receiving_agency_id: str,
) -> ConsentRecord:
    """The consent record the consent service opens for a new case, the person's age noted
    (an adult, by estimate)."""
    record = ConsentRecord.open(
        ctx,
        case_id=case.id,
        person_id=case.person_id,
        province=province,
        received_at=received_at,
        receiving_agency_id=receiving_agency_id,
    )
    record.note_age(age_ctx, minor=False, adult_on=None, estimated=True)
    return record


def grant(
    record: ConsentRecord,
    ctx: CommandContext,
    *,
    categories: tuple[DataCategory, ...],
    valid_from: datetime,
    valid_until: datetime,
    collection: Collection,
) -> UUID:
    """The person's own consent to share ``categories`` with any agency, for services and
    statistics; returns the grant (what a withdrawal names)."""
    return record.grant(
        ctx,
        categories=categories,
        recipients=(Recipient(group=RecipientGroup.ANY),),
        purposes=(Purpose.SERVICE_PROVISION, Purpose.STATISTICS),
        valid_from=valid_from,
        valid_until=valid_until,
        collection=collection,
        given_by=ConsentGiver(kind=GiverKind.PERSON),
        child_views=None,
    )


def case_file(
    ctx: CommandContext,
    facts_ctx: CommandContext,
    consent_ctx: CommandContext,
    case: Case,
    record: ConsentRecord,
    *,
    n: int,
    province: str,
    receiving_agency_id: str | None = None,
) -> CaseFile:
    """The referral service's copy of the case: opened, the person's name noted, and every
    consent event so far noted as the referral service notes what it follows."""
    file = CaseFile.open(ctx, case.id, case.person_id, province, receiving_agency_id)
    file.note_facts(facts_ctx, DataCategory.IDENTITY, {"full_name": f"Person {n}"})
    for event in record.history:
        file.note_consent(consent_ctx, event)
    return file


def refer(
    ctx: CommandContext,
    file: CaseFile,
    *,
    from_agency: AgencyRef,
    to_agency: AgencyRef,
    service: ServiceType,
    urgency: Urgency,
) -> Referral:
    """A referral for a service, sharing the person's identity, with the service's default
    deadlines."""
    return Referral.create(
        ctx,
        file,
        from_agency=from_agency,
        to_agency=to_agency,
        service_type=service,
        urgency=urgency,
        purpose=Purpose.SERVICE_PROVISION,
        categories=(DataCategory.IDENTITY,),
        note=None,
        deadlines=DEFAULT_DEADLINES.get(service, OTHERWISE),
    )


def reception_handover(
    ctx: CommandContext,
    file: CaseFile,
    *,
    police: AgencyRef,
    swc: AgencyRef,
    border: AgencyRef,
) -> Handover:
    """The handover at reception: the police hand the person to the social work centre, the
    border guard witnesses."""
    return Handover.start(
        ctx,
        file,
        kind=HandoverKind.RECEPTION,
        parties=(
            HandoverParty(agency=police, role=PartyRole.FROM, capacity="police"),
            HandoverParty(agency=swc, role=PartyRole.TO, capacity="social worker"),
            HandoverParty(agency=border, role=PartyRole.WITNESS, capacity="border guard"),
        ),
    )
