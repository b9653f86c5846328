"""``ketnoi``: the command line, and the composition root of the platform."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from contracts.vocabulary import AgencyKind, Role
from services.runtime.auth import TokenService
from services.runtime.logging import configure_logging
from services.runtime.settings import SERVICES, Settings, SettingsError

app = typer.Typer(
    name="ketnoi",
    help="Ketnoi: interagency referral for people who experienced human trafficking.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except (SettingsError, ValueError) as exc:
        console.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the embedded SQLite logs live.")] = Path(
        ".ketnoi-demo"
    ),
    kafka: Annotated[
        bool, typer.Option("--kafka", help="Also run a Kafka broker (Tansu) and the agency feed.")
    ] = False,
) -> None:
    """Run every service in one process on SQLite, with the scenarios of DOMAIN.md seeded."""
    from services.cli.demo import demo_users, seed
    from services.cli.feed import start_demo_feed
    from services.cli.wiring import http_app, start

    settings = _settings(data_dir=data_dir, database_url=None, environment="development")
    # The demo's terminal opens on the sign-in address, not on the seeding's hundred log
    # lines: warnings and errors only, unless KETNOI_LOG_LEVEL asks for more.
    level = settings.log_level if "KETNOI_LOG_LEVEL" in os.environ else "warning"
    configure_logging(settings.effective_log_format, level)
    platform = start(settings)
    with console.status("Seeding the Dong Thap, Lao Cai and Nghe An scenarios..."):
        seeded = seed(platform, settings.data_dir)
        platform.checkpoint()  # the seeded logs signed at once, not a minute later
    tokens = TokenService(settings)
    url = f"http://{host}:{port}"
    # Addresses stay on one line, whatever the terminal's width, so they can be copied.
    console.print(f"[bold green]Ketnoi demo[/bold green]: sign in at {url}/signin", soft_wrap=True)
    console.print(f"  (API docs: {url}/docs)", soft_wrap=True)
    for case in seeded:
        console.print(f"  {case.label}: {url}/cases/{case.case_id}", soft_wrap=True)
    for province in sorted({c.province for c in seeded}):
        token = tokens.issue(
            user_id=f"{province}-coordinator",
            agency_id=f"{province}-dolisa",
            province=province,
            roles=[Role.COORDINATOR],
        )
        console.print(f"\nCoordinator API token for {province}:")
        print(token, flush=True)
    console.print("\nUse it as 'Authorization: Bearer <token>'. Stop with Ctrl+C.")
    stop_feed = start_demo_feed(platform, settings) if kafka else None
    try:
        _run_http(
            http_app(platform, tokens, title="Ketnoi (demo)", demo_users=demo_users()),
            settings,
            host,
            port,
        )
    finally:
        if stop_feed is not None:
            stop_feed()
        platform.close()


@app.command()
def serve(
    service: Annotated[
        str, typer.Argument(help=f"One of: {', '.join(SERVICES)}; or all (with the web app).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the port (PostgreSQL only); one of them, elected, "
            "runs the followers and the periodic jobs.",
        ),
    ] = 1,
) -> None:
    """Run one service as its own process, or all of them and the web app in one, configured
    from KETNOI_* variables."""
    from services.cli.wiring import WORKER_SERVICE, http_app, start

    if service != "all" and service not in SERVICES:
        console.print(
            f"[red]Unknown service {service!r}.[/red] Choose one of: {', '.join(SERVICES)}, all."
        )
        raise typer.Exit(2)
    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    tokens = _tokens(settings)
    if workers > 1:
        if settings.postgres is None:
            console.print(
                "[red]--workers needs PostgreSQL.[/red] The embedded SQLite default serves "
                "from one process: set KETNOI_DATABASE_URL, or leave out --workers."
            )
            raise typer.Exit(2)
        from services.runtime.serving import serve_workers

        # Each worker is a new interpreter: it reads the same KETNOI_* variables, and this one.
        os.environ[WORKER_SERVICE] = service
        serve_workers("services.cli.wiring:worker_app", settings, host, port, workers)
        return
    from services.launch import stop_asked_while_starting

    platform = start(settings, SERVICES if service == "all" else (service,))
    try:
        # A stop asked for while the platform started may have been lost in a thread's
        # start or a finalizer: it still stops the command before it serves.
        if stop_asked_while_starting():
            return
        _run_http(http_app(platform, tokens, title=f"Ketnoi {service}"), settings, host, port)
    finally:
        platform.close()


def _tokens(settings: Settings) -> TokenService:
    try:
        return TokenService(settings)
    except (SettingsError, ValueError) as exc:
        console.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _run_http(app: object, settings: Settings, host: str, port: int) -> None:
    """Serve an app: no server banner, and slow, idle or surplus clients cut off."""
    from services.runtime.serving import serve

    serve(app, settings, host, port)  # type: ignore[arg-type]


@app.command()
def migrate() -> None:
    """Create each service's schema and tables (PostgreSQL) or files (SQLite). Idempotent."""
    from services.cli.wiring import migrate as run_migrate

    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    where = "PostgreSQL" if settings.postgres else f"SQLite under {settings.data_dir}"
    done = run_migrate(settings)
    typer.echo(f"Migrated {', '.join(done)} on {where}.")


@app.command()
def token(
    user: Annotated[str, typer.Option(help="User id (no personal data).")],
    agency: Annotated[str, typer.Option(help="Agency id, e.g. dong-thap-police.")],
    province: Annotated[str, typer.Option(help="Province slug, or * for national scope.")],
    role: Annotated[list[Role], typer.Option(help="Role; repeat for several.")],
    agency_kind: Annotated[
        AgencyKind | None,
        typer.Option(help="Kind of the agency (checked against the agency directory)."),
    ] = None,
    ttl_minutes: Annotated[int, typer.Option(help="Lifetime in minutes.")] = 12 * 60,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory holding the key.")] = None,
) -> None:
    """Issue an access token signed with the embedded default's local key."""
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = _settings(**overrides)
    try:
        issued = TokenService(settings).issue(
            user_id=user,
            agency_id=agency,
            province=province,
            roles=role,
            agency_kind=agency_kind,
            ttl=timedelta(minutes=ttl_minutes),
        )
    except (SettingsError, ValueError) as exc:
        console.print(f"[red]Cannot issue a token:[/red] {exc}")
        raise typer.Exit(2) from None
    sys.stdout.write(issued + "\n")


# Commands defined in their own modules register themselves on ``app``.
from services.cli import audit as audit  # noqa: E402
from services.cli import directory as directory  # noqa: E402
from services.cli import erase as erase  # noqa: E402
from services.cli import feed as feed  # noqa: E402
from services.cli import seal as seal  # noqa: E402


def main() -> None:
    app()
