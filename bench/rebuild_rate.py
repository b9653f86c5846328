"""Rebuild rate of every read model over a large log, beside the raw read-and-decode rate.

Run ``python -m bench.rebuild_rate`` (or ``make bench``). It creates a database of its own on
the server named by ``KETNOI_BENCH_DATABASE_URL`` (a maintenance connection; default
``postgresql://postgres@127.0.0.1:5432/postgres``), writes at least 200,000 events across the
intake, consent and referral logs, and in alternating rounds measures:

- raw: reading every log from the start in chunks and decoding each event into its contract
  class (what any rebuild must do at the least), once as is and once with Python's cycle
  collector paused as a rebuild pauses it; the faster of the two is the limit;
- rebuild: ``ketnoi rebuild`` of all views (read, decode, apply to every view, write, swap).

Both are reported as events per second over the same log, with medians and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench import lives
from contracts.consent import (
    Collection,
    CollectionMethod,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PartyPresent, Place
from contracts.referral import Urgency
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ContactMode,
    DataCategory,
    RiskLevel,
    RiskSubject,
    Role,
    ServiceType,
    Sex,
    UrgentNeed,
)
from services.cli.wiring import Platform, migrate, start
from services.intake.domain import Case
from services.projections.runner import without_cycle_collection
from services.projections.views import fact_reader
from services.runtime.aggregate import CommandContext
from services.runtime.logging import configure_logging
from services.runtime.persistence import decode_all
from services.runtime.settings import Settings

DEFAULT_MAINTENANCE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
BORDER = AgencyRef(agency_id="dt-border-guard", kind=AgencyKind.BORDER_GUARD)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
OFFICER = Actor(user_id="officer-1", agency_id="dt-police", role=Role.INTAKE_OFFICER)
MANAGER = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
NURSE = Actor(user_id="nurse-1", agency_id="dt-hospital", role=Role.AGENCY_STAFF)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F",
    language="vi",
    withdrawal_explained=True,
)
PROVINCES = ("dong-thap", "lao-cai", "quang-ninh", "nghe-an", "thua-thien-hue")


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def one_case(n: int, t0: datetime) -> tuple[list[Any], list[Any], list[Any]]:
    """The aggregates of one case's life: 7 intake, 3 consent and 19 referral events."""

    def ctx(minutes: int, actor: Actor) -> CommandContext:
        return CommandContext(actor=actor, at=t0 + timedelta(minutes=n * 3 + minutes))

    province = PROVINCES[n % len(PROVINCES)]
    case = Case.record_reception(
        ctx(0, OFFICER),
        route=ArrivalRoute.RESCUED,
        received_at=t0 + timedelta(minutes=n * 3),
        place=Place(province=province, district="District"),
        receiving_agency=POLICE,
        present=(PartyPresent(agency=BORDER, capacity="border guard"),),
    )
    lives.register_person(case, ctx(1, OFFICER), n, Sex.FEMALE, 18 + n % 30)
    case.assess_needs(
        ctx(2, OFFICER), (UrgentNeed.SHELTER_TONIGHT, UrgentNeed.MEDICAL_CHECK), "notes"
    )
    case.assess_risk(ctx(3, OFFICER), RiskLevel.MEDIUM, (RiskSubject.PERSON,), "plan")
    case.record_contact_preference(
        ctx(4, OFFICER), (ContactMode.PHONE,), (ContactMode.HOME_VISIT,), None
    )
    case.assign_case_manager(ctx(5, MANAGER), "cw-1", SWC)
    case.change_stage(ctx(6, MANAGER), CaseStage.CRISIS, None)

    record = lives.open_consent(
        ctx(0, OFFICER),
        ctx(1, OFFICER),
        case,
        province=province,
        received_at=t0,
        receiving_agency_id=POLICE.agency_id,
    )
    lives.grant(
        record,
        ctx(7, MANAGER),
        categories=(DataCategory.IDENTITY, DataCategory.NEEDS),
        valid_from=t0,
        valid_until=t0 + timedelta(days=3650),
        collection=WRITTEN,
    )

    # The referral service's own copy of the case, in memory only (the views do not read it).
    file = lives.case_file(
        ctx(0, OFFICER), ctx(1, OFFICER), ctx(7, MANAGER), case, record, n=n, province=province
    )
    referrals = []
    for offset, service in ((10, ServiceType.HEALTH_CHECK), (20, ServiceType.MEDICAL_CARE)):
        referral = lives.refer(
            ctx(offset, MANAGER),
            file,
            from_agency=SWC,
            to_agency=HOSPITAL,
            service=service,
            urgency=Urgency.URGENT,
        )
        for minutes, action in (
            (offset + 1, "acknowledge"),
            (offset + 2, "accept"),
            (offset + 3, "start"),
        ):
            referral.answer(ctx(minutes, NURSE), action)
        referral.answer(ctx(offset + 5, NURSE), "complete", "done")
        referrals.append(referral)
    handover = lives.reception_handover(
        ctx(8, OFFICER), file, police=POLICE, swc=SWC, border=BORDER
    )
    for minutes, agency in ((9, POLICE), (10, BORDER), (11, SWC)):
        handover.confirm_by(ctx(minutes, NURSE), agency.agency_id)
    return [case], [record], [*referrals, handover]


def populate(platform: Platform, cases: int) -> int:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    started = time.perf_counter()
    for n in range(cases):
        for bucket, aggregates in zip(batch, one_case(n, t0), strict=True):
            bucket.extend(aggregates)
        if len(batch[0]) == 100 or n == cases - 1:
            platform.intake.save(*batch[0])
            platform.consent.save(*batch[1])
            platform.referral.save(*batch[2])
            batch = ([], [], [])
        if n % 1000 == 999:
            say(f"  {n + 1:,} cases written ({time.perf_counter() - started:.0f} s)")
    return sum(app.recorder.max_notification_id() or 0 for app in platform.apps.values())


def raw_read_and_decode(
    platform: Platform, *, json_only: bool = False, gc_paused: bool = False
) -> tuple[int, float]:
    """Read every log from the start and decode each event: into its contract class by
    default, or only the stored JSON as the views read it. ``gc_paused`` runs the loop with
    the cycle collector paused, as a rebuild runs."""
    assert platform.projections is not None
    count = 0
    started = time.perf_counter()
    with without_cycle_collection() if gc_paused else contextlib.nullcontext():
        for upstream in platform.projections.upstreams.values():
            mapper = upstream.mapper
            decode = fact_reader(mapper) if json_only else functools.partial(decode_all, mapper)
            start = 1
            while True:
                batch = upstream.recorder.select_notifications(start=start, limit=5000)
                if not batch:
                    break
                decode(batch)
                count += len(batch)
                start = batch[-1].id + 1
    return count, time.perf_counter() - started


def rebuild(platform: Platform) -> tuple[dict[str, int], float]:
    assert platform.projections is not None
    started = time.perf_counter()
    sizes = platform.projections.rebuild()
    return sizes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=7000, help="cases (29 events each)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("console", "warning")

    import os

    maintenance = os.environ.get("KETNOI_BENCH_DATABASE_URL", DEFAULT_MAINTENANCE_URL)
    name = f"ketnoi_bench_{uuid.uuid4().hex[:8]}"
    base = maintenance.rsplit("/", 1)[0]
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    say(f"Database {name}")
    data_dir = Path(tempfile.mkdtemp(prefix="ketnoi-bench-"))
    settings = Settings(database_url=f"{base}/{name}", data_dir=data_dir, log_level="warning")
    platform: Platform | None = None
    try:
        migrate(settings)
        platform = start(settings, run_followers=False)
        say(f"Writing {args.cases:,} cases ...")
        total = populate(platform, args.cases)
        say(f"{total:,} events in the logs")
        # As autovacuum would within a minute: every round then reads with the same plans.
        with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
            conn.execute("ANALYZE")
        rates: dict[str, list[float]] = {"raw": [], "raw_paused": [], "json": [], "rebuild": []}
        sizes: dict[str, int] = {}
        paired: list[float] = []
        for round_ in range(1, args.rounds + 1):
            for key, options in (
                ("raw", {}),
                ("raw_paused", {"gc_paused": True}),
                ("json", {"json_only": True, "gc_paused": True}),
            ):
                count, seconds = raw_read_and_decode(platform, **options)
                rates[key].append(count / seconds)
            sizes, seconds_rebuild = rebuild(platform)
            rates["rebuild"].append(total / seconds_rebuild)
            # Paired: this round's rebuild against this round's faster raw, measured moments
            # apart, so a machine that slows down for a while slows both.
            paired.append(rates["rebuild"][-1] / max(rates["raw"][-1], rates["raw_paused"][-1]))
            say(
                f"Round {round_}/{args.rounds}: raw {rates['raw'][-1]:,.0f} events/s, "
                f"raw with the collector paused {rates['raw_paused'][-1]:,.0f} events/s, "
                f"rebuild {rates['rebuild'][-1]:,.0f} events/s ({seconds_rebuild:.1f} s), "
                f"{paired[-1]:.2f} x raw"
            )
        median = {key: statistics.median(values) for key, values in rates.items()}
        # The stricter of the two raw rates is the limit the rebuild is measured against.
        raw, built = max(median["raw"], median["raw_paused"]), median["rebuild"]
        print("Rebuild of all views (python -m bench.rebuild_rate)")
        print(
            f"  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; PostgreSQL; {os.cpu_count()} CPUs; "
            f"median of {args.rounds} rounds"
        )
        print(
            f"  log: {total:,} events ({args.cases:,} cases); views: "
            + ", ".join(f"{k} {v:,} documents" for k, v in sizes.items())
        )
        print(f"  raw read + decode     {median['raw']:>10,.0f} events/s (into contract classes)")
        print(
            f"  the same, collector paused {median['raw_paused']:>10,.0f} events/s "
            "(as a rebuild runs)"
        )
        print(
            f"  raw read + JSON only  {median['json']:>10,.0f} events/s "
            "(what the views parse; collector paused)"
        )
        print(
            f"  rebuild, all views    {built:>10,.0f} events/s = {built / raw:.2f} x raw "
            f"(the faster raw; goal: at least 0.70); {built / median['json']:.2f} x raw JSON"
        )
        print(
            f"  rebuild / raw of each round: {', '.join(f'{x:.2f}' for x in paired)}; "
            f"median {statistics.median(paired):.2f}"
        )
    finally:
        if platform is not None:
            platform.close()
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        say(f"Dropped database {name}")
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
