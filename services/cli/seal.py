"""``ketnoi verify``, ``ketnoi prove`` and ``ketnoi seal ...``: the seal over every log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli import _settings, app, console
from services.runtime.auth import load_or_create_ed25519_key
from services.runtime.seal.keys import seal_signer
from services.runtime.seal.merkle import ProofError
from services.runtime.seal.note import NoteError, Signer, Verifier
from services.runtime.seal.operations import (
    SealOperationError,
    checkpoint_all,
    cosign,
    export_checkpoints,
    prove,
    prove_consistency,
)
from services.runtime.seal.proof import check_consistency, check_proof
from services.runtime.seal.sources import open_logs
from services.runtime.seal.verify import verify_log
from services.runtime.settings import Settings, SettingsError

seal_app = typer.Typer(help="Checkpoints of the logs: sign, export, co-sign.", no_args_is_help=True)
app.add_typer(seal_app, name="seal")

KeyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--key",
        help="The log's public key (name+hash+key), or a file of such lines; repeat for "
        "several. Default: the public half of the configured signing key.",
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(help="postgresql://... to check (default: KETNOI_DATABASE_URL)."),
]
DataDirOption = Annotated[
    Path | None, typer.Option(help="The SQLite data directory to check (embedded default).")
]


def _where(database_url: str | None, data_dir: Path | None) -> Settings:
    overrides: dict[str, object] = {}
    if database_url is not None:
        overrides["database_url"] = database_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
        overrides.setdefault("database_url", None)
    return _settings(**overrides)


def _verifiers(values: list[str] | None, settings: Settings | None) -> list[Verifier]:
    found: list[Verifier] = []
    try:
        for value in values or []:
            path = Path(value)
            lines = path.read_text().splitlines() if path.is_file() else [value]
            found += [Verifier.parse(line) for line in lines if line.strip()]
    except NoteError as exc:
        console.print(f"[red]Cannot read a key:[/red] {exc}")
        raise typer.Exit(2) from None
    if not found and settings is not None:
        if not settings.seal_key_path().exists():
            console.print("[red]Give the log's public key with --key.[/red]")
            raise typer.Exit(2)
        try:
            found.append(seal_signer(settings).verifier)
        except SettingsError as exc:
            console.print(f"[red]Cannot read the signing key:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(f"Checking signatures against the key in {settings.seal_key_path()}.")
    return found


@app.command()
def verify(
    key: KeyOption = None,
    witness: Annotated[
        list[str] | None,
        typer.Option(help="A witness's public key (or file); its co-signatures must verify."),
    ] = None,
    log: Annotated[list[str] | None, typer.Option(help="Check only this log; repeat.")] = None,
    database_url: DatabaseOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Recompute every log's tree from its rows, check every checkpoint, and name the first
    row edited, deleted, inserted or reordered. Exits 1 when anything does not hold."""
    settings = _where(database_url, data_dir)
    keys = _verifiers(key, settings)
    witnesses = _verifiers(witness, None)
    problems = 0
    with open_logs(settings, log or ()) as sources:
        if not sources:
            console.print("[red]No sealed log found there.[/red]")
            raise typer.Exit(2)
        total = sum(source.head().size for source in sources)
        reports = []
        with Progress(
            TextColumn("Verifying {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(", ".join(s.name for s in sources), total=total)
            for source in sources:
                report = verify_log(
                    source, keys, witnesses, lambda _log, n: progress.advance(task, n)
                )
                reports.append(report)
    for report in reports:
        status = "[green]ok[/green]" if report.ok else "[red]FAILED[/red]"
        console.print(
            f"{report.log}: {status}  {report.size} sealed events, "
            f"{report.checkpoints_verified}/{report.checkpoints} checkpoints verified"
            + (f", {report.cosignatures_verified} co-signatures" if witnesses else "")
        )
        for problem in report.problems[:20]:
            console.print(f"  {problem.describe()}")
        if len(report.problems) > 20:
            console.print(f"  ... and {len(report.problems) - 20} more")
        problems += len(report.problems)
    first = next((r.problems[0] for r in reports if r.problems), None)
    if first is not None:
        console.print(f"[red]First problem:[/red] {first.describe()}")
        raise typer.Exit(1)
    console.print("[green]Every log verifies.[/green]")


@app.command("prove")
def prove_command(
    event_id: Annotated[UUID, typer.Argument(help="The event's stable id (ce_id on the feed).")],
    log: Annotated[list[str] | None, typer.Option(help="Look only in this log.")] = None,
    database_url: DatabaseOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print an inclusion proof (RFC 9162 audit path) of an event against the latest signed
    checkpoint of its log, as JSON; check it with 'ketnoi seal check-proof'."""
    settings = _where(database_url, data_dir)
    try:
        proof = prove(settings, event_id, log or ())
    except SealOperationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    sys.stdout.write(json.dumps(proof.as_json(), indent=2, ensure_ascii=False) + "\n")


@seal_app.command("check-proof")
def check_proof_command(
    proof_file: Annotated[Path, typer.Argument(help="A proof printed by 'ketnoi prove'.")],
    key: KeyOption = None,
    state_file: Annotated[
        Path | None, typer.Option(help="The event's stored bytes, to check the leaf is it.")
    ] = None,
) -> None:
    """Check an inclusion proof against its checkpoint and the log's public key."""
    keys = _verifiers(key, None)
    if not keys:
        console.print("[red]Give the log's public key with --key.[/red]")
        raise typer.Exit(2)
    state = state_file.read_bytes() if state_file is not None else None
    try:
        check_proof(json.loads(proof_file.read_text()), keys, state)
    except ProofError as exc:
        console.print(f"[red]The proof does not hold:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print("[green]The event is in the log of the signed checkpoint.[/green]")


@seal_app.command("consistency")
def consistency_command(
    log: Annotated[str, typer.Argument(help="The log: intake, consent, referral, audit, ...")],
    old_size: Annotated[int, typer.Argument(help="The size of an earlier checkpoint.")],
    new_size: Annotated[
        int | None, typer.Option("--to", help="The size of a later checkpoint (default: latest).")
    ] = None,
    database_url: DatabaseOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print, as JSON, the proof (RFC 9162) that a log's later checkpoint extends an earlier
    one unchanged; check it with 'ketnoi seal check-consistency'."""
    settings = _where(database_url, data_dir)
    try:
        proof = prove_consistency(settings, log, old_size, new_size)
    except SealOperationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    sys.stdout.write(json.dumps(proof.as_json(), indent=2, ensure_ascii=False) + "\n")


@seal_app.command("check-consistency")
def check_consistency_command(
    proof_file: Annotated[
        Path, typer.Argument(help="A proof printed by 'ketnoi seal consistency'.")
    ],
    key: KeyOption = None,
) -> None:
    """Check that a log's later checkpoint extends the earlier one: nothing before the
    earlier checkpoint was altered, removed or reordered since."""
    keys = _verifiers(key, None)
    if not keys:
        console.print("[red]Give the log's public key with --key.[/red]")
        raise typer.Exit(2)
    try:
        old, new = check_consistency(json.loads(proof_file.read_text()), keys)
    except (ProofError, ValueError) as exc:
        console.print(f"[red]The proof does not hold:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]The checkpoint of size {new} extends the one of size {old}.[/green]")


@seal_app.command("key")
def key_command(
    witness_key_file: Annotated[
        Path | None,
        typer.Option(help="A witness's key file (PEM), created when missing; print its key."),
    ] = None,
    name: Annotated[str, typer.Option(help="The witness's key name.")] = "witness",
) -> None:
    """Print the public key that checks this installation's checkpoints (or a witness's)."""
    try:
        if witness_key_file is not None:
            signer = Signer(name, load_or_create_ed25519_key(witness_key_file))
        else:
            signer = seal_signer(_settings())
    except (SettingsError, NoteError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    sys.stdout.write(signer.verifier.vkey() + "\n")


@seal_app.command("checkpoint")
def checkpoint_command() -> None:
    """Sign a checkpoint of every log that grew since its last one, now."""
    settings = _settings()
    for log, size in checkpoint_all(settings).items():
        typer.echo(f"{log}: " + (f"checkpoint of size {size}" if size else "unchanged"))


@seal_app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help="Where to write <log>/<size> files.")],
    database_url: DatabaseOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write every checkpoint, with its co-signatures, as a file to publish."""
    written = export_checkpoints(_where(database_url, data_dir), directory)
    typer.echo(f"Wrote {len(written)} checkpoint files under {directory}.")


@seal_app.command("cosign")
def cosign_command(
    witness_key_file: Annotated[Path, typer.Option(help="The witness's private key (PEM).")],
    name: Annotated[str, typer.Option(help="The witness's key name.")],
    key: KeyOption = None,
) -> None:
    """As a witness: verify every log in full and co-sign its latest checkpoint."""
    settings = _settings()
    keys = _verifiers(key, settings)
    try:
        witness = Signer(name, load_or_create_ed25519_key(witness_key_file))
        signed = cosign(settings, witness, keys)
    except (SealOperationError, SettingsError, NoteError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    for log, size in signed.items():
        typer.echo(f"{log}: co-signed the checkpoint of size {size}")
