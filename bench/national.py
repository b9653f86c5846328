"""The national-scale run in one command: write the history, then measure the rebuild, the
board and statistics, and the relay over it, each beside its raw limit, into one report.

    python -m bench.national --cases 1000000 --report national-1m.txt --keep
    python -m bench.national --skip-generate --report national-1m-evening.txt --keep
    python -m bench.national --history-args "--jobs 2" --rebuild-jobs 2 --keep

It creates the database ``--database`` (default ``ketnoi_national``) on the server of
``KETNOI_BENCH_DATABASE_URL`` (a maintenance connection; default
``postgresql://postgres@127.0.0.1:5432/postgres``) unless it exists, runs
``python -m bench.history generate`` into it, then ``python -m bench.scale`` ``rebuild``,
``reads`` (two provinces: the busiest and a small one) and ``feed``, each in a process of its
own (``KETNOI_DATA_DIR`` is ``.ketnoi/<database>`` unless ``--data-dir``: the keys stay with
the database), and writes what each printed, with the time it took, the machine's load
average and the database's size, to the report as it goes (follow it with ``tail -f``).
The database is dropped at the end unless ``--keep``: a kept one can be measured again at
another time of day with ``--skip-generate``. Figures are only comparable as the ratios each
step prints beside its raw limit.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

MAINTENANCE = "postgresql://postgres@127.0.0.1:5432/postgres"


def _database_url(maintenance: str, name: str) -> str:
    parts = urlsplit(maintenance)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def _size(maintenance: str, name: str) -> str:
    with psycopg.connect(maintenance, autocommit=True) as conn:
        row = conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", (name,)).fetchone()
    return str(row[0]) if row else "?"


class Report:
    """Lines to the terminal and to the report file, flushed as they come."""

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def say(self, text: str) -> None:
        for out in (sys.stdout, self.file):
            out.write(text + "\n")
            out.flush()


def _step(report: Report, title: str, argv: Sequence[str], env: dict[str, str]) -> bool:
    """Run one step in a process of its own; its output goes to the report as it comes.
    Whether it succeeded."""
    report.say(f"\n== {title} ({datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; {_load()})")
    report.say(f"$ {shlex.join(argv)}")
    started = time.perf_counter()
    with subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            # Progress bars redraw with carriage returns: keep the last drawing of a line.
            report.say(line.rstrip("\n").rsplit("\r", 1)[-1])
    seconds = time.perf_counter() - started
    report.say(f"-- {title}: exit {proc.returncode} after {seconds:,.0f} s ({_load()})")
    return proc.returncode == 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.national", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--database", default="ketnoi_national")
    parser.add_argument("--report", type=Path, default=Path("national-report.txt"))
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="its keys (default .ketnoi/DATABASE)"
    )
    parser.add_argument("--skip-generate", action="store_true", help="measure a kept database")
    parser.add_argument(
        "--history-args", default="", help="more arguments for bench.history generate"
    )
    parser.add_argument("--rebuild-rounds", type=int, default=2)
    parser.add_argument(
        "--rebuild-jobs", type=int, default=1, help="the rebuild's processes (--jobs)"
    )
    parser.add_argument("--reads", type=int, default=200, help="requests per read measurement")
    parser.add_argument("--feed-rounds", type=int, default=1)
    parser.add_argument(
        "--feed-events",
        type=int,
        default=1_000_000,
        help="positions of the referral log the relay publishes at its start and at its end "
        "(0: the whole log; the throwaway broker holds every message in memory)",
    )
    parser.add_argument("--skip-feed", action="store_true")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    if args.rebuild_jobs < 1:
        parser.error("--rebuild-jobs must be at least 1")

    maintenance = os.environ.get("KETNOI_BENCH_DATABASE_URL", MAINTENANCE)
    url = _database_url(maintenance, args.database)
    # The keys (the persons' data keys' master key, the seal's signing key) live beside the
    # database, kept as long as it is: without them its persons read as erased.
    data_dir = args.data_dir or Path(".ketnoi") / args.database
    env = {**os.environ, "KETNOI_DATABASE_URL": url, "KETNOI_DATA_DIR": str(data_dir)}
    python = sys.executable
    with args.report.open("a", encoding="utf-8") as file:
        report = Report(file)
        report.say(
            "# National scale: "
            + ("measuring" if args.skip_generate else f"{args.cases:,} cases into")
            + f" {args.database} "
            f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs; {_load()})"
        )
        with psycopg.connect(maintenance, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (args.database,)
            ).fetchone()
            if args.skip_generate and not exists:
                parser.error(f"--skip-generate: there is no database {args.database}")
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.database)))
        failed: list[str] = []
        try:
            if not args.skip_generate and not _step(
                report,
                "history",
                [
                    *(python, "-m", "bench.history", "generate", "--cases", str(args.cases)),
                    *shlex.split(args.history_args),
                ],
                env,
            ):
                raise SystemExit("the history was not written: see the report")
            report.say(f"database size: {_size(maintenance, args.database)}")
            steps = {
                "rebuild beside raw read-and-decode": [
                    *(python, "-m", "bench.scale", "rebuild"),
                    *("--rounds", str(args.rebuild_rounds)),
                    *("--jobs", str(args.rebuild_jobs)),
                ],
                **{
                    f"board and statistics of {province}": [
                        *(python, "-m", "bench.scale", "reads", "--province", province),
                        *("--count", str(args.reads)),
                    ]
                    for province in ("lao-cai", "nghe-an")
                },
            }
            if not args.skip_feed:
                steps["ketnoi feed --reset beside the raw producer"] = [
                    *(python, "-m", "bench.scale", "feed"),
                    *("--rounds", str(args.feed_rounds)),
                    *("--events", str(args.feed_events)),
                ]
            # A step that fails does not stop the others: the report says which did.
            failed = [title for title, step in steps.items() if not _step(report, title, step, env)]
        finally:
            if not args.keep:
                with psycopg.connect(maintenance, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(args.database)
                        )
                    )
                report.say(f"dropped {args.database}")
        report.say(f"# done ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_load()})")
        if failed:
            raise SystemExit(f"failed: {', '.join(failed)}: see the report")


if __name__ == "__main__":
    main()
