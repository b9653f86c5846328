"""Prometheus metrics of a process, served at ``/metrics``.

Requests by route template (never a concrete path: ids stay out of labels), method and
status, with latency histograms; follower and relay lag per upstream log, in positions and
in seconds, read from the logs when scraped; deadline escalations; read-audit writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.runtime.follower import Lag
from services.runtime.logging import get_logger

log = get_logger("ketnoi.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REQUESTS = Counter(
    "ketnoi_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "ketnoi_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DEADLINE_ESCALATIONS = Counter(
    "ketnoi_deadline_escalations",
    "Missed referral deadlines escalated (each exactly once) by this process.",
)
READ_AUDIT_WRITES = Counter(
    "ketnoi_read_audit_writes",
    "Reads of personal data recorded durably in the read audit by this process.",
)


class Lagging(Protocol):
    """A loop that follows upstream logs: a follower, the projector, the relay."""

    error: BaseException | None

    @property
    def running(self) -> bool: ...

    def lag(self) -> list[Lag]: ...


class LagCollector(Collector):
    """``<prefix>_events`` and ``<prefix>_seconds`` per loop and upstream, read when scraped.
    A loop whose lag cannot be read (its database is down) is left out of that scrape."""

    def __init__(self, prefix: str, loops: Callable[[], Mapping[str, Lagging]]) -> None:
        self.prefix = prefix
        self.loops = loops

    def collect(self) -> Iterator[GaugeMetricFamily]:
        events = GaugeMetricFamily(
            f"{self.prefix}_events",
            "Positions between what a loop has handled and the head of an upstream log "
            "(0 when it has handled every event it follows).",
            labels=["loop", "upstream"],
        )
        seconds = GaugeMetricFamily(
            f"{self.prefix}_seconds",
            "Age of the oldest event of an upstream log that a loop has yet to handle.",
            labels=["loop", "upstream"],
        )
        for name, loop in self.loops().items():
            try:
                lags = loop.lag()
            except Exception as exc:
                log.warning("lag_unreadable", loop=name, error=type(exc).__name__)
                continue
            for lag in lags:
                events.add_metric([name, lag.upstream], lag.events)
                seconds.add_metric([name, lag.upstream], lag.seconds)
        yield events
        yield seconds


def lag_registry(prefix: str, loops: Callable[[], Mapping[str, Lagging]]) -> CollectorRegistry:
    """A registry of one process's loops (kept apart from the global one, so several apps
    in one process, as in tests, each report their own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LagCollector(prefix, loops))
    return registry


def exposition(*registries: Any) -> bytes:
    """The text exposition of the process-wide metrics and of the given registries."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))
