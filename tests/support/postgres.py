"""Find a real PostgreSQL server for the tests, as DESIGN.md orders it.

1. ``KETNOI_TEST_DATABASE_URL`` (CI sets it to a database created for the run);
2. a testcontainers container, where a Docker daemon answers;
3. a throwaway server started from this machine's ``initdb`` and ``pg_ctl``;
4. otherwise none: tests that need it skip, or fail under ``REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

ENV_URL = "KETNOI_TEST_DATABASE_URL"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _container() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as pg:
        yield pg.get_connection_url()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    return None


INITDB_OPTIONS = ("-U", "postgres", "-A", "trust", "--no-sync")


class LocalPostgres:
    """A throwaway PostgreSQL server from this machine's binaries, in a temporary directory,
    on a free loopback port; it may be stopped and started again (same port, same data)."""

    def __init__(self, max_connections: int = 100) -> None:
        initdb, pg_ctl = _find_binary("initdb"), _find_binary("pg_ctl")
        if not initdb or not pg_ctl:
            msg = "no initdb/pg_ctl on this machine"
            raise RuntimeError(msg)
        self.pg_ctl = pg_ctl
        self.workdir = Path(tempfile.mkdtemp(prefix="ketnoi-pg-"))
        self.datadir, self.port = self.workdir / "data", _free_port()
        self.max_connections = max_connections
        self.restarts = 0
        # PostgreSQL refuses to run as root; run it as the postgres user when we are root.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.workdir, "postgres")
        try:
            subprocess.run(
                [*self.as_user, initdb, "-D", str(self.datadir), *INITDB_OPTIONS],
                check=True,
                capture_output=True,
            )
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    @property
    def log(self) -> Path:
        return self.workdir / "log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c max_connections={self.max_connections}"
        )
        subprocess.run(
            [
                *self.as_user,
                self.pg_ctl,
                "-D",
                str(self.datadir),
                "-l",
                str(self.log),
                "-w",
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session; ``immediate`` is a crash."""
        subprocess.run(
            [*self.as_user, self.pg_ctl, "-D", str(self.datadir), "-m", mode, "-w", "stop"],
            check=False,
            capture_output=True,
        )

    def restart(self) -> None:
        """Stop at once (as a crash would: no checkpoint, connections cut), then start."""
        self.stop("immediate")
        self.start()
        wait_until_ready(self.url)
        self.restarts += 1

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    """A started throwaway server, removed afterwards; raises RuntimeError without binaries."""
    server = LocalPostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def _local_server() -> Iterator[str]:
    with local_postgres() as server:
        yield server.url


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str | None, str]]:
    """Yield (url or None, how it was found)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url, f"${ENV_URL}"
        return
    if _docker_answers():
        with _container() as container_url:
            yield container_url, "testcontainers"
        return
    try:
        server = _local_server()
        local_url = server.__enter__()
    except Exception as exc:
        yield None, f"no PostgreSQL: set {ENV_URL}, start Docker, or install initdb/pg_ctl ({exc})"
        return
    try:
        yield local_url, "throwaway local server (initdb/pg_ctl)"
    finally:
        server.__exit__(None, None, None)


def wait_until_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
