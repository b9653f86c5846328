"""Group commit: what concurrent writers save to one log goes into one transaction.

The event store serialises writers with a table lock (PostgreSQL) or the file's write lock
(SQLite), so a log takes only as many transactions a second as one writer can run back to
back. Concurrent saves (HTTP commands in the thread pool, a follower's reaction, reads for the
read audit) therefore queue here. Whoever writes (the first caller to find nobody writing,
or the log's writer thread) takes what is pending, waiting a short window for more or until
a batch is full, writes every save with its events, tracking position and seal leaves in one
transaction, and answers each waiting caller once its events are durable.

A save that conflicts (an aggregate version another writer stored first, or a position its
follower already tracked) fails alone with the library's IntegrityError, which the command
meets as before and runs again on fresh state; the others in its batch are written. Any other
failure of the transaction writes nothing of the batch and every writer in it gets the error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

CONFLICT = "another writer stored one of these aggregate versions or positions first"


@runtime_checkable
class GroupRecorder(Protocol):
    """A recorder that writes several writers' saves in one transaction."""

    def insert_groups(self, groups: Sequence[Group]) -> list[Sequence[int] | None]:
        """Write every group that does not conflict, in one transaction; for each group its
        notification ids, or None when it conflicts and nothing of it was written. Raises
        (writing nothing) when the transaction fails."""
        ...


@dataclass(frozen=True)
class Group:
    """One writer's save: its stored events and the upstream position it tracks."""

    events: Sequence[StoredEvent]
    tracking: Tracking | None = None


@dataclass(eq=False)
class _Waiting:
    group: Group
    wake: threading.Event = field(default_factory=threading.Event)
    answered: bool = False
    lead: bool = False  # woken to write the next batch, not answered
    ids: Sequence[int] | None = None
    error: BaseException | None = None


class WaitTimeoutError(TimeoutError):
    """The writer did not answer in time; the save is still queued and may yet be written."""


class GroupCommitClosedError(RuntimeError):
    """The log's writer was stopped: nothing more is written through it."""


class GroupCommit:
    """Batches concurrent saves to one recorder; ``commit`` blocks until its own are durable.

    By default the callers write: the first to find nobody writing leads, taking every save
    queued (up to ``max_batch``, after waiting up to ``window_ms`` for more) into one
    transaction, and after answering them hands the lead to the first caller still waiting.
    A lone caller so writes its own save in its own thread, with no hand-over at all. With
    ``writer_thread`` a thread of the log's own writes every batch instead, so that a caller
    can stop waiting after a timeout (the read audit refuses a read rather than hang with a
    store that hangs).
    """

    def __init__(
        self,
        recorder: GroupRecorder,
        *,
        window_ms: float = 0.0,
        max_batch: int = 64,
        log_name: str = "",
        writer_thread: bool = False,
    ) -> None:
        self.recorder = recorder
        self.window = max(window_ms, 0.0) / 1000
        self.max_batch = max(max_batch, 1)
        self.log_name = log_name
        self.writer_thread = writer_thread
        self._queue: deque[_Waiting] = deque()
        self._changed = threading.Condition()
        self._writing = False  # a caller leads, or the writer thread runs
        self._writer: threading.Thread | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """How many saves wait to be taken into a batch."""
        with self._changed:
            return len(self._queue)

    def commit(self, group: Group, timeout: float | None = None) -> Sequence[int]:
        """Write ``group`` with whatever else is pending; returns its notification ids.

        Raises IntegrityError when it conflicts (nothing of it written), whatever the batch's
        transaction raised when that failed, and GroupCommitClosedError once closed. With a
        writer thread, raises WaitTimeoutError after ``timeout`` seconds without an answer
        (the save stays queued and may yet be written); callers that write ignore it.
        """
        waiting = _Waiting(group)
        with self._changed:
            if self._closing:
                raise GroupCommitClosedError(f"the writer of {self.log_name} is stopped")
            self._queue.append(waiting)
            if self.writer_thread:
                self._start_writer()
            elif not self._writing:
                self._writing = waiting.lead = True
            # Wake the one writing only when it has something new to do: a first save to
            # wait for, or a full batch. Every wake-up costs it a turn at the GIL.
            if len(self._queue) in (1, self.max_batch):
                self._changed.notify()
        if not waiting.lead:
            wait = timeout if self.writer_thread else None
            if not waiting.wake.wait(wait):
                raise WaitTimeoutError(f"the writer of {self.log_name} did not answer in time")
        if waiting.lead:
            self._lead(waiting)
        if waiting.error is not None:
            raise waiting.error
        assert waiting.ids is not None
        return waiting.ids

    def close(self) -> None:
        """Write what is pending, then stop; later saves are refused."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            writer = self._writer
            if writer is None:
                while self._writing:
                    self._changed.wait()
        if writer is not None and writer is not threading.current_thread():
            writer.join()

    # -- callers that write -------------------------------------------------------------------

    def _lead(self, mine: _Waiting) -> None:
        """Write batches until the one holding this caller's save is written, then hand the
        lead to the first caller still waiting, if any."""
        try:
            while not mine.answered:
                self._write(self._take())
        finally:
            with self._changed:
                if self._queue:
                    following = self._queue[0]
                    following.lead = True
                    following.wake.set()
                else:
                    self._writing = False
                    self._changed.notify_all()

    def _take(self) -> list[_Waiting]:
        with self._changed:
            self._wait_for_more()
            size = min(len(self._queue), self.max_batch)
            return [self._queue.popleft() for _ in range(size)]

    def _wait_for_more(self) -> None:
        """Under the lock: wait up to the window for a full batch."""
        if not self.window:
            return
        deadline = time.monotonic() + self.window
        while len(self._queue) < self.max_batch and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._changed.wait(remaining)

    # -- the writer thread --------------------------------------------------------------------

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._run, name=f"group-commit-{self.log_name}", daemon=True
            )
            self._writer.start()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._write(batch)

    def _next_batch(self) -> list[_Waiting] | None:
        """Wait for a first save, then up to the window for more; None once closed and done."""
        with self._changed:
            while not self._queue:
                if self._closing:
                    return None
                self._changed.wait()
            self._wait_for_more()
            size = min(len(self._queue), self.max_batch)
            return [self._queue.popleft() for _ in range(size)]

    # -- writing a batch ----------------------------------------------------------------------

    def _write(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = self._insert([w.group for w in batch])
        except BaseException as exc:
            # Nothing of the batch was written: every caller in it gets the error.
            for waiting in batch:
                waiting.error = exc
                self._answer(waiting)
            if not isinstance(exc, Exception):
                raise
            return
        for waiting, ids in zip(batch, outcomes, strict=True):
            if ids is None:
                waiting.error = IntegrityError(CONFLICT)
            else:
                waiting.ids = ids
            self._answer(waiting)

    @staticmethod
    def _answer(waiting: _Waiting) -> None:
        waiting.answered = True
        waiting.lead = False
        waiting.wake.set()

    def _insert(self, groups: list[Group]) -> list[Sequence[int] | None]:
        try:
            return self.recorder.insert_groups(groups)
        except IntegrityError:
            if len(groups) == 1:
                return [None]
        # A conflict the recorder did not see coming (a tracking row another process wrote
        # meanwhile) failed the whole transaction: write each save alone, so that only the
        # one that conflicts fails.
        return [self._insert_alone(group) for group in groups]

    def _insert_alone(self, group: Group) -> Sequence[int] | None:
        try:
            return self.recorder.insert_groups([group])[0]
        except IntegrityError:
            return None
