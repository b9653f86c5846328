"""Register the agencies a benchmark names, so that the directory knows them."""

from __future__ import annotations

from collections.abc import Iterable

from contracts.directory import PLATFORM_AGENCY_ID, AgencyDetails
from contracts.envelope import Actor, AgencyRef
from contracts.vocabulary import Role
from services.directory.application import DirectoryService
from services.runtime.aggregate import CommandContext
from services.runtime.persistence import application_env
from services.runtime.settings import Settings

BENCH = Actor(user_id="bench-setup", agency_id=PLATFORM_AGENCY_ID, role=Role.ADMIN)


def register_agencies(settings: Settings, agencies: Iterable[AgencyRef], province: str) -> None:
    directory = DirectoryService(env=application_env(settings, "directory"))
    try:
        for agency in agencies:
            details = AgencyDetails(
                kind=agency.kind,
                name_vi=agency.agency_id,
                name_en=agency.agency_id,
                country="VN",
                province=province,
            )
            directory.ensure(CommandContext(actor=BENCH), agency.agency_id, details)
    finally:
        directory.close()
