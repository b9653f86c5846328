"""Where the agency feed relay keeps its position in the referral log.

A schema of its own (``feed``, created by ``ketnoi migrate``) on PostgreSQL, its own SQLite
file in the embedded default, or memory for a broker that forgets as much. ``ketnoi feed
--reset`` forgets the position so that the relay re-publishes the log from its start.
"""

from __future__ import annotations

import psycopg
from eventsourcing.persistence import InfrastructureFactory, TrackingRecorder
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg import sql

from services.runtime.files import private_file
from services.runtime.persistence import application_env
from services.runtime.settings import Settings

FEED = "feed"  # the name of the relay's schema, SQLite file and tracking table
UPSTREAM = "referral"


def tracking_env(settings: Settings, *, create_tables: bool | None = None) -> dict[str, str]:
    """The eventsourcing environment of the relay's tracking table: schema ``feed`` on
    PostgreSQL, ``feed.sqlite`` in the embedded default."""
    env = application_env(settings, UPSTREAM, create_tables=create_tables)
    if settings.postgres is None:
        env["SQLITE_DBNAME"] = str(private_file(settings.data_dir / f"{FEED}.sqlite"))
    else:
        env["POSTGRES_SCHEMA"] = settings.schema_for(FEED)
        # One reader and one writer of positions: a small pool.
        env["POSTGRES_POOL_SIZE"] = "1"
        env["POSTGRES_MAX_OVERFLOW"] = "1"
    return env


def tracking_recorder(settings: Settings, *, create_tables: bool | None = None) -> TrackingRecorder:
    env = Environment(FEED, tracking_env(settings, create_tables=create_tables))
    return InfrastructureFactory.construct(env).tracking_recorder()


def migrate_feed(settings: Settings) -> None:
    """Create the relay's schema and tracking table; safe to run again."""
    target = settings.postgres
    if target is not None:
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(settings.schema_for(FEED))
                )
            )
    close_recorder(tracking_recorder(settings, create_tables=True))


def forget_position(tracking: TrackingRecorder, upstream: str = UPSTREAM) -> int | None:
    """Forget how far the relay got, so that it re-publishes the log from its start.

    Returns the position it forgot (None if there was none). No relay may be running: one
    keeps its own position and tracks it again (``ketnoi feed --reset`` calls this only while
    it holds the relays' lock). Raises TypeError for a tracking recorder of another kind.
    """
    forgotten = tracking.max_tracking_id(upstream)
    if isinstance(tracking, PostgresTrackingRecorder):
        with tracking.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                sql.SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                    sql.Identifier(tracking.datastore.schema),
                    sql.Identifier(tracking.tracking_table_name),
                ),
                (upstream,),
            )
    elif isinstance(tracking, SQLiteTrackingRecorder):
        with tracking.datastore.transaction(commit=True) as cursor:
            cursor.execute("DELETE FROM tracking WHERE application_name = ?", (upstream,))
    elif isinstance(tracking, POPOTrackingRecorder):
        tracking._max_tracking_ids.pop(upstream, None)
    else:
        msg = f"cannot forget a position kept by {type(tracking).__name__}"
        raise TypeError(msg)
    return forgotten


def in_memory_tracking() -> TrackingRecorder:
    """A position that lives as long as the process: for a broker that forgets as much."""
    env = Environment(FEED, {"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return InfrastructureFactory.construct(env).tracking_recorder()


def close_recorder(recorder: object) -> None:
    """Close a recorder's datastore (its connections), if it has one."""
    datastore = getattr(recorder, "datastore", None)
    if datastore is not None:
        datastore.close()
