"""The shared vocabulary of Ketnoi: the words every service and agency agrees on.

Values are stable, lower-case identifiers: they are stored in events and sent to agencies,
so renaming one is a contract change. Vietnamese terms for the UI live beside the enums.
"""

from __future__ import annotations

from collections.abc import Hashable
from enum import StrEnum
from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field


class AgencyKind(StrEnum):
    """Kinds of agency that take part in a referral (DOMAIN.md, "Who uses the platform")."""

    POLICE = "police"  # Công an
    BORDER_GUARD = "border_guard"  # Bộ đội Biên phòng
    SOCIAL_WORK_CENTRE = "social_work_centre"  # Trung tâm Công tác xã hội
    LEGAL_AID_CENTRE = "legal_aid_centre"  # Trung tâm Trợ giúp pháp lý nhà nước
    HOSPITAL = "hospital"  # Bệnh viện, Y tế
    WOMENS_UNION = "womens_union"  # Hội Liên hiệp Phụ nữ
    VOCATIONAL_TRAINING_CENTRE = "vocational_training_centre"  # Trung tâm Giáo dục nghề nghiệp
    SCHOOL = "school"
    EMPLOYER = "employer"
    NGO = "ngo"
    HOTLINE_111 = "hotline_111"  # Tổng đài 111
    CHILD_PROTECTION_AUTHORITY = "child_protection_authority"
    LOCAL_AUTHORITY = "local_authority"  # local officers present at a handover
    FOREIGN_AUTHORITY = "foreign_authority"  # at a border handover


class ServiceType(StrEnum):
    """Services a person may be referred to (DOMAIN.md, stages 1-5)."""

    SAFE_ACCOMMODATION = "safe_accommodation"
    HEALTH_CHECK = "health_check"
    MEDICAL_CARE = "medical_care"
    PSYCHOLOGICAL_FIRST_AID = "psychological_first_aid"
    MENTAL_HEALTH_CARE = "mental_health_care"
    LEGAL_AID = "legal_aid"
    INTERPRETATION = "interpretation"
    IDENTITY_DOCUMENTS = "identity_documents"
    LONG_TERM_HOUSING = "long_term_housing"
    EDUCATION = "education"
    VOCATIONAL_TRAINING = "vocational_training"
    JOB_PLACEMENT = "job_placement"
    LIFE_SKILLS = "life_skills"
    PEER_SUPPORT = "peer_support"
    FAMILY_REUNIFICATION = "family_reunification"
    FOLLOW_UP = "follow_up"


class DataCategory(StrEnum):
    """Categories of personal data that consent is given for, one by one."""

    IDENTITY = "identity"
    CONTACT = "contact"
    HEALTH = "health"
    PSYCHOSOCIAL = "psychosocial"
    LEGAL_CASE = "legal_case"
    LOCATION = "location"
    FAMILY = "family"
    NEEDS = "needs"
    RISK = "risk"


class Purpose(StrEnum):
    """Purposes for which data may be shared."""

    SERVICE_PROVISION = "service_provision"
    CASE_COORDINATION = "case_coordination"
    CRIMINAL_PROCEEDINGS = "criminal_proceedings"
    STATISTICS = "statistics"
    RESEARCH = "research"


class Role(StrEnum):
    """Roles carried in access tokens; every decision is made from these on the server."""

    INTAKE_OFFICER = "intake_officer"  # cán bộ tiếp nhận
    CASE_MANAGER = "case_manager"  # cán bộ quản lý ca
    COORDINATOR = "coordinator"  # điều phối viên cấp tỉnh
    AGENCY_STAFF = "agency_staff"  # cán bộ cơ quan tiếp nhận
    HEALTH_WORKER = "health_worker"  # cán bộ y tế: doctors, nurses, psychologists
    AUDITOR = "auditor"  # kiểm toán viên
    ADMIN = "admin"


class CaseStage(StrEnum):
    """Stages of a case (DOMAIN.md, "The life of a case")."""

    RECEPTION = "reception"  # tiếp nhận
    CRISIS = "crisis"  # ổn định ban đầu
    TRANSITIONAL = "transitional"
    EXTERNAL_SUPPORT = "external_support"
    CLOSED = "closed"


class ArrivalRoute(StrEnum):
    """How the person came to be received."""

    RESCUED = "rescued"
    RETURNED_FROM_ABROAD = "returned_from_abroad"
    BORDER_HANDOVER = "border_handover"
    HOTLINE = "hotline"
    SELF_REFERRAL = "self_referral"


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    NOT_STATED = "not_stated"


class IdentityDocumentStatus(StrEnum):
    HAS_DOCUMENTS = "has_documents"
    DOCUMENTS_HELD_BY_OTHERS = "documents_held_by_others"
    LOST_OR_DESTROYED = "lost_or_destroyed"
    NEVER_HAD = "never_had"
    UNKNOWN = "unknown"


class UrgentNeed(StrEnum):
    """Needs found by the rapid needs assessment at reception."""

    SAFETY = "safety"
    SHELTER_TONIGHT = "shelter_tonight"
    MEDICAL_CHECK = "medical_check"
    PSYCHOLOGICAL_FIRST_AID = "psychological_first_aid"
    FOOD = "food"
    CLOTHING = "clothing"
    PHONE = "phone"
    INTERPRETATION = "interpretation"
    IDENTITY_DOCUMENTS = "identity_documents"
    LEGAL_ADVICE_CRIMINAL = "legal_advice_criminal"
    LEGAL_ADVICE_IMMIGRATION = "legal_advice_immigration"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RiskSubject(StrEnum):
    """Who is at risk (seed 002: risk to the person, the family, others)."""

    PERSON = "person"
    FAMILY = "family"
    OTHERS = "others"


class ContactMode(StrEnum):
    """Ways to follow up with the person; some refuse home visits (stigma in the village)."""

    PHONE = "phone"
    MESSAGING = "messaging"
    MEETING_NEARBY_TOWN = "meeting_nearby_town"
    OFFICE_VISIT = "office_visit"
    HOME_VISIT = "home_visit"
    THROUGH_TRUSTED_PERSON = "through_trusted_person"


class ClosureReason(StrEnum):
    SAFE_INDEPENDENCE = "safe_independence"
    GOALS_MET = "goals_met"
    PERSON_DECLINED_FURTHER_SUPPORT = "person_declined_further_support"
    TRANSFERRED_ELSEWHERE = "transferred_elsewhere"
    LOST_CONTACT = "lost_contact"
    DECEASED = "deceased"
    OTHER = "other"


class ReopeningReason(StrEnum):
    NEW_CRISIS = "new_crisis"
    SHORT_TERM_SUPPORT = "short_term_support"
    REFERRAL_ELSEWHERE = "referral_elsewhere"
    RE_TRAFFICKED = "re_trafficked"


class MentalState(StrEnum):
    """The initial mental state, as a psychological officer judges it at or after reception."""

    STABLE = "stable"
    ANXIOUS = "anxious"  # confused, fearful, but oriented
    DISTRESSED = "distressed"  # needs psychological support soon
    ACUTE_CRISIS = "acute_crisis"  # needs support now (e.g. within 24 hours)


class ReturnSafety(StrEnum):
    """Whether returning to the family is safe, as far as it is known."""

    SAFE = "safe"
    UNSAFE = "unsafe"  # e.g. a family member took part in the trafficking
    UNCERTAIN = "uncertain"


class LegalNeed(StrEnum):
    """Legal needs found by the legal needs assessment (seed 002)."""

    CRIMINAL_CASE = "criminal_case"  # statements, trial, a free lawyer
    IMMIGRATION = "immigration"
    IDENTITY_DOCUMENTS = "identity_documents"
    COMPENSATION = "compensation"


class EducationLevel(StrEnum):
    NONE = "none"
    PRIMARY = "primary"
    LOWER_SECONDARY = "lower_secondary"
    UPPER_SECONDARY = "upper_secondary"
    VOCATIONAL = "vocational"
    HIGHER = "higher"


class LivelihoodStatus(StrEnum):
    """How the person lives now."""

    IN_SCHOOL = "in_school"
    EMPLOYED = "employed"
    SELF_EMPLOYED = "self_employed"
    IN_TRAINING = "in_training"
    UNEMPLOYED = "unemployed"
    UNABLE_TO_WORK = "unable_to_work"


class ExploitationType(StrEnum):
    """Types of exploitation; several may apply at once. ``CTDC_EXPLOITATION`` names the
    Counter Trafficking Data Collaborative's variable for each."""

    SEXUAL = "sexual"
    FORCED_LABOUR = "forced_labour"
    FORCED_MARRIAGE = "forced_marriage"
    FORCED_CRIMINALITY = "forced_criminality"
    ORGAN_REMOVAL = "organ_removal"
    OTHER = "other"


# The CTDC variable of each type (CTDC codebook). The codebook has no flag for forced
# criminality (it falls under isOtherExploit there): Ketnoi names it in the same style and
# keeps it apart, and a comparison with the CTDC's tables adds it to isOtherExploit.
CTDC_EXPLOITATION: dict[ExploitationType, str] = {
    ExploitationType.SEXUAL: "isSexualExploit",
    ExploitationType.FORCED_LABOUR: "isForcedLabour",
    ExploitationType.FORCED_MARRIAGE: "isForcedMarriage",
    ExploitationType.FORCED_CRIMINALITY: "isForcedCriminality",
    ExploitationType.ORGAN_REMOVAL: "isOrganRemoval",
    ExploitationType.OTHER: "isOtherExploit",
}


class MeansOfControl(StrEnum):
    """Means of control, as the CTDC records them (``meansOfControl<Name>``)."""

    DEBT_BONDAGE = "debt_bondage"
    TAKES_EARNINGS = "takes_earnings"
    RESTRICTS_FINANCIAL_ACCESS = "restricts_financial_access"
    THREATS = "threats"
    PSYCHOLOGICAL_ABUSE = "psychological_abuse"
    PHYSICAL_ABUSE = "physical_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    FALSE_PROMISES = "false_promises"
    PSYCHOACTIVE_SUBSTANCES = "psychoactive_substances"
    RESTRICTS_MOVEMENT = "restricts_movement"
    RESTRICTS_MEDICAL_CARE = "restricts_medical_care"
    EXCESSIVE_WORKING_HOURS = "excessive_working_hours"
    USES_CHILDREN = "uses_children"
    THREAT_OF_LAW_ENFORCEMENT = "threat_of_law_enforcement"
    WITHHOLDS_NECESSITIES = "withholds_necessities"
    WITHHOLDS_DOCUMENTS = "withholds_documents"
    OTHER = "other"


def ctdc_means_of_control(means: MeansOfControl) -> str:
    """``debt_bondage`` -> ``meansOfControlDebtBondage``, the CTDC variable's name."""
    return "meansOfControl" + "".join(w.capitalize() for w in means.value.split("_"))


class IdentificationStatus(StrEnum):
    """Whether the person is formally identified as a victim of trafficking."""

    PRESUMED = "presumed"  # indicators present; support does not wait for identification
    IDENTIFIED = "identified"  # by a competent authority, on a date
    NOT_IDENTIFIED = "not_identified"  # the authority found otherwise


class DeclineKind(StrEnum):
    """How the person declined a service: both are their choice, and both are respected."""

    REFUSED = "refused"  # before it started
    DROPPED = "dropped"  # after it started


# -- lists of these words in events and requests ---------------------------------------------

H = TypeVar("H", bound=Hashable)


def distinct(values: tuple[H, ...]) -> tuple[H, ...]:
    """The values once each, in the order first given: a repeated word adds nothing."""
    return tuple(dict.fromkeys(values))


# At most one of each member: a list longer than the enum is refused (422 naming the field),
# and repeats within it are dropped before anything is stored.
DataCategories = Annotated[
    tuple[DataCategory, ...], Field(max_length=len(DataCategory)), AfterValidator(distinct)
]
Purposes = Annotated[tuple[Purpose, ...], Field(max_length=len(Purpose)), AfterValidator(distinct)]
UrgentNeeds = Annotated[
    tuple[UrgentNeed, ...], Field(max_length=len(UrgentNeed)), AfterValidator(distinct)
]
RiskSubjects = Annotated[
    tuple[RiskSubject, ...], Field(max_length=len(RiskSubject)), AfterValidator(distinct)
]
ContactModes = Annotated[
    tuple[ContactMode, ...], Field(max_length=len(ContactMode)), AfterValidator(distinct)
]
LegalNeeds = Annotated[
    tuple[LegalNeed, ...], Field(max_length=len(LegalNeed)), AfterValidator(distinct)
]
ExploitationTypes = Annotated[
    tuple[ExploitationType, ...],
    Field(min_length=1, max_length=len(ExploitationType)),
    AfterValidator(distinct),
]
MeansOfControlList = Annotated[
    tuple[MeansOfControl, ...], Field(max_length=len(MeansOfControl)), AfterValidator(distinct)
]
