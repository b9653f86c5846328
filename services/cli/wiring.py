"""The composition root: which services run, on which store, behind which HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, FastAPI

from services.consent.api import router as consent_router
from services.consent.application import ConsentService
from services.directory.api import router as directory_router
from services.directory.application import DirectoryService
from services.intake.application import IntakeService
from services.intake.casework_api import router as intake_router
from services.projections.api import router as projections_router
from services.projections.application import ProjectionService
from services.projections.runner import warn_rebuild_needed
from services.projections.store import Tables, ViewStore
from services.projections.views import VIEWS
from services.referral.api import router as referral_router
from services.referral.application import ReferralService
from services.referral.feed_tracking import migrate_feed
from services.runtime.agencies import AgencyRegister
from services.runtime.application import ServiceApplication
from services.runtime.auth import TokenService
from services.runtime.follower import (
    Follower,
    FollowingApplication,
    WakeLoop,
    open_upstream,
    prompt_on_save,
)
from services.runtime.http import create_app
from services.runtime.leadership import Leadership, Role, lock_key
from services.runtime.logging import get_logger
from services.runtime.metrics import lag_registry
from services.runtime.periodic import Periodic
from services.runtime.persistence import application_env, create_schemas
from services.runtime.person_keys import migrate_person_keys
from services.runtime.positions import wait_for_positions
from services.runtime.read_audit import ReadAudit, migrate_read_audit
from services.runtime.seal.api import router as seal_router
from services.runtime.seal.recorders import PostgresSeal, SQLiteSeal
from services.runtime.settings import SERVICES, Settings
from services.runtime.web_sessions import SessionStore, migrate_sessions, open_sessions
from services.web import mount_web
from services.web.session import DemoUser

DESCRIPTION = (
    "Ketnoi (kết nối, to connect): interagency referral for people who experienced human "
    "trafficking, under their own informed and revocable consent. Every change is an event "
    "in an append-only log."
)

SEAL_TASK = "seal-checkpoints"
# How often the intake service looks for cases closed longer than the retention period.
RETENTION_CHECK_SECONDS = 3600.0
log = get_logger("ketnoi.platform")

# The services with a log so far, in the order their logs feed each other.
APPLICATIONS: dict[str, type[ServiceApplication]] = {
    "directory": DirectoryService,
    "intake": IntakeService,
    "consent": ConsentService,
    "referral": ReferralService,
}
ROUTERS: dict[str, APIRouter] = {
    "directory": directory_router,
    "intake": intake_router,
    "consent": consent_router,
    "referral": referral_router,
    "projections": projections_router,
}


@dataclass
class Platform:
    """The running services of one process, and the followers that feed them."""

    settings: Settings
    agencies: AgencyRegister
    apps: dict[str, ServiceApplication] = field(default_factory=dict)
    followers: dict[str, WakeLoop] = field(default_factory=dict)
    projections: ProjectionService | None = None
    periodic: list[Periodic] = field(default_factory=list)
    read_audit: ReadAudit | None = None
    web_sessions: SessionStore | None = None
    leadership: Leadership | None = None

    @property
    def directory(self) -> DirectoryService:
        app = self.apps["directory"]
        assert isinstance(app, DirectoryService)
        return app

    @property
    def intake(self) -> IntakeService:
        app = self.apps["intake"]
        assert isinstance(app, IntakeService)
        return app

    @property
    def consent(self) -> ConsentService:
        app = self.apps["consent"]
        assert isinstance(app, ConsentService)
        return app

    @property
    def referral(self) -> ReferralService:
        app = self.apps["referral"]
        assert isinstance(app, ReferralService)
        return app

    def catch_up(self) -> int:
        """Let every follower process what is pending (in upstream order); returns how many."""
        total = 0
        while True:
            done = sum(follower.catch_up() for follower in self.followers.values())
            total += done
            if done == 0:
                return total

    def checkpoint(self) -> dict[str, int | None]:
        """Sign a checkpoint of each log this process writes that grew since its last."""
        logs = {name: app.recorder for name, app in self.apps.items()}
        if self.read_audit is not None:
            logs["audit"] = self.read_audit.log.recorder
        return {
            name: recorder.checkpoint_now()
            for name, recorder in logs.items()
            if isinstance(recorder, PostgresSeal | SQLiteSeal)
        }

    @property
    def role(self) -> Role:
        """``leader`` where this process runs the singletons (always, without an election),
        ``standby`` in a worker that waits to take over."""
        return "leader" if self.leadership is None else self.leadership.role

    def start_singletons(self) -> None:
        """Start what runs in one process at a time: the followers' loops (the projector's
        too), the deadline watch, the retention watch and the seal's periodic checkpoints."""
        for loop in self.followers.values():
            loop.start()
        if "referral" in self.apps:
            referral = self.referral
            self.periodic.append(
                Periodic(
                    "deadline-watch",
                    referral.check_deadlines,
                    referral.referral_settings.deadline_check_seconds,
                )
            )
        if "intake" in self.apps:
            intake, days = self.intake, self.settings.retention_days_after_closure
            self.periodic.append(
                Periodic(
                    "retention-watch",
                    lambda: intake.propose_erasures(days),
                    RETENTION_CHECK_SECONDS,
                )
            )
        self.periodic.append(
            Periodic(SEAL_TASK, self.checkpoint, self.settings.seal_checkpoint_seconds)
        )
        for task in self.periodic:
            task.start()

    def halt_singletons(self) -> None:
        """Stop what ``start_singletons`` started, leaving every log this process wrote
        checkpointed; the followers keep their readers (``reach`` still works)."""
        periodic, self.periodic = self.periodic, []
        for task in periodic:
            task.stop()
        if any(task.name == SEAL_TASK for task in periodic):
            # A serving process leaves every log it wrote checkpointed as it stops.
            try:
                self.checkpoint()
            except Exception:
                log.exception("seal_checkpoint_failed")
        for loop in self.followers.values():
            loop.halt()

    def close(self) -> None:
        if self.leadership is not None:
            self.leadership.stop()  # the singletons stop, then the lock is released
        self.halt_singletons()
        for follower in self.followers.values():
            follower.stop()
        self.agencies.close()
        for app in self.apps.values():
            app.close()
        if self.projections is not None:
            self.projections.close()
        if self.read_audit is not None:
            self.read_audit.close()
        if self.web_sessions is not None:
            self.web_sessions.shut()


def migrate(settings: Settings) -> list[str]:
    """Create every service's schema and tables; safe to run again."""
    create_schemas(settings)
    for service, app_cls in APPLICATIONS.items():
        app_cls(env=application_env(settings, service, create_tables=True)).close()
    store = ViewStore(settings)
    for view in VIEWS:
        if store.create(Tables.of(view)):
            warn_rebuild_needed(view)
    store.close()
    migrate_feed(settings)
    migrate_read_audit(settings)
    migrate_sessions(settings)
    migrate_person_keys(settings)
    return [*APPLICATIONS, "projections", "feed", "audit", "web", "keys"]


def start(
    settings: Settings,
    services: tuple[str, ...] = SERVICES,
    *,
    run_followers: bool = True,
    poll_interval: float = 1.0,
    elect: bool = False,
) -> Platform:
    """Start the named services; followers run in background threads unless told not to.

    With ``elect`` (one of several worker processes, on PostgreSQL) the followers' loops and
    the periodic jobs run only while this process is the elected leader (``leadership.py``).
    """
    apps: dict[str, ServiceApplication] = {}
    for service, app_cls in APPLICATIONS.items():
        if service in services:
            apps[service] = app_cls(
                env=application_env(_pool_for(settings, service, services), service)
            )
    # Every process knows the directory: from the in-process app, or from its tables.
    agencies = AgencyRegister.of(settings, apps.get("directory"))
    platform = Platform(
        settings=settings, agencies=agencies, apps=apps, read_audit=ReadAudit(settings)
    )
    if "referral" in apps:
        platform.referral.agencies = agencies
    for service, app in platform.apps.items():
        if not isinstance(app, FollowingApplication):
            continue
        upstreams = [
            open_upstream(settings, name, types, app=platform.apps.get(name))
            for name, types in app.follows.items()
        ]
        follower = Follower(app, upstreams, settings=settings, poll_interval=poll_interval)
        platform.followers[service] = follower
        for name in app.follows:
            if name in platform.apps:
                prompt_on_save(platform.apps[name], [follower])
    if "projections" in services:
        _start_projections(platform, poll_interval)
    if elect:
        platform.leadership = Leadership(
            settings,
            lock_key(settings, services),
            on_gain=platform.start_singletons,
            on_loss=platform.halt_singletons,
        )
        platform.leadership.start()
    elif run_followers:
        platform.start_singletons()
    return platform


def _pool_for(settings: Settings, service: str, services: tuple[str, ...]) -> Settings:
    """The directory is written rarely and read from memory: beside other services in one
    process it needs a connection or two, not a pool of its own size."""
    if service != "directory" or services == ("directory",):
        return settings
    return settings.model_copy(
        update={"pg_pool_size": min(settings.pg_pool_size, 2), "pg_max_overflow": 2}
    )


def _start_projections(platform: Platform, poll_interval: float) -> None:
    settings = platform.settings
    wanted: dict[str, set[type]] = {}
    for view in VIEWS.values():
        for name, types in view.handles.items():
            wanted.setdefault(name, set()).update(types)
    upstreams = [
        open_upstream(
            settings, name, sorted(types, key=lambda t: t.__name__), app=platform.apps.get(name)
        )
        for name, types in wanted.items()
    ]
    projections = ProjectionService(settings, upstreams, poll_interval=poll_interval)
    if settings.embedded:
        projections.projector.create_tables()
    platform.projections = projections
    platform.followers["projections"] = projections.projector
    for name in wanted:
        if name in platform.apps:
            prompt_on_save(platform.apps[name], [projections.projector])


def _waiting_for_positions(service: str) -> APIRouter:
    """The service's routes, each first waiting for the logs it follows to be read as far as
    the request's Ketnoi-Position says."""
    router = APIRouter(dependencies=[Depends(wait_for_positions(service))])
    router.include_router(ROUTERS[service])
    return router


def http_app(
    platform: Platform,
    tokens: TokenService,
    title: str = "Ketnoi",
    demo_users: Sequence[DemoUser] = (),
) -> FastAPI:
    """The platform's API and, where every service runs in this process, the web app."""
    state: dict[str, object] = {
        "settings": platform.settings,
        "followers": platform.followers,
        "agencies": platform.agencies,
        "role": lambda: platform.role,
        **platform.apps,
    }
    names = [name for name in platform.apps if name in ROUTERS]
    if platform.projections is not None:
        state["projections"] = platform.projections
        names.append("projections")
    routers = [_waiting_for_positions(name) for name in names]
    routers.append(seal_router)
    if platform.read_audit is not None:
        state["read_audit"] = platform.read_audit
    state["metrics_registry"] = lag_registry("ketnoi_follower_lag", lambda: platform.followers)
    app = create_app(
        title=title, routers=routers, tokens=tokens, description=DESCRIPTION, state=state
    )
    if set(APPLICATIONS) <= set(platform.apps) and platform.projections is not None:
        if platform.web_sessions is None:
            platform.web_sessions = open_sessions(platform.settings)
        mount_web(app, platform.web_sessions, demo_users)
    return app


# The service (or ``all``) a worker of ``ketnoi serve --workers`` serves, set by the command.
WORKER_SERVICE = "KETNOI_SERVE_WORKER_SERVICE"


def worker_app(routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The app of one worker process of ``ketnoi serve --workers`` (uvicorn's factory): the
    services named by the command (and any other ``routers``), the singletons only while
    this worker is elected."""
    from services.runtime.logging import configure_logging
    from services.runtime.serving import configure_worker, settle_heap

    service = os.environ[WORKER_SERVICE]
    settings = Settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    configure_worker(settings)
    tokens = TokenService(settings)
    platform = start(settings, SERVICES if service == "all" else (service,), elect=True)
    app = http_app(platform, tokens, title=f"Ketnoi {service}")
    for router in routers:
        app.include_router(router)

    @contextlib.asynccontextmanager
    async def closing(_app: object) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(platform.close)

    app.router.lifespan_context = closing
    settle_heap()
    return app
