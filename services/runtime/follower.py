"""Following upstream logs with exactly-once processing.

A service that reacts to other services' events is a ``FollowingApplication``: its log lives
in a process recorder, so the events a reaction produces and the tracking position of the
upstream event it reacted to are written in one transaction. Processing the same upstream
event twice is impossible (the tracking row refuses it), and a crash between two events
loses nothing (the position is only as far as what was committed).

A ``Follower`` merges several upstream logs into one processing loop: it reads the next
batch of each, merges them by event time (each log keeps its own order), and processes them
one by one. It wakes on PostgreSQL NOTIFY, or on an in-process prompt in the embedded
default, and polls periodically as a safety net, so a lost notification never stalls it.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
import structlog
from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    Mapper,
    Notification,
    ProcessRecorder,
    Tracking,
)
from eventsourcing.utils import Environment
from psycopg import sql

from contracts.envelope import Event
from services.runtime.application import ServiceApplication
from services.runtime.errors import UnavailableError
from services.runtime.logging import get_logger
from services.runtime.persistence import application_env, decode_stored, new_mapper
from services.runtime.settings import Settings

log = get_logger("ketnoi.follower")


class UpstreamAheadError(Exception):
    """An event depends on one another upstream has not delivered yet: its log waits."""


class ConcurrentProcessingError(UpstreamAheadError):
    """Another processor of the same service got there first; this log waits a round."""


class Processing(ProcessingEvent[Any]):
    """What reacting to one upstream event produced, with that event's position."""

    def __init__(self, upstream: str, notification_id: int) -> None:
        super().__init__(Tracking(application_name=upstream, notification_id=notification_id))


class FollowingApplication(ServiceApplication):
    """A service application that reacts to events of upstream logs."""

    follows: ClassVar[dict[str, tuple[type[Event], ...]]] = {}

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    @property
    def process_recorder(self) -> ProcessRecorder:
        recorder = self.recorder
        assert isinstance(recorder, ProcessRecorder)
        return recorder

    def policy(self, upstream: str, event: Event, processing: Processing) -> None:
        """React to one upstream event by collecting new events into ``processing``."""
        raise NotImplementedError

    def position(self, upstream: str) -> int:
        return self.process_recorder.max_tracking_id(upstream) or 0

    def process(self, upstream: str, notification_id: int, event: Event) -> bool:
        """Apply the policy and record its events with the tracking position, atomically.

        Returns False when the event had already been processed (by this or another process).
        """
        processing = Processing(upstream, notification_id)
        # What a reaction logs carries the correlation id of the request that caused it,
        # whichever service took that request.
        with structlog.contextvars.bound_contextvars(
            correlation_id=str(event.correlation_id) if event.correlation_id else None,
            upstream=upstream,
            event_id=str(event.event_id),
        ):
            self.policy(upstream, event, processing)
        try:
            recordings = self._record(processing)
        except IntegrityError:
            if self.process_recorder.has_tracking_id(upstream, notification_id):
                return False
            # Another process of this service changed the same aggregate first: nothing was
            # written, and this event is processed again, on fresh state, next round.
            raise ConcurrentProcessingError(upstream, notification_id) from None
        self._notify(recordings)
        return True


@dataclass(frozen=True)
class Lag:
    """How far a loop is behind one upstream log: positions to its head, and the age of the
    oldest event it has yet to handle (0 when it has handled everything it follows)."""

    upstream: str
    events: int
    seconds: float


@dataclass
class Upstream:
    """A log to follow: the name its positions are tracked under, and how to read it."""

    name: str
    recorder: ApplicationRecorder
    mapper: Mapper[Any]
    topics: tuple[str, ...]
    channel: str | None = None
    # Closes the connections of a recorder opened for this reader alone (none when the
    # upstream is an application of the same process, which closes its own).
    close: Callable[[], None] | None = None


def topics_of(event_types: Iterable[type[Event]]) -> tuple[str, ...]:
    """Every stored topic of these types, older versions included (they are upcast)."""
    return tuple(
        f"{cls.event_type}.v{version}"
        for cls in event_types
        for version in range(1, cls.event_version + 1)
    )


def upstream_lag(upstream: Upstream, position: int, topics: Sequence[str]) -> Lag:
    """The lag of a reader at ``position`` that handles ``topics`` of ``upstream``."""
    pending = upstream.recorder.select_notifications(start=position + 1, limit=1, topics=topics)
    if not pending:
        return Lag(upstream.name, 0, 0.0)
    head = upstream.recorder.max_notification_id() or pending[0].id
    event = decode_stored(upstream.mapper, pending[0])
    age = (datetime.now(UTC) - event.timestamp).total_seconds()
    return Lag(upstream.name, max(head - position, 1), max(age, 0.0))


def open_upstream(
    settings: Settings,
    service: str,
    event_types: Sequence[type[Event]],
    app: ServiceApplication | None = None,
) -> Upstream:
    """A reader of another service's log: its in-process app when there is one, else a
    recorder of our own on its tables (never created here)."""
    close = None
    if app is not None:
        recorder = app.recorder
    else:
        env = Environment(service, application_env(settings, service, create_tables=False))
        factory = InfrastructureFactory.construct(env)
        recorder = factory.application_recorder()
        close = factory.close
    channel = getattr(recorder, "channel_name", None)
    return Upstream(
        name=service,
        recorder=recorder,
        mapper=new_mapper(settings),
        topics=topics_of(event_types),
        channel=channel if settings.postgres else None,
        close=close,
    )


class WakeLoop:
    """A background loop that catches up whenever woken: by PostgreSQL NOTIFY on the given
    channels, by an in-process prompt, or by its poll interval running out (the safety net:
    a lost notification never stalls it)."""

    name = "loop"

    def __init__(self, settings: Settings, channels: Sequence[str], poll_interval: float) -> None:
        self.settings = settings
        self.channels = [c for c in channels if c]
        self.poll_interval = poll_interval
        self.prompt = threading.Event()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def catch_up(self) -> int:
        raise NotImplementedError

    def lag(self) -> list[Lag]:
        """How far behind each upstream this loop is (reads the logs)."""
        return []

    @property
    def running(self) -> bool:
        """Whether the loop's thread lives and its last round ended without an error."""
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def start(self) -> None:
        """Start the loop's thread (again, after ``halt``)."""
        self.stopping.clear()
        self.error = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def halt(self, timeout: float = 10.0) -> None:
        """Stop the loop's thread and keep what it reads with: ``start`` runs it again, and
        ``reach`` works meanwhile (a worker that is not the leader, ``leadership.py``)."""
        self.stopping.set()
        self.prompt.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def stop(self, timeout: float = 10.0) -> None:
        self.halt(timeout)

    def prompt_soon(self) -> None:
        """Wake the loop (in-process upstreams call this after they save)."""
        self.prompt.set()

    def _run(self) -> None:
        listener: psycopg.Connection[Any] | None = None
        try:
            while not self.stopping.is_set():
                try:
                    if listener is None:
                        listener = self._listen()
                    self.catch_up()
                    self.error = None
                except Exception as exc:
                    # Stall loudly rather than skip: an event we cannot process is never lost.
                    self.error = exc
                    log.exception("loop_failed", loop=self.name)
                try:
                    self._wait(listener)
                except psycopg.Error:
                    # The listening connection broke; polling continues and we listen again.
                    log.warning("loop_listener_lost", loop=self.name)
                    _close(listener)
                    listener = None
                    self.stopping.wait(self.poll_interval)
        finally:
            _close(listener)

    def _listen(self) -> psycopg.Connection[Any] | None:
        target = self.settings.postgres
        if target is None or not self.channels:
            return None
        conn = psycopg.connect(target.conninfo(), autocommit=True)
        for channel in self.channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return conn

    def _wait(self, listener: psycopg.Connection[Any] | None) -> None:
        if listener is None:
            self.prompt.wait(self.poll_interval)
            self.prompt.clear()
            return
        # A NOTIFY wakes us at once; otherwise the poll interval runs out (the safety net).
        for _ in listener.notifies(timeout=self.poll_interval, stop_after=1):
            pass
        self.prompt.clear()


class Follower(WakeLoop):
    """One processing loop over several upstream logs."""

    def __init__(
        self,
        app: FollowingApplication,
        upstreams: Sequence[Upstream],
        *,
        settings: Settings,
        batch_size: int = 200,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(settings, [u.channel or "" for u in upstreams], poll_interval)
        self.app = app
        self.name = f"follower-{app.name}"
        self.upstreams = list(upstreams)
        self.batch_size = batch_size
        # The loop's thread and an explicit catch_up() in the same process take turns.
        self._processing = threading.Lock()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, and close the connections of the upstream readers it opened."""
        super().stop(timeout)
        for upstream in self.upstreams:
            if upstream.close is not None:
                upstream.close()

    # -- processing ----------------------------------------------------------------------

    def _batches(self) -> list[list[tuple[Upstream, Notification]]]:
        batches = []
        for upstream in self.upstreams:
            start = self.app.position(upstream.name) + 1
            notifications = upstream.recorder.select_notifications(
                start=start, limit=self.batch_size, topics=upstream.topics
            )
            batches.append([(upstream, n) for n in notifications])
        return batches

    def run_once(self) -> int:
        """Process what is pending now (up to a batch of each upstream); returns how many."""
        with self._processing:
            return self._run_once()

    def _run_once(self) -> int:
        decoded: list[list[tuple[Any, int, int, Upstream, Event]]] = []
        horizon = None
        for order, batch in enumerate(self._batches()):
            rows = []
            for upstream, notification in batch:
                event = decode_stored(upstream.mapper, notification)
                rows.append((event.timestamp, order, notification.id, upstream, event))
            decoded.append(rows)
            if len(batch) == self.batch_size:
                # This log may hold more; nothing later than its last event fetched is safe
                # to process before we have read further.
                last = rows[-1][0]
                horizon = last if horizon is None else min(horizon, last)
        processed = 0
        waiting: set[str] = set()
        # heapq.merge keeps each log's own order and interleaves the logs by event time (ties:
        # upstream order). Time is only a hint across logs: when an event needs something
        # another log has not delivered yet, its log waits for the next round.
        for at, _order, notification_id, upstream, event in heapq.merge(*decoded):
            if horizon is not None and at > horizon:
                break
            if upstream.name in waiting:
                continue
            try:
                if self.app.process(upstream.name, notification_id, event):
                    processed += 1
            except UpstreamAheadError:
                waiting.add(upstream.name)
        return processed

    def catch_up(self) -> int:
        """Process until nothing is pending; returns how many events were processed."""
        total = 0
        while True:
            done = self.run_once()
            total += done
            if done == 0:
                return total

    def follows(self, upstream_name: str) -> bool:
        """Whether this loop reads that log."""
        return any(u.name == upstream_name for u in self.upstreams)

    def lag(self) -> list[Lag]:
        return [
            upstream_lag(upstream, self.app.position(upstream.name), upstream.topics)
            for upstream in self.upstreams
        ]

    def pending(self, upstream_name: str, up_to: int | None = None) -> bool:
        """Whether the upstream's log holds an event this service has not processed yet (at
        or before position ``up_to``, when given)."""
        upstream = next(u for u in self.upstreams if u.name == upstream_name)
        start = self.app.position(upstream.name) + 1
        if up_to is not None and start > up_to:
            return False
        return bool(
            upstream.recorder.select_notifications(
                start=start, limit=1, stop=up_to, topics=upstream.topics
            )
        )

    def reach_head(self, upstream_name: str, timeout: float) -> None:
        """Process the upstream's log up to its head, now, in the caller's thread.

        What was committed upstream before this call is then in force for the caller,
        whichever process wrote it and whichever serves the caller. Raises UnavailableError
        (503, Retry-After) when that takes longer than ``timeout`` seconds.
        """
        self.reach(upstream_name, timeout)

    def reach(self, upstream_name: str, timeout: float, up_to: int | None = None) -> None:
        """Process the upstream's log up to position ``up_to`` (its head when None), now, in
        the caller's thread; the background loop and other callers take turns with it.

        Raises UnavailableError (503, Retry-After) when that takes longer than ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while self.pending(upstream_name, up_to):
            left = deadline - time.monotonic()
            if left <= 0:
                raise behind(self.name, upstream_name, up_to)
            if self._processing.acquire(timeout=left):
                try:
                    done = self._run_once()
                finally:
                    self._processing.release()
                if done:
                    continue
            # Another process of this service holds the events, or an upstream waits on
            # another: give it a moment.
            time.sleep(min(0.01, max(left, 0)))


def behind(loop: str, upstream: str, up_to: int | None) -> UnavailableError:
    """The 503 of a read or command that cannot wait longer for a log to be read."""
    log.warning("follower_behind", loop=loop, upstream=upstream, up_to=up_to)
    if up_to is None:
        return UnavailableError(
            f"Ketnoi has not yet read the latest {upstream} records, so it cannot "
            "answer safely; try again in a moment.",
            waiting_for=upstream,
        )
    return UnavailableError(
        f"Ketnoi has not yet read the {upstream} log up to position {up_to}, which your "
        "earlier request reached, so it cannot answer yet; try again in a moment with the "
        "same Ketnoi-Position.",
        waiting_for=upstream,
        position=up_to,
    )


def _close(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        conn.close()


def prompt_on_save(upstream: ServiceApplication, followers: Iterable[WakeLoop]) -> None:
    """In one process (the embedded default), wake followers when an upstream saves."""
    waiting = list(followers)
    previous: Callable[[Any], None] = upstream._notify

    def notify(recordings: Any) -> None:
        previous(recordings)
        for follower in waiting:
            follower.prompt_soon()

    upstream._notify = notify  # type: ignore[method-assign]
