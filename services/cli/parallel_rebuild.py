"""``ketnoi rebuild --jobs N``: a rebuild of several views in several processes.

The views are independent read models of the same logs: each is rebuilt into its own shadow
tables and swapped in by itself (``Projector.rebuild``). One process rebuilding them all is
bound by one core's Python; here each of ``jobs`` processes rebuilds a share of the views,
so a machine's other cores take part. Each process reads the logs its views need, in windows
of ``rebuild_batch_events`` as one process does, so memory stays bounded per process.

Only on PostgreSQL: the SQLite files take one writer at a time.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from services.runtime.settings import Settings

Progress = Callable[[int], None]

# The relative cost of rebuilding each view, measured over a generated history (bench/scale.py
# rebuild): the case overview, with the board and the counters beside it, costs most.
COST = {"cases": 3, "timeline": 2, "queue": 1}


def shares(names: Sequence[str], jobs: int) -> list[list[str]]:
    """The views split into at most ``jobs`` groups of about equal cost, the costliest
    first (largest first into the lightest group)."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(names))))]
    loads = [0] * len(groups)
    for name in sorted(names, key=lambda n: -COST.get(n, 1)):
        lightest = loads.index(min(loads))
        groups[lightest].append(name)
        loads[lightest] += COST.get(name, 1)
    return [g for g in groups if g]


def small_pools(settings: Settings) -> Settings:
    """``settings`` with pools of at most two connections: for a rebuild's processes, which
    read with a thread or two, and for the process that only counts the events while they
    work, so that all of them stay within the server's connections beside the services'."""
    return settings.model_copy(update={"pg_pool_size": min(settings.pg_pool_size, 2)})


def rebuild_in_processes(
    settings: Settings,
    names: Sequence[str],
    jobs: int,
    progress: Progress | None = None,
    batch_events: int | None = None,
) -> dict[str, int]:
    """Rebuild ``names`` with each share of them in a process of its own; returns the
    documents of each view. The first failure stops the others and is raised here."""
    share_settings = small_pools(settings)
    context = multiprocessing.get_context("spawn")
    reports: Any = context.Queue()
    workers = [
        context.Process(
            target=_rebuild_share,
            args=(share_settings, group, batch_events, reports),
            name=f"rebuild-{'-'.join(group)}",
        )
        for group in shares(names, jobs)
    ]
    for worker in workers:
        worker.start()
    sizes: dict[str, int] = {}
    running = len(workers)
    try:
        while running:
            try:
                kind, value = reports.get(timeout=1.0)
            except queue_module.Empty:
                dead = [w for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    msg = f"{dead[0].name} ended with exit code {dead[0].exitcode}"
                    raise RuntimeError(msg) from None
                continue
            if kind == "progress":
                if progress is not None:
                    progress(value)
            elif kind == "done":
                sizes.update(value)
                running -= 1
            else:
                raise RuntimeError(f"a rebuild process failed:\n{value}")
    finally:
        for worker in workers:
            if worker.is_alive() and running:
                worker.terminate()
            worker.join()
    return {n: sizes[n] for n in names}


def _rebuild_share(
    settings: Settings, names: list[str], batch_events: int | None, reports: Any
) -> None:
    from services.cli.wiring import start

    try:
        platform = start(settings, ("projections",), run_followers=False)
        try:
            assert platform.projections is not None
            sizes = platform.projections.projector.rebuild(
                names, lambda n: reports.put(("progress", n)), batch_events
            )
        finally:
            platform.close()
        reports.put(("done", sizes))
    except BaseException:
        reports.put(("error", traceback.format_exc()))
        raise
