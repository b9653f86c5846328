"""Cross-service sequences with every service its own process: the position passed on.

A client records a case and its person with intake, a consent grant with consent, and a
referral with referral, each its own process on PostgreSQL. Consent learns of the case, and
referral of the case and the grant, only by following the logs. Without ``Ketnoi-Position``
such a client meets answers for facts a follower has simply not read yet (404, 409, or a
referral blocked by a consent just granted); with the position of each response passed on,
every sequence succeeds first time, under load from concurrent clients.

The first test holds the consent follower back with a table lock, so that what it shows does
not depend on timing: the same grant is refused without the position, waits with it, and
past the bound is answered 503 naming the log waited for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from contracts.vocabulary import AgencyKind, Role
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.conftest import drop_schemas
from tests.e2e.test_positions_http import GRANT, RECEPTION
from tests.support.agencies import register_agencies
from tests.support.positions import PositionCarrier
from tests.support.processes import free_port, ketnoi_server, run_ketnoi, settings_env

pytestmark = pytest.mark.postgres

CASES = 200
CLIENTS = 8
UNCARRIED_CASES = 32
WAIT_BOUND = 3.0
REFERRAL = {"to_agency": "dt-hospital", "service_type": "medical_care", "categories": ["identity"]}


@pytest.fixture(scope="module")
def pg_settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of this module's own schemas: its tests share the services' processes."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    data_dir = tmp_path_factory.mktemp("positions") / "data"
    yield Settings(database_url=pg_url, schema_prefix=prefix, data_dir=data_dir)
    drop_schemas(pg_url, prefix)


@pytest.fixture(scope="module")
def services(
    pg_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    tmp_path = tmp_path_factory.mktemp("logs")
    env = {
        **settings_env(pg_settings, pool=(3, 3)),
        "KETNOI_POSITION_WAIT_TIMEOUT": str(WAIT_BOUND),
    }
    run_ketnoi("migrate", env=env)
    register_agencies(pg_settings)
    with (
        ketnoi_server("serve", "intake", port=free_port(), env=env, log=tmp_path / "i.log") as (
            _i,
            intake,
        ),
        ketnoi_server("serve", "consent", port=free_port(), env=env, log=tmp_path / "c.log") as (
            _c,
            consent,
        ),
        ketnoi_server("serve", "referral", port=free_port(), env=env, log=tmp_path / "r.log") as (
            _r,
            referral,
        ),
    ):
        yield {"intake": intake, "consent": consent, "referral": referral}


class Desk:
    """The tokens of the people in one case's sequence."""

    def __init__(self, settings: Settings) -> None:
        tokens = TokenService(settings)

        def as_(agency: str, kind: AgencyKind, role: Role) -> dict[str, str]:
            token = tokens.issue(
                user_id=f"{agency}-{role.value}",
                agency_id=agency,
                province="dong-thap",
                roles=[role],
                agency_kind=kind,
            )
            return {"Authorization": f"Bearer {token}"}

        self.officer = as_("dt-police", AgencyKind.POLICE, Role.INTAKE_OFFICER)
        self.coordinator = as_("dt-dolisa", AgencyKind.LOCAL_AUTHORITY, Role.COORDINATOR)
        self.manager = as_("dt-swc", AgencyKind.SOCIAL_WORK_CENTRE, Role.CASE_MANAGER)


def open_case(http: httpx.Client, urls: dict[str, str], desk: Desk) -> str:
    """A case with its person and case manager, recorded with intake."""
    intake = urls["intake"]
    created = http.post(f"{intake}/intake/cases", json=RECEPTION, headers=desk.officer)
    assert created.status_code == 201, created.text
    case = str(created.json()["case_id"])
    person = {"full_name": "Trần Thị Hoa", "sex": "female", "estimated_age": 24}
    r = http.post(f"{intake}/intake/cases/{case}/person", json=person, headers=desk.officer)
    assert r.status_code == 201, r.text
    r = http.put(
        f"{intake}/intake/cases/{case}/case-manager",
        json={"case_manager_id": "dt-swc-1", "agency": "dt-swc"},
        headers=desk.coordinator,
    )
    assert r.is_success, r.text
    return case


def one_sequence(
    http: httpx.Client, urls: dict[str, str], desk: Desk, *, retry_grant: bool = False
) -> str:
    """Person, then grant, then referral, each sent once; what went wrong, or "ok".

    With ``retry_grant`` a refused grant is sent again until accepted (as a client that
    cannot rely on the services must), and the referral is sent once after it.
    """
    case = open_case(http, urls, desk)
    url = f"{urls['consent']}/consent/cases/{case}/grants"
    grant = http.post(url, json=GRANT, headers=desk.manager)
    refused = grant.status_code
    if refused != 201 and not retry_grant:
        return f"grant {refused}"
    deadline = time.monotonic() + 30
    while grant.status_code != 201:
        assert time.monotonic() < deadline, grant.text
        time.sleep(0.02)
        grant = http.post(url, json=GRANT, headers=desk.manager)
    referral = http.post(
        f"{urls['referral']}/referral/cases/{case}/referrals", json=REFERRAL, headers=desk.manager
    )
    if referral.status_code != 201:
        return f"referral {referral.status_code}"
    if referral.json()["blocked_by"]:
        return "referral blocked by a consent just granted"
    return "ok" if refused == 201 else f"grant {refused}, then ok"


def run_clients(
    cases: int,
    client: Callable[[], httpx.Client],
    urls: dict[str, str],
    desk: Desk,
    *,
    retry_grant: bool = False,
) -> tuple[Counter[str], float]:
    """``cases`` sequences from ``CLIENTS`` concurrent clients; outcomes and seconds taken."""

    def work(share: int) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        with client() as http:
            for _ in range(share):
                outcomes[one_sequence(http, urls, desk, retry_grant=retry_grant)] += 1
        return outcomes

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        shares = [cases // CLIENTS + (i < cases % CLIENTS) for i in range(CLIENTS)]
        total = sum((f.result() for f in [pool.submit(work, s) for s in shares]), Counter())
    return total, time.monotonic() - started


def test_sequences_across_processes_succeed_first_time_with_the_position_passed_on(
    services: dict[str, str], pg_settings: Settings
) -> None:
    desk = Desk(pg_settings)
    # Without the position: the grant is retried until accepted, so that the referral after
    # it is tried too.
    uncarried, uncarried_s = run_clients(
        UNCARRIED_CASES, lambda: httpx.Client(timeout=30), services, desk, retry_grant=True
    )
    carried, carried_s = run_clients(
        CASES, lambda: PositionCarrier().client(timeout=30), services, desk
    )
    print(
        f"\n{UNCARRIED_CASES} sequences from {CLIENTS} clients without the position "
        f"({uncarried_s:.1f} s): {dict(uncarried)}"
        f"\n{CASES} sequences from {CLIENTS} clients with it ({carried_s:.1f} s): {dict(carried)}"
    )
    assert carried == Counter({"ok": CASES})


def stalled_follower(pg_settings: Settings, service: str) -> Callable[[], bool]:
    """Whether some connection waits for the lock on ``service``'s events table."""
    query = sql.SQL(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE NOT l.granted AND c.relname = {} AND c.relnamespace = {}::regnamespace"
    ).format(sql.Literal(f"{service}_events"), sql.Literal(pg_settings.schema_for(service)))

    def waiting() -> bool:
        with psycopg.connect(pg_settings.database_url or "", autocommit=True) as conn:
            row = conn.execute(query).fetchone()
            return bool(row and row[0])

    return waiting


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_follower_held_back_is_waited_for_within_the_bound(
    services: dict[str, str], pg_settings: Settings
) -> None:
    desk = Desk(pg_settings)
    consent = services["consent"]
    table = sql.Identifier(pg_settings.schema_for("consent"), "consent_events")
    carrier = PositionCarrier()
    with carrier.client(timeout=30) as http, httpx.Client(timeout=30) as plain:
        for hold in (0.5, WAIT_BOUND + 1):
            with psycopg.connect(pg_settings.database_url or "", autocommit=True) as lock:
                lock.execute("BEGIN")
                lock.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
                case = open_case(http, services, desk)
                # The consent service's follower is stuck on the lock with the new case.
                wait_for("the consent follower to wait", stalled_follower(pg_settings, "consent"))
                url = f"{consent}/consent/cases/{case}/grants"
                without = plain.post(url, json=GRANT, headers=desk.manager)
                assert without.status_code == 404, without.text
                asked = dict(carrier.positions)
                assert "intake" in asked
                answers: list[httpx.Response] = []
                started = time.monotonic()

                def grant(answers: list[httpx.Response] = answers, url: str = url) -> None:
                    answers.append(http.post(url, json=GRANT, headers=desk.manager))

                sender = threading.Thread(target=grant)
                sender.start()
                sender.join(hold)
                lock.execute("COMMIT")
                sender.join()
            (answer,) = answers
            waited = time.monotonic() - started
            if hold < WAIT_BOUND:
                # Answered once the follower could read the case: after the lock, not before.
                assert answer.status_code == 201, answer.text
                assert waited >= hold
            else:
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "1"
                assert answer.headers["content-type"] == "application/problem+json"
                problem: dict[str, Any] = answer.json()
                assert problem["waiting_for"] == "intake"
                assert problem["position"] == asked["intake"]
                assert "intake log" in problem["detail"]
                # Asked again once the follower has caught up, the same request succeeds.
                again = http.post(url, json=GRANT, headers=desk.manager)
                assert again.status_code == 201, again.text


def test_a_case_transfer_completed_in_the_referral_process_moves_the_case_in_every_one(
    services: dict[str, str], pg_settings: Settings
) -> None:
    """Intake, its own process, follows the referral log: the last confirmation's position
    is waited for, and the new manager owns the case at once; consent and referral, each its
    own process, learn it from intake's log (eventually: a reaction's position is not
    passed on, so the client waits for them within a bound)."""
    desk = Desk(pg_settings)
    tokens = TokenService(pg_settings)

    def as_(agency: str, kind: AgencyKind, role: Role = Role.CASE_MANAGER) -> dict[str, str]:
        token = tokens.issue(
            user_id=f"{agency}-{role.value}",
            agency_id=agency,
            province="dong-thap",
            roles=[role],
            agency_kind=kind,
        )
        return {"Authorization": f"Bearer {token}"}

    swc = AgencyKind.SOCIAL_WORK_CENTRE
    new = as_("dt-swc-2", swc)
    carrier = PositionCarrier()
    with carrier.client(timeout=30) as http:
        case = open_case(http, services, desk)
        body = {
            "kind": "case_transfer",
            "parties": [
                {"agency": "dt-swc", "role": "from", "capacity": "case manager"},
                {"agency": "dt-swc-2", "role": "to", "capacity": "case manager"},
            ],
            "to_case_manager_id": "dt-swc-2-case_manager",
        }
        referral = services["referral"]
        r = http.post(
            f"{referral}/referral/cases/{case}/handovers", json=body, headers=desk.manager
        )
        assert r.status_code == 201, r.text
        handover = r.json()["handover_id"]
        for who in (desk.manager, new):
            r = http.post(f"{referral}/referral/handovers/{handover}/confirmations", headers=who)
            assert r.status_code == 201, r.text
        assert r.json()["status"] == "completed"
        assert "referral" in carrier.positions

        r = http.get(f"{services['intake']}/intake/cases/{case}", headers=new)
        assert r.status_code == 200, r.text
        assert r.json()["case_manager_id"] == "dt-swc-2-case_manager"

        deadline = time.monotonic() + 30
        url = f"{services['consent']}/consent/cases/{case}/grants"
        while (grant := http.post(url, json=GRANT, headers=new)).status_code == 404:
            assert time.monotonic() < deadline, grant.text
            time.sleep(0.05)
        assert grant.status_code == 201, grant.text
        url = f"{referral}/referral/cases/{case}/referrals"
        while (sent := http.post(url, json=REFERRAL, headers=new)).status_code == 404:
            assert time.monotonic() < deadline, sent.text
            time.sleep(0.05)
        assert sent.status_code == 201, sent.text
        # The agency that handed over holds the case no more, in any process.
        r = http.get(f"{services['intake']}/intake/cases/{case}", headers=desk.manager)
        assert r.status_code == 404, r.text
