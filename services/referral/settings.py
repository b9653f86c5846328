"""Settings of the referral service (prefix ``KETNOI_REFERRAL_``), and its default deadlines."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.vocabulary import ServiceType


class Deadlines(BaseModel):
    """How long a recipient has to acknowledge a referral, and to give the first service."""

    acknowledge: timedelta
    first_service: timedelta


H = timedelta(hours=1)
# DOMAIN.md: health check and shelter the same night; a psychologist within 24 hours.
DEFAULT_DEADLINES: dict[ServiceType, Deadlines] = {
    ServiceType.SAFE_ACCOMMODATION: Deadlines(acknowledge=1 * H, first_service=6 * H),
    ServiceType.HEALTH_CHECK: Deadlines(acknowledge=1 * H, first_service=12 * H),
    ServiceType.MEDICAL_CARE: Deadlines(acknowledge=2 * H, first_service=24 * H),
    ServiceType.PSYCHOLOGICAL_FIRST_AID: Deadlines(acknowledge=2 * H, first_service=24 * H),
    ServiceType.INTERPRETATION: Deadlines(acknowledge=4 * H, first_service=24 * H),
    ServiceType.LEGAL_AID: Deadlines(acknowledge=24 * H, first_service=72 * H),
}
OTHERWISE = Deadlines(acknowledge=24 * H, first_service=7 * 24 * H)


class ReferralSettings(BaseSettings):
    """``KETNOI_REFERRAL_DEADLINES`` overrides defaults per service type, as JSON, e.g.
    ``{"legal_aid": {"acknowledge": "PT12H", "first_service": "P2D"}}``."""

    model_config = SettingsConfigDict(env_prefix="KETNOI_REFERRAL_", extra="ignore")

    deadlines: dict[ServiceType, Deadlines] = Field(default_factory=dict)
    deadline_check_seconds: float = Field(default=30.0, gt=0)

    def deadlines_for(self, service_type: ServiceType) -> Deadlines:
        return self.deadlines.get(service_type) or DEFAULT_DEADLINES.get(service_type, OTHERWISE)
