"""The seal's costs: verifying a large log beside reading it, and appending with the seal
beside appending without it.

Run ``python -m bench.verify`` (or ``make bench``). It creates a database of its own on the
server named by ``KETNOI_BENCH_DATABASE_URL`` (a maintenance connection; default
``postgresql://postgres@127.0.0.1:5432/postgres``) and drops it at the end, also on failure.

- **Append**: saves of one event (about 600 bytes, the size of a reception) and of ten
  events, one writer at a time, and saves of one event from 8 concurrent writers, all
  through group commit as the services save (``GroupCommit.commit``), to the sealed recorder
  and to the same recorder without the seal (``WindowedApplicationRecorder`` with the same
  group insert), in alternating rounds on logs of their own. Goal: the seal costs at most
  10% of the write rate. Beside each rate, the CPU time per event of this process and of the
  database's server processes (read from ``/proc`` when the server runs on this machine): on
  a shared machine the rates move with the load, the CPU time much less.
- **Verify**: a sealed log of ``--events`` events (default 1,000,000, checkpointed every
  10,000) is read in the same run, in alternating rounds, by a *raw* reader (select every
  row in windows of positions, as the verifier does, and parse each event's JSON) and by
  ``ketnoi verify``'s check of that log (select the rows and the leaves, recompute every
  leaf hash and the tree, check each checkpoint's signature and root). Goal: at least 0.7 of
  the raw rate, and 1,000,000 events in under 15 s.

Figures are medians over ``--rounds`` rounds, with the ratio to the limit in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from eventsourcing.persistence import InfrastructureFactory, StoredEvent
from eventsourcing.utils import Environment
from psycopg import sql
from rich.console import Console

from services.runtime.group_commit import Group, GroupCommit
from services.runtime.persistence import (
    WindowedApplicationRecorder,
    application_env,
    create_schemas,
)
from services.runtime.seal.groups import PostgresGroups
from services.runtime.seal.keys import policy_from_env, seal_signer
from services.runtime.seal.merkle import Frontier
from services.runtime.seal.recorders import CheckpointPolicy, PostgresSeal, seal_events
from services.runtime.seal.sources import PostgresLog
from services.runtime.seal.verify import CHUNK, verify_log
from services.runtime.settings import Settings

console = Console(stderr=True)
MAINTENANCE = os.environ.get(
    "KETNOI_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TOPIC = "org.ketnoi.intake.reception_recorded.v1"
WRITERS = 8


class UnsealedGroupRecorder(PostgresGroups, WindowedApplicationRecorder):
    """The services' recorder without the seal: the same group insert, no leaves."""


def _state(i: int) -> bytes:
    # About the size of a stored reception: ids, an actor, a place, a few fields.
    return orjson.dumps(
        {
            "timestamp": "2026-11-30T22:14:05.123456Z",
            "actor": {
                "user_id": f"officer-{i % 97}",
                "agency_id": "dong-thap-police",
                "role": "intake_officer",
            },
            "caused_by": None,
            "correlation_id": str(uuid.uuid4()),
            "case_id": str(uuid.uuid4()),
            "person_id": str(uuid.uuid4()),
            "received_by": {"agency_id": "dong-thap-police", "kind": "police"},
            "received_at": "2026-11-30T21:50:00Z",
            "place": {
                "province": "dong-thap",
                "district": "cao-lanh",
                "description": "border post " * 3,
            },
            "arrival_route": "border_return",
            "urgent_needs": ["shelter", "medical", "food"],
            "interpreter_needed": i % 2 == 0,
            "sequence": i,
        }
    )


def _events(n: int, start: int) -> list[StoredEvent]:
    return [StoredEvent(uuid.uuid4(), 1, TOPIC, _state(start + i)) for i in range(n)]


def _recorder(settings: Settings, log: str, sealed: bool) -> tuple[object, InfrastructureFactory]:
    env = application_env(settings, "intake", create_tables=True)
    env["POSTGRES_SCHEMA"] = settings.schema_for(log)
    env["KETNOI_SEAL_LOG"] = log
    if not sealed:
        env["APPLICATION_RECORDER_TOPIC"] = "bench.verify:UnsealedGroupRecorder"
    factory = InfrastructureFactory.construct(Environment(log, env))
    recorder = factory.application_recorder()
    policy = policy_from_env(env)
    if sealed and policy is not None and isinstance(recorder, PostgresSeal):
        recorder.checkpoints = policy
    return recorder, factory


def _process_cpu(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(conn: psycopg.Connection[Any], dbname: str) -> float:
    """CPU time so far of the server processes connected to the benchmark's database."""
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))
    return sum(_process_cpu(row[0]) for row in rows)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _write_alone(commit: GroupCommit, batches: list[list[StoredEvent]]) -> None:
    for batch in batches:
        commit.commit(Group(batch))


def _write_concurrently(commit: GroupCommit, batches: list[list[StoredEvent]]) -> None:
    """``WRITERS`` threads, each saving its share of the batches one after the other."""

    def run(k: int) -> None:
        for batch in batches[k::WRITERS]:
            commit.commit(Group(batch))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def bench_append(settings: Settings, rounds: int, transactions: int, *, durable: bool) -> None:
    """Alternating rounds of appends with and without the seal. Not ``durable``: the
    database commits without waiting for its disk (``synchronous_commit = off``), so the
    figures show what the seal costs in work rather than a disk's flush time."""
    mode = "durable commits" if durable else "synchronous_commit off"
    console.rule(f"Append: with the seal and without ({mode})")
    assert settings.postgres is not None
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = {}").format(
                sql.Identifier(settings.postgres.dbname), sql.SQL("on" if durable else "off")
            )
        )
    for log in ("plain", "sealed"):
        create_schemas(settings, (log,))
    watch = psycopg.connect(MAINTENANCE, autocommit=True)
    dbname = settings.postgres.dbname
    plain, f1 = _recorder(settings, "plain", sealed=False)
    sealed, f2 = _recorder(settings, "sealed", sealed=True)
    commits = {"plain": GroupCommit(plain), "sealed": GroupCommit(sealed)}  # type: ignore[arg-type]
    cases: list[tuple[str, int, Callable[[GroupCommit, list[list[StoredEvent]]], None]]] = [
        ("1 writer, 1 event per save", 1, _write_alone),
        ("1 writer, 10 events per save", 10, _write_alone),
        (f"{WRITERS} writers, 1 event per save", 1, _write_concurrently),
    ]
    try:
        for label, per_tx, write in cases:
            rates: dict[str, list[float]] = {"plain": [], "sealed": []}
            cpu: dict[str, list[float]] = {"plain": [], "sealed": []}
            ratios: list[float] = []
            for r in range(rounds):
                measured: dict[str, float] = {}
                order = ["plain", "sealed"]
                if r % 2:
                    order.reverse()
                for name in order:
                    batches = [_events(per_tx, i * per_tx) for i in range(transactions)]
                    server = _server_cpu(watch, dbname)
                    client = time.process_time()
                    started = time.perf_counter()
                    write(commits[name], batches)
                    elapsed = time.perf_counter() - started
                    used = time.process_time() - client + _server_cpu(watch, dbname) - server
                    measured[name] = transactions * per_tx / elapsed
                    rates[name].append(measured[name])
                    cpu[name].append(1e6 * used / (transactions * per_tx))
                ratios.append(measured["sealed"] / measured["plain"])
                console.print(
                    f"  {label}, round {r + 1}: without {measured['plain']:,.0f} "
                    f"ev/s, sealed {measured['sealed']:,.0f} ev/s "
                    f"({measured['sealed'] / measured['plain']:.3f})"
                )
            p, s = _median(rates["plain"]), _median(rates["sealed"])
            cp, cs = _median(cpu["plain"]), _median(cpu["sealed"])
            print(
                f"append ({mode}), {label}: without seal {p:,.0f} ev/s, "
                f"sealed {s:,.0f} ev/s; sealed/without {s / p:.3f} (median paired "
                f"{_median(ratios):.3f}); cost {100 * (1 - _median(ratios)):.1f}% (goal <= 10%); "
                f"CPU per event (client and server) without {cp:,.0f} us, sealed {cs:,.0f} us "
                f"({cp / cs:.3f})"
            )
    finally:
        f1.close()
        f2.close()
        watch.close()


def fill(settings: Settings, events: int) -> None:
    """A sealed log of ``events`` events, written with COPY (the recorder's own insert
    would take longer than the measurements); sealed by the recorders' own function, and
    checkpointed every ``seal_checkpoint_every`` events with the installation's key."""
    create_schemas(settings, ("big",))
    _, factory = _recorder(settings, "big", sealed=True)  # creates the tables
    factory.close()
    schema = sql.Identifier(settings.schema_for("big"))
    policy = CheckpointPolicy(
        seal_signer(settings), f"{settings.seal_origin}/big", settings.seal_checkpoint_every
    )
    states = [_state(i) for i in range(1000)]
    frontier, last, batch = Frontier(), 0, 20_000
    started = time.perf_counter()
    assert settings.postgres is not None
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        for start in range(0, events, batch):
            n = min(batch, events - start)
            stored = [
                StoredEvent(uuid.UUID(int=(start + i) * 7919 + 1), 1, TOPIC, states[i % 1000])
                for i in range(n)
            ]
            positions = list(range(start + 1, start + n + 1))
            before = frontier.size
            leaves, last = seal_events(frontier, stored, positions, last)
            with conn.transaction(), conn.cursor() as cur:
                copy_events = sql.SQL(
                    "COPY {}.big_events (originator_id, originator_version, topic, state, "
                    "notification_id, leaf_idx, sealed_at, leaf_hash) FROM STDIN (FORMAT BINARY)"
                ).format(schema)
                with cur.copy(copy_events) as copy:
                    copy.set_types(
                        ["uuid", "int8", "text", "bytea", "int8", "int8", "int8", "bytea"]
                    )
                    for event, (idx, position, at, leaf) in zip(stored, leaves, strict=True):
                        copy.write_row(
                            (
                                event.originator_id,
                                1,
                                event.topic,
                                event.state,
                                position,
                                idx,
                                at,
                                leaf,
                            )
                        )
                cur.execute(
                    sql.SQL(
                        "UPDATE {}.big_events_seal SET size = %s, last_position = %s, "
                        "frontier = %s WHERE id = 1"
                    ).format(schema),
                    (frontier.size, last, frontier.to_bytes()),
                )
                if policy.due(before, frontier.size):
                    size, root, note = policy.note(frontier)
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {}.big_events_checkpoints VALUES (%s, %s, now(), %s)"
                        ).format(schema),
                        (size, root, note),
                    )
            if (start // batch) % 10 == 0:
                console.print(f"  written {start + n:,} of {events:,}")
        conn.execute(sql.SQL("VACUUM ANALYZE {}.big_events").format(schema))
    elapsed = time.perf_counter() - started
    console.print(f"  wrote {events:,} sealed events in {elapsed:.1f} s")


def _open(settings: Settings) -> tuple[psycopg.Connection[object], PostgresLog]:
    conn: psycopg.Connection[object] = psycopg.connect(
        settings.postgres.conninfo(), autocommit=True
    )  # type: ignore[union-attr]
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    return conn, PostgresLog(conn, "big", settings.schema_for("big"), "big_events")  # type: ignore[arg-type]


def raw_read(settings: Settings) -> int:
    """Select every row in windows of positions, as the verifier does, and parse its JSON."""
    conn, log = _open(settings)
    loads = orjson.loads
    n, after, last = 0, 0, log.head().last_position
    try:
        while after < last:
            rows = log.events(after, after + CHUNK)
            for row in rows:
                loads(row[4])
            n += len(rows)
            after += CHUNK
    finally:
        conn.close()
    return n


def verify(settings: Settings) -> int:
    conn, log = _open(settings)
    try:
        report = verify_log(log, [seal_signer(settings).verifier])
    finally:
        conn.close()
    if not report.ok:
        raise SystemExit(f"the benchmark's log does not verify: {report.problems[0].describe()}")
    assert report.checkpoints_verified == report.checkpoints > 0
    return report.size


def bench_verify(settings: Settings, events: int, rounds: int) -> None:
    console.rule(f"Verify: {events:,} events")
    fill(settings, events)
    runs: dict[str, Callable[[Settings], int]] = {"raw": raw_read, "verify": verify}
    rates: dict[str, list[float]] = {"raw": [], "verify": []}
    seconds: list[float] = []
    ratios: list[float] = []
    for r in range(rounds):
        measured: dict[str, float] = {}
        names = ["raw", "verify"] if r % 2 == 0 else ["verify", "raw"]
        for name in names:
            started = time.perf_counter()
            n = runs[name](settings)
            elapsed = time.perf_counter() - started
            assert n == events, (name, n)
            measured[name] = n / elapsed
            rates[name].append(measured[name])
            if name == "verify":
                seconds.append(elapsed)
        ratios.append(measured["verify"] / measured["raw"])
        console.print(
            f"  round {r + 1}: raw {measured['raw']:,.0f} ev/s, verify "
            f"{measured['verify']:,.0f} ev/s ({ratios[-1]:.3f}), verify took {seconds[-1]:.1f} s"
        )
    raw, ver = _median(rates["raw"]), _median(rates["verify"])
    print(
        f"verify {events:,} events: raw read+parse {raw:,.0f} ev/s, verify {ver:,.0f} ev/s; "
        f"verify/raw {ver / raw:.3f} (median paired {_median(ratios):.3f}; goal >= 0.7); "
        f"{_median(seconds):.1f} s for the log (goal < 15 s per 1,000,000)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--skip-append", action="store_true")
    parser.add_argument("--skip-verify", action="store_true")
    args = parser.parse_args()
    dbname = f"ketnoi_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(MAINTENANCE)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))
    with psycopg.connect(MAINTENANCE, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        with TemporaryDirectory() as data:
            settings = Settings(
                database_url=url,
                data_dir=Path(data),
                pg_pool_size=2,
                pg_max_overflow=0,
                seal_checkpoint_every=10_000,
            )
            if not args.skip_append:
                bench_append(settings, args.rounds, args.transactions, durable=True)
                bench_append(settings, args.rounds, args.transactions * 5, durable=False)
            if not args.skip_verify:
                bench_verify(settings, args.events, args.rounds)
    finally:
        with psycopg.connect(MAINTENANCE, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
