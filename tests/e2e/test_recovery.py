"""Each service its own process, on a PostgreSQL server of the test's own that is stopped and
started again while they run: they answer 503 while it is down and recover unaided."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import missing_service
from tests.support.postgres import LocalPostgres, local_postgres, wait_until_ready
from tests.support.processes import (
    border_reception,
    cli_token,
    free_port,
    ketnoi_env,
    ketnoi_server,
    migrate_with_lao_cai,
)

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def restartable_pg() -> Iterator[LocalPostgres]:
    try:
        with local_postgres() as server:
            wait_until_ready(server.url)
            yield server
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        missing_service(f"no throwaway PostgreSQL server (initdb/pg_ctl): {exc}")


def _until(what: str, probe: Callable[[], Any], timeout: float = 45.0) -> Any:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@pytest.mark.postgres
def test_projections_and_intake_processes_recover_from_a_postgres_restart(
    restartable_pg: LocalPostgres, tmp_path: Path
) -> None:
    env = {
        **ketnoi_env(restartable_pg.url, tmp_path / "keys", schema_prefix="", pool=(2, 2)),
        "KETNOI_PG_CONNECT_TIMEOUT": "1",
    }
    migrate_with_lao_cai(env)
    officer = cli_token(env, "officer-1", "lao-cai-border-guard", "intake_officer")
    coordinator = cli_token(env, "coordinator-1", "lao-cai-social-work-centre", "coordinator")

    intake_log, projections_log = tmp_path / "intake.log", tmp_path / "projections.log"
    with (
        ketnoi_server("serve", "intake", port=free_port(), env=env, log=intake_log) as (
            intake_proc,
            intake,
        ),
        ketnoi_server("serve", "projections", port=free_port(), env=env, log=projections_log) as (
            projections_proc,
            projections,
        ),
    ):

        def record_case() -> str | None:
            r = httpx.post(f"{intake}/intake/cases", json=border_reception(), headers=officer)
            return str(r.json()["case_id"]) if r.status_code == 201 else None

        def on_board(case_id: str) -> Callable[[], bool]:
            def probe() -> bool:
                r = httpx.get(f"{projections}/projections/board", headers=coordinator)
                return r.status_code == 200 and case_id in {c["case_id"] for c in r.json()["rows"]}

            return probe

        first = _until("the first case recorded", record_case)
        _until("the first case on the board", on_board(first))
        _until("projections ready", lambda: httpx.get(f"{projections}/readyz").status_code == 200)

        restartable_pg.stop("fast")
        # While the database is down: alive, not ready, and a problem (503), not a 500.
        down = httpx.get(f"{projections}/projections/board", headers=coordinator)
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == PROBLEM_JSON
        assert "Retry-After" in down.headers
        alive = httpx.get(f"{projections}/healthz")
        assert alive.status_code == 200
        assert "server" not in alive.headers  # no banner
        not_ready = httpx.get(f"{projections}/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["database"] != "ok"
        # A command waits for its pool a bounded time, then is refused with a problem too.
        refused = httpx.post(
            f"{intake}/intake/cases", json=border_reception(), headers=officer, timeout=90
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == PROBLEM_JSON

        restartable_pg.start()
        # No hand restart: the same processes take commands again and the board catches up.
        second = _until("a case recorded after the restart", record_case)
        _until("the second case on the board", on_board(second))
        ready = _until(
            "projections ready again",
            lambda: (r := httpx.get(f"{projections}/readyz")).status_code == 200 and r.json(),
        )
        assert ready["checks"]["projections"]["running"] is True
        assert intake_proc.poll() is None
        assert projections_proc.poll() is None
        metrics = httpx.get(f"{projections}/metrics").text
        assert 'ketnoi_follower_lag_seconds{loop="projections",upstream="intake"} 0.0' in metrics
        assert 'ketnoi_http_requests_total{method="GET",route="/projections/board"' in metrics
