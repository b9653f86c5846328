"""``ketnoi rebuild --jobs N``: a rebuild in several processes, each a share of the cases.

One process rebuilding the views is bound by one core's Python. Here the shadow tables are
made once, then each of ``jobs`` processes reads the logs and applies the events of its share
of the cases (``runner.Part``: a stable hash of the case's id) to every view being rebuilt,
writing its documents into the same shadow tables in windows of ``rebuild_batch_events`` as
one process does, so memory stays bounded per process. When all are done, this process
catches the shadow tables up and swaps them in. Each process reads every log the views need:
what it saves is applying the events and writing the documents, which take most of a
rebuild's time.

The processes used to take a share of the views each; at 1,000,000 cases the case overview
alone (with the board and the counters beside it) took longer than the others together, so
the second process sat idle for most of the rebuild.

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
    """Rebuild ``names`` in ``jobs`` processes, each applying the events of its share of the
    cases; returns the documents of each view. Progress counts the events each process reads
    (every process reads every log the views need). The first failure stops the others and
    is raised here; the live views stay as they were."""
    from services.cli.wiring import start

    small = small_pools(settings)
    platform = start(small, ("projections",), run_followers=False)
    try:
        assert platform.projections is not None
        projector = platform.projections.projector
        if batch_events is None:
            batch_events = settings.rebuild_batch_events
        if batch_events <= 0:
            msg = "a rebuild in several processes writes in windows: rebuild_batch_events > 0"
            raise ValueError(msg)
        stops = projector.prepare_rebuild(names, bounded=True)
        _fill_in_processes(small, names, jobs, stops, batch_events, progress)
        return projector.finish_rebuild(names, stops)
    finally:
        platform.close()


def _fill_in_processes(
    settings: Settings,
    names: Sequence[str],
    jobs: int,
    stops: dict[str, int],
    batch_events: int,
    progress: Progress | None,
) -> None:
    context = multiprocessing.get_context("spawn")
    reports: Any = context.Queue()
    workers = [
        context.Process(
            target=_fill_share,
            args=(settings, list(names), stops, batch_events, index, jobs, reports),
            name=f"rebuild-{index + 1}-of-{jobs}",
        )
        for index in range(jobs)
    ]
    for worker in workers:
        worker.start()
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
                running -= 1
            else:
                raise RuntimeError(f"a rebuild process failed:\n{value}")
    finally:
        for worker in workers:
            if worker.is_alive() and running:
                worker.terminate()
            worker.join()


def _fill_share(
    settings: Settings,
    names: list[str],
    stops: dict[str, int],
    batch_events: int,
    index: int,
    jobs: int,
    reports: Any,
) -> None:
    from services.cli.wiring import start
    from services.projections.runner import Part

    try:
        platform = start(settings, ("projections",), run_followers=False)
        try:
            assert platform.projections is not None
            platform.projections.projector.fill_rebuild(
                names,
                stops,
                batch_events,
                lambda n: reports.put(("progress", n)),
                Part(index, jobs),
            )
        finally:
            platform.close()
        reports.put(("done", None))
    except BaseException:
        reports.put(("error", traceback.format_exc()))
        raise
