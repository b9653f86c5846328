"""Which of several worker processes runs what must run once: an election by PostgreSQL
advisory lock.

``ketnoi serve --workers N`` starts N processes that share one port. Each serves requests and
writes its services' logs (PostgreSQL orders concurrent writers); but the followers' loops,
the projector, the deadline watch, the retention watch and the seal's periodic checkpoints
run in one of them only, the leader. A worker becomes the leader by taking a session-level
advisory lock on a connection of its own, kept open for that alone; the others try again
every ``retry`` seconds. When the leader's process dies, PostgreSQL ends its session and
releases the lock, and the next worker to try takes over. A leader whose connection breaks
(the database restarted) stops its singletons at once, since another worker may take the
lock as soon as the database is back, and competes again.

Requests never depend on the leader: a request that names a position reads the logs its
service follows that far itself, in whichever worker serves it (the tracking positions in the
database refuse an event processed twice).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal

import psycopg

from services.runtime.logging import get_logger
from services.runtime.settings import Settings

log = get_logger("ketnoi.leadership")

Role = Literal["leader", "standby"]


def lock_key(settings: Settings, services: Iterable[str]) -> int:
    """The advisory lock's key (a signed 64-bit number) for the processes serving these
    services on this database and schema prefix."""
    name = f"ketnoi-singletons:{settings.schema_prefix}:{','.join(sorted(services))}"
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leadership:
    """Competes for the lock in a background thread; ``on_gain`` starts the singletons when
    this process takes it, ``on_loss`` stops them when it loses it (or stops)."""

    def __init__(
        self,
        settings: Settings,
        key: int,
        on_gain: Callable[[], None],
        on_loss: Callable[[], None],
        retry: float = 1.0,
    ) -> None:
        target = settings.postgres
        if target is None:
            raise ValueError("an election needs PostgreSQL")
        self.conninfo = target.conninfo()
        self.key = key
        self.on_gain, self.on_loss = on_gain, on_loss
        self.retry = retry
        self._leading = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)

    @property
    def role(self) -> Role:
        return "leader" if self._leading else "standby"

    def start(self) -> None:
        log.info("worker_standing", pid=os.getpid())
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop competing: the singletons stop first, then the lock is released."""
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if conn is None:
                        conn = self._connect()
                    if self._leading:
                        conn.execute("SELECT 1")  # the session, and so the lock, still holds
                    else:
                        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                        taken = row.fetchone()
                        if taken is not None and taken[0]:
                            self._gain()
                except psycopg.Error as exc:
                    if self._leading:
                        self._lose(f"the lock's connection broke ({type(exc).__name__})")
                    _close(conn)
                    conn = None
                self._stopping.wait(self.retry)
        finally:
            if self._leading:
                self._lose(None)
            _close(conn)  # ends the session: the lock is released

    def _connect(self) -> psycopg.Connection[Any]:
        # Keepalives, so a leader cut off from the database notices within seconds.
        return psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            application_name="ketnoi-leadership",
        )

    def _gain(self) -> None:
        self._leading = True
        log.info("leadership_taken", pid=os.getpid())
        try:
            self.on_gain()
        except Exception:
            log.exception("leadership_start_failed", pid=os.getpid())

    def _lose(self, why: str | None) -> None:
        """Stop the singletons: the process stops (``why`` None) or its lock is lost."""
        self._leading = False
        if why is None:
            log.info("leadership_given_up", pid=os.getpid(), reason="the process stops")
        else:
            log.warning("leadership_lost", pid=os.getpid(), reason=why)
        try:
            self.on_loss()
        except Exception:
            log.exception("leadership_stop_failed", pid=os.getpid())


def _close(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
