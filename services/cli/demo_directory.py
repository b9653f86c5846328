"""The agencies of the demo scenarios, as the directory holds them."""

from __future__ import annotations

from contracts.directory import PLATFORM_AGENCY_ID, AgencyContact, AgencyDetails
from contracts.envelope import Actor
from contracts.vocabulary import AgencyKind, Role, ServiceType
from services.directory.application import DirectoryService
from services.runtime.aggregate import CommandContext

K, S = AgencyKind, ServiceType
SHELTER_AND_CARE = (
    S.SAFE_ACCOMMODATION,
    S.PSYCHOLOGICAL_FIRST_AID,
    S.MENTAL_HEALTH_CARE,
    S.LIFE_SKILLS,
    S.PEER_SUPPORT,
    S.FAMILY_REUNIFICATION,
    S.FOLLOW_UP,
)
HEALTH = (S.HEALTH_CHECK, S.MEDICAL_CARE, S.MENTAL_HEALTH_CARE, S.PSYCHOLOGICAL_FIRST_AID)
LEGAL = (S.LEGAL_AID, S.IDENTITY_DOCUMENTS)


def _vn(
    kind: AgencyKind,
    vi: str,
    en: str,
    province: str,
    district: str | None = None,
    services: tuple[ServiceType, ...] = (),
    phone: str | None = None,
) -> AgencyDetails:
    return AgencyDetails(
        kind=kind,
        name_vi=vi,
        name_en=en,
        country="VN",
        province=province,
        district=district,
        services=services,
        contact=AgencyContact(phone=phone),
    )


DEMO_AGENCIES: dict[str, AgencyDetails] = {
    # Dong Thap: the night reception.
    "dong-thap-police": _vn(
        K.POLICE, "Công an tỉnh Đồng Tháp", "Dong Thap Provincial Police", "dong-thap", "Cao Lãnh"
    ),
    "dong-thap-border-guard": _vn(
        K.BORDER_GUARD,
        "Bộ đội Biên phòng tỉnh Đồng Tháp",
        "Dong Thap Border Guard",
        "dong-thap",
        "Hồng Ngự",
    ),
    "dong-thap-social-work-centre": _vn(
        K.SOCIAL_WORK_CENTRE,
        "Trung tâm Công tác xã hội tỉnh Đồng Tháp",
        "Dong Thap Social Work Centre",
        "dong-thap",
        services=SHELTER_AND_CARE,
        phone="111",
    ),
    "dong-thap-general-hospital": _vn(
        K.HOSPITAL,
        "Bệnh viện Đa khoa Đồng Tháp",
        "Dong Thap General Hospital",
        "dong-thap",
        "Cao Lãnh",
        HEALTH,
    ),
    "dong-thap-legal-aid-centre": _vn(
        K.LEGAL_AID_CENTRE,
        "Trung tâm Trợ giúp pháp lý nhà nước tỉnh Đồng Tháp",
        "Dong Thap State Legal Aid Centre",
        "dong-thap",
        services=LEGAL,
    ),
    "dong-thap-dolisa": _vn(
        K.LOCAL_AUTHORITY,
        "Sở Lao động - Thương binh và Xã hội tỉnh Đồng Tháp",
        "Dong Thap Department of Labour, Invalids and Social Affairs",
        "dong-thap",
    ),
    # Lao Cai: the border handover.
    "lao-cai-police": _vn(
        K.POLICE, "Công an tỉnh Lào Cai", "Lao Cai Provincial Police", "lao-cai", "Lào Cai"
    ),
    "lao-cai-border-guard": _vn(
        K.BORDER_GUARD,
        "Bộ đội Biên phòng tỉnh Lào Cai",
        "Lao Cai Border Guard",
        "lao-cai",
        "Lào Cai",
    ),
    "lao-cai-commune-office": _vn(
        K.LOCAL_AUTHORITY,
        "Ủy ban nhân dân xã Bản Vược",
        "Ban Vuoc Commune People's Committee",
        "lao-cai",
        "Bát Xát",
    ),
    "lao-cai-social-work-centre": _vn(
        K.SOCIAL_WORK_CENTRE,
        "Trung tâm Công tác xã hội tỉnh Lào Cai",
        "Lao Cai Social Work Centre",
        "lao-cai",
        services=SHELTER_AND_CARE,
    ),
    "lao-cai-general-hospital": _vn(
        K.HOSPITAL,
        "Bệnh viện Đa khoa tỉnh Lào Cai",
        "Lao Cai General Hospital",
        "lao-cai",
        "Lào Cai",
        HEALTH,
    ),
    "lao-cai-legal-aid-centre": _vn(
        K.LEGAL_AID_CENTRE,
        "Trung tâm Trợ giúp pháp lý nhà nước tỉnh Lào Cai",
        "Lao Cai State Legal Aid Centre",
        "lao-cai",
        services=LEGAL,
    ),
    "lao-cai-bat-xat-secondary-school": _vn(
        K.SCHOOL,
        "Trường Trung học cơ sở Bát Xát",
        "Bat Xat Lower Secondary School",
        "lao-cai",
        "Bát Xát",
        (S.EDUCATION,),
    ),
    "lao-cai-dolisa": _vn(
        K.LOCAL_AUTHORITY,
        "Sở Lao động - Thương binh và Xã hội tỉnh Lào Cai",
        "Lao Cai Department of Labour, Invalids and Social Affairs",
        "lao-cai",
    ),
    # Nghe An: the livelihood scenario.
    "nghe-an-police": _vn(K.POLICE, "Công an tỉnh Nghệ An", "Nghe An Provincial Police", "nghe-an"),
    "nghe-an-social-work-centre": _vn(
        K.SOCIAL_WORK_CENTRE,
        "Trung tâm Công tác xã hội tỉnh Nghệ An",
        "Nghe An Social Work Centre",
        "nghe-an",
        services=SHELTER_AND_CARE,
    ),
    "nghe-an-vocational-training-centre": _vn(
        K.VOCATIONAL_TRAINING_CENTRE,
        "Trung tâm Giáo dục nghề nghiệp huyện Kỳ Sơn",
        "Ky Son Vocational Training Centre",
        "nghe-an",
        "Kỳ Sơn",
        (S.VOCATIONAL_TRAINING, S.LIFE_SKILLS),
    ),
    "nghe-an-garment-company": _vn(
        K.EMPLOYER,
        "Công ty May mặc Kỳ Sơn",
        "Ky Son Garment Company",
        "nghe-an",
        "Kỳ Sơn",
        (S.JOB_PLACEMENT,),
    ),
    "nghe-an-dolisa": _vn(
        K.LOCAL_AUTHORITY,
        "Sở Lao động - Thương binh và Xã hội tỉnh Nghệ An",
        "Nghe An Department of Labour, Invalids and Social Affairs",
        "nghe-an",
    ),
    # The Chinese authority that hands people over at the Lao Cai - Hekou border gate.
    "cn-border-authority": AgencyDetails(
        kind=K.FOREIGN_AUTHORITY,
        name_vi="Cơ quan biên phòng Trung Quốc (cửa khẩu Hà Khẩu)",
        name_en="Chinese border authority (Hekou border gate)",
        country="CN",
        province="yunnan",
        district="Hekou",
    ),
    # National scope: the ministry's inspectorate, for auditors and administrators.
    "molisa-inspectorate": _vn(
        K.LOCAL_AUTHORITY,
        "Thanh tra Bộ Lao động - Thương binh và Xã hội",
        "Inspectorate of the Ministry of Labour, Invalids and Social Affairs",
        "*",
    ),
}

SEEDER = Actor(user_id="ketnoi-demo-seed", agency_id=PLATFORM_AGENCY_ID, role=Role.ADMIN)


def seed_directory(directory: DirectoryService) -> dict[str, str]:
    """Register every demo agency; a second run changes nothing. Returns agency id -> outcome."""
    ctx = CommandContext(actor=SEEDER)
    return {
        agency_id: str(directory.ensure(ctx, agency_id, details)["outcome"])
        for agency_id, details in DEMO_AGENCIES.items()
    }
