"""The referral service's follower on PostgreSQL: replay from zero, and SIGKILL at random."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    GiverKind,
    Recipient,
    consent_record_id,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PersonDetails, Place
from contracts.referral import CaseFactsNoted, ConsentNoted, case_file_id
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    DataCategory,
    Purpose,
    Role,
    Sex,
    UrgentNeed,
)
from services.cli.wiring import Platform, migrate, start
from services.referral.application import ReferralService
from services.referral.domain import CaseFile
from services.runtime.aggregate import CommandContext
from services.runtime.follower import Follower, open_upstream
from services.runtime.persistence import application_env
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies
from tests.support.processes import KETNOI, settings_env

pytestmark = pytest.mark.postgres

OFFICER = Actor(user_id="officer-1", agency_id="dt-police", role=Role.INTAKE_OFFICER)
MANAGER = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F",
    language="vi",
    withdrawal_explained=True,
)


def add_case(platform: Platform, n: int) -> UUID:
    """A reception, the person, a needs assessment and a grant: six upstream events."""
    ctx = CommandContext(actor=OFFICER)
    case_id = UUID(
        str(
            platform.intake.record_reception(
                ctx,
                route=ArrivalRoute.RESCUED,
                received_at=datetime.now(UTC) - timedelta(hours=1),
                place=Place(province="dong-thap"),
                receiving_agency=POLICE,
            )["case_id"]
        )
    )
    platform.intake.register_person(
        ctx,
        case_id,
        PersonDetails(full_name=f"Person {n}", sex=Sex.FEMALE, estimated_age=20 + n % 30),
    )
    platform.intake.assess_needs(ctx, case_id, (UrgentNeed.SHELTER_TONIGHT,))
    return case_id


def grant(platform: Platform, case_id: UUID) -> None:
    platform.consent.grant(
        CommandContext(actor=MANAGER),
        case_id,
        categories=(DataCategory.IDENTITY,),
        recipients=(Recipient(kind=AgencyKind.HOSPITAL),),
        purposes=(Purpose.SERVICE_PROVISION,),
        valid_from=datetime.now(UTC) - timedelta(days=1),
        valid_until=datetime.now(UTC) + timedelta(days=30),
        collection=WRITTEN,
        given_by=ConsentGiver(kind=GiverKind.PERSON),
    )


def case_file_state(referral: ReferralService, case_id: UUID) -> tuple[object, ...]:
    file = referral.load(CaseFile, case_file_id(case_id))
    return (
        file.province,
        file.person_id,
        sorted((c.value, sorted(f.items(), key=str)) for c, f in file.facts.items()),
        [(type(e).__name__, e.timestamp) for e in file.consent_events],
    )


def test_replaying_the_follower_from_zero_gives_the_same_state(
    pg_settings: Settings, tmp_path: Path
) -> None:
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    try:
        cases = [add_case(platform, n) for n in range(6)]
        platform.catch_up()
        for case_id in cases[::2]:
            grant(platform, case_id)
        platform.catch_up()
        live = {c: case_file_state(platform.referral, c) for c in cases}

        # A fresh referral log, in schemas of its own, following the same upstream logs.
        fresh = pg_settings.model_copy(update={"schema_prefix": pg_settings.schema_prefix + "r_"})
        migrate(fresh)
        replica = ReferralService(env=application_env(fresh, "referral"))
        upstreams = [
            open_upstream(pg_settings, name, types) for name, types in replica.follows.items()
        ]
        follower = Follower(replica, upstreams, settings=pg_settings)
        assert follower.catch_up() > 0
        assert follower.catch_up() == 0
        try:
            replayed = {c: case_file_state(replica, c) for c in cases}
        finally:
            replica.close()
            for upstream in upstreams:
                upstream.recorder.datastore.close()  # type: ignore[attr-defined]
        assert replayed == live
        assert sum(len(s[3]) for s in live.values()) == 3 + 6  # grants, and ages noted
    finally:
        platform.close()
        from tests.conftest import drop_schemas

        drop_schemas(pg_settings.postgres.url, pg_settings.schema_prefix + "r_")  # type: ignore[union-attr]


def serve_referral(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    # Killed processes hold their connections until the server notices: small pools keep the
    # test within the server's connection limit.
    env = {**os.environ, **settings_env(settings, pool=(2, 2))}
    return subprocess.Popen(
        [*KETNOI, "serve", "referral", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until_serving(proc: subprocess.Popen[bytes], port: int, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the referral process exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the referral process did not start")


def test_a_follower_killed_at_random_loses_nothing_and_applies_nothing_twice(
    pg_settings: Settings, tmp_path: Path
) -> None:
    from tests.support.processes import free_port

    migrate(pg_settings)
    writer = start(pg_settings, ("intake", "consent"), poll_interval=0.2)
    cases: list[UUID] = []
    granted: list[UUID] = []
    stop = threading.Event()

    def write_events() -> None:
        n = 0
        while not stop.is_set() and n < 300:
            case_id = add_case(writer, n)
            cases.append(case_id)
            if n % 2 == 0:
                writer.followers["consent"].catch_up()
                grant(writer, case_id)
                granted.append(case_id)
            n += 1
            time.sleep(0.25)  # a steady flow across several kill cycles

    rng = random.Random(20261122)
    log = tmp_path / "referral.log"
    thread = threading.Thread(target=write_events)
    thread.start()
    kills = 0
    positions: list[int] = []
    observer = ReferralService(env=application_env(pg_settings, "referral"))
    try:
        while kills < 10:
            port = free_port()
            proc = serve_referral(pg_settings, port, log)
            wait_until_serving(proc, port)  # now it follows the logs
            time.sleep(rng.uniform(0.2, 1.2))  # ...and is cut off at a random point
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            positions.append(observer.position("intake") + observer.position("consent"))
        stop.set()
        thread.join()
        observer.close()
        # The killed processes did the work between kills (not only the last clean run).
        assert len(set(positions)) >= 4, positions
        writer.followers["consent"].catch_up()
        # A last, clean run catches up with everything.
        referral = ReferralService(env=application_env(pg_settings, "referral"))
        upstreams = [
            open_upstream(pg_settings, name, types, app=writer.apps.get(name))
            for name, types in referral.follows.items()
        ]
        Follower(referral, upstreams, settings=pg_settings).catch_up()
        try:
            for case_id in cases:
                file = referral.load(CaseFile, case_file_id(case_id))
                kinds = Counter(type(e).__name__ for e in referral.history(file.id))
                assert kinds["CaseFileOpened"] == 1
                assert kinds["CaseFactsNoted"] == 4  # location, legal case, identity, needs
                expected_consent = 2 if case_id in granted else 1  # age noted (+ the grant)
                assert kinds["ConsentNoted"] == expected_consent, (case_id, kinds)
                assert isinstance(referral.history(file.id)[-1], CaseFactsNoted | ConsentNoted)
                assert file.person_id is not None
            # Every upstream event was tracked: nothing is pending.
            consent_records = {consent_record_id(c) for c in cases}
            assert len(consent_records) == len(cases)
        finally:
            referral.close()
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert kills == 10
    assert len(cases) >= 20
    # The process really was working when it was killed: it logged progress in between.
    assert log.read_text().count('"follower_failed"') == 0


def test_a_missed_deadline_escalates_exactly_once_across_processes(pg_settings: Settings) -> None:
    from contracts.referral import DeadlineMissed, Urgency
    from contracts.vocabulary import ServiceType

    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform)
    try:
        cases = [add_case(platform, n) for n in range(5)]
        platform.catch_up()
        for case_id in cases:
            grant(platform, case_id)
        platform.catch_up()
        swc = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
        hospital = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
        referral_ids = [
            UUID(
                str(
                    platform.referral.create_referral(
                        CommandContext(actor=MANAGER),
                        case_id,
                        from_agency=swc,
                        to_agency_id=hospital.agency_id,
                        service_type=ServiceType.PSYCHOLOGICAL_FIRST_AID,
                        urgency=Urgency.URGENT,
                        purpose=Purpose.SERVICE_PROVISION,
                        categories=(DataCategory.IDENTITY,),
                    )["referral_id"]
                )
            )
            for case_id in cases
        ]
        # Three "processes" of the referral service check the same deadlines at once, a
        # few hours later: acknowledgement (2 h) is missed, first service (24 h) is not yet.
        services = [ReferralService(env=application_env(pg_settings, "referral")) for _ in range(3)]
        later = datetime.now(UTC) + timedelta(hours=3)
        barrier = threading.Barrier(len(services))

        def check(service: ReferralService) -> None:
            barrier.wait()
            for _ in range(3):
                service.check_deadlines(later)

        threads = [threading.Thread(target=check, args=(s,)) for s in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for referral_id in referral_ids:
            missed = [
                e for e in platform.referral.history(referral_id) if isinstance(e, DeadlineMissed)
            ]
            assert [e.deadline.value for e in missed] == ["acknowledge"]
        # A day later the first-service deadline is missed too, once.
        services[0].check_deadlines(later + timedelta(days=1))
        services[1].check_deadlines(later + timedelta(days=1))
        for referral_id in referral_ids:
            missed = [
                e for e in platform.referral.history(referral_id) if isinstance(e, DeadlineMissed)
            ]
            assert [e.deadline.value for e in missed] == ["acknowledge", "first_service"]
        for service in services:
            service.close()
    finally:
        platform.close()


def test_an_override_notes_a_withdrawal_for_its_approver_and_lapses_at_its_end(
    pg_settings: Settings,
) -> None:
    from contracts.referral import (
        DeadlineMissed,
        OverrideConclusion,
        OverrideLapsed,
        OverrideReviewed,
        ReferralPutOnHold,
        ReferralStatus,
        Urgency,
        WithdrawalNotedDuringOverride,
    )
    from contracts.vocabulary import ServiceType
    from services.runtime.errors import PermissionDeniedError

    coordinator = Actor(user_id="coord-1", agency_id="dt-dolisa", role=Role.COORDINATOR)
    auditor = Actor(user_id="audit-1", agency_id="dt-inspectorate", role=Role.AUDITOR)
    hospital = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform)
    try:
        case_id = add_case(platform, 1)
        platform.catch_up()
        now = datetime.now(UTC)
        grant_id = UUID(
            platform.consent.grant(
                CommandContext(actor=MANAGER),
                case_id,
                categories=(DataCategory.IDENTITY,),
                recipients=(Recipient(kind=AgencyKind.HOSPITAL),),
                purposes=(Purpose.SERVICE_PROVISION,),
                valid_from=now - timedelta(days=1),
                valid_until=now + timedelta(days=30),
                collection=WRITTEN,
                given_by=ConsentGiver(kind=GiverKind.PERSON),
            )["grant_id"]
        )
        platform.catch_up()
        referrals = platform.referral
        created = referrals.create_referral(
            CommandContext(actor=MANAGER),
            case_id,
            from_agency=AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE),
            to_agency_id=hospital.agency_id,
            service_type=ServiceType.PSYCHOLOGICAL_FIRST_AID,
            urgency=Urgency.EMERGENCY,
            purpose=Purpose.SERVICE_PROVISION,
            categories=(DataCategory.IDENTITY, DataCategory.NEEDS),
        )
        assert created["status"] == "draft"  # needs: not granted
        referral_id = UUID(str(created["referral_id"]))
        override_id = UUID(
            str(
                referrals.request_override(
                    CommandContext(actor=MANAGER),
                    referral_id,
                    "Collapsed at the shelter, needs care now",
                    needed_for_hours=2,
                )["override_id"]
            )
        )
        approved = referrals.approve_override(
            CommandContext(actor=coordinator), referral_id, override_id
        )
        assert approved["status"] == "requested"

        # The identity grant is withdrawn while the override is in force: the referral
        # stays sent, and the withdrawal is recorded for the approver.
        platform.consent.withdraw(
            CommandContext(actor=MANAGER), case_id, grant_id, heard_by=hospital
        )
        platform.catch_up()
        referral = referrals.get_referral(referral_id)
        assert referral.status is ReferralStatus.REQUESTED
        assert referral.override_in_force_at(datetime.now(UTC)) == override_id
        [noted] = referral.withdrawals_noted
        assert noted.approved_by == coordinator
        assert noted.caused_by is not None  # the withdrawal it follows

        # Three hours on, past the two hours asked for: the deadline check records the
        # lapse and the referral follows the consent in force (none): on hold, and a
        # referral on hold is not escalated for the acknowledgement it is now past.
        later = datetime.now(UTC) + timedelta(hours=3)
        assert referrals.check_deadlines(later) == 0
        tail = referrals.history(referral_id)[-2:]
        assert [type(e) for e in tail] == [OverrideLapsed, ReferralPutOnHold]
        version = referrals.get_referral(referral_id).version
        assert referrals.check_deadlines(later + timedelta(minutes=1)) == 0
        assert referrals.get_referral(referral_id).version == version  # once only

        # Reviewed after the fact by a third role; the requester may not review it.
        with pytest.raises(PermissionDeniedError):
            referrals.review_override(
                CommandContext(actor=MANAGER),
                referral_id,
                override_id,
                OverrideConclusion.JUSTIFIED,
                "The person could not be asked",
            )
        referrals.review_override(
            CommandContext(actor=auditor),
            referral_id,
            override_id,
            OverrideConclusion.JUSTIFIED,
            "The person could not be asked",
        )
        history = referrals.history(referral_id)
        assert isinstance(history[-1], OverrideReviewed)
        assert not any(isinstance(e, DeadlineMissed) for e in history)
        assert [type(e) for e in history].count(WithdrawalNotedDuringOverride) == 1
        reloaded = referrals.get_referral(referral_id)
        assert reloaded.status is ReferralStatus.ON_HOLD
        assert reloaded.override_in_force is None
    finally:
        platform.close()
