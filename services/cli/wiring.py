"""The composition root: which services run, on which store, behind which HTTP app."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI

from services.intake.api import router as intake_router
from services.intake.application import IntakeService
from services.runtime.auth import TokenService
from services.runtime.http import create_app
from services.runtime.persistence import application_env, create_schemas
from services.runtime.settings import SERVICES, Settings

DESCRIPTION = (
    "Ketnoi (kết nối, to connect): interagency referral for people who experienced human "
    "trafficking, under their own informed and revocable consent. Every change is an event "
    "in an append-only log."
)


@dataclass
class Platform:
    """The running services of one process."""

    settings: Settings
    intake: IntakeService | None = None
    closers: list[object] = field(default_factory=list)

    def close(self) -> None:
        if self.intake is not None:
            self.intake.close()


def migrate(settings: Settings) -> list[str]:
    """Create every service's schema and tables; safe to run again."""
    create_schemas(settings)
    done = []
    # Only the services with a log so far; the others add theirs when they arrive.
    for service, app_cls in (("intake", IntakeService),):
        app = app_cls(env=application_env(settings, service, create_tables=True))
        app.close()
        done.append(service)
    return done


def start(settings: Settings, services: tuple[str, ...] = SERVICES) -> Platform:
    platform = Platform(settings=settings)
    if "intake" in services:
        platform.intake = IntakeService(env=application_env(settings, "intake"))
    return platform


def http_app(platform: Platform, tokens: TokenService, title: str = "Ketnoi") -> FastAPI:
    routers = []
    state: dict[str, object] = {"settings": platform.settings}
    if platform.intake is not None:
        routers.append(intake_router)
        state["intake"] = platform.intake
    return create_app(
        title=title, routers=routers, tokens=tokens, description=DESCRIPTION, state=state
    )
