"""Server-side render time of the web app's main pages, with the demo's data.

Run ``python -m bench.web_pages`` (or ``make bench``). It builds the platform exactly as
``ketnoi demo`` does (embedded SQLite in a temporary directory, the scenarios seeded, the web
app mounted) and requests each page in process through Starlette's test client, signed in as
the user the page is for, so the time is the server's alone: routing, the session, the gated
reads (with the read audit recording every read of personal data), rendering. Rounds
alternate the pages; the report gives the median and p95 of each page in milliseconds and,
as the raw limits measured in the same run, ``GET /healthz`` (the HTTP stack in process)
and the JSON API's read of the same case (``GET /intake/cases/{id}``), with the ratio of each
page to them. The goal is every page under 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table

from contracts.vocabulary import Role
from services.cli.demo import demo_users, seed
from services.cli.wiring import http_app, start
from services.runtime.auth import TokenService
from services.runtime.logging import configure_logging
from services.runtime.settings import Settings

GOAL_MS = 100.0


def _timed(call: Callable[[], int], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status = call()
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
    return times


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20, help="requests per page per round")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="ketnoi-bench-web-") as tmp:
        settings = Settings(database_url=None, data_dir=Path(tmp), environment="development")
        configure_logging("json", "WARNING")
        platform = start(settings, poll_interval=0.2)
        try:
            seeded = seed(platform, settings.data_dir)
            platform.catch_up()
            tokens = TokenService(settings)
            app = http_app(platform, tokens, demo_users=demo_users())
            night = next(c for c in seeded if c.key == "dong-thap-1").case_id
            child = next(c for c in seeded if c.key == "lao-cai-1").case_id
            livelihood = next(c for c in seeded if c.key == "nghe-an-1").case_id
            referral = platform.referral
            referral.index.refresh()
            handover = next(
                h.handover_id for h in referral.index.handovers.values() if h.case_id == night
            )
            clients: dict[str, TestClient] = {}

            def client(user: str) -> TestClient:
                if user not in clients:
                    c = TestClient(app, base_url="http://127.0.0.1")
                    page = c.get("/signin").text
                    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
                    c.post(
                        "/signin",
                        data={"user_id": user, "csrf_token": token},
                        follow_redirects=False,
                    )
                    clients[user] = c
                return clients[user]

            hospital = client("dong-thap-general-hospital-staff-1")
            referral_id = next(
                line.split('"')[0]
                for line in hospital.get("/inbox").text.split('href="/referrals/')[1:]
            )
            pages = {
                "sign-in": ("nobody", "/signin"),
                "board": ("dong-thap-coordinator", "/board"),
                "case file (coordinator)": ("dong-thap-coordinator", f"/cases/{night}"),
                "case file (case manager)": ("dt-swc-caseworker-1", f"/cases/{night}"),
                "handover minutes": ("dt-swc-caseworker-1", f"/handovers/{handover}"),
                "inbox": ("dong-thap-general-hospital-staff-1", "/inbox"),
                "referral (recipient)": (
                    "dong-thap-general-hospital-staff-1",
                    f"/referrals/{referral_id}",
                ),
                "reception form": ("dt-police-officer-1", "/reception"),
                **{
                    f"case work: {section}": ("na-swc-caseworker-1", f"/cases/{livelihood}{path}")
                    for section, path in (
                        ("case file", ""),
                        ("assessments", "/assessments"),
                        ("plan and measures", "/plan"),
                        ("contacts and notes", "/contacts"),
                        ("reviews", "/reviews"),
                    )
                },
                "statistics": ("dong-thap-coordinator", "/statistics"),
                "consent form, a child": ("lc-swc-caseworker-1", f"/cases/{child}/consent/new"),
                "emergency overrides": ("dong-thap-coordinator", "/overrides"),
                "the person's copy": ("dt-swc-caseworker-1", f"/cases/{night}/copy"),
                "proof of the record": ("inspector-1", "/proof"),
            }
            token = tokens.issue(
                user_id="dt-swc-caseworker-1",
                agency_id="dong-thap-social-work-centre",
                province="dong-thap",
                roles=[Role.CASE_MANAGER],
            )
            api = TestClient(app, base_url="http://127.0.0.1")
            api.headers["Authorization"] = f"Bearer {token}"
            raw = {
                "GET /healthz": lambda: api.get("/healthz").status_code,
                "API: GET /intake/cases/{id}": lambda: (
                    api.get(f"/intake/cases/{night}").status_code
                ),
            }
            calls: dict[str, Callable[[], int]] = dict(raw)
            for name, (user, path) in pages.items():
                c = client(user) if user != "nobody" else api

                def page(c: TestClient = c, path: str = path) -> int:
                    return c.get(path).status_code

                calls[name] = page
            for call in calls.values():
                _timed(call, 3)  # warm up: templates compiled, caches filled
            results: dict[str, list[float]] = {name: [] for name in calls}
            for round_no in range(args.rounds):
                order = list(calls) if round_no % 2 == 0 else list(reversed(calls))
                for name in order:
                    results[name].extend(_timed(calls[name], args.count))
        finally:
            platform.close()

    healthz = statistics.median(results["GET /healthz"])
    api_read = statistics.median(results["API: GET /intake/cases/{id}"])
    table = Table(title=f"Web pages, server side ({args.rounds} rounds x {args.count} requests)")
    for column in ("what", "median ms", "p95 ms", "x healthz", "x API read", "goal < 100 ms"):
        table.add_column(column, justify="right" if column != "what" else "left")
    for name, times in results.items():
        median = statistics.median(times)
        met = "" if name in raw else ("met" if _p95(times) < GOAL_MS else "NOT met")
        table.add_row(
            name,
            f"{median:.1f}",
            f"{_p95(times):.1f}",
            f"{median / healthz:.1f}",
            f"{median / api_read:.2f}",
            met,
        )
    console.print(table)


if __name__ == "__main__":
    main()
