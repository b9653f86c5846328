"""National scale: the rebuild in bounded memory, the province's board and statistics, and the
relay, over a history written by ``bench/history.py``, each beside its raw limit in one run.

    KETNOI_DATABASE_URL=postgresql://.../ketnoi_scale python -m bench.scale rebuild
    KETNOI_DATABASE_URL=... python -m bench.scale reads --province lao-cai
    KETNOI_DATABASE_URL=... python -m bench.scale feed

``rebuild`` alternates, round by round, the raw read-and-decode of every log (as
``bench/rebuild_rate.py`` measures it, the cycle collector paused) and ``ketnoi rebuild`` of
every view with ``KETNOI_REBUILD_BATCH_EVENTS`` (``--batch``), each in a fresh process that
reports its own peak resident memory (``ru_maxrss``). ``reads`` asks the JSON API, in process
through Starlette's test client as a coordinator of the province, for the board
(``GET /projections/board``: its first page, with the province's totals) and the statistics
(``GET /projections/statistics``), beside ``GET /healthz``; medians and p99 in
milliseconds, and where each request's time went (the views' database statements, the
cycle collector's pauses, the rest) for the median request and the slowest 1%. Once the
app has started, its heap is settled as ``ketnoi serve`` settles it (``settle_heap``);
``--heap as-is`` leaves it as it was before that, to compare. ``feed``
does what ``ketnoi feed --reset`` does (forget the feed's position, publish the whole
referral log) on a throwaway Tansu broker (or
``KETNOI_BENCH_KAFKA_BOOTSTRAP``), and measures the raw producer (``bench/kafka_raw.py``) with
messages of the same size, between rounds. The throwaway broker keeps every message in
memory: over a national history, ``--events N`` publishes samples instead, the first N
positions of the log and its last N (a relay that keeps up is as fast at both).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from services.runtime.logging import configure_logging
from services.runtime.settings import Settings


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# -- one measurement, in a process of its own ------------------------------------------------


def measure_once(what: str, batch: int, jobs: int = 1) -> dict[str, Any]:
    from bench.rebuild_rate import raw_read_and_decode
    from services.cli.parallel_rebuild import rebuild_in_processes, small_pools
    from services.cli.wiring import start

    settings = Settings()
    if what == "rebuild" and jobs > 1:
        # As `ketnoi rebuild --jobs`: this process only counts the events while its processes
        # rebuild (with full pools it held some fifty idle connections for the whole hour).
        settings = small_pools(settings)
    platform = start(settings, ("projections",), run_followers=False)
    assert platform.projections is not None
    try:
        before = _peak_mb()
        if what == "raw":
            count, seconds = raw_read_and_decode(platform, gc_paused=True)
            extra: dict[str, Any] = {}
        else:
            projector = platform.projections.projector
            count = projector.total_events(list(projector.views))
            started = time.perf_counter()
            if jobs > 1:
                sizes = rebuild_in_processes(settings, list(projector.views), jobs, None, batch)
            else:
                sizes = projector.rebuild(batch_events=batch)
            seconds = time.perf_counter() - started
            extra = {"sizes": sizes}
    finally:
        platform.close()
    return {
        "what": what,
        "events": count,
        "seconds": seconds,
        "rate": count / seconds,
        # the largest of this process and the rebuild's own processes (``--jobs``)
        "peak_mb": max(_peak_mb(), _children_peak_mb()),
        "peak_mb_at_start": before,
        **extra,
    }


def _child(what: str, batch: int, jobs: int = 1) -> dict[str, Any]:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench.scale", "once", what),
            *("--batch", str(batch), "--jobs", str(jobs)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def rebuild(args: argparse.Namespace) -> None:
    raws, builds, paired = [], [], []
    for round_ in range(1, args.rounds + 1):
        raw = _child("raw", args.batch)
        built = _child("rebuild", args.batch, args.jobs)
        raws.append(raw)
        builds.append(built)
        paired.append(built["rate"] / raw["rate"])
        say(
            f"round {round_}: raw {raw['rate']:,.0f} events/s (peak {raw['peak_mb']:,.0f} MB), "
            f"rebuild {built['rate']:,.0f} events/s in {built['seconds']:.0f} s "
            f"(peak {built['peak_mb']:,.0f} MB), {paired[-1]:.2f} x raw"
        )
    raw_rate = statistics.median(r["rate"] for r in raws)
    built_rate = statistics.median(b["rate"] for b in builds)
    print(f"Rebuild in bounded memory (python -m bench.scale rebuild --batch {args.batch})")
    print(f"  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs; {args.rounds} rounds")
    print(f"  log: {builds[0]['events']:,} events; views: {builds[-1]['sizes']}")
    print(
        f"  raw read + decode   {raw_rate:>10,.0f} events/s, peak RSS {raws[0]['peak_mb']:,.0f} MB"
    )
    print(
        f"  rebuild             {built_rate:>10,.0f} events/s = {built_rate / raw_rate:.2f} x raw "
        f"(goal 0.70); peak RSS {max(b['peak_mb'] for b in builds):,.0f} MB "
        f"{'per process, ' if args.jobs > 1 else ''}"
        f"with KETNOI_REBUILD_BATCH_EVENTS={args.batch}, --jobs {args.jobs}"
    )
    print(
        f"  paired ratios: {', '.join(f'{x:.2f}' for x in paired)}; "
        f"median {statistics.median(paired):.2f}"
    )


# -- the board and the statistics ------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rows(answer: object) -> int:
    """The rows an answer carries: a list's, or a page of the board's."""
    if isinstance(answer, dict):
        return len(answer.get("rows", []))
    return len(answer) if isinstance(answer, list) else 0


def reads(args: argparse.Namespace) -> None:
    from starlette.testclient import TestClient

    from contracts.vocabulary import Role
    from services.cli.wiring import http_app, start
    from services.runtime.auth import TokenService
    from services.runtime.serving import settle_heap

    # One client asks as fast as it is answered: the per-user rate limit is off, as in
    # bench/intake_throughput.py (it answered 429 within 300 rounds once reads were fast).
    settings = Settings(rate_limit_per_principal=0, rate_limit_per_address=0)
    # The services the two routes read (and the directory, which knows the agencies).
    platform = start(settings, ("directory", "projections"), run_followers=False)
    tokens = TokenService(settings)
    token = tokens.issue(
        user_id="bench-coordinator",
        agency_id=f"{args.province}-dolisa",
        province=args.province,
        roles=[Role.COORDINATOR],
    )
    headers = {"Authorization": f"Bearer {token}"}
    paths = {
        "GET /healthz (raw)": "/healthz",
        "board": "/projections/board",
        "statistics": "/projections/statistics",
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    sizes: dict[str, int] = {}
    clock = _Clock()
    try:
        with TestClient(http_app(platform, tokens)) as client, clock.watching():
            if args.heap == "settled":
                settle_heap()
            for name, path in paths.items():  # warm-up
                answer = client.get(path, headers=headers)
                assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
                sizes[name] = _rows(answer.json())
            for _ in range(args.count):
                for name, path in paths.items():
                    clock.reset()
                    started = time.perf_counter()
                    answer = client.get(path, headers=headers)
                    times[name].append((time.perf_counter() - started) * 1000)
                    parts[name].append(clock.read())
                    assert answer.status_code == 200
    finally:
        platform.close()
    print(f"Board and statistics of {args.province} (python -m bench.scale reads)")
    print(
        f"  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.count} requests each, interleaved; "
        f"heap {args.heap}"
    )
    for name, values in times.items():
        print(
            f"  {name:<20} median {statistics.median(values):8.1f} ms  "
            f"p99 {_percentile(values, 0.99):8.1f} ms  ({sizes[name]:,} rows)"
        )
    print("  Where the time went, the median request beside the slowest 1% (mean of each):")
    for name, values in times.items():
        _where(name, values, parts[name])


class _Clock:
    """While watching: the milliseconds spent in the views' database statements (execute
    and fetch, on PostgreSQL) and in the cycle collector's pauses (by generation), since the
    last reset. Requests are asked one at a time, so the totals are the request's."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._gc_started = 0.0

    def reset(self) -> None:
        self.totals = {}

    def read(self) -> dict[str, float]:
        return dict(self.totals)

    def _add(self, key: str, seconds: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + seconds * 1000

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._add(f"gc{info['generation']}", time.perf_counter() - self._gc_started)

    @contextlib.contextmanager
    def watching(self) -> Iterator[_Clock]:
        from services.projections.store import _PgCursor

        def timed(method: Any) -> Any:
            def run(cursor: Any, *args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return method(cursor, *args, **kwargs)
                finally:
                    self._add("database", time.perf_counter() - started)

            return run

        originals = {m: getattr(_PgCursor, m) for m in ("execute", "fetchall")}
        for m, method in originals.items():
            setattr(_PgCursor, m, timed(method))
        gc.callbacks.append(self._gc)
        try:
            yield self
        finally:
            gc.callbacks.remove(self._gc)
            for m, method in originals.items():
                setattr(_PgCursor, m, method)


def _where(name: str, values: list[float], parts: list[dict[str, float]]) -> None:
    """The median request's parts beside the mean parts of the slowest 1%."""
    order = sorted(range(len(values)), key=values.__getitem__)
    slow = order[-max(1, len(order) // 100) :]
    middle = order[len(order) // 2]
    keys = sorted({k for p in parts for k in p})

    def line(label: str, picked: list[int]) -> str:
        total = statistics.mean(values[i] for i in picked)
        shares = {k: statistics.mean(parts[i].get(k, 0.0) for i in picked) for k in keys}
        rest = total - sum(shares.values())
        text = ", ".join(f"{k} {v:.1f}" for k, v in shares.items())
        return f"    {label:<12} {total:7.1f} ms: {text}{', ' if text else ''}the rest {rest:.1f}"

    print(f"  {name}")
    print(line("median", [middle]))
    print(line(f"slowest {len(slow)}", slow))


# -- the relay --------------------------------------------------------------------------------


def _relay_sample(
    settings: Settings, bootstrap: str, first: int | None, until: int | None
) -> tuple[int, int, float, int]:
    """``ketnoi feed --reset`` on fresh topics, from after position ``first`` (the start of
    the log when None) up to ``until`` (its end when None): events, messages, seconds and
    the mean size of the messages. Prints its rate as it goes."""
    import uuid

    from services.referral.feed import FeedRelay, FeedSettings, open_feed_upstream
    from services.referral.feed_tracking import tracking_recorder
    from services.runtime.kafka import KafkaSettings

    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"s{uuid.uuid4().hex[:8]}.")
    upstream = open_feed_upstream(settings)
    tracking = tracking_recorder(settings, create_tables=False)
    relay = FeedRelay(upstream, tracking, kafka, settings=settings, feed=FeedSettings())
    measured: list[int] = []
    send = relay._send
    started = time.perf_counter()
    shown = [started]

    def sized(messages: Any) -> Any:
        measured.extend(len(m.value) for m in messages[:20])
        now = time.perf_counter()
        if now - shown[0] >= 30:
            shown[0] = now
            say(
                f"  ... {relay.published:,} messages in {now - started:.0f} s: "
                f"{relay.published / (now - started):,.0f} messages/s, at position "
                f"{relay.acknowledged or 0:,}"
            )
        return send(messages)

    relay._send = sized  # type: ignore[method-assign]
    try:
        relay.start_over()  # as `ketnoi feed --reset`
        if first:
            relay._track(first)  # a reset that finds the log published up to ``first``
        started = shown[0] = time.perf_counter()
        events = relay.catch_up(until=until)
        seconds = time.perf_counter() - started
    finally:
        relay.close()
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]
    size = int(statistics.mean(measured)) if measured else 300
    return events, relay.published, seconds, size


def feed(args: argparse.Namespace) -> None:
    import uuid

    from bench.kafka_raw import bench_broker, producer_throughput
    from services.referral.feed import FeedSettings, open_feed_upstream
    from services.runtime.kafka import KafkaSettings, ensure_topics

    settings = Settings()
    relay_settings = FeedSettings()
    upstream = open_feed_upstream(settings)
    try:
        stop = upstream.recorder.max_notification_id() or 0
    finally:
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]
    # The whole log, or a sample of ``--events`` at its start and one at its end: a relay
    # that keeps up publishes as fast late in a long log as early in it.
    if args.events and args.events < stop:
        samples = {"start": (None, args.events), "end": (stop - args.events, None)}
    else:
        samples = {"whole log": (None, None)}
    rates: dict[str, list[float]] = {name: [] for name in samples}
    raws, sizes, counts = [], [], {}
    with bench_broker() as (bootstrap, what):
        say(f"broker: {what} at {bootstrap}; referral log: {stop:,} events")
        for round_ in range(1, args.rounds + 1):
            for name, (first, until) in samples.items():
                events, published, seconds, size = _relay_sample(settings, bootstrap, first, until)
                rates[name].append(published / seconds)
                sizes.append(size)
                counts[name] = (events, published)
                say(
                    f"round {round_}, {name}: relay {events:,} events, {published:,} messages "
                    f"in {seconds:.0f} s: {rates[name][-1]:,.0f} messages/s"
                )
            tuned = KafkaSettings(
                bootstrap_servers=bootstrap,
                linger_ms=relay_settings.linger_ms,
                batch_size=relay_settings.batch_bytes,
            )
            topic = f"bench.raw-{uuid.uuid4().hex[:8]}"
            ensure_topics(tuned, [topic])
            raws.append(producer_throughput(tuned, topic, args.raw_messages, sizes[-1]))
            say(f"round {round_}: raw producer {raws[-1]:,.0f} messages/s ({sizes[-1]} B)")
    raw_rate = statistics.median(raws)
    print("The relay over the history (python -m bench.scale feed)")
    print(f"  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.rounds} rounds; broker {what}")
    print(f"  referral log: {stop:,} events")
    print(
        f"  raw producer {raw_rate:,.0f} messages/s "
        f"(the relay's producer settings, {statistics.median(sizes)} B)"
    )
    for name, values in rates.items():
        relay_rate = statistics.median(values)
        events, published = counts[name]
        print(
            f"  ketnoi feed --reset, {name} ({events:,} events, {published:,} messages): "
            f"{relay_rate:,.0f} messages/s = {relay_rate / raw_rate:.2f} x raw (goal 0.80)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rebuild", help="rebuild in bounded memory beside raw read-and-decode")
    r.add_argument("--batch", type=int, default=Settings().rebuild_batch_events)
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--jobs", type=int, default=1, help="as ketnoi rebuild --jobs")
    once = sub.add_parser("once", help="one measurement in this process (JSON)")
    once.add_argument("what", choices=("raw", "rebuild"))
    once.add_argument("--batch", type=int, default=Settings().rebuild_batch_events)
    once.add_argument("--jobs", type=int, default=1)
    q = sub.add_parser("reads", help="the board and statistics of one province")
    q.add_argument("--province", default="lao-cai")
    q.add_argument("--count", type=int, default=100)
    q.add_argument(
        "--heap",
        choices=("settled", "as-is"),
        default="settled",
        help="settle the heap after start-up as ketnoi serve does, or not (to compare)",
    )
    f = sub.add_parser("feed", help="ketnoi feed --reset beside the raw producer")
    f.add_argument("--rounds", type=int, default=2)
    f.add_argument(
        "--events",
        type=int,
        default=0,
        help="publish the first N positions of the referral log and its last N "
        "(default: the whole log)",
    )
    f.add_argument("--raw-messages", type=int, default=50_000)
    args = parser.parse_args()
    configure_logging("console", "warning")
    if not os.environ.get("KETNOI_DATABASE_URL"):
        parser.error("set KETNOI_DATABASE_URL to the database bench/history.py wrote")
    if args.command == "once":
        print(json.dumps(measure_once(args.what, args.batch, args.jobs)))
    elif args.command == "rebuild":
        rebuild(args)
    elif args.command == "reads":
        reads(args)
    else:
        feed(args)


if __name__ == "__main__":
    main()
