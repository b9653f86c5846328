"""Every read of personal data is an event, stored before the response leaves.

``ReadAudit.record`` blocks its caller until the read is durably in the audit log. Callers run
concurrently (FastAPI runs sync routes in a thread pool), and the event store serialises
writers with a table lock, so the audit log's group commit (the mechanism every log writes
through) takes every read pending, waits a moment for more, and saves them all in one
transaction: throughput comes from batching, not from threads. If a save fails, every caller
of that batch gets ``ReadAuditUnavailableError`` (503): nothing is returned to a user without
its record. The next batch simply tries again.

The log is ``audit``: its own PostgreSQL schema (``<prefix>audit``, created by ``ketnoi
migrate``) or its own SQLite file in the embedded default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
from psycopg import sql

from contracts.audit import PersonalDataRead, ReadBasis
from contracts.envelope import Actor
from contracts.vocabulary import DataCategory
from services.runtime.application import ServiceApplication
from services.runtime.errors import DomainError
from services.runtime.files import private_file
from services.runtime.group_commit import GroupCommitClosedError, WaitTimeoutError
from services.runtime.logging import get_logger
from services.runtime.metrics import READ_AUDIT_WRITES
from services.runtime.persistence import application_env, decode_stored
from services.runtime.person_keys import migrate_person_keys
from services.runtime.settings import Settings

AUDIT = "audit"  # the log's name: its PostgreSQL schema and SQLite file
RETRY_AFTER_SECONDS = 5
_PAGE = 1000

log = get_logger("ketnoi.read_audit")


class ReadAuditUnavailableError(DomainError):
    """The read could not be recorded, so its data must not be returned."""

    status = 503
    slug = "read-audit-unavailable"
    title = "The read could not be recorded"
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}

    def __init__(
        self,
        detail: str = (
            "Every read of personal data is recorded first, and the record could not be "
            f"written just now, so nothing was returned. Try again in {RETRY_AFTER_SECONDS} "
            "seconds."
        ),
    ) -> None:
        super().__init__(detail)


class ReadAuditLog(ServiceApplication):
    """The audit log's store: one ``PersonalDataRead`` per read, each its own originator."""

    name = "audit"
    # A caller gives up after its timeout, so the reads are written by a thread of their own.
    group_commit_writer_thread = True
    # A read names no position: no request waits for the audit log.
    names_positions = False


def audit_env(settings: Settings, *, create_tables: bool | None = None) -> dict[str, str]:
    """The eventsourcing environment of the audit log (schema or file ``audit``)."""
    # The same settings as a service's log, placed in a schema and a file of its own.
    env = application_env(settings, "intake", create_tables=create_tables)
    env["KETNOI_SEAL_LOG"] = AUDIT
    if settings.postgres is None:
        env["SQLITE_DBNAME"] = str(private_file(settings.data_dir / f"{AUDIT}.sqlite"))
    else:
        env["POSTGRES_SCHEMA"] = settings.schema_for(AUDIT)
        # One writer thread and the occasional auditor's query.
        env["POSTGRES_POOL_SIZE"] = "2"
        env["POSTGRES_MAX_OVERFLOW"] = "2"
    return env


def migrate_read_audit(settings: Settings) -> None:
    """Create the audit log's schema and tables; safe to run again."""
    target = settings.postgres
    if target is not None:
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(settings.schema_for(AUDIT))
                )
            )
    ReadAuditLog(env=audit_env(settings, create_tables=True)).close()
    # A break-glass reason is encrypted under the person's key: the log needs the key store.
    migrate_person_keys(settings)


def personal_data_read(
    *,
    actor: Actor,
    case_id: UUID,
    categories: Iterable[DataCategory],
    basis: ReadBasis,
    what: str,
    person_id: UUID | None = None,
    grant_ids: Iterable[UUID] = (),
    override_id: UUID | None = None,
    reason: str | None = None,
    correlation_id: UUID | None = None,
    at: datetime | None = None,
) -> PersonalDataRead | None:
    """The event recording one read (None when ``categories`` is empty: nothing personal was
    read). ``at`` is the instant the read was decided, now unless given.

    Raises pydantic's ValidationError (a ValueError) when the basis and the other fields do
    not fit together, e.g. a ``break_glass`` read without a reason.
    """
    read_categories = tuple(dict.fromkeys(categories))
    if not read_categories:
        return None
    return PersonalDataRead(
        originator_id=uuid4(),
        originator_version=1,
        timestamp=at or datetime.now(UTC),
        actor=actor,
        correlation_id=correlation_id,
        case_id=case_id,
        person_id=person_id,
        categories=read_categories,
        basis=basis,
        grant_ids=tuple(dict.fromkeys(grant_ids)),
        override_id=override_id,
        reason=reason,
        what=what,
    )


class ReadAudit:
    """Records reads of personal data, batched across concurrent callers.

    The reads go through the audit log's group commit (``services/runtime/group_commit.py``),
    as every other log's saves do; ``window_ms`` and ``max_batch`` default to
    ``KETNOI_READ_AUDIT_WINDOW_MS`` and ``KETNOI_READ_AUDIT_MAX_BATCH``.
    """

    def __init__(
        self, settings: Settings, *, window_ms: float | None = None, max_batch: int | None = None
    ) -> None:
        self.settings = settings
        window = settings.read_audit_window_ms if window_ms is None else window_ms
        self.timeout = settings.read_audit_timeout_seconds
        self.log = ReadAuditLog(env=audit_env(settings))
        committer = self.log.group_commit
        if committer is None:
            msg = "the audit log's store writes no batches: use the sealed recorders"
            raise RuntimeError(msg)
        self.committer = committer
        committer.window = max(window, 0.0) / 1000
        committer.max_batch = max(max_batch or settings.read_audit_max_batch, 1)
        # A caller gives up after the timeout; its read may still be stored later.
        self.log.save_timeout = self.timeout
        self._closing = False
        self._failing = False

    def record(
        self,
        *,
        actor: Actor,
        case_id: UUID,
        categories: Iterable[DataCategory],
        basis: ReadBasis,
        what: str,
        person_id: UUID | None = None,
        grant_ids: Iterable[UUID] = (),
        override_id: UUID | None = None,
        reason: str | None = None,
        correlation_id: UUID | None = None,
    ) -> None:
        """Blocks until the read is durably stored; raises ReadAuditUnavailableError (503,
        Retry-After) when it cannot be.

        Nothing is recorded when ``categories`` is empty. Raises pydantic's ValidationError
        (a ValueError) when the basis and the other fields do not fit together, e.g. a
        ``break_glass`` read without a reason or a ``grant`` read without grant ids.
        """
        read = personal_data_read(
            actor=actor,
            case_id=case_id,
            categories=categories,
            basis=basis,
            what=what,
            person_id=person_id,
            grant_ids=grant_ids,
            override_id=override_id,
            reason=reason,
            correlation_id=correlation_id,
        )
        if read is None:
            return
        if self._closing:
            raise ReadAuditUnavailableError()
        try:
            self.log.save(read)
        except WaitTimeoutError:
            # The writer is stuck (a database that hangs): refuse rather than wait on. The
            # read may still be stored later, which errs on the side of the record.
            log.warning("read_audit_timeout", seconds=self.timeout, what=what)
            raise ReadAuditUnavailableError() from None
        except GroupCommitClosedError:
            raise ReadAuditUnavailableError() from None
        except Exception as exc:
            # Never the read itself in the log line: its kind and the error's only.
            if not self._failing:
                log.error("read_audit_save_failed", error=type(exc).__name__, what=what)
            self._failing = True
            raise ReadAuditUnavailableError() from None
        READ_AUDIT_WRITES.inc()
        if self._failing:
            log.info("read_audit_recovered")
            self._failing = False

    @property
    def pending(self) -> int:
        """How many reads wait to be taken into a batch."""
        return self.committer.pending

    def reads_of_case(self, case_id: UUID) -> list[PersonalDataRead]:
        """Every recorded read of one case, oldest first.

        A scan of the audit log: an auditor's query, not a path for every request.
        """
        return [read for read in self.all_reads() if read.case_id == case_id]

    def all_reads(self) -> Iterator[PersonalDataRead]:
        """Every recorded read, in the order they were stored."""
        recorder = self.log.recorder
        topics = [PersonalDataRead.topic()]
        start = 1
        while True:
            page = recorder.select_notifications(start, _PAGE, topics=topics)
            for notification in page:
                read = decode_stored(self.log.mapper, notification)
                assert isinstance(read, PersonalDataRead)
                yield read
            if len(page) < _PAGE:
                return
            start = page[-1].id + 1

    def close(self) -> None:
        """Store what is pending, stop the writer and close the log. Later reads are refused."""
        self._closing = True
        self.log.close()
