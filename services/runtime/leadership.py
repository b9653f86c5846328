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

The agency feed's relay (``ketnoi feed``) is elected the same way, under a lock of its own
(``relay_lock_key``): of several relays on one database, one publishes and the others stand
by, and ``ketnoi feed --reset`` forgets the position only while it holds that lock
(``Leadership.take``), so never under a running relay.
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
    return _key(f"ketnoi-singletons:{settings.schema_prefix}:{','.join(sorted(services))}")


def relay_lock_key(settings: Settings) -> int:
    """The key of the agency feed relays' lock on this database and schema prefix: another
    name than any set of services', so a relay never competes with the serve workers."""
    return _key(f"ketnoi-feed-relay:{settings.schema_prefix}")


def _key(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leadership:
    """Competes for the lock in a background thread; ``on_gain`` starts the singletons when
    this process takes it, ``on_loss`` stops them when it loses it (or stops).

    ``name`` tells in the log lines which lock it is (the workers' singletons, the relay)."""

    def __init__(
        self,
        settings: Settings,
        key: int,
        on_gain: Callable[[], None],
        on_loss: Callable[[], None],
        retry: float = 1.0,
        name: str = "singletons",
    ) -> None:
        target = settings.postgres
        if target is None:
            raise ValueError("an election needs PostgreSQL")
        self.conninfo = target.conninfo()
        self.key = key
        self.on_gain, self.on_loss = on_gain, on_loss
        self.retry = retry
        self.name = name
        self._leading = False
        self._waiting = False  # said so in the log since it last stood or lost the lock
        self._held: psycopg.Connection[Any] | None = None  # the lock taken by ``take``
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)

    @property
    def role(self) -> Role:
        return "leader" if self._leading else "standby"

    def take(self) -> bool:
        """Try for the lock once, now, in the calling thread; True when it was taken.

        Whoever calls this does what needs the lock before ``start``, which keeps the lock
        and calls ``on_gain`` from its thread (``ketnoi feed --reset`` forgets the position
        in between). Raises psycopg.Error when the database does not answer.
        """
        conn = self._connect()
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error:
            _close(conn)
            raise
        if row is None or not row[0]:
            _close(conn)
            return False
        self._held = conn
        log.info("leadership_taken", pid=os.getpid(), lock=self.name)
        return True

    def start(self) -> None:
        log.info("worker_standing", pid=os.getpid(), lock=self.name)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop competing: the singletons stop first, then the lock is released."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:  # never started: a lock taken by ``take`` is released here
            _close(self._held)
            self._held = None

    def _run(self) -> None:
        conn, self._held = self._held, None
        try:
            if conn is not None:
                self._gain(logged=True)
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
                        elif not self._waiting:
                            self._waiting = True
                            log.info("leadership_waiting", pid=os.getpid(), lock=self.name)
                except psycopg.Error as exc:
                    if self._leading:
                        self._lose(f"the lock's connection broke ({type(exc).__name__})")
                    _close(conn)
                    conn = None
                self._stopping.wait(self.retry)
        finally:
            if self._leading:
                self._lose(None)
                _unlock(conn, self.key)
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

    def _gain(self, *, logged: bool = False) -> None:
        self._leading = True
        if not logged:
            log.info("leadership_taken", pid=os.getpid(), lock=self.name)
        try:
            self.on_gain()
        except Exception:
            log.exception("leadership_start_failed", pid=os.getpid())

    def _lose(self, why: str | None) -> None:
        """Stop the singletons: the process stops (``why`` None) or its lock is lost."""
        self._leading = False
        self._waiting = False
        if why is None:
            log.info(
                "leadership_given_up", pid=os.getpid(), lock=self.name, reason="the process stops"
            )
        else:
            log.warning("leadership_lost", pid=os.getpid(), lock=self.name, reason=why)
        try:
            self.on_loss()
        except Exception:
            log.exception("leadership_stop_failed", pid=os.getpid())


def _unlock(conn: psycopg.Connection[Any] | None, key: int) -> None:
    """Release the lock before the session ends, so that whoever tries next gets it: the
    end of a session releases it too, but only once the server has noticed."""
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _close(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
