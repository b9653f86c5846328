"""`ketnoi serve all --workers 2` on PostgreSQL, as real processes over real HTTP: every
worker serves commands and reads, one only (elected) runs the followers, and when its
process is killed another takes over and the followers go on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.runtime.settings import Settings
from tests.support.processes import (
    KETNOI,
    border_reception,
    cli_token,
    free_port,
    ketnoi_server,
    migrate_with_lao_cai,
    settings_env,
)

WORKERS = 2

get = partial(httpx.get, timeout=60.0)
post = partial(httpx.post, timeout=60.0)


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of this event, in order."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found


def _until(what: str, check: Any, log: Path, seconds: float = 60.0) -> Any:
    """Wait until ``check()`` answers something true, and return it (a bound, not a timed
    assertion: the servers' answers are checked, not their speed)."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: {log.read_text()[-4000:]}"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.postgres
def test_workers_share_the_port_and_elect_one_to_run_the_followers(
    pg_settings: Settings, tmp_path: Path
) -> None:
    assert pg_settings.database_url is not None
    # Each worker has pools of its own: small ones, on a database server shared with others.
    env = settings_env(pg_settings, data_dir=tmp_path / "keys", pool=(1, 2))
    migrate_with_lao_cai(env)
    headers = cli_token(env, "officer-9", "lao-cai-border-guard", "intake_officer")
    log = tmp_path / "serve.log"
    args = ("serve", "all", "--workers", str(WORKERS))
    with ketnoi_server(*args, port=free_port(), env=env, log=log) as (_proc, base):
        workers = _until(
            "every worker up",
            lambda: (
                len(pids := {e["pid"] for e in _events(log, "worker_standing")}) == WORKERS and pids
            ),
            log,
        )
        leaders = _until(
            "a leader elected", lambda: [e["pid"] for e in _events(log, "leadership_taken")], log
        )
        leader = leaders[0]
        assert leader in workers

        # Every worker answers; the leader runs the followers, a standby does not, and both
        # are ready (a standby's readiness is the leader's followers keeping up).
        roles: Counter[str] = Counter()
        for _ in range(300):
            ready = get(f"{base}/readyz")  # a new connection each: any worker may take it
            assert ready.status_code == 200, ready.text
            body = ready.json()
            role = body["role"]
            roles[role] += 1
            followers = [body["checks"][name] for name in ("consent", "referral", "projections")]
            assert all(f["running"] is (role == "leader") for f in followers), body
            assert all(f["ready"] for f in followers), body
            if roles["leader"] and roles["standby"]:
                break
        assert roles["leader"], roles
        assert roles["standby"], roles

        # Commands and reads through whichever worker takes each connection.
        cases = []
        for _ in range(12):
            created = post(f"{base}/intake/cases", json=border_reception(), headers=headers)
            assert created.status_code == 201, created.text
            cases.append(created.json()["case_id"])
        for case_id in cases:
            read = get(f"{base}/intake/cases/{case_id}", headers=headers)
            assert read.status_code == 200, read.text
        # The consent follower, in the leader alone, learns of each case in the background
        # (no Ketnoi-Position: no request reads the log for it).
        for case_id in cases:
            _until(
                "consent follows intake",
                lambda c=case_id: (
                    get(f"{base}/consent/cases/{c}", headers=headers).status_code == 200
                ),
                log,
            )
        # Still exactly one leader: the others kept trying and never took the lock.
        assert [e["pid"] for e in _events(log, "leadership_taken")] == [leader]

        # The leader's process dies: another worker takes over, uvicorn starts a new one.
        os.kill(leader, signal.SIGKILL)
        successor = _until(
            "another worker takes over",
            lambda: [e["pid"] for e in _events(log, "leadership_taken")][1:],
            log,
        )
        assert successor[0] != leader
        assert successor[0] in workers
        _until(
            "the killed worker replaced",
            lambda: len({e["pid"] for e in _events(log, "worker_standing")}) == WORKERS + 1,
            log,
        )
        assert not _alive(leader)  # reaped by the supervisor, which started its successor
        created = post(f"{base}/intake/cases", json=border_reception(), headers=headers)
        assert created.status_code == 201, created.text
        case_id = created.json()["case_id"]
        _until(
            "consent follows intake under the new leader",
            lambda: get(f"{base}/consent/cases/{case_id}", headers=headers).status_code == 200,
            log,
        )
        assert [e["pid"] for e in _events(log, "leadership_taken")] == [leader, successor[0]]


def test_workers_refused_on_the_embedded_default(tmp_path: Path) -> None:
    done = subprocess.run(
        [*KETNOI, "serve", "all", "--workers", "2", "--port", str(free_port())],
        env={**os.environ, "KETNOI_DATABASE_URL": "", "KETNOI_DATA_DIR": str(tmp_path / "d")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--workers needs PostgreSQL" in done.stderr
