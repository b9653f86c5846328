"""``ketnoi feed`` (the relay) and ``ketnoi subscribe`` (the reference subscriber).

The subscriber is meant to be copied by agencies: one consumer group per agency, offsets
committed only after the messages are handled, and de-duplication by ``ce_id``, since the
relay delivers at least once. Handling here is printing one JSON line per event.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from services.cli import _settings, app, console
from services.runtime.logging import configure_logging, get_logger
from services.runtime.settings import Settings, SettingsError

if TYPE_CHECKING:
    from services.cli.wiring import Platform
    from services.referral.feed import FeedRelay
    from services.runtime.kafka import KafkaSettings
    from services.runtime.leadership import Leadership

log = get_logger("ketnoi.subscriber")

Emit = Callable[[dict[str, Any]], None]


class SeenIds:
    """The ``ce_id`` of the last ``capacity`` events handled, optionally kept in a file.

    The file is appended to as events are handled and compacted when it is opened, so a
    restarted subscriber still recognises what it handled before.
    """

    def __init__(self, capacity: int = 100_000, path: Path | None = None) -> None:
        self.capacity = capacity
        self.path = path
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._pending: list[str] = []
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line:
                    self._remember(line)
            path.write_text("".join(f"{i}\n" for i in self._ids), encoding="utf-8")

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._remember(event_id)
        if self.path is not None:
            self._pending.append(event_id)

    def save(self) -> None:
        """Write the ids added since the last save (call it before committing offsets)."""
        if self.path is None or not self._pending:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(f"{i}\n" for i in self._pending))
        self._pending.clear()

    def _remember(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


def feed_event(record: Any) -> dict[str, Any] | None:
    """The CloudEvent of one Kafka record as a dict; None for a record without ``ce_id``."""
    headers = {name: value.decode("utf-8") for name, value in record.headers or ()}
    event_id = headers.get("ce_id")
    if event_id is None:
        return None
    return {
        "type": headers.get("ce_type"),
        "id": event_id,
        "subject": headers.get("ce_subject"),
        "time": headers.get("ce_time"),
        "data": json.loads(record.value) if record.value else None,
    }


def handle(records: Iterable[Any], seen: SeenIds, emit: Emit) -> int:
    """Emit each new event once; returns how many were new."""
    new = 0
    for record in records:
        event = feed_event(record)
        if event is None:
            log.warning("feed_record_without_ce_id", partition=record.partition)
            continue
        if event["id"] in seen:
            continue  # re-published by the relay (at least once): handled already
        emit(event)
        seen.add(event["id"])
        new += 1
    return new


def consume(
    consumer: Any,
    seen: SeenIds,
    emit: Emit,
    *,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Poll, handle, remember, then commit; until stopped, idle too long or enough handled.

    A commit refused because the consumer group is rebalancing (another subscriber joined
    or left) is not an error: the records stay uncommitted, the next poll rejoins the group,
    and whoever then holds their partitions receives them again and skips what this one
    handled (by ``ce_id``, remembered before the commit).
    """
    from kafka.errors import (  # type: ignore[import-untyped]
        CommitFailedError,
        IllegalGenerationError,
        RebalanceInProgressError,
        UnknownMemberIdError,
    )

    rebalancing = (
        CommitFailedError,
        RebalanceInProgressError,
        IllegalGenerationError,
        UnknownMemberIdError,
    )
    handled = 0
    last_seen = time.monotonic()
    while not stopping():
        batch = consumer.poll(timeout_ms=500)
        records = [r for partition in batch.values() for r in partition]
        if records:
            last_seen = time.monotonic()
            handled += handle(records, seen, emit)
            seen.save()
            try:
                consumer.commit()  # only now: a crash before this re-delivers, never loses
            except rebalancing as exc:
                log.warning(
                    "subscribe_commit_refused", reason=type(exc).__name__, records=len(records)
                )
        if max_messages is not None and handled >= max_messages:
            break
        if idle_timeout is not None and time.monotonic() - last_seen > idle_timeout:
            break
    return handled


def _kafka_settings(bootstrap: str | None) -> KafkaSettings:
    from services.runtime.kafka import KafkaSettings

    try:
        kafka = KafkaSettings()
        if bootstrap:
            kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap})
        kafka.bootstrap_list()
    except (SettingsError, ValueError) as exc:
        console.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    return kafka


class StopRequest:
    """Whether SIGTERM or SIGINT asked for a clean stop, and what to tell when one does.

    ``when_stopped`` may be set after the handlers are installed (once the thing to stop
    exists); a stop that came before is passed on at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._on_stop: Callable[[], None] = lambda: None

    def __call__(self) -> bool:
        return self.requested

    def when_stopped(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        if self.requested:
            on_stop()

    def _signalled(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        self._on_stop()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[StopRequest]:
    """SIGTERM and SIGINT ask for a clean stop for as long as the block runs."""
    from services.launch import stop_asked_while_starting

    request = StopRequest()
    previous = {s: signal.signal(s, request._signalled) for s in (signal.SIGTERM, signal.SIGINT)}
    request.requested = request.requested or stop_asked_while_starting()
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@app.command()
def subscribe(
    agency: Annotated[str, typer.Option(help="Your agency's id, e.g. dong-thap-police.")],
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka brokers (default: KAFKA_BOOTSTRAP_SERVERS).")
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="Consumer group (default: ketnoi-feed-<agency>).")
    ] = None,
    dedup_file: Annotated[
        Path | None, typer.Option(help="Keep handled event ids here across restarts.")
    ] = None,
    remember: Annotated[int, typer.Option(help="How many event ids to remember.")] = 100_000,
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a message.")
    ] = None,
) -> None:
    """Print your agency's referral events, one JSON line each, each event once.

    Session and fetch settings come from KETNOI_KAFKA_* variables (e.g.
    KETNOI_KAFKA_SESSION_TIMEOUT_MS=2000 KETNOI_KAFKA_HEARTBEAT_INTERVAL_MS=500 for a quick
    first message on Tansu).
    """
    from services.runtime.kafka import InvalidTopicNameError, consumer, topic_for_agency

    configure_logging(_settings().effective_log_format)
    kafka = _kafka_settings(bootstrap)
    try:
        topic = topic_for_agency(kafka, agency)
    except InvalidTopicNameError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    group_id = group or f"ketnoi-feed-{agency}"
    seen = SeenIds(remember, dedup_file)

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    reader = consumer(kafka, group_id, [topic])
    log.info("subscribed", topic=topic, group=group_id, remembered=len(seen))
    try:
        with _stop_on_signals() as stopping:
            handled = consume(
                reader,
                seen,
                emit,
                max_messages=max_messages,
                idle_timeout=idle_timeout,
                stopping=stopping,
            )
    finally:
        reader.close()
    log.info("unsubscribed", topic=topic, handled=handled)


HELD_ELSEWHERE = 3  # the exit code of `ketnoi feed --reset` while another relay runs


@app.command()
def feed(
    health_port: Annotated[
        int | None,
        typer.Option(help="Serve /healthz, /readyz and /metrics (relay lag) on this port."),
    ] = None,
    health_host: Annotated[str, typer.Option(help="Address of the health port.")] = "127.0.0.1",
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help=(
                "Forget how far the feed got and re-publish the whole referral log from its "
                "start (subscribers skip what they handled by ce_id), then relay on. On "
                "PostgreSQL it resets only while it holds the relays' lock: while another "
                f"relay runs it changes nothing and exits with code {HELD_ELSEWHERE}: stop "
                "every relay first."
            ),
        ),
    ] = False,
) -> None:
    """Relay the referral log to the agencies' Kafka topics, at least once, until stopped.

    Needs KETNOI_DATABASE_URL (after `ketnoi migrate`) and KAFKA_BOOTSTRAP_SERVERS; the
    relay's own settings are KETNOI_FEED_* variables.

    On PostgreSQL any number of relays may run against one database: they elect one with an
    advisory lock, which alone publishes; the others stand by (their log and their health
    port say so) and one of them takes over, from the tracked position, when the leader's
    process dies.
    """
    from services.referral.feed import FeedRelay, FeedSettings, open_feed_upstream
    from services.referral.feed_tracking import tracking_recorder
    from services.runtime.health import serve_health
    from services.runtime.metrics import lag_registry

    # Handled from the first moment: an orchestrator may stop a relay that is still starting.
    with _stop_on_signals() as stopping:
        settings = _settings()
        configure_logging(settings.effective_log_format, settings.log_level)
        kafka = _kafka_settings(None)
        if stopping():
            return  # stopped before it connected to anything
        upstream = open_feed_upstream(settings)
        leadership: Leadership | None = None
        held_elsewhere = False
        try:
            tracking = tracking_recorder(settings, create_tables=settings.embedded)
            relay = FeedRelay(upstream, tracking, kafka, settings=settings, feed=FeedSettings())
            leadership = _relay_leadership(settings, relay, kafka.bootstrap_list())
            if reset:
                # Only with the lock held: a running relay would track its own position
                # again over the reset, and publish on from there.
                held_elsewhere = leadership is not None and not leadership.take()
                if not held_elsewhere:
                    relay.start_over()
            start = relay.position()
        except Exception as exc:
            _close_upstream(upstream)
            if leadership is not None:
                leadership.stop()
            console.print(
                f"[red]Cannot read (or reset) the feed's position:[/red] {exc}\n"
                "Run `ketnoi migrate` first."
            )
            raise typer.Exit(2) from None
        if held_elsewhere:
            relay.close()
            _close_upstream(upstream)
            log.warning("feed_reset_refused", reason="another relay holds the lock")
            console.print(
                "[red]Not reset:[/red] another relay is running on this database (it holds "
                "the relays' lock). Stop every `ketnoi feed` first, then run "
                "`ketnoi feed --reset` again: it resets, then relays."
            )
            raise typer.Exit(HELD_ELSEWHERE)
        stop_health = None
        if health_port is not None:
            loops = {"relay": relay}
            registry = lag_registry("ketnoi_relay_lag", lambda: loops)
            role = (lambda: leadership.role) if leadership is not None else None
            stop_health = serve_health(
                settings, health_host, health_port, lambda: loops, registry, role
            )
        try:
            if leadership is None:
                log.info("feed_started", position=start, brokers=kafka.bootstrap_list())
                stopping.when_stopped(relay.stop_soon)
                relay.run()
            else:
                _stand(leadership, stopping)
        finally:
            if stop_health is not None:
                stop_health()
            relay.close()
            _close_upstream(upstream)
    log.info("feed_stopped", position=relay.acknowledged, published=relay.published)


def _relay_leadership(
    settings: Settings, relay: FeedRelay, brokers: list[str]
) -> Leadership | None:
    """On PostgreSQL, the relays' election: the relay runs while this process holds the
    lock and stops at once when it loses it. None in the embedded default (one process)."""
    from services.runtime.leadership import Leadership, relay_lock_key

    if settings.postgres is None:
        return None

    def lead() -> None:
        # The tracked position, wherever the last leader left it, read before this relay
        # moves it (the relay reads it again itself, and retries if the database is away).
        try:
            position: int | None = relay.tracked()
        except Exception:
            position = None
        relay.start()
        log.info("feed_started", position=position, brokers=brokers)

    return Leadership(
        settings, relay_lock_key(settings), on_gain=lead, on_loss=relay.stop, name="feed-relay"
    )


def _stand(leadership: Leadership, stopping: StopRequest) -> None:
    """Compete for the lock (relaying while this process holds it) until asked to stop."""
    if stopping():
        leadership.stop()  # asked to stop while it started: a lock taken is let go
        return
    stopped = threading.Event()
    stopping.when_stopped(stopped.set)
    leadership.start()
    try:
        stopped.wait()
    finally:
        leadership.stop()  # the relay stops first, then the lock is released


def _close_upstream(upstream: Any) -> None:
    datastore = getattr(upstream.recorder, "datastore", None)
    if datastore is not None:
        datastore.close()


def start_demo_feed(platform: Platform, settings: Settings) -> Callable[[], None]:
    """Start a Tansu broker and the relay in this process; returns how to stop both.

    The broker keeps everything in memory, so the relay's position does too: every start
    re-publishes the whole log to the fresh broker.
    """
    from services.referral.feed import FeedRelay, open_consent_upstream, open_feed_upstream
    from services.referral.feed import prompt_on_save as prompt_relay
    from services.referral.feed_tracking import in_memory_tracking
    from services.runtime.kafka import KafkaSettings
    from services.runtime.tansu import BrokerUnavailableError, TansuBroker

    try:
        broker = TansuBroker(log_path=settings.data_dir / "tansu.log")
        broker.start()
    except (BrokerUnavailableError, RuntimeError) as exc:
        console.print(f"[red]Cannot start the demo's Kafka broker:[/red] {exc}")
        raise typer.Exit(2) from None
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    relay = FeedRelay(
        open_feed_upstream(settings, app=platform.referral),
        in_memory_tracking(),
        kafka,
        settings=settings,
        consent=open_consent_upstream(settings, app=platform.apps.get("consent")),
        audit=platform.read_audit.log if platform.read_audit is not None else None,
    )
    prompt_relay(platform.referral, relay)
    relay.start()
    console.print(f"\n[bold]Agency feed[/bold] on Kafka at {broker.bootstrap} (Tansu, in memory)")
    console.print(
        "Subscribe as an agency, e.g. the hospital:\n"
        f"  KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap} KETNOI_KAFKA_SESSION_TIMEOUT_MS=2000 "
        "KETNOI_KAFKA_HEARTBEAT_INTERVAL_MS=500 \\\n"
        "    ketnoi subscribe --agency dong-thap-general-hospital"
    )

    def stop() -> None:
        relay.close()
        broker.close()

    return stop
