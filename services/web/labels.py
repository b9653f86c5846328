"""The words the pages use for the domain's vocabulary, marked for translation.

The Vietnamese terms are those of DOMAIN.md; a value without a label is shown as it is.
"""

from __future__ import annotations

from services.web.i18n import N_, gettext

LABELS: dict[str, dict[str, str]] = {
    "role": {
        "intake_officer": N_("Intake officer"),
        "case_manager": N_("Case manager"),
        "coordinator": N_("Provincial coordinator"),
        "agency_staff": N_("Agency staff"),
        "auditor": N_("Auditor"),
        "admin": N_("Administrator"),
        "health_worker": N_("Health worker"),
        "supervisor": N_("Supervisor"),
    },
    "stage": {
        "reception": N_("Reception"),
        "crisis": N_("Crisis stage"),
        "transitional": N_("Transitional case management"),
        "external_support": N_("External support"),
        "closed": N_("Closed"),
    },
    "agency_kind": {
        "police": N_("Police"),
        "border_guard": N_("Border guard"),
        "social_work_centre": N_("Social work centre"),
        "legal_aid_centre": N_("State legal aid centre"),
        "hospital": N_("Hospital"),
        "womens_union": N_("Women's Union"),
        "vocational_training_centre": N_("Vocational training centre"),
        "school": N_("School"),
        "employer": N_("Employer"),
        "ngo": N_("NGO"),
        "hotline_111": N_("Hotline 111"),
        "child_protection_authority": N_("Child protection authority"),
        "local_authority": N_("Local authority"),
        "foreign_authority": N_("Foreign authority"),
    },
    "need": {
        "safety": N_("Safety"),
        "shelter_tonight": N_("Shelter tonight"),
        "medical_check": N_("Medical check"),
        "psychological_first_aid": N_("Psychological first aid"),
        "food": N_("Food"),
        "clothing": N_("Clothing"),
        "phone": N_("Phone"),
        "interpretation": N_("Interpretation"),
        "identity_documents": N_("Identity documents"),
        "legal_advice_criminal": N_("Legal advice (criminal)"),
        "legal_advice_immigration": N_("Legal advice (immigration)"),
    },
    "risk": {
        "low": N_("Low"),
        "medium": N_("Medium"),
        "high": N_("High"),
        "critical": N_("Critical"),
    },
    "risk_subject": {
        "person": N_("The person"),
        "family": N_("Family"),
        "others": N_("Others"),
    },
    "contact": {
        "phone": N_("Phone call"),
        "messaging": N_("Message"),
        "meeting_nearby_town": N_("Meeting in a nearby town"),
        "office_visit": N_("Visit at the office"),
        "home_visit": N_("Home visit"),
        "through_trusted_person": N_("Through a trusted person"),
    },
    "category": {
        "identity": N_("Identity"),
        "contact": N_("Contact details"),
        "health": N_("Health"),
        "psychosocial": N_("Psychosocial"),
        "legal_case": N_("Legal case"),
        "location": N_("Location"),
        "family": N_("Family"),
        "needs": N_("Needs"),
        "risk": N_("Risk"),
    },
    "purpose": {
        "service_provision": N_("Service provision"),
        "case_coordination": N_("Case coordination"),
        "criminal_proceedings": N_("Criminal proceedings"),
        "statistics": N_("Statistics"),
        "research": N_("Research"),
    },
    "service": {
        "safe_accommodation": N_("Safe accommodation"),
        "health_check": N_("Health check"),
        "medical_care": N_("Medical care"),
        "psychological_first_aid": N_("Psychological first aid"),
        "mental_health_care": N_("Mental health care"),
        "legal_aid": N_("Legal aid"),
        "interpretation": N_("Interpretation"),
        "identity_documents": N_("Identity documents"),
        "long_term_housing": N_("Long-term housing"),
        "education": N_("Education"),
        "vocational_training": N_("Vocational training"),
        "job_placement": N_("Job placement"),
        "life_skills": N_("Life skills"),
        "peer_support": N_("Peer support"),
        "family_reunification": N_("Family reunification"),
        "follow_up": N_("Follow-up"),
    },
    "route": {
        "rescued": N_("Rescued"),
        "returned_from_abroad": N_("Returned from abroad"),
        "border_handover": N_("Handed over at the border"),
        "hotline": N_("Hotline call"),
        "self_referral": N_("Came on their own"),
    },
    "sex": {
        "female": N_("Female"),
        "male": N_("Male"),
        "other": N_("Other"),
        "not_stated": N_("Not stated"),
    },
    "documents": {
        "has_documents": N_("Has documents"),
        "documents_held_by_others": N_("Documents held by others"),
        "lost_or_destroyed": N_("Lost or destroyed"),
        "never_had": N_("Never had documents"),
        "unknown": N_("Unknown"),
    },
    "party_role": {
        "from": N_("Hands over"),
        "to": N_("Receives"),
        "witness": N_("Witness"),
    },
    "status": {
        "draft": N_("Draft (waiting for consent)"),
        "requested": N_("Sent, waiting for acknowledgement"),
        "received": N_("Acknowledged"),
        "accepted": N_("Accepted"),
        "rejected": N_("Rejected"),
        "in-progress": N_("In progress"),
        "on-hold": N_("On hold (consent)"),
        "completed": N_("Completed"),
        "cancelled": N_("Cancelled"),
        "failed": N_("Failed"),
        "open": N_("Open"),
        "complete": N_("Complete"),
        "active": N_("In force"),
        "withdrawn": N_("Withdrawn"),
        "expired": N_("Expired"),
        "not_yet_valid": N_("Not yet in force"),
        "superseded": N_("Superseded"),
    },
    "event": {
        "org.ketnoi.consent.granted": N_("Consent given"),
        "org.ketnoi.consent.record_opened": N_("Consent record opened"),
        "org.ketnoi.consent.refusal_lifted": N_("Refusal lifted"),
        "org.ketnoi.consent.refused": N_("Sharing refused"),
        "org.ketnoi.consent.renewed": N_("Consent renewed"),
        "org.ketnoi.consent.subject_age_noted": N_("Age noted for consent"),
        "org.ketnoi.consent.withdrawn": N_("Consent withdrawn"),
        "org.ketnoi.intake.case_closed": N_("Case closed"),
        "org.ketnoi.intake.case_manager_assigned": N_("Case manager assigned"),
        "org.ketnoi.intake.case_reopened": N_("Case reopened"),
        "org.ketnoi.intake.contact_preference_recorded": N_("Contact preference recorded"),
        "org.ketnoi.intake.person_details_corrected": N_("Person's details corrected"),
        "org.ketnoi.intake.person_registered": N_("Person registered"),
        "org.ketnoi.intake.rapid_needs_assessed": N_("Rapid needs assessed"),
        "org.ketnoi.intake.reception_recorded": N_("Reception recorded"),
        "org.ketnoi.intake.risk_assessed": N_("Risk assessed"),
        "org.ketnoi.intake.stage_changed": N_("Stage changed"),
        "org.ketnoi.referral.accepted": N_("Referral accepted"),
        "org.ketnoi.referral.acknowledged": N_("Referral acknowledged"),
        "org.ketnoi.referral.blocked": N_("Referral blocked by consent"),
        "org.ketnoi.referral.cancelled": N_("Referral cancelled"),
        "org.ketnoi.referral.completed": N_("Referral completed"),
        "org.ketnoi.referral.created": N_("Referral created"),
        "org.ketnoi.referral.deadline_missed": N_("Deadline missed"),
        "org.ketnoi.referral.disclosure_recorded": N_("Data released to the recipient"),
        "org.ketnoi.referral.dispatched": N_("Referral sent"),
        "org.ketnoi.referral.failed": N_("Referral could not be delivered"),
        "org.ketnoi.referral.handover_cancelled": N_("Handover cancelled"),
        "org.ketnoi.referral.handover_completed": N_("Handover complete"),
        "org.ketnoi.referral.handover_confirmed": N_("Handover confirmed by a party"),
        "org.ketnoi.referral.handover_started": N_("Handover started"),
        "org.ketnoi.referral.override_approved": N_("Emergency override approved"),
        "org.ketnoi.referral.override_lapsed": N_("Emergency override lapsed"),
        "org.ketnoi.referral.override_requested": N_("Emergency override requested"),
        "org.ketnoi.referral.override_reviewed": N_("Emergency override reviewed"),
        "org.ketnoi.referral.progress_reported": N_("Progress reported by the agency"),
        "org.ketnoi.referral.put_on_hold": N_("Referral on hold (consent)"),
        "org.ketnoi.referral.rejected": N_("Referral rejected"),
        "org.ketnoi.referral.resumed": N_("Referral resumed"),
        "org.ketnoi.referral.service_feedback_recorded": N_("The person's feedback recorded"),
        "org.ketnoi.referral.started": N_("Service started"),
        "org.ketnoi.referral.withdrawal_noted_during_override": N_(
            "Withdrawal noted during an override"
        ),
    },
    "verdict": {
        "permitted": N_("Released: the person's consent allows it"),
        "refused": N_("Withheld: the person refused it"),
        "withdrawn": N_("Withheld: the person withdrew their consent"),
        "expired": N_("Withheld: the consent has expired"),
        "own_consent_needed": N_("Withheld: the person is now an adult and must consent themself"),
        "not_granted": N_("Withheld: the person has not consented to it"),
    },
    "urgency": {
        "routine": N_("Routine"),
        "urgent": N_("Urgent"),
        "emergency": N_("Emergency"),
    },
    "statistic": {
        "all": N_("All"),
        "reopened": N_("Reopened"),
        "yes": N_("Yes"),
        "under 1 hour": N_("under 1 hour"),
        "1-6 hours": N_("1-6 hours"),
        "6-24 hours": N_("6-24 hours"),
        "1-3 days": N_("1-3 days"),
        "over 3 days": N_("over 3 days"),
    },
    "delivery": {
        "delivered": N_("Delivered in full"),
        "partially_delivered": N_("Partly delivered"),
        "not_delivered": N_("Not delivered"),
    },
    "conclusion": {
        "justified": N_("Justified: the vital interest warranted it"),
        "not_justified": N_("Not justified: it should not have been approved"),
    },
    "giver": {
        "person": N_("The person themself"),
        "guardian": N_("A guardian or parent"),
        "child_protection_authority": N_("The child protection authority"),
    },
    "answer": {
        "acknowledge": N_("Acknowledge"),
        "accept": N_("Accept"),
        "reject": N_("Reject"),
        "start": N_("Start the service"),
        "complete": N_("Complete"),
        "fail": N_("Could not be delivered"),
        "cancel": N_("Cancel"),
    },
}


def label(value: object, kind: str) -> str:
    """The translated word for ``value`` of the vocabulary ``kind``."""
    raw = getattr(value, "value", value)
    text = LABELS.get(kind, {}).get(str(raw))
    return gettext(text) if text else str(raw)


# Provinces are proper names, written the same in both languages.
PROVINCES = {
    "dong-thap": "Đồng Tháp",
    "lao-cai": "Lào Cai",
    "quang-ninh": "Quảng Ninh",
    "nghe-an": "Nghệ An",
    "thua-thien-hue": "Thừa Thiên Huế",
    "yunnan": "Vân Nam",
}


def province(slug: str) -> str:
    if slug == "*":
        return gettext(N_("National"))
    return PROVINCES.get(slug, slug)
