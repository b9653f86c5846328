"""HTTP routes of the agency directory: administrators write, every signed-in user reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from contracts.directory import COUNTRY_PATTERN, AgencyContact, AgencyDetails
from contracts.envelope import AGENCY_ID_PATTERN
from contracts.vocabulary import AgencyKind, Role, ServiceType
from services.directory.application import DirectoryService
from services.directory.domain import Agency
from services.directory.hsds import export_organizations
from services.runtime.auth import CurrentPrincipal
from services.runtime.http import IdempotencyKey, command_context

WRITERS = (Role.ADMIN,)


async def directory_service(request: Request) -> DirectoryService:
    service: DirectoryService = request.app.state.directory
    return service


Directory = Annotated[DirectoryService, Depends(directory_service)]
AgencyIdPath = Annotated[
    str, Path(min_length=1, max_length=120, pattern=AGENCY_ID_PATTERN, description="agency id")
]
router = APIRouter(prefix="/directory", tags=["directory"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgencyUpdate(AgencyDetails):
    """An agency's details, replaced all at once."""


class AgencyCreate(AgencyUpdate):
    agency_id: str = Field(
        min_length=1,
        max_length=120,
        pattern=AGENCY_ID_PATTERN,
        description="a lower-case slug, e.g. dong-thap-police; never changes",
    )
    active: bool = True

    def details(self) -> AgencyDetails:
        return AgencyDetails.model_validate(self.model_dump(exclude={"agency_id", "active"}))


class StatusChange(Body):
    reason: str | None = Field(default=None, max_length=1000)


class AgencyResult(BaseModel):
    agency_id: str
    version: int
    active: bool
    changed: bool | None = None


class AgencyPublic(BaseModel):
    agency_id: str
    version: int
    active: bool
    kind: AgencyKind
    name_vi: str
    name_en: str
    country: str
    province: str
    district: str | None
    services: tuple[ServiceType, ...]
    contact: AgencyContact

    @classmethod
    def of(cls, agency: Agency) -> AgencyPublic:
        return cls(
            agency_id=agency.agency_id,
            version=agency.version,
            active=agency.active,
            **agency.current.model_dump(),
        )


@router.post(
    "/agencies",
    status_code=201,
    response_model=AgencyResult,
    summary="Register an agency (administrators)",
)
def register_agency(
    body: AgencyCreate,
    directory: Directory,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, WRITERS, idempotency_key)
    return directory.register_agency(ctx, body.agency_id, body.details(), active=body.active)


@router.get("/agencies", response_model=list[AgencyPublic], summary="List or search agencies")
def list_agencies(
    directory: Directory,
    _principal: CurrentPrincipal,
    province: Annotated[str | None, Query(max_length=60, description="province slug, or *")] = None,
    kind: AgencyKind | None = None,
    service: ServiceType | None = None,
    country: Annotated[str | None, Query(pattern=COUNTRY_PATTERN)] = None,
    active: bool | None = None,
) -> Any:
    found = directory.list_agencies(
        province=province, kind=kind, service=service, country=country, active=active
    )
    return [AgencyPublic.of(a) for a in found]


@router.get("/agencies/{agency_id}", response_model=AgencyPublic, summary="Read an agency")
def read_agency(agency_id: AgencyIdPath, directory: Directory, _principal: CurrentPrincipal) -> Any:
    return AgencyPublic.of(directory.get_agency(agency_id))


@router.put(
    "/agencies/{agency_id}",
    response_model=AgencyResult,
    summary="Change an agency's details (administrators)",
)
def change_agency(
    agency_id: AgencyIdPath,
    body: AgencyUpdate,
    directory: Directory,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, WRITERS, idempotency_key)
    details = AgencyDetails.model_validate(body.model_dump())
    return directory.change_details(ctx, agency_id, details)


@router.post(
    "/agencies/{agency_id}/deactivation",
    status_code=201,
    response_model=AgencyResult,
    summary="Deactivate an agency: its users are refused and nobody may name it",
)
def deactivate_agency(
    agency_id: AgencyIdPath,
    body: StatusChange,
    directory: Directory,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, WRITERS, idempotency_key)
    return directory.deactivate(ctx, agency_id, body.reason)


@router.post(
    "/agencies/{agency_id}/reactivation",
    status_code=201,
    response_model=AgencyResult,
    summary="Reactivate an agency",
)
def reactivate_agency(
    agency_id: AgencyIdPath,
    body: StatusChange,
    directory: Directory,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, WRITERS, idempotency_key)
    return directory.reactivate(ctx, agency_id, body.reason)


@router.get(
    "/hsds/organizations",
    summary="The directory in Open Referral HSDS 3.0 (organizations with their services)",
)
def hsds_organizations(directory: Directory, _principal: CurrentPrincipal) -> dict[str, Any]:
    return export_organizations(directory.list_agencies())
