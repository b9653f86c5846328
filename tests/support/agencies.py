"""The agencies the tests name, registered in the directory of a test's platform.

Tokens and referrals name agencies by id, and the directory alone says what they are; a test
that issues a token or names an agency registers the agencies it uses first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from contracts.directory import PLATFORM_AGENCY_ID, AgencyDetails
from contracts.envelope import Actor, AgencyRef
from contracts.vocabulary import AgencyKind, Role
from services.cli.wiring import Platform
from services.directory.application import DirectoryService
from services.directory.domain import Agency
from services.runtime.aggregate import CommandContext
from services.runtime.persistence import application_env
from services.runtime.settings import Settings

K = AgencyKind
# id -> (kind, province, country)
TEST_AGENCIES: dict[str, tuple[AgencyKind, str, str]] = {
    "dong-thap-police": (K.POLICE, "dong-thap", "VN"),
    "dong-thap-border-guard": (K.BORDER_GUARD, "dong-thap", "VN"),
    "dong-thap-swc": (K.SOCIAL_WORK_CENTRE, "dong-thap", "VN"),
    "dong-thap-social-work-centre": (K.SOCIAL_WORK_CENTRE, "dong-thap", "VN"),
    "dong-thap-hospital": (K.HOSPITAL, "dong-thap", "VN"),
    "dt-police": (K.POLICE, "dong-thap", "VN"),
    "dt-border": (K.BORDER_GUARD, "dong-thap", "VN"),
    "dt-border-guard": (K.BORDER_GUARD, "dong-thap", "VN"),
    "dt-swc": (K.SOCIAL_WORK_CENTRE, "dong-thap", "VN"),
    "dt-hospital": (K.HOSPITAL, "dong-thap", "VN"),
    "dt-commune": (K.LOCAL_AUTHORITY, "dong-thap", "VN"),
    "dt-cpa": (K.CHILD_PROTECTION_AUTHORITY, "dong-thap", "VN"),
    "dt-shelter": (K.NGO, "dong-thap", "VN"),
    "dt-dolisa": (K.LOCAL_AUTHORITY, "dong-thap", "VN"),
    "ngo-1": (K.NGO, "dong-thap", "VN"),
    **{f"dt-swc-{n}": (K.SOCIAL_WORK_CENTRE, "dong-thap", "VN") for n in (1, 2)},
    **{f"dt-hospital-{n}": (K.HOSPITAL, "dong-thap", "VN") for n in (1, 2, 3)},
    "lao-cai-border-guard": (K.BORDER_GUARD, "lao-cai", "VN"),
    "lc-border-guard": (K.BORDER_GUARD, "lao-cai", "VN"),
    "lc-police": (K.POLICE, "lao-cai", "VN"),
    "lc-swc": (K.SOCIAL_WORK_CENTRE, "lao-cai", "VN"),
    "lc-hospital": (K.HOSPITAL, "lao-cai", "VN"),
    "lc-school": (K.SCHOOL, "lao-cai", "VN"),
    "hcm-police": (K.POLICE, "ho-chi-minh", "VN"),
    "cn-border": (K.FOREIGN_AUTHORITY, "yunnan", "CN"),
    "cn-border-authority": (K.FOREIGN_AUTHORITY, "yunnan", "CN"),
    "kh-police": (K.FOREIGN_AUTHORITY, "phnom-penh", "KH"),
    "national-inspectorate": (K.LOCAL_AUTHORITY, "*", "VN"),
    # Agencies with no part in the tests' cases, for the access policy's tests.
    "dong-thap-police-2": (K.POLICE, "dong-thap", "VN"),
    "dong-thap-dolisa": (K.LOCAL_AUTHORITY, "dong-thap", "VN"),
    "lao-cai-dolisa": (K.LOCAL_AUTHORITY, "lao-cai", "VN"),
    "lao-cai-police": (K.POLICE, "lao-cai", "VN"),
    "lao-cai-swc": (K.SOCIAL_WORK_CENTRE, "lao-cai", "VN"),
    "lao-cai-hospital": (K.HOSPITAL, "lao-cai", "VN"),
    "lc-dolisa": (K.LOCAL_AUTHORITY, "lao-cai", "VN"),
    "ministry": (K.LOCAL_AUTHORITY, "*", "VN"),
}
ADMIN = Actor(user_id="test-setup", agency_id=PLATFORM_AGENCY_ID, role=Role.ADMIN)


def details_of(agency_id: str) -> AgencyDetails:
    kind, province, country = TEST_AGENCIES[agency_id]
    return AgencyDetails(
        kind=kind,
        name_vi=f"Cơ quan {agency_id}",
        name_en=f"Agency {agency_id}",
        country=country,
        province=province,
    )


def ref(agency_id: str) -> AgencyRef:
    return AgencyRef(agency_id=agency_id, kind=TEST_AGENCIES[agency_id][0])


def register(directory: DirectoryService, agencies: Mapping[str, AgencyDetails]) -> None:
    """Register the agencies the directory does not hold yet, in one transaction."""
    ctx = CommandContext(actor=ADMIN)
    known = {a.agency_id for a in directory.list_agencies()}
    new = [Agency.register(ctx, i, d) for i, d in agencies.items() if i not in known]
    if new:
        directory.save(*new)


def register_agencies(
    where: Platform | Settings, agency_ids: Iterable[str] = tuple(TEST_AGENCIES)
) -> None:
    """Register test agencies (all of them by default) in the directory of a platform, or of
    the settings' store when the platform runs no directory."""
    wanted = {i: details_of(i) for i in agency_ids}
    if isinstance(where, Platform) and "directory" in where.apps:
        register(where.directory, wanted)
        return
    settings = where.settings if isinstance(where, Platform) else where
    # A connection is enough for a few registrations (the pool would open ten at once).
    small = settings.model_copy(update={"pg_pool_size": 1, "pg_max_overflow": 0})
    directory = DirectoryService(env=application_env(small, "directory"))
    try:
        register(directory, wanted)
    finally:
        directory.close()
