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

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from contracts.audit import PersonalDataRead, ReadBasis
from contracts.envelope import Actor
from contracts.personal import personal_paths
from contracts.vocabulary import DataCategory
from services.runtime.application import ServiceApplication
from services.runtime.errors import DomainError
from services.runtime.field_cipher import SEALED
from services.runtime.files import private_file
from services.runtime.group_commit import GroupCommitClosedError, WaitTimeoutError
from services.runtime.logging import get_logger
from services.runtime.metrics import READ_AUDIT_WRITES
from services.runtime.persistence import application_env, decode_stored, stored_state
from services.runtime.person_keys import migrate_person_keys
from services.runtime.settings import Settings

AUDIT = "audit"  # the log's name: its PostgreSQL schema and SQLite file
RETRY_AFTER_SECONDS = 5
_PAGE = 1000
_CASES_KEPT = 64  # the cases whose reads are kept decoded (``ReadAudit.reads_of_case``)

log = get_logger("ketnoi.read_audit")

# A read of ``reads_of_case`` kept decoded, or as stored when it holds a sealed field.
_Entry = PersonalDataRead | StoredEvent


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
        self._cases: OrderedDict[str, tuple[int, list[_Entry]]] = OrderedDict()
        self._cases_lock = threading.Lock()

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
        batch: ReadBatch | None = None,
    ) -> None:
        """Blocks until the read is durably stored; raises ReadAuditUnavailableError (503,
        Retry-After) when it cannot be. With ``batch``, the read is only added to it: it is
        stored with the batch's other reads when the batch is flushed, and the data read must
        not leave before that.

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
        if batch is not None:
            batch.add(read)
        else:
            self.store([read])

    def batch(self) -> ReadBatch:
        """An empty batch of reads, to be stored together in one write (``ReadBatch``)."""
        return ReadBatch(self)

    def store(self, reads: Sequence[PersonalDataRead]) -> None:
        """Store ``reads`` durably in one save (one transaction); raises
        ReadAuditUnavailableError when they cannot be, and then none of them is stored."""
        if not reads:
            return
        what = ",".join(dict.fromkeys(read.what for read in reads))
        if self._closing:
            raise ReadAuditUnavailableError()
        try:
            self.log.save(*reads)
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
        READ_AUDIT_WRITES.inc(len(reads))
        if self._failing:
            log.info("read_audit_recovered")
            self._failing = False

    @property
    def pending(self) -> int:
        """How many reads wait to be taken into a batch."""
        return self.committer.pending

    def reads_of_case(self, case_id: UUID) -> list[PersonalDataRead]:
        """Every recorded read of one case, oldest first.

        A scan of the audit log, an auditor's query (and the person's copy). The reads of the
        last cases asked are kept decoded with the position they were read up to, so that
        asking again reads only what was recorded since: a stored read never changes, except
        a break-glass reason sealed under the person's key (erased with the key): a read with
        one is decoded again at each asking.
        """
        key = str(case_id)
        with self._cases_lock:
            upto, known = self._cases.pop(key, (0, []))
        fresh, upto = self._scan(key, upto)
        entries = [*known, *fresh]
        with self._cases_lock:
            kept = self._cases.get(key)
            if kept is None or kept[0] < upto:
                self._cases[key] = (upto, entries)
            while len(self._cases) > _CASES_KEPT:
                self._cases.popitem(last=False)
        return [self._decoded(entry) for entry in entries]

    def all_reads(self) -> Iterator[PersonalDataRead]:
        """Every recorded read, in the order they were stored."""
        recorder = self.log.recorder
        topics = [PersonalDataRead.topic()]
        start = 1
        while True:
            page = recorder.select_notifications(start, _PAGE, topics=topics)
            for notification in page:
                yield self._decoded(notification)
            if len(page) < _PAGE:
                return
            start = page[-1].id + 1

    def _scan(self, case_id: str, after: int) -> tuple[list[_Entry], int]:
        """The reads of the case stored after position ``after``, each decoded (or, with a
        sealed field, as stored), and the last position read."""
        recorder = self.log.recorder
        mapper = self.log.mapper
        topics = [PersonalDataRead.topic()]
        found: list[_Entry] = []
        start = after + 1
        while True:
            page = recorder.select_notifications(start, _PAGE, topics=topics)
            for notification in page:
                # Another case's read is passed over once its document names that case,
                # before its decoding into the event (validation, sealed fields opened).
                state = stored_state(mapper, notification)
                named = state.get("case_id")
                if isinstance(named, str) and named != case_id:
                    continue
                read = self._decoded(notification)
                if str(read.case_id) != case_id:
                    continue
                keyless = SEALED not in state or _reads_as_erased(read, state[SEALED]["p"])
                found.append(read if keyless else notification)
            if page:
                after = page[-1].id
            if len(page) < _PAGE:
                return found, after
            start = page[-1].id + 1

    def _decoded(self, entry: _Entry) -> PersonalDataRead:
        if isinstance(entry, PersonalDataRead):
            return entry
        read = decode_stored(self.log.mapper, entry)
        assert isinstance(read, PersonalDataRead)
        return read

    def close(self) -> None:
        """Store what is pending, stop the writer and close the log. Later reads are refused."""
        self._closing = True
        self.log.close()


def _reads_as_erased(read: PersonalDataRead, sealed: list[list[str | int]]) -> bool:
    """Whether each of the read's sealed fields holds the value it reads as once the person
    is erased (a read with no reason), so that it reads the same with or without their key."""
    erased = personal_paths(PersonalDataRead)
    document: Any = read.model_dump(mode="json")
    for path in sealed:
        value = document
        for step in path:
            value = value[step]
        pattern = tuple("*" if isinstance(step, int) else step for step in path)
        if pattern not in erased or value != erased[pattern]:
            return False
    return True


class ReadBatch:
    """The reads of personal data one answer is made of, stored together in one write.

    A page that reads a case, its consent record, its timeline and its plan records four
    reads: each stored on its own, they are four durable writes one after the other. Added to
    a batch instead, they are stored in one save (one transaction of the audit log) by
    ``flush``, which the caller runs after the reading and before the answer leaves: what was
    read is held in the server until then, and when the batch cannot be stored, ``flush``
    raises ReadAuditUnavailableError and nothing of it may be sent.
    """

    def __init__(self, audit: ReadAudit) -> None:
        self.audit = audit
        self._reads: list[PersonalDataRead] = []
        self._lock = threading.Lock()

    def add(self, read: PersonalDataRead) -> None:
        with self._lock:
            self._reads.append(read)

    @property
    def pending(self) -> int:
        """How many reads wait for ``flush``."""
        with self._lock:
            return len(self._reads)

    def flush(self) -> None:
        """Store every read added since the last flush, in one write; raises
        ReadAuditUnavailableError (and stores none of them) when they cannot be stored."""
        with self._lock:
            reads, self._reads = self._reads, []
        self.audit.store(reads)
