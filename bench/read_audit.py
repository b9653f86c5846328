"""What recording every read costs: reading a case over HTTP with and without the read audit.

Run ``python -m bench.read_audit`` (or ``make bench``). Like ``bench.intake_throughput`` it
creates a throwaway database on the server named by ``KETNOI_BENCH_DATABASE_URL`` and drops it
at the end. It starts the platform's intake service in a server process of its own (the app
built as ``services.cli.wiring`` builds it) with two bench-only routes that read a case
exactly as ``GET /intake/cases/{id}`` does: one records the read through
``request.app.state.read_audit`` before answering, the other does not. Sixteen httpx clients
read cases through each in turn, round by round, and the report gives medians of requests per
second and of p50/p99 latency, the ratio of the two, and beside them the raw rate of a plain
psycopg single-row insert transaction on the same database.

Beside the two, a third route, ``bare``, answers the same request (the same authentication and
response) with a case read once and kept in memory: no database, the HTTP stack's own limit.

Each set of rounds runs at a size of history: before them, the intake log and the audit log
are filled up to ``--history`` events each (by default 10,000, then 1,000,000) by copying the
events the application itself wrote for the seeded cases and reads (the same topics and the
same encoded, encrypted state, each copy a new aggregate id) in bulk ``INSERT ... SELECT``
statements, then ``ANALYZE``. The copies carry no seal leaves: the seal only needs the
positions to grow. The report gives, at each size, the audited reads beside the bare route,
and how the p99 of audited reads grows from the first size to the last.

With ``--workers N`` the server runs N worker processes on one port (``ketnoi serve
--workers``).

It also measures, in process, the two ways of laying out a batch of reads in the log: each
read its own originator (version 1 of a fresh id; what ``ReadAudit`` does) against one
originator per batch holding the reads as versions 1..n.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID, uuid4

import httpx
import psycopg
from fastapi import APIRouter, Depends, FastAPI, Request
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench.agencies import register_agencies
from bench.intake_throughput import (
    DEFAULT_MAINTENANCE_URL,
    PROJECT_ROOT,
    RawLog,
    cpu_seconds,
    create_database,
    drop_database,
    free_port,
    raw_single,
    server_environment,
    server_version,
    stop_server,
    wait_until_ready,
    with_dbname,
)
from contracts.access_policy import Action, sight
from contracts.audit import PersonalDataRead, ReadBasis
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PersonDetails, Place
from contracts.vocabulary import AgencyKind, ArrivalRoute, DataCategory, Role, Sex
from services.cli import _run_http, wiring
from services.cli.wiring import http_app, migrate, start
from services.intake.api import CasePublic, allowed
from services.intake.application import IntakeService
from services.runtime.access import record_read
from services.runtime.aggregate import CommandContext
from services.runtime.auth import CurrentPrincipal, TokenService
from services.runtime.logging import configure_logging
from services.runtime.persistence import application_env
from services.runtime.read_audit import AUDIT, ReadAudit, ReadAuditLog, audit_env
from services.runtime.serving import serve_workers
from services.runtime.settings import Environment, Settings

SCHEMA_PREFIX = "bench_"
PROVINCE = "dong-thap"
AGENCY = AgencyRef(agency_id="dong-thap-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
READERS = (Role.CASE_MANAGER, Role.INTAKE_OFFICER)
# What CasePublic returns of the person: the categories the audited route records.
CATEGORIES = (DataCategory.IDENTITY, DataCategory.NEEDS, DataCategory.RISK, DataCategory.CONTACT)
EVENTS_TABLE = "audit_events"
ROUTES = ("bare", "plain", "audited")

console = Console(stderr=True)


# --- The server: the platform's app plus two bench-only routes ------------------------------


def intake_service(request: Request) -> IntakeService:
    service: IntakeService = request.app.state.intake
    return service


Intake = Annotated[IntakeService, Depends(intake_service)]
bench_router = APIRouter(prefix="/bench", include_in_schema=False)


@bench_router.get("/plain/cases/{case_id}", response_model=CasePublic)
def read_case_plain(case_id: UUID, intake: Intake, principal: CurrentPrincipal) -> CasePublic:
    """``GET /intake/cases/{id}`` through the access gate, without recording the read."""
    case = intake.get_case(case_id)
    allowed(principal, Action.SEE_PROGRESS)(case)
    return CasePublic.of(case, sight(principal.asker, case.ties))


@bench_router.get("/audited/cases/{case_id}", response_model=CasePublic)
def read_case_audited(
    case_id: UUID, intake: Intake, principal: CurrentPrincipal, request: Request
) -> CasePublic:
    """The same read, recorded in the audit log before the answer leaves (as the route
    ``GET /intake/cases/{id}`` does)."""
    case = intake.get_case(case_id)
    allowed(principal, Action.SEE_PROGRESS)(case)
    seen = sight(principal.asker, case.ties)
    record_read(
        request, principal, seen, case_id=case.id, what="intake.case", person_id=case.person_id
    )
    return CasePublic.of(case, seen)


_BARE: dict[UUID, CasePublic] = {}


@bench_router.get("/bare/cases/{case_id}", response_model=CasePublic)
def read_case_bare(case_id: UUID, intake: Intake, principal: CurrentPrincipal) -> CasePublic:
    """The same request and answer, from memory: the case is read once, the first time."""
    found = _BARE.get(case_id)
    if found is None:
        case = intake.get_case(case_id)
        allowed(principal, Action.SEE_PROGRESS)(case)
        found = _BARE[case_id] = CasePublic.of(case, sight(principal.asker, case.ties))
    return found


def worker_app() -> FastAPI:
    """One worker of ``ketnoi serve intake --workers N``, plus the bench's routes."""
    return wiring.worker_app(routers=[bench_router])


def serve(port: int, workers: int = 1) -> None:
    """The server process: configured from KETNOI_* variables as ``ketnoi serve intake``."""
    settings = Settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    if workers > 1:
        os.environ[wiring.WORKER_SERVICE] = "intake"
        serve_workers("bench.read_audit:worker_app", settings, "127.0.0.1", port, workers)
        return
    running = start(settings, ("intake",))
    try:
        app = http_app(running, TokenService(settings), title="Ketnoi read-audit bench")
        app.include_router(bench_router)
        _run_http(app, settings, "127.0.0.1", port)
    finally:
        running.close()


@contextlib.contextmanager
def running_server(
    settings: Settings, window_ms: float, log_path: Path, workers: int = 1
) -> Iterator[tuple[str, int]]:
    """This module's server on a free loopback port; yields its base URL and pid, stops it
    by pid (its workers stop with it)."""
    port = free_port()
    env = server_environment(settings)
    env["KETNOI_READ_AUDIT_WINDOW_MS"] = str(window_ms)
    # Not ``-m bench.read_audit``: the routes would then live in ``__main__``.
    code = f"from bench.read_audit import serve; serve({port}, {workers})"
    command = [sys.executable, "-c", code]
    with log_path.open("w") as log:
        # A session of its own: stopping it stops its workers too.
        process = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=log, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            # Each worker is a new interpreter that imports and builds everything itself.
            wait_until_ready(process, base_url, timeout=60 if workers == 1 else 240)
        except RuntimeError as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; its log ends:\n{tail}") from None
        yield base_url, process.pid
    finally:
        stop_server(process)


# --- The load --------------------------------------------------------------------------------


@dataclass
class ReadRound:
    rate: float
    p50_ms: float
    p99_ms: float
    failures: int
    client_cpu: float
    first_failure: str | None = None
    server_cpu_ms: float = 0.0  # the server's CPU time per request


class ReadLoad:
    """Concurrent clients reading cases, on one event loop kept across rounds."""

    def __init__(self, base_url: str, token: str, clients: int, cases: list[UUID]) -> None:
        self.clients = clients
        self.cases = cases
        self.runner = asyncio.Runner()
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
            timeout=60,
        )

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()

    def run(self, path: str, count: int) -> ReadRound:
        return self.runner.run(self._round(path, count))

    async def _round(self, path: str, count: int) -> ReadRound:
        remaining = count
        failures = 0
        first_failure: str | None = None
        latencies: list[float] = []

        async def worker() -> None:
            nonlocal remaining, failures, first_failure
            while remaining > 0:
                remaining -= 1
                url = f"/bench/{path}/cases/{self.cases[remaining % len(self.cases)]}"
                sent = time.perf_counter()
                try:
                    response = await self.client.get(url)
                except httpx.HTTPError as exc:
                    failures += 1
                    first_failure = first_failure or f"{type(exc).__name__}: {exc}"
                    continue
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    failures += 1
                    first_failure = first_failure or f"{response.status_code} {response.text}"

        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.clients)))
        elapsed = time.perf_counter() - started
        cuts = statistics.quantiles(latencies, n=100)
        return ReadRound(
            rate=(count - failures) / elapsed,
            p50_ms=statistics.median(latencies) * 1000,
            p99_ms=cuts[98] * 1000,
            failures=failures,
            client_cpu=(time.process_time() - cpu) / elapsed,
            first_failure=first_failure,
        )


# --- The layout of a batch in the log --------------------------------------------------------


def sample_reads(count: int, *, one_originator: bool) -> list[PersonalDataRead]:
    actor = Actor(user_id="bench-cw", agency_id=AGENCY.agency_id, role=Role.CASE_MANAGER)
    batch_id = uuid4()
    now = datetime.now(UTC)
    return [
        PersonalDataRead(
            originator_id=batch_id if one_originator else uuid4(),
            originator_version=n + 1 if one_originator else 1,
            timestamp=now,
            actor=actor,
            correlation_id=uuid4(),
            case_id=uuid4(),
            person_id=uuid4(),
            categories=CATEGORIES,
            basis=ReadBasis.OWN_CASE,
            what="intake.case",
        )
        for n in range(count)
    ]


def layout_rate(log: ReadAuditLog, batch: int, batches: int, *, one_originator: bool) -> float:
    """Reads per second saved in batches of ``batch``, one transaction each."""
    prepared = [sample_reads(batch, one_originator=one_originator) for _ in range(batches)]
    started = time.perf_counter()
    for reads in prepared:
        log.save(*reads)
    return batch * batches / (time.perf_counter() - started)


def record_rate(audit: ReadAudit, threads: int, count: int) -> float:
    """``ReadAudit.record`` calls per second from concurrent threads, in process."""
    actor = Actor(user_id="bench-cw", agency_id=AGENCY.agency_id, role=Role.CASE_MANAGER)
    shares = [count // threads + (i < count % threads) for i in range(threads)]
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(share: int) -> None:
        barrier.wait()
        try:
            for _ in range(share):
                audit.record(
                    actor=actor,
                    case_id=uuid4(),
                    categories=CATEGORIES,
                    basis=ReadBasis.OWN_CASE,
                    what="intake.case",
                )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(s,), daemon=True) for s in shares]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return count / elapsed


# --- Rounds and the report -------------------------------------------------------------------


@dataclass
class Series:
    label: str
    rates: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    server_cpu_ms: list[float] = field(default_factory=list)

    def add(self, result: ReadRound) -> None:
        self.server_cpu_ms.append(result.server_cpu_ms)
        self.rates.append(result.rate)
        self.p50.append(result.p50_ms)
        self.p99.append(result.p99_ms)
        self.cpu.append(result.client_cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass
class AtSize:
    """The HTTP rounds at one size of history."""

    history: int
    bare: Series = field(default_factory=lambda: Series("GET a case, bare (from memory)"))
    plain: Series = field(default_factory=lambda: Series("GET a case, no read audit"))
    audited: Series = field(default_factory=lambda: Series("GET a case, read audit on"))
    paired: list[float] = field(default_factory=list)  # each round's audited / plain
    paired_bare: list[float] = field(default_factory=list)  # each round's audited / bare
    intake_events: int = 0
    audit_events: int = 0
    fill_seconds: float = 0.0


@dataclass
class Results:
    sizes: list[AtSize] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)  # layout: one originator per read
    in_process: list[float] = field(default_factory=list)  # record() from N threads
    shared: list[float] = field(default_factory=list)  # layout: one originator per batch
    failures: int = 0
    first_failure: str | None = None
    reads_stored: int = 0
    transactions: int = 0
    server_problems: int = 0
    first_server_problem: str | None = None


def seed_cases(service: IntakeService, count: int) -> list[UUID]:
    """Cases with a registered person, to read."""
    ctx = CommandContext(
        actor=Actor(user_id="bench-cw", agency_id=AGENCY.agency_id, role=Role.CASE_MANAGER)
    )
    details = PersonDetails(
        full_name="Bench Person", sex=Sex.FEMALE, date_of_birth=date(2000, 1, 1)
    )
    cases = []
    for _ in range(count):
        result = service.record_reception(
            ctx,
            route=ArrivalRoute.RESCUED,
            received_at=datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
            place=Place(province=PROVINCE),
            receiving_agency=AGENCY,
        )
        case_id = UUID(str(result["case_id"]))
        service.register_person(ctx, case_id, details)
        cases.append(case_id)
    return cases


def events_table(settings: Settings, log: str) -> sql.Identifier:
    return sql.Identifier(settings.schema_for(log), f"{log}_events")


def fill_history(conn: psycopg.Connection[Any], settings: Settings, log: str, size: int) -> int:
    """Bring ``log`` up to ``size`` events by copying its own first events (those the
    application wrote: the seeded cases, or the warm-up's reads) under new aggregate ids, in
    bulk; returns the events it holds then."""
    table = events_table(settings, log)
    template = sql.SQL(
        "SELECT originator_id, originator_version, topic, state FROM {} "
        "WHERE originator_id IN (SELECT originator_id FROM {} ORDER BY notification_id LIMIT 50)"
    ).format(table, table)
    rows = conn.execute(sql.SQL("SELECT count(*) FROM ({}) t").format(template)).fetchone()
    per_copy = int(rows[0]) if rows else 0
    assert per_copy, f"the {log} log is empty: nothing to copy"
    step = 100_000
    while True:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        held = int(row[0]) if row else 0
        if held >= size:
            return held
        copies = max(1, min(size - held, step) // per_copy)
        # Each copy of the template's aggregates gets ids of its own; events keep their order.
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "SELECT md5(c.n::text || t.originator_id::text)::uuid, t.originator_version, "
                "t.topic, t.state FROM generate_series(%s::bigint, %s::bigint) AS c(n) "
                "CROSS JOIN ({}) AS t "
                "ORDER BY c.n, t.originator_id, t.originator_version"
            ).format(table, template),
            (held, held + copies - 1),
        )


def audit_counts(conn: psycopg.Connection[Any], settings: Settings) -> tuple[int, int]:
    """Reads in the audit log, and the transactions they were written in."""
    row = conn.execute(
        sql.SQL("SELECT count(*), count(DISTINCT xmin::text) FROM {}").format(
            sql.Identifier(settings.schema_for(AUDIT), EVENTS_TABLE)
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def measure(args: argparse.Namespace, bench_url: str) -> Results:
    results = Results()
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ketnoi-bench-")))
        log = stack.enter_context((data_dir / "bench.log").open("w"))
        settings = Settings(
            environment=Environment.DEVELOPMENT,
            database_url=bench_url,
            schema_prefix=SCHEMA_PREFIX,
            data_dir=data_dir,
            log_format="json",
            log_level="info",
            auth_public_key_file=None,
            auth_signing_key_file=None,
            # Several workers share one process's connection budget (at least 2 each).
            pg_pool_size=max(2, 10 // args.workers),
            pg_max_overflow=max(2, 10 // args.workers),
        )
        with contextlib.redirect_stderr(log):
            configure_logging(settings.effective_log_format, settings.log_level)
        target = settings.postgres
        assert target is not None
        console.print(f"Setting up database {target.dbname}")
        raw = RawLog(target.conninfo())
        raw.create()
        migrate(settings)
        register_agencies(settings, [AGENCY], PROVINCE)
        service = IntakeService(env=application_env(settings, "intake"))
        try:
            cases = seed_cases(service, args.cases)
        finally:
            service.close()  # its connections are not needed any more
        layout_log = ReadAuditLog(env=audit_env(settings))
        stack.callback(layout_log.close)
        audit = ReadAudit(settings, window_ms=args.window_ms)
        stack.callback(audit.close)
        token = TokenService(settings).issue(
            user_id="bench-cw", agency_id=AGENCY.agency_id, province=PROVINCE, roles=[READERS[0]]
        )
        single = stack.enter_context(raw.connect())
        server_log = data_dir / "server.log"
        stack.callback(count_problems, server_log, results)
        base_url, server_pid = stack.enter_context(
            running_server(settings, args.window_ms, server_log, args.workers)
        )
        load = ReadLoad(base_url, token, args.clients, cases)
        stack.callback(load.close)

        console.print(f"Warming up ({args.warmup} of each)")
        raw_single(raw, single, args.warmup)
        for path in ROUTES:
            warm = load.run(path, args.warmup)
            if warm.failures:
                msg = f"warm-up of {path} failed {warm.failures} times: {warm.first_failure}"
                raise RuntimeError(msg)
        layout_rate(layout_log, args.layout_batch, 5, one_originator=False)
        layout_rate(layout_log, args.layout_batch, 5, one_originator=True)
        record_rate(audit, args.clients, args.warmup)

        for index, size in enumerate(args.history):
            at = AtSize(size)
            results.sizes.append(at)
            started = time.perf_counter()
            console.print(f"Filling the intake and audit logs up to {size:,} events each")
            at.intake_events = fill_history(single, settings, "intake", size)
            at.audit_events = fill_history(single, settings, AUDIT, size)
            single.execute("ANALYZE")
            at.fill_seconds = time.perf_counter() - started
            first = index == 0
            stored_before = audit_counts(single, settings)
            in_process_tx = 0
            for number in range(1, args.rounds + 1):
                results.raw.append(raw_single(raw, single, args.raw_count))
                # Rotate which goes first, so drift hits all alike.
                shift = number % len(ROUTES)
                order = ROUTES[shift:] + ROUTES[:shift]
                got: dict[str, ReadRound] = {}
                for path in order:
                    cpu = cpu_seconds(server_pid)
                    got[path] = load.run(path, args.count)
                    got[path].server_cpu_ms = (cpu_seconds(server_pid) - cpu) * 1000 / args.count
                    results.failures += got[path].failures
                    results.first_failure = results.first_failure or got[path].first_failure
                at.bare.add(got["bare"])
                at.plain.add(got["plain"])
                at.audited.add(got["audited"])
                at.paired.append(got["audited"].rate / got["plain"].rate)
                at.paired_bare.append(got["audited"].rate / got["bare"].rate)
                line = (
                    f"History {size:,}, round {number}/{args.rounds}: "
                    f"raw {results.raw[-1]:,.0f} tx/s  "
                    f"bare {got['bare'].rate:,.0f}/s p99 {got['bare'].p99_ms:.1f} ms  "
                    f"plain {got['plain'].rate:,.0f}/s p99 {got['plain'].p99_ms:.1f} ms  "
                    f"audited {got['audited'].rate:,.0f}/s p99 {got['audited'].p99_ms:.1f} ms"
                )
                if first:
                    # The in-process measurements, once (they do not depend on the history).
                    before = audit_counts(single, settings)[1]
                    results.in_process.append(record_rate(audit, args.clients, args.count))
                    in_process_tx += audit_counts(single, settings)[1] - before
                    if number % 2:
                        results.own.append(layout_log_rate(layout_log, args, one_originator=False))
                        results.shared.append(
                            layout_log_rate(layout_log, args, one_originator=True)
                        )
                    else:
                        results.shared.append(
                            layout_log_rate(layout_log, args, one_originator=True)
                        )
                        results.own.append(layout_log_rate(layout_log, args, one_originator=False))
                    line += (
                        f"  in process {results.in_process[-1]:,.0f}/s  "
                        f"layout {results.own[-1]:,.0f} vs {results.shared[-1]:,.0f} reads/s"
                    )
                console.print(line)
            if first:
                stored_after = audit_counts(single, settings)
                layout_reads = 2 * args.rounds * args.layout_batch * args.layout_batches
                layout_reads += args.rounds * args.count  # and record() in process
                layout_tx = 2 * args.rounds * args.layout_batches
                results.reads_stored = stored_after[0] - stored_before[0] - layout_reads
                results.transactions = stored_after[1] - stored_before[1] - layout_tx
                results.transactions -= in_process_tx
    return results


def layout_log_rate(log: ReadAuditLog, args: argparse.Namespace, *, one_originator: bool) -> float:
    return layout_rate(log, args.layout_batch, args.layout_batches, one_originator=one_originator)


def count_problems(server_log: Path, results: Results) -> None:
    """Count the server's log lines at warning level or above (read before the log goes)."""
    if not server_log.exists():
        return
    for line in server_log.read_text(errors="replace").splitlines():
        try:
            level = json.loads(line).get("level", "")
        except ValueError:
            level = "error"  # not structlog's JSON: uvicorn's own output or a traceback
        if level in {"warning", "error", "critical", "exception"}:
            results.server_problems += 1
            results.first_server_problem = results.first_server_problem or line[:300]


def latency(series: Series) -> str:
    p50, p99 = statistics.median(series.p50), statistics.median(series.p99)
    cpu = statistics.median(series.server_cpu_ms)
    return f"p50 {p50:5.1f} ms  p99 {p99:5.1f} ms  server CPU {cpu:.2f} ms/req"


def report(results: Results, args: argparse.Namespace, context: dict[str, str]) -> None:
    r = results
    raw = statistics.median(r.raw)
    out = Console(width=max(Console().width, 100))
    table = Table(
        title=f"Reading a case over HTTP, {args.clients} clients: "
        f"median of {args.rounds} rounds x {args.count}"
    )
    columns = ("History", "Measurement", "Median", "Min - max", "p50", "p99", "vs bare")
    for column in columns:
        table.add_column(column, justify="left" if column == "Measurement" else "right")
    for at in r.sizes:
        for series in (at.bare, at.plain, at.audited):
            table.add_row(
                f"{at.history:,}",
                series.label,
                f"{series.median:,.0f} req/s",
                f"{min(series.rates):,.0f} - {max(series.rates):,.0f}",
                f"{statistics.median(series.p50):.1f} ms",
                f"{statistics.median(series.p99):.1f} ms",
                f"{series.median / at.bare.median:.2f}",
            )
    table.add_row("", "raw insert, 1 connection", f"{raw:,.0f} tx/s", "", "", "", "")
    out.print(table)

    batch = r.reads_stored / r.transactions if r.transactions else 0.0
    workers = f"; {args.workers} server workers" if args.workers > 1 else ""
    lines = [
        "Read audit (python -m bench.read_audit)",
        f"  {context['when']}; PostgreSQL {context['postgres']}; {context['cpus']} CPUs; "
        f"Python {context['python']}; eventsourcing {context['eventsourcing']}",
        f"  median of {args.rounds} rounds x {args.count} reads, {args.clients} clients, "
        f"after {args.warmup} warm-up each; window {args.window_ms} ms{workers}",
    ]
    for at in r.sizes:
        lines += [
            f"  history {at.history:,} events (intake log {at.intake_events:,}, audit log"
            f" {at.audit_events:,} before the rounds; filled in {at.fill_seconds:.0f} s)",
            f"    GET a case, bare            {at.bare.median:8,.0f} req/s  {latency(at.bare)}",
            f"    GET a case, no read audit   {at.plain.median:8,.0f} req/s  {latency(at.plain)}",
            f"    GET a case, read audit on   {at.audited.median:8,.0f} req/s  "
            f"{latency(at.audited)}",
            f"    audited / bare {at.audited.median / at.bare.median:.2f}"
            f" (paired rounds {statistics.median(at.paired_bare):.2f}),"
            f" audited / plain {at.audited.median / at.plain.median:.2f}"
            f" (paired rounds {statistics.median(at.paired):.2f})",
        ]
    first, last = r.sizes[0], r.sizes[-1]
    growth = statistics.median(last.audited.p99) / statistics.median(first.audited.p99)
    worst = min(at.audited.median / at.bare.median for at in r.sizes)
    lines += [
        f"  audited p99 at {last.history:,} / at {first.history:,} events: {growth:.2f}",
        f"  goals: audited >= 0.50 x bare ({'met' if worst >= 0.5 else 'not met'}),"
        f" p99 within 1.2 x from {first.history:,} to {last.history:,}"
        f" ({'met' if growth <= 1.2 else 'not met'})",
        f"  raw insert tx, 1 connection {raw:8,.0f} tx/s",
        f"  reads stored during the first rounds {r.reads_stored:,} in {r.transactions:,}"
        f" transactions ({batch:.1f} reads per transaction)",
        f"  layout, {args.layout_batch} reads per transaction: one originator per read"
        f" {statistics.median(r.own):,.0f} reads/s, one per batch"
        f" {statistics.median(r.shared):,.0f} reads/s",
        f"  ReadAudit.record from {args.clients} threads in process"
        f" {statistics.median(r.in_process):8,.0f} reads/s"
        f" = {statistics.median(r.in_process) / raw:.2f} x raw",
        f"  HTTP failures {r.failures}; server log warnings/errors {r.server_problems}",
        f"  the load generator runs on the same machine and used"
        f" {statistics.median([c for at in r.sizes for c in at.audited.cpu]):.0%} of one CPU",
    ]
    if r.first_failure:
        lines.append(f"  first failure: {r.first_failure}")
    if r.first_server_problem:
        lines.append(f"  first server problem: {r.first_server_problem}")
    print(flush=True)
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.read_audit",
        description="Reads of a case per second over HTTP, with and without the read audit.",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds to take the median of")
    parser.add_argument("--count", type=int, default=2000, help="reads per measurement")
    parser.add_argument("--warmup", type=int, default=300, help="untimed reads first")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--cases", type=int, default=100, help="cases to read, round robin")
    parser.add_argument("--raw-count", type=int, default=1000, help="raw inserts per round")
    parser.add_argument(
        "--window-ms", type=float, default=2.0, help="the read audit's batching window"
    )
    parser.add_argument(
        "--history",
        type=lambda text: [int(size) for size in text.split(",")],
        default=[10_000, 1_000_000],
        help="events in the intake and audit logs before each set of rounds, ascending "
        "(comma-separated)",
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--layout-batch", type=int, default=64, help="reads per layout batch")
    parser.add_argument("--layout-batches", type=int, default=20, help="layout batches a round")
    args = parser.parse_args(argv)
    for name in ("rounds", "count", "clients", "cases", "raw_count", "layout_batch", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.count < args.clients:
        parser.error("--count must be at least --clients")
    if not args.history or args.history != sorted(args.history) or args.history[0] < 1:
        parser.error("--history must be ascending sizes of at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    maintenance_url = os.environ.get("KETNOI_BENCH_DATABASE_URL", DEFAULT_MAINTENANCE_URL)
    dbname = f"ketnoi_bench_{secrets.token_hex(4)}"
    bench_url = with_dbname(maintenance_url, dbname)
    create_database(maintenance_url, dbname)
    try:
        context = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "postgres": server_version(bench_url),
            "cpus": str(os.cpu_count()),
            "python": platform.python_version(),
            "eventsourcing": version("eventsourcing"),
        }
        started = time.perf_counter()
        results = measure(args, bench_url)
        elapsed = time.perf_counter() - started
    finally:
        drop_database(maintenance_url, dbname)
        console.print(f"Dropped database {dbname}")
    console.print(f"Finished in {elapsed:.0f}s")
    report(results, args, context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
