"""Run Ketnoi's own commands as real processes on loopback ports, and stop them by pid; with
what the tests share around them: the environment a process runs in, a token issued by
``ketnoi token``, and the receptions the tests record first."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.runtime.settings import Settings

KETNOI = [sys.executable, "-c", "from services.launch import main; main()"]
# Lao Cai's agencies, as a directory exports them: ``ketnoi directory import`` reads it.
HSDS_SAMPLE = Path(__file__).parent / "hsds" / "lao-cai.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ketnoi(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    done = subprocess.run(
        [*KETNOI, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def ketnoi_server(
    *args: str, port: int, env: dict[str, str] | None = None, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``ketnoi ARGS --port PORT`` and wait until it answers on /healthz."""
    out = log.open("wb")
    proc = subprocess.Popen(
        [*KETNOI, *args, "--port", str(port)],
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ketnoi {args} exited: {log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"ketnoi {args} did not answer: {log.read_text()}")
            time.sleep(0.2)
        yield proc, base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()


def ketnoi_env(
    database_url: str | None,
    data_dir: Path,
    *,
    schema_prefix: str | None = None,
    pool: tuple[int, int] | None = None,
    log_format: str | None = "json",
) -> dict[str, str]:
    """The settings of a ``ketnoi`` process that shares a test's store, over the test's own
    environment: the database, the schemas' prefix, and the data directory (the keys that sign
    tokens and seal the logs are there, so every process of a test must name the same one).

    JSON logs, by default, so that a test may read its processes' events back. ``pool`` is
    (size, overflow): each process has pools of its own, and several processes on a database
    server shared with others must keep them small. A setting given as None is left as the
    test's environment has it (a ``database_url`` of None: the embedded default, unless the
    environment names one)."""
    env = {"KETNOI_DATA_DIR": str(data_dir)}
    if database_url is not None:
        env["KETNOI_DATABASE_URL"] = database_url
    if schema_prefix is not None:
        env["KETNOI_SCHEMA_PREFIX"] = schema_prefix
    if log_format is not None:
        env["KETNOI_LOG_FORMAT"] = log_format
    if pool is not None:
        env["KETNOI_PG_POOL_SIZE"], env["KETNOI_PG_MAX_OVERFLOW"] = map(str, pool)
    return env


def settings_env(
    settings: Settings,
    *,
    data_dir: Path | None = None,
    pool: tuple[int, int] | None = None,
    log_format: str | None = "json",
) -> dict[str, str]:
    """``ketnoi_env`` for the store of these settings (their data directory, unless another
    is named), so that the processes and the test's own platform read and write the same."""
    return ketnoi_env(
        settings.database_url,
        data_dir or settings.data_dir,
        schema_prefix=settings.schema_prefix,
        pool=pool,
        log_format=log_format,
    )


def migrate_with_lao_cai(env: dict[str, str]) -> tuple[str, str]:
    """``ketnoi migrate``, then ``ketnoi directory import`` of ``HSDS_SAMPLE``, as someone
    setting Ketnoi up runs them; what each printed."""
    migrated = run_ketnoi("migrate", env=env)
    return migrated, run_ketnoi("directory", "import", str(HSDS_SAMPLE), env=env)


def cli_token(
    env: dict[str, str], user: str, agency: str, role: str, province: str = "lao-cai"
) -> dict[str, str]:
    """The headers of a request bearing a token issued by ``ketnoi token``, as someone trying
    Ketnoi out gets one: signed with the key in ``env``'s data directory, which the servers
    started with the same ``env`` verify. In Lao Cai unless told, as the agencies of
    ``HSDS_SAMPLE`` are."""
    token = run_ketnoi(
        "token", "--user", user, "--agency", agency, "--province", province, "--role", role,
        env=env,
    ).strip()  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


# -- the receptions the tests record first ------------------------------------------------


def border_reception() -> dict[str, Any]:
    """Lao Cai's border guard received a person from China's border authority an hour ago
    (the agencies of ``HSDS_SAMPLE``, and of the tests' directory)."""
    return {
        "route": "border_handover",
        "received_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "place": {"province": "lao-cai"},
        "receiving_agency": "lao-cai-border-guard",
        "handed_over_by": "cn-border-authority",
    }


def rescue_reception(agency: str = "dt-police") -> dict[str, Any]:
    """A person rescued in Dong Thap, received by ``agency`` two hours ago (to the second)."""
    received_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    return {
        "route": "rescued",
        "received_at": received_at.isoformat(),
        "place": {"province": "dong-thap"},
        "receiving_agency": agency,
    }
