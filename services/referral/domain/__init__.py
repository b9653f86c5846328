"""The referral service's domain: case files, referrals and handovers."""

from services.referral.domain.case_file import CaseFile, CaseFileNotFoundError
from services.referral.domain.handover import Handover, HandoverNotFoundError, HandoverRuleError
from services.referral.domain.referral import (
    RECIPIENT_ANSWERS,
    TRANSITIONS,
    Referral,
    ReferralNotFoundError,
    ReferralRuleError,
    next_steps,
)

__all__ = [
    "RECIPIENT_ANSWERS",
    "TRANSITIONS",
    "CaseFile",
    "CaseFileNotFoundError",
    "Handover",
    "HandoverNotFoundError",
    "HandoverRuleError",
    "Referral",
    "ReferralNotFoundError",
    "ReferralRuleError",
    "next_steps",
]
