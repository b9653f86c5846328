"""Keeping the read models up to date, and rebuilding them from zero.

Live, each view reads what is new in each upstream log (only the event types it handles),
applies it to the documents it touches, and writes those documents with its new tracking
positions in one transaction. A rebuild reads every log once from the start, applies each
event to every view being rebuilt in memory, bulk-writes shadow tables, catches them up, and
swaps them in.
"""

from __future__ import annotations

import functools
import gc
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Notification

from contracts.erasure import PersonErased
from services.projections.derived import Derived
from services.projections.store import Row, Tables, ViewStore
from services.projections.views import (
    LINK_PREFIXES,
    VIEWS,
    Docs,
    Fact,
    View,
    fact_reader,
    keys_of,
    linked_key,
)
from services.runtime.follower import Lag, Upstream, WakeLoop, behind, topics_of, upstream_lag
from services.runtime.logging import get_logger
from services.runtime.settings import Settings

log = get_logger("ketnoi.projections")
UPSTREAMS = ("intake", "consent", "referral")
Progress = Callable[[int], None]


def _drained(
    view: View, docs: Docs, erased: set[str], derived: Derived | None = None
) -> Iterator[Row]:
    """Every document of ``docs``, finalized, each let go of as soon as it is handed out;
    none of an erased person's case.

    Freeing hundreds of thousands of small dicts takes a while; done row by row it overlaps
    with PostgreSQL taking in the rows already sent, instead of following the bulk load.
    """
    rows = docs.rows
    while rows:
        key, (province, agency, doc) = rows.popitem()
        if doc.get("case_id") in erased:
            continue
        if derived is not None:
            derived.case(key, province, doc)  # before finalize, which counts it again
        view.finalize(doc)
        yield key, province, agency, doc


def _rows(
    view: View, docs: Docs, keys: Iterable[str], erased: set[str], derived: Derived | None
) -> list[Row]:
    """The documents of ``keys``, finalized, none of an erased person's case; what they
    change beside them (the board, the counters) gathered into ``derived``."""
    rows = []
    for key in keys:
        province, agency, doc = docs.rows[key]
        if doc.get("case_id") in erased:
            continue
        if derived is not None:
            derived.case(key, province, doc)  # before finalize, which counts it again
        view.finalize(doc)
        rows.append((key, province, agency, doc))
    return rows


def _derived(tables: Tables) -> Derived | None:
    """Somewhere to gather what documents change beside them, for a view that keeps tables
    beside its documents."""
    return Derived() if tables.derived else None


def warn_rebuild_needed(view: str) -> None:
    """An existing view got its tables beside the documents now, empty, or new columns in
    them, at their defaults (the board's order): say what fills them."""
    log.warning(
        "view_needs_rebuild",
        view=view,
        hint=(f"new tables or columns beside its documents are empty: run `ketnoi rebuild {view}`"),
    )


class Projector(WakeLoop):
    """Keeps every view up to date with the upstream logs."""

    name = "projector"

    def __init__(
        self,
        store: ViewStore,
        upstreams: Sequence[Upstream],
        *,
        settings: Settings,
        views: dict[str, View] | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(settings, [u.channel or "" for u in upstreams], poll_interval)
        self.store = store
        self.upstreams = {u.name: u for u in upstreams}
        self._readers = {u.name: fact_reader(u.mapper) for u in upstreams}
        self.views = views or VIEWS
        self.batch_size = batch_size
        # The cases whose person was erased (PersonErased in the intake log, read as far as
        # ``_erased_at``), and those already dropped from each table of documents.
        self._erased: set[str] = set()
        self._erased_at = 0
        self._purged: dict[str, set[str]] = {}

    def erased_cases(self) -> set[str]:
        """Every case whose person was erased, as far as the intake log says now."""
        intake = self.upstreams.get("intake")
        if intake is None:
            return self._erased
        topics = topics_of([PersonErased])
        while True:
            batch = intake.recorder.select_notifications(
                start=self._erased_at + 1, limit=500, topics=topics
            )
            if not batch:
                return self._erased
            self._erased.update(str(n.originator_id) for n in batch)
            self._erased_at = batch[-1].id

    def _purge(self, tables: Tables) -> set[str]:
        """Drop the documents of cases erased since this table was last purged; returns
        every erased case (their documents are never written again)."""
        erased = self.erased_cases()
        purged = self._purged.setdefault(tables.docs, set())
        fresh = erased - purged
        if fresh:
            derived = _derived(tables)
            if derived is not None:
                # What their cases counted and showed on the board goes with them.
                found = self.store.load(tables, [f"case:{case_id}" for case_id in sorted(fresh)])
                for *_, doc in found.values():
                    derived.forget(doc)
            with self.store.transaction() as cur:
                if derived:
                    self.store.write_derived(cur, tables, derived)
                self.store.delete_cases(cur, tables, sorted(fresh))
            self.store.forget_deleted(tables)
            purged |= fresh
            log.info("erased_cases_dropped", view=tables.docs, cases=len(fresh))
        return erased

    def create_tables(self) -> None:
        for name in self.views:
            if self.store.create(Tables.of(name)):
                warn_rebuild_needed(name)

    # -- live -----------------------------------------------------------------------------

    def lag(self) -> list[Lag]:
        """Per upstream, the lag of the view furthest behind it."""
        worst: dict[str, Lag] = {}
        for name, view in self.views.items():
            positions = self.store.positions(Tables.of(name))
            for upstream_name, types in view.handles.items():
                lag = upstream_lag(
                    self.upstreams[upstream_name],
                    positions.get(upstream_name, 0),
                    topics_of(types),
                )
                known = worst.get(upstream_name)
                if known is None or (lag.seconds, lag.events) > (known.seconds, known.events):
                    worst[upstream_name] = lag
        return list(worst.values())

    def catch_up(self) -> int:
        total = 0
        for name in self.views:
            while True:
                done = self.run_view(name, Tables.of(name))
                total += done
                if done == 0:
                    break
        return total

    def run_view(self, name: str, tables: Tables) -> int:
        """Apply one batch of new events to one view; returns how many were applied."""
        view = self.views[name]
        with self.store.view_lock(name):
            erased = self._purge(tables)
            positions = self.store.positions(tables)
            streams = []
            for upstream_name, types in view.handles.items():
                upstream = self.upstreams[upstream_name]
                batch = upstream.recorder.select_notifications(
                    start=positions.get(upstream_name, 0) + 1,
                    limit=self.batch_size,
                    topics=topics_of(types),
                )
                if batch:
                    streams.append((upstream_name, batch))
            if not streams:
                return 0
            docs = Docs(self._loader(tables))
            new_positions: dict[str, int] = {}
            applied = 0
            # Each log in its own order; views do not depend on how logs interleave.
            for upstream_name, batch in streams:
                for fact in self._readers[upstream_name](batch):
                    view.apply(docs, upstream_name, fact)
                    applied += 1
                new_positions[upstream_name] = batch[-1].id
            derived = _derived(tables)
            rows = _rows(view, docs, docs.dirty, erased, derived)
            with self.store.transaction() as cur:
                self.store.write(cur, tables, rows, new_positions)
                if derived:
                    self.store.write_derived(cur, tables, derived)
            return applied

    def follows(self, upstream_name: str) -> bool:
        """Whether a view reads that log."""
        return any(upstream_name in view.handles for view in self.views.values())

    def reach(self, upstream_name: str, timeout: float, up_to: int | None = None) -> None:
        """Bring every view that reads the upstream's log up to position ``up_to`` (its head
        when None), now, in the caller's thread (taking turns with the background loop).

        Raises UnavailableError (503, Retry-After) when that takes longer than ``timeout``.
        """
        deadline = time.monotonic() + timeout
        for name, view in self.views.items():
            if upstream_name not in view.handles:
                continue
            tables = Tables.of(name)
            topics = topics_of(view.handles[upstream_name])
            upstream = self.upstreams[upstream_name]
            while True:
                start = self.store.positions(tables).get(upstream_name, 0) + 1
                if up_to is not None and start > up_to:
                    break
                if not upstream.recorder.select_notifications(
                    start=start, limit=1, stop=up_to, topics=topics
                ):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise behind(self.name, upstream_name, up_to)
                if not self.run_view(name, tables):
                    time.sleep(min(0.01, left))

    def _loader(self, tables: Tables) -> Callable[[str], tuple[Any, Any, Any] | None]:
        def load(key: str) -> tuple[Any, Any, Any] | None:
            found = self.store.load(tables, [key]).get(key)
            return None if found is None else (found[1], found[2], found[3])

        return load

    # -- rebuild --------------------------------------------------------------------------

    def total_events(self, names: Sequence[str]) -> int:
        return sum(
            upstream.recorder.max_notification_id() or 0
            for upstream_name, upstream in self.upstreams.items()
            if any(upstream_name in self.views[n].handles for n in names)
        )

    def rebuild(
        self,
        names: Sequence[str] | None = None,
        progress: Progress | None = None,
        batch_events: int | None = None,
    ) -> dict[str, int]:
        """Rebuild views from zero into shadow tables and swap them in; returns the number
        of documents of each rebuilt view.

        With ``batch_events`` (by default the setting ``rebuild_batch_events``) the logs are
        read in windows of about that many events, and the documents each window touched are
        written before the next is read: memory is bounded by the window, not by the logs.
        With 0, every document is held until the end and bulk-loaded at once."""
        names = self._known(names)
        if batch_events is None:
            batch_events = self.settings.rebuild_batch_events
        bounded = batch_events > 0 and self.store.backend == "postgres"
        stops = self.prepare_rebuild(names, bounded=bounded)
        shadows = {n: Tables.of(n, "_rebuild") for n in names}
        if bounded:
            self.fill_rebuild(names, stops, batch_events, progress)
        else:
            with without_cycle_collection():
                docs = apply_all(self.views, names, self.upstreams, stops, progress)
                erased = self.erased_cases()
                for n in names:
                    derived = _derived(shadows[n])
                    self.store.bulk_load(
                        shadows[n], _drained(self.views[n], docs.pop(n), erased, derived)
                    )
                    if derived:
                        with self.store.transaction() as cur:
                            self.store.write_derived(cur, shadows[n], derived)
        return self.finish_rebuild(names, stops)

    def _known(self, names: Sequence[str] | None) -> list[str]:
        names = list(names or self.views)
        unknown = [n for n in names if n not in self.views]
        if unknown:
            msg = f"unknown view {unknown[0]!r}; choose from {', '.join(self.views)}"
            raise ValueError(msg)
        return names

    def prepare_rebuild(self, names: Sequence[str], *, bounded: bool) -> dict[str, int]:
        """Empty shadow tables for ``names``, and the positions of each log the rebuild
        reads up to (what comes after is caught up before the swap)."""
        for n in self._known(names):
            # A bounded rebuild reads back what it wrote: its shadow has its key index now.
            self.store.create(Tables.of(n, "_rebuild"), replace=True, shadow=not bounded)
        return {
            name: upstream.recorder.max_notification_id() or 0
            for name, upstream in self.upstreams.items()
        }

    def fill_rebuild(
        self,
        names: Sequence[str],
        stops: dict[str, int],
        batch_events: int,
        progress: Progress | None = None,
        part: Part | None = None,
    ) -> None:
        """Apply the logs up to ``stops`` to the shadow tables of ``names`` in windows of
        about ``batch_events`` events; with ``part``, only the events of its share of the
        cases, so that several processes can fill the same shadow tables together."""
        names = self._known(names)
        shadows = {n: Tables.of(n, "_rebuild") for n in names}
        # A rebuild never brings back an erased person: their documents stay out.
        windows = Windows(self.store, self.views, names, shadows, self.erased_cases(), part)
        apply_bounded(self.views, names, self.upstreams, stops, windows, batch_events, progress)

    def finish_rebuild(self, names: Sequence[str], stops: dict[str, int]) -> dict[str, int]:
        """Catch the filled shadow tables up with what arrived since ``stops`` and swap each
        in; the documents of each view."""
        sizes = {}
        for n in self._known(names):
            shadow = Tables.of(n, "_rebuild")
            sizes[n] = self.store.count(shadow)
            handled = {u: stops[u] for u in self.views[n].handles if stops.get(u)}
            with self.store.transaction() as cur:
                self.store.write(cur, shadow, [], handled)
            with self.store.view_lock(n):
                # Catch the shadow up with what arrived meanwhile, then swap it in.
                while self.run_view(n, shadow):
                    pass
                self.store.swap(n, shadow)
            log.info("view_rebuilt", view=n, documents=sizes[n])
        return sizes


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while a rebuild piles up documents.

    A rebuild keeps hundreds of thousands of small dicts alive until they are written; the
    collector would traverse them again and again as they pile up, which measured as half of
    a rebuild's time. The documents hold no reference cycles, so reference counting frees
    them all the same; collection resumes afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def apply_all(
    views: dict[str, View],
    names: Sequence[str],
    upstreams: dict[str, Upstream],
    stops: dict[str, int],
    progress: Progress | None = None,
    chunk: int = 5000,
) -> dict[str, Docs]:
    """Apply every event up to ``stops`` to fresh documents of each view, log by log (the
    views do not depend on how the logs interleave)."""
    docs = {n: Docs(lambda _key: None) for n in names}  # fresh: nothing to load
    for upstream_name, upstream in upstreams.items():
        interested = [n for n in names if upstream_name in views[n].handles]
        if not interested or not stops.get(upstream_name):
            continue
        # Per stored topic, the views that want it, as ready calls.
        routes: dict[str, list[Callable[[Fact], None]]] = {}
        for n in interested:
            call: Callable[[Fact], None] = functools.partial(views[n].apply, docs[n], upstream_name)
            for topic in topics_of(views[n].handles[upstream_name]):
                routes.setdefault(topic, []).append(call)
        read = fact_reader(upstream.mapper)
        done = 0  # the position read up to; progress counts positions, wanted or not
        for batch in _prefetched(upstream, tuple(routes), chunk, stops[upstream_name]):
            for notification, fact in zip(batch, read(batch), strict=True):
                for call in routes[notification.topic]:
                    call(fact)
            if progress is not None:
                progress(batch[-1].id - done)
            done = batch[-1].id
        if progress is not None and stops[upstream_name] > done:
            progress(stops[upstream_name] - done)
    return docs


def _prefetched(
    upstream: Upstream, topics: tuple[str, ...], chunk: int, stop: int, start: int = 1
) -> Iterator[Sequence[Notification]]:
    """Chunks of a log from ``start`` up to ``stop``, the next fetched by a thread while this
    one is used."""
    with ThreadPoolExecutor(max_workers=1) as pool:

        def fetch(start: int) -> Sequence[Notification]:
            return upstream.recorder.select_notifications(
                start=start, limit=chunk, stop=stop, topics=topics
            )

        pending = pool.submit(fetch, start)
        while True:
            batch = pending.result()
            if not batch:
                return
            pending = pool.submit(fetch, batch[-1].id + 1)
            yield batch


@dataclass(frozen=True)
class Part:
    """One of ``count`` shares of the cases, by a stable hash of the case's id: the share of
    a rebuild one process does when several fill the same shadow tables. Every document of a
    view belongs to one case (the case's own, and the links from its consent record,
    referrals and handovers to it), so the shares' documents never meet; the counters beside
    the case overview are sums, to which each share adds its own cases."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"part {self.index} of {self.count}")

    def holds(self, case_id: str) -> bool:
        return zlib.crc32(case_id.encode()) % self.count == self.index

    def holds_key(self, key: str) -> bool:
        """Whether a case document's key is in this share (other keys are not judged here)."""
        return not key.startswith("case:") or self.holds(key[5:])


def case_of(docs: Docs, upstream: str, fact: Fact) -> str | None:
    """The case a fact is about, as the views key it: the originator in the intake log,
    ``case_id`` where the event names it, else the case its consent record, referral or
    handover was linked to when it began (None when the link is not among ``docs``)."""
    if upstream == "intake":
        return fact.originator_id
    case_id = fact.data.get("case_id")
    if case_id:
        return str(case_id)
    for prefix in LINK_PREFIXES[upstream]:
        found = docs.get(prefix + fact.originator_id)
        if found is not None:
            return str(found["case_id"])
    return None


class Windows:
    """The documents of the views being rebuilt in bounded memory: those one window of events
    touched, loaded ahead from the shadow tables where earlier windows wrote them, and
    written back when the window ends."""

    def __init__(
        self,
        store: ViewStore,
        views: dict[str, View],
        names: Sequence[str],
        shadows: dict[str, Tables],
        erased: set[str],
        part: Part | None = None,
    ) -> None:
        self.store = store
        self.views = views
        self.shadows = shadows
        self.erased = erased
        self.part = part
        self.docs: dict[str, Docs] = {}
        # Per view: keys found in the shadow (rewritten at the end of the window) and keys
        # known to be absent from it (not asked for again in this window).
        self._stored: dict[str, set[str]] = {}
        self._absent: dict[str, set[str]] = {}
        self.loaded = 0  # documents read back from earlier windows, for the benchmark
        self.written: set[str] = set()  # the views with documents in their shadow table
        for n in names:
            self._fresh(n)

    def _fresh(self, name: str) -> None:
        stored: set[str] = set()
        absent: set[str] = set()

        def load(key: str) -> tuple[Any, Any, Any] | None:
            if key in absent or name not in self.written:
                return None
            found = self.store.load(self.shadows[name], [key]).get(key)
            if found is None:
                absent.add(key)
                return None
            stored.add(key)
            self.loaded += 1
            return found[1], found[2], found[3]

        self.docs[name] = Docs(load)
        self._stored[name] = stored
        self._absent[name] = absent

    def preload(self, name: str, keys: Iterable[str]) -> None:
        """Load ahead, in one query per round, the documents these keys name and the cases
        the links among them point to."""
        docs, absent = self.docs[name], self._absent[name]
        wanted = {k for k in keys if k not in docs.rows and k not in absent and self._ours(k)}
        while wanted:
            found = self.store.load(self.shadows[name], sorted(wanted))
            absent.update(wanted - found.keys())
            self._stored[name].update(found)
            self.loaded += len(found)
            linked = set()
            for key, (_key, province, agency, doc) in found.items():
                docs.rows[key] = (province, agency, doc)
                case = linked_key(key, doc)
                if case is not None:
                    linked.add(case)
            wanted = {k for k in linked if k not in docs.rows and k not in absent and self._ours(k)}

    def _ours(self, key: str) -> bool:
        return self.part is None or self.part.holds_key(key)

    def apply(self, view: View, name: str, upstream: str, fact: Fact) -> None:
        """Apply a fact to the window's documents of a view: with a share of the cases, only
        a fact about one of its cases."""
        docs = self.docs[name]
        if self.part is not None:
            case_id = case_of(docs, upstream, fact)
            if case_id is None or not self.part.holds(case_id):
                return
        view.apply(docs, upstream, fact)

    def flush(self) -> None:
        """Write every document the window touched into the shadow tables, and let go of
        them all."""
        for name, docs in self.docs.items():
            derived = _derived(self.shadows[name])
            rows = _rows(self.views[name], docs, docs.dirty, self.erased, derived)
            replaced = sorted(self._stored[name] & docs.dirty)
            # With other shares writing beside it, the counters are added to one writer at
            # a time (they are the only rows the shares have in common).
            self.store.rewrite(
                self.shadows[name], replaced, rows, derived, shared=self.part is not None
            )
            if rows:
                self.written.add(name)
            self._fresh(name)
        # The documents hold no cycles, but what else ran may have: collect them while the
        # heap is small, so nothing piles up over a long log.
        gc.collect()


def apply_bounded(
    views: dict[str, View],
    names: Sequence[str],
    upstreams: dict[str, Upstream],
    stops: dict[str, int],
    windows: Windows,
    batch_events: int,
    progress: Progress | None = None,
    chunk: int = 5000,
) -> None:
    """Apply every event up to ``stops`` in windows of about ``batch_events`` events, each
    window taking the same share of every log (logs grow together, so a window holds the
    events of the same weeks), its documents written before the next window is read."""
    total = sum(stops.get(u, 0) for u in upstreams)
    count = max(1, -(-total // batch_events))
    plans = []
    for upstream_name, upstream in upstreams.items():
        interested = [n for n in names if upstream_name in views[n].handles]
        if not interested or not stops.get(upstream_name):
            continue
        routes: dict[str, list[Callable[[Fact], None]]] = {}
        wanted: dict[str, set[str]] = {}
        for n in interested:
            call: Callable[[Fact], None] = functools.partial(
                _apply_to, views[n], windows, n, upstream_name
            )
            for topic in topics_of(views[n].handles[upstream_name]):
                routes.setdefault(topic, []).append(call)
                wanted.setdefault(topic, set()).add(n)
        plans.append((upstream_name, upstream, routes, wanted, fact_reader(upstream.mapper)))
    for window in range(count):
        for upstream_name, upstream, routes, wanted, read in plans:
            stop = stops[upstream_name]
            low, high = stop * window // count, stop * (window + 1) // count
            if high <= low:
                continue
            done = low
            for batch in _prefetched(upstream, tuple(routes), chunk, high, low + 1):
                facts = list(zip((n.topic for n in batch), read(batch), strict=True))
                if window:  # the first window has nothing written to read back
                    keys: dict[str, list[str]] = {}
                    for topic, fact in facts:
                        for n in wanted[topic]:
                            keys.setdefault(n, []).extend(keys_of(upstream_name, fact))
                    for n, view_keys in keys.items():
                        windows.preload(n, view_keys)
                for topic, fact in facts:
                    for call in routes[topic]:
                        call(fact)
                if progress is not None:
                    progress(batch[-1].id - done)
                done = batch[-1].id
            if progress is not None and high > done:
                progress(high - done)
        windows.flush()


def _apply_to(view: View, windows: Windows, name: str, upstream: str, fact: Fact) -> None:
    # The window's documents change when it is flushed: look them up at each call.
    windows.apply(view, name, upstream, fact)
