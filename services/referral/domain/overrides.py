"""Emergency overrides of a referral: how long one lasts, and when it has ended.

An override is asked for a stated time (1 to 72 hours, a day by default) counted from its
approval. It counts until that end, or until someone in a third role reviews it, whichever
comes first; from then on the referral follows the consent in force again. The Referral
aggregate and the referral index both judge an override with these rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from contracts.referral import (
    OverrideApproved,
    OverrideLapsed,
    OverrideRequested,
    OverrideReviewed,
    WithdrawalNotedDuringOverride,
)


@dataclass
class Override:
    """An emergency override of one referral: asked for, approved, then ended by its review
    or by the end it was asked for."""

    request: OverrideRequested
    approval: OverrideApproved | None = None
    review: OverrideReviewed | None = None
    lapse: OverrideLapsed | None = None
    withdrawals_noted: list[WithdrawalNotedDuringOverride] = field(default_factory=list)

    @property
    def ends_at(self) -> datetime | None:
        """The end it was asked for: its approval plus the hours it is needed."""
        if self.approval is None:
            return None
        return self.approval.timestamp + timedelta(hours=self.request.needed_for_hours)

    def in_force_at(self, at: datetime) -> bool:
        """Approved by ``at``, not reviewed by then, and ``at`` before its end."""
        if self.approval is None or at < self.approval.timestamp:
            return False
        if self.review is not None and self.review.timestamp <= at:
            return False
        ends_at = self.ends_at
        return ends_at is not None and at < ends_at

    @property
    def ended_on_record(self) -> bool:
        return self.review is not None or self.lapse is not None


def override_past_its_end(
    overrides: Mapping[UUID, Override], latest: UUID | None, at: datetime
) -> UUID | None:
    """The latest approved override, when its end passed by ``at`` and neither its review
    nor its lapse is on record yet (the referral must record the lapse and follow the
    consent again). The aggregate and the referral index both ask this."""
    override = overrides.get(latest) if latest is not None else None
    if override is None or override.ended_on_record:
        return None
    ends_at = override.ends_at
    return latest if ends_at is not None and ends_at <= at else None
