"""Intake throughput on PostgreSQL, each figure beside the raw limit of the same machine.

Run ``python -m bench.intake_throughput`` (or ``make bench``). It creates a throwaway database on
the server named by ``KETNOI_BENCH_DATABASE_URL`` (a maintenance connection, by default
``postgresql://postgres@127.0.0.1:5432/postgres``), measures, and drops the database again.

Five measurements, interleaved round by round so that a noisy neighbour hits them all alike:

* raw limit, 1 connection: a plain psycopg loop doing per transaction exactly what the
  eventsourcing PostgreSQL recorder does per insert (lock the table, notify, insert one row,
  commit), on a table shaped like its events table;
* application: ``IntakeService.record_reception`` in one thread;
* raw limit, N connections: the same raw loop on N concurrent connections (the table lock
  serialises them, so this is the ceiling for concurrent writers);
* bare HTTP: ``POST /bench/bare/cases`` from N concurrent clients, a route on the same server
  with the same authentication, body validation and checks as ``POST /intake/cases`` that
  stores nothing: the HTTP stack's own limit;
* HTTP: ``POST /intake/cases`` from N concurrent clients to the server, built as ``ketnoi serve
  intake`` builds it.

With ``--workers N`` the server runs as ``ketnoi serve intake --workers N`` does: N worker
processes share its port (the bare route in each), one of them elected to run what runs
once; the server's CPU per request then counts every worker, and the workers share one
process's connections (pools of 10 // N, at least 2, each).

The report gives medians and ratios of medians, and the latency percentiles of the HTTP
rounds. It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from fastapi import APIRouter, FastAPI, Request, status
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench.agencies import register_agencies
from contracts.access_policy import Action
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PartyPresent, Place
from contracts.vocabulary import AgencyKind, ArrivalRoute, CaseStage, Role
from services.cli import _run_http, wiring
from services.cli.wiring import http_app, migrate, start
from services.intake.api import CommandResult, ReceptionCreate
from services.intake.application import IntakeService
from services.runtime.access import roles_for
from services.runtime.agencies import Agencies
from services.runtime.aggregate import CommandContext
from services.runtime.auth import CurrentPrincipal, TokenService
from services.runtime.errors import PermissionDeniedError
from services.runtime.http import IdempotencyKey, command_context
from services.runtime.logging import configure_logging
from services.runtime.persistence import application_env
from services.runtime.serving import serve_workers
from services.runtime.settings import Environment, Settings

DEFAULT_MAINTENANCE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PREFIX = "bench_"
RAW_SCHEMA = "bench_raw"
RAW_TABLE = "raw_events"
TOPIC = "org.ketnoi.intake.reception_recorded.v1"
COMMAND_PATH = "/intake/cases"
BARE_PATH = "/bench/bare/cases"
# A ReceptionRecorded state is about 470 bytes of JSON; the raw row is a little heavier.
RAW_STATE = (b'{"padding":"' + b"x" * 600)[:588] + b'"}'
PROVINCE = "dong-thap"
AGENCY = AgencyRef(agency_id="dong-thap-police", kind=AgencyKind.POLICE)
RECEIVED_AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)

console = Console(stderr=True)


# --- The throwaway database ------------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL with another database name."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


def create_database(maintenance_url: str, dbname: str) -> None:
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def drop_database(maintenance_url: str, dbname: str) -> None:
    # FORCE: a crashed run may leave a pooled connection behind; the database must still go.
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# --- The raw limit ---------------------------------------------------------------------------


class RawLog:
    """An events table and the library's per-insert transaction, in plain psycopg.

    Mirrors ``eventsourcing.postgres.PostgresApplicationRecorder.insert_events`` (9.5): an
    autocommit connection, then in one pipelined transaction ``SET LOCAL lock_timeout``,
    ``LOCK TABLE ... IN EXCLUSIVE MODE``, ``NOTIFY <channel>``, the INSERT ... RETURNING
    notification_id, a sync, fetching the id, and COMMIT. The one liberty: the row goes in
    with VALUES rather than ``unnest`` of a composite array, which for one row is the same
    work on the table and its two indexes.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        table = sql.Identifier(RAW_SCHEMA, RAW_TABLE)
        self.set_lock_timeout = sql.SQL("SET LOCAL lock_timeout = '0s'")
        self.lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table)
        self.notify = sql.SQL("NOTIFY {}").format(sql.Identifier(RAW_TABLE))
        self.insert = sql.SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s) RETURNING notification_id"
        ).format(table)

    def create(self) -> None:
        """Create the table as the library does, with its notification_id index."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RAW_SCHEMA)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} ("
                    "originator_id uuid NOT NULL, "
                    "originator_version bigint NOT NULL, "
                    "topic text, "
                    "state bytea, "
                    "notification_id bigserial, "
                    "PRIMARY KEY (originator_id, originator_version)) "
                    "WITH (autovacuum_enabled = true, autovacuum_vacuum_threshold = 100000000, "
                    "autovacuum_vacuum_scale_factor = 0.5, autovacuum_analyze_threshold = 1000, "
                    "autovacuum_analyze_scale_factor = 0.01)"
                ).format(sql.Identifier(RAW_SCHEMA, RAW_TABLE))
            )
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX {} ON {} (notification_id ASC)").format(
                    sql.Identifier(f"{RAW_TABLE}_notification_id_idx"),
                    sql.Identifier(RAW_SCHEMA, RAW_TABLE),
                )
            )

    def connect(self) -> psycopg.Connection[Any]:
        """A connection set up as the library's pool sets up each of its connections."""
        conn = psycopg.connect(self.conninfo, autocommit=True)
        conn.execute("SET idle_in_transaction_session_timeout = '0ms'")
        return conn

    def append(self, conn: psycopg.Connection[Any]) -> int:
        """One transaction that appends one event; returns its notification id."""
        with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as curs:
            curs.execute(self.set_lock_timeout, prepare=True)
            curs.execute(self.lock, prepare=True)
            curs.execute(self.notify)
            curs.execute(self.insert, (uuid.uuid4(), 1, TOPIC, RAW_STATE))
            pipeline.sync()
            row = curs.fetchone()
        assert row is not None
        return int(row[0])


def raw_single(raw: RawLog, conn: psycopg.Connection[Any], count: int) -> float:
    """Transactions per second on one connection."""
    started = time.perf_counter()
    for _ in range(count):
        raw.append(conn)
    return count / (time.perf_counter() - started)


def raw_concurrent(raw: RawLog, conns: list[psycopg.Connection[Any]], count: int) -> float:
    """Transactions per second, ``count`` in all, spread over concurrent connections."""
    shares = [count // len(conns) + (i < count % len(conns)) for i in range(len(conns))]
    start = threading.Barrier(len(conns) + 1)
    errors: list[BaseException] = []

    def work(conn: psycopg.Connection[Any], share: int) -> None:
        start.wait()
        try:
            for _ in range(share):
                raw.append(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(c, s), daemon=True)
        for c, s in zip(conns, shares, strict=True)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return count / elapsed


# --- The application -------------------------------------------------------------------------


def app_single(service: IntakeService, count: int) -> float:
    """record_reception commands per second in one thread."""
    ctx = CommandContext(
        actor=Actor(user_id="bench-officer", agency_id=AGENCY.agency_id, role=Role.INTAKE_OFFICER)
    )
    place = Place(province=PROVINCE)
    started = time.perf_counter()
    for _ in range(count):
        service.record_reception(
            ctx,
            route=ArrivalRoute.RESCUED,
            received_at=RECEIVED_AT,
            place=place,
            receiving_agency=AGENCY,
        )
    return count / (time.perf_counter() - started)


# --- The HTTP server and its load ------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(settings: Settings) -> dict[str, str]:
    """The caller's environment without its KETNOI_* variables, then the bench's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETNOI_")}
    assert settings.database_url is not None
    env.update(
        {
            "KETNOI_ENVIRONMENT": settings.environment.value,
            "KETNOI_DATABASE_URL": settings.database_url,
            "KETNOI_SCHEMA_PREFIX": settings.schema_prefix,
            "KETNOI_DATA_DIR": str(settings.data_dir),
            "KETNOI_PG_POOL_SIZE": str(settings.pg_pool_size),
            "KETNOI_PG_MAX_OVERFLOW": str(settings.pg_max_overflow),
            "KETNOI_LOG_FORMAT": settings.effective_log_format,
            "KETNOI_LOG_LEVEL": settings.log_level,
            # The bench measures throughput from one client: the rate limits are off.
            "KETNOI_RATE_LIMIT_PER_PRINCIPAL": "0",
            "KETNOI_RATE_LIMIT_PER_ADDRESS": "0",
        }
    )
    return env


bench_router = APIRouter(prefix="/bench", include_in_schema=False)


@bench_router.post("/bare/cases", status_code=status.HTTP_201_CREATED, response_model=CommandResult)
def record_reception_bare(
    body: ReceptionCreate,
    principal: CurrentPrincipal,
    agencies: Agencies,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """``POST /intake/cases`` up to the command, which it does not send: the same body,
    authentication, role, province and agency checks, and a result of the same shape."""
    command_context(request, principal, roles_for(Action.RECORD_RECEPTION), idempotency_key)
    if not principal.covers_province(body.place.province):
        raise PermissionDeniedError("You can record receptions only in your own province.")
    if body.receiving_agency not in (None, principal.agency_id):
        raise PermissionDeniedError("You can record only receptions by your own agency.")
    agencies.resolve(principal.agency_id, "receiving_agency")
    _present = tuple(
        PartyPresent(agency=agencies.resolve(p.agency, f"present.{i}.agency"), capacity=p.capacity)
        for i, p in enumerate(body.present)
    )
    return {"case_id": uuid.uuid4(), "version": 1, "stage": CaseStage.RECEPTION}


def worker_app() -> FastAPI:
    """One worker of ``ketnoi serve intake --workers N``, plus the bare route."""
    return wiring.worker_app(routers=[bench_router])


def serve(port: int, workers: int = 1) -> None:
    """The server process: ``ketnoi serve intake`` (configured from KETNOI_* variables, served
    as it serves, with ``workers`` processes when more than one), plus the bare route."""
    settings = Settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    if workers > 1:
        os.environ[wiring.WORKER_SERVICE] = "intake"
        serve_workers("bench.intake_throughput:worker_app", settings, "127.0.0.1", port, workers)
        return
    running = start(settings, ("intake",))
    try:
        app = http_app(running, TokenService(settings), title="Ketnoi intake")
        app.include_router(bench_router)
        _run_http(app, settings, "127.0.0.1", port)
    finally:
        running.close()


@contextlib.contextmanager
def running_server(
    settings: Settings,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[tuple[str, int]]:
    """This module's server on a free loopback port; yields its base URL and pid, stops it
    by pid (its workers stop with it)."""
    port = free_port()
    # Not ``-m bench.intake_throughput``: the routes would then live in ``__main__``.
    code = f"from bench.intake_throughput import serve; serve({port}, {workers})"
    command = [sys.executable, "-c", code]
    env = {**server_environment(settings), **(extra_env or {})}
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


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started in a session of its own, and its workers, by its pid."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_until_ready(process: subprocess.Popen[bytes], base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"the server exited with status {process.returncode} before it was ready"
            raise RuntimeError(msg)
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    msg = f"the server did not answer /healthz within {timeout:.0f}s"
    raise RuntimeError(msg)


@dataclass
class HttpRound:
    rate: float
    sent: int
    failures: int
    client_cpu: float  # CPU seconds the load generator itself used per wall second
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    first_failure: str | None = None


class HttpLoad:
    """Concurrent clients posting receptions, on one event loop kept across rounds."""

    def __init__(self, base_url: str, token: str, clients: int) -> None:
        self.clients = clients
        self.runner = asyncio.Runner()
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
            timeout=60,
        )
        body = {
            "route": ArrivalRoute.RESCUED.value,
            "received_at": RECEIVED_AT.isoformat(),
            "place": {"province": PROVINCE},
            "receiving_agency": AGENCY.agency_id,
        }
        self.body = json.dumps(body).encode()

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()

    def run(self, count: int, path: str = "/intake/cases") -> HttpRound:
        return self.runner.run(self._round(count, path))

    async def _round(self, count: int, path: str) -> HttpRound:
        remaining = count
        failures = 0
        first_failure: str | None = None
        latencies: list[float] = []

        async def worker() -> None:
            nonlocal remaining, failures, first_failure
            while remaining > 0:
                remaining -= 1
                sent = time.perf_counter()
                try:
                    response = await self.client.post(path, content=self.body)
                    latencies.append(time.perf_counter() - sent)
                except httpx.HTTPError as exc:
                    failures += 1
                    first_failure = first_failure or f"{type(exc).__name__}: {exc}"
                    continue
                if response.status_code != 201:
                    failures += 1
                    first_failure = first_failure or f"{response.status_code} {response.text}"

        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.clients)))
        elapsed = time.perf_counter() - started
        latencies.sort()
        return HttpRound(
            rate=(count - failures) / elapsed,
            sent=count,
            failures=failures,
            client_cpu=(time.process_time() - cpu) / elapsed,
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            first_failure=first_failure,
        )


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


# --- Rounds and the report -------------------------------------------------------------------


@dataclass
class Series:
    label: str
    unit: str
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass
class Results:
    raw1: Series = field(default_factory=lambda: Series("raw limit, 1 connection", "tx/s"))
    app: Series = field(default_factory=lambda: Series("application, 1 thread", "commands/s"))
    raw_n: Series = field(default_factory=lambda: Series("raw limit, N connections", "tx/s"))
    bare: Series = field(default_factory=lambda: Series("bare HTTP, N clients", "requests/s"))
    http: Series = field(default_factory=lambda: Series("HTTP, N clients", "requests/s"))
    # Per round: (p50, p99) in milliseconds.
    bare_latency: list[tuple[float, float]] = field(default_factory=list)
    http_latency: list[tuple[float, float]] = field(default_factory=list)
    # Per HTTP round: the server's CPU milliseconds per request.
    bare_cpu: list[float] = field(default_factory=list)
    http_cpu: list[float] = field(default_factory=list)
    # Per HTTP command round: events written / transactions they were written in.
    per_transaction: list[float] = field(default_factory=list)
    http_sent: int = 0
    http_failures: int = 0
    http_first_failure: str | None = None
    client_cpu: list[float] = field(default_factory=list)
    server_problems: int = 0
    first_server_problem: str | None = None


def measure(args: argparse.Namespace, bench_url: str) -> Results:
    """Set everything up, warm up, run the interleaved rounds, and tear it all down."""
    results = Results()
    results.raw_n.label = f"raw limit, {args.clients} connections"
    results.http.label = f"HTTP, {args.clients} clients"
    results.bare.label = f"bare HTTP, {args.clients} clients"
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
        # Production-like logging (JSON, info) into a file, as the server's goes into its log.
        with contextlib.redirect_stderr(log):
            configure_logging(settings.effective_log_format, settings.log_level)

        target = settings.postgres
        assert target is not None
        console.print(f"Setting up database {target.dbname}")
        raw = RawLog(target.conninfo())
        raw.create()
        migrate(settings)
        register_agencies(settings, [AGENCY], PROVINCE)
        token = TokenService(settings).issue(
            user_id="bench-officer",
            agency_id=AGENCY.agency_id,
            province=PROVINCE,
            roles=[Role.INTAKE_OFFICER],
        )

        single = stack.enter_context(raw.connect())
        many = [stack.enter_context(raw.connect()) for _ in range(args.clients)]
        service = IntakeService(env=application_env(settings, "intake"))
        stack.callback(service.close)
        server_log = data_dir / "server.log"
        stack.callback(count_problems, server_log, results)
        extra = {}
        if args.window_ms is not None:
            extra["KETNOI_GROUP_COMMIT_WINDOW_MS"] = str(args.window_ms)
        base_url, server_pid = stack.enter_context(
            running_server(settings, server_log, extra, args.workers)
        )
        load = HttpLoad(base_url, token, args.clients)
        stack.callback(load.close)

        console.print(f"Warming up ({args.warmup} of each)")
        raw_single(raw, single, args.warmup)
        raw_concurrent(raw, many, args.warmup)
        app_single(service, args.warmup)
        for path in (BARE_PATH, COMMAND_PATH):
            warm = load.run(args.warmup, path)
            if warm.failures:
                count_problems(server_log, results)
                msg = (
                    f"HTTP warm-up failed {warm.failures} times; first: {warm.first_failure};"
                    f" the server's first problem: {results.first_server_problem}"
                )
                raise RuntimeError(msg)

        for number in range(1, args.rounds + 1):
            results.raw1.rates.append(raw_single(raw, single, args.count))
            results.app.rates.append(app_single(service, args.count))
            results.raw_n.rates.append(raw_concurrent(raw, many, args.count))
            # Alternate which HTTP route goes first, so neither always meets a warmer server.
            paths = [BARE_PATH, COMMAND_PATH] if number % 2 else [COMMAND_PATH, BARE_PATH]
            rounds = {}
            for path in paths:
                before = log_position(single, settings)
                cpu = cpu_seconds(server_pid)
                rounds[path] = load.run(args.count, path)
                cpu_ms = (cpu_seconds(server_pid) - cpu) * 1000 / args.count
                (results.bare_cpu if path == BARE_PATH else results.http_cpu).append(cpu_ms)
                if path == COMMAND_PATH:
                    events, transactions = written_since(single, settings, before)
                    results.per_transaction.append(events / max(transactions, 1))
            for path, http in rounds.items():
                series, latency = (
                    (results.bare, results.bare_latency)
                    if path == BARE_PATH
                    else (results.http, results.http_latency)
                )
                series.rates.append(http.rate)
                latency.append((http.p50_ms, http.p99_ms))
                results.http_sent += http.sent
                results.http_failures += http.failures
                results.http_first_failure = results.http_first_failure or http.first_failure
                results.client_cpu.append(http.client_cpu)
            failed = sum(h.failures for h in rounds.values())
            console.print(
                f"Round {number}/{args.rounds}: "
                f"raw1 {results.raw1.rates[-1]:,.0f}  app {results.app.rates[-1]:,.0f}  "
                f"raw{args.clients} {results.raw_n.rates[-1]:,.0f}  "
                f"bare{args.clients} {results.bare.rates[-1]:,.0f}  "
                f"http{args.clients} {results.http.rates[-1]:,.0f} "
                f"(p99 {results.http_latency[-1][1]:.0f} ms, "
                f"{results.per_transaction[-1]:.1f} per transaction)"
                + (f"  ({failed} failed)" if failed else "")
            )
    return results


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its living children (the workers) so far
    (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def _events_table(settings: Settings) -> sql.Identifier:
    return sql.Identifier(settings.schema_for("intake"), "intake_events")


def log_position(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """The intake log's last position."""
    query = sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}")
    row = conn.execute(query.format(_events_table(settings))).fetchone()
    return int(row[0]) if row else 0


def written_since(
    conn: psycopg.Connection[Any], settings: Settings, position: int
) -> tuple[int, int]:
    """Events the intake log gained after ``position``, and in how many transactions."""
    query = sql.SQL(
        "SELECT count(*), count(DISTINCT xmin::text) FROM {} WHERE notification_id > %s"
    )
    row = conn.execute(query.format(_events_table(settings)), (position,)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


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


def ratio(numerator: Series, denominator: Series) -> float:
    return numerator.median / denominator.median


def report(results: Results, args: argparse.Namespace, context: dict[str, str]) -> None:
    """The table, then a plain-text block to paste into a note."""
    r = results
    out = Console(width=max(Console().width, 100))
    table = Table(
        title=f"Intake throughput on PostgreSQL: median of {args.rounds} rounds x {args.count}"
    )
    table.add_column("Measurement")
    table.add_column("Median", justify="right")
    table.add_column("Min - max", justify="right")
    table.add_column("vs raw, 1 conn", justify="right")
    table.add_column(f"vs raw, {args.clients} conns", justify="right")
    table.add_column("vs bare", justify="right")
    table.add_column("p50 / p99", justify="right")

    def row(
        series: Series, vs1: str = "", vs_n: str = "", vs_bare: str = "", lat: str = ""
    ) -> None:
        spread = f"{min(series.rates):,.0f} - {max(series.rates):,.0f}"
        table.add_row(
            series.label, f"{series.median:,.0f} {series.unit}", spread, vs1, vs_n, vs_bare, lat
        )

    row(r.raw1, "1.00")
    row(r.app, f"{ratio(r.app, r.raw1):.2f}")
    row(r.raw_n, f"{ratio(r.raw_n, r.raw1):.2f}", "1.00")
    row(
        r.bare,
        f"{ratio(r.bare, r.raw1):.2f}",
        f"{ratio(r.bare, r.raw_n):.2f}",
        "1.00",
        latency(r.bare_latency),
    )
    row(
        r.http,
        f"{ratio(r.http, r.raw1):.2f}",
        f"{ratio(r.http, r.raw_n):.2f}",
        f"{ratio(r.http, r.bare):.2f}",
        latency(r.http_latency),
    )
    out.print(table)
    out.print(
        f"HTTP failures: {r.http_failures} of {r.http_sent} requests"
        + (f" (first: {r.http_first_failure})" if r.http_first_failure else "")
    )
    if r.first_server_problem:
        out.print(
            f"Server log: {r.server_problems} warnings or errors; first: {r.first_server_problem}"
        )

    n = args.clients
    http_p99 = statistics.median(p99 for _, p99 in r.http_latency)
    window = "the default" if args.window_ms is None else f"{args.window_ms:g} ms"
    lines = [
        "Intake throughput (python -m bench.intake_throughput)",
        f"  {context['when']}; PostgreSQL {context['postgres']}; {context['cpus']} CPUs; "
        f"Python {context['python']}; eventsourcing {context['eventsourcing']}",
        f"  median of {args.rounds} rounds x {args.count}, after {args.warmup} warm-up each; "
        f"one event per command; group commit window {window};"
        f" {args.workers} server worker process{'es' if args.workers > 1 else ''}",
        f"  raw limit, 1 connection    {r.raw1.median:8,.0f} tx/s",
        f"  raw limit, {n} connections  {r.raw_n.median:8,.0f} tx/s"
        f"   = {ratio(r.raw_n, r.raw1):.2f} x raw(1)",
        f"  application, 1 thread      {r.app.median:8,.0f} commands/s"
        f" = {ratio(r.app, r.raw1):.2f} x raw(1)",
        f"  bare HTTP, {n} clients      {r.bare.median:8,.0f} requests/s"
        f" = {ratio(r.bare, r.raw_n):.2f} x raw({n}); p50/p99 {latency(r.bare_latency)}",
        f"  HTTP, {n} clients           {r.http.median:8,.0f} requests/s"
        f" = {ratio(r.http, r.bare):.2f} x bare, {ratio(r.http, r.raw_n):.2f} x raw({n}),"
        f" {ratio(r.http, r.raw1):.2f} x raw(1); p50/p99 {latency(r.http_latency)}",
        f"  server CPU per request: bare {statistics.median(r.bare_cpu):.2f} ms,"
        f" command {statistics.median(r.http_cpu):.2f} ms",
        f"  HTTP commands per transaction (group commit): "
        f"{statistics.median(r.per_transaction):.1f}",
        f"  goals: HTTP >= 0.70 x bare ({_met(ratio(r.http, r.bare) >= 0.7)}),"
        f" >= 1.00 x raw({n}) ({_met(ratio(r.http, r.raw_n) >= 1.0)}),"
        f" p99 < 50 ms ({_met(http_p99 < 50)})",
        f"  HTTP failures {r.http_failures}/{r.http_sent}; server log warnings/errors"
        f" {r.server_problems}",
        f"  the HTTP load generator runs on the same machine and used"
        f" {statistics.median(r.client_cpu):.0%} of one CPU",
    ]
    print(flush=True)
    print("\n".join(lines), flush=True)


def latency(rounds: list[tuple[float, float]]) -> str:
    """The medians over rounds of each round's p50 and p99, in milliseconds."""
    p50 = statistics.median(p for p, _ in rounds)
    p99 = statistics.median(p for _, p in rounds)
    return f"{p50:.1f} / {p99:.1f} ms"


def _met(met: bool) -> str:
    return "met" if met else "not met"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake_throughput",
        description="Intake commands per second on PostgreSQL, beside the raw limit.",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds to take the median of")
    parser.add_argument("--count", type=int, default=1500, help="operations per measurement")
    parser.add_argument("--warmup", type=int, default=200, help="untimed operations first")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the server (ketnoi serve --workers)",
    )
    parser.add_argument(
        "--window-ms",
        type=float,
        default=None,
        help="the server's group commit window, KETNOI_GROUP_COMMIT_WINDOW_MS (default: its own)",
    )
    args = parser.parse_args(argv)
    for name in ("rounds", "count", "clients", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.count < args.clients:
        parser.error("--count must be at least --clients")
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
