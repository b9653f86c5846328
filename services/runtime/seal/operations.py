"""What an operator or an auditor does with the seal: sign checkpoints now, export them,
co-sign them as a witness, prove that an event is in a log or that a later checkpoint extends
an earlier one, check every log."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from contracts.envelope import event_id_of
from services.runtime.persistence import application_env
from services.runtime.read_audit import AUDIT, audit_env
from services.runtime.seal.keys import policy_from_env
from services.runtime.seal.merkle import consistency_proof, inclusion_proof
from services.runtime.seal.note import Signer, Verifier, parse_note
from services.runtime.seal.proof import ConsistencyProof, InclusionProof
from services.runtime.seal.recorders import PostgresSeal, SealedRecorder, SQLiteSeal
from services.runtime.seal.sources import LogSource, open_logs
from services.runtime.seal.verify import LogReport, verify_log
from services.runtime.settings import SERVICES, Settings


class SealOperationError(Exception):
    """What was asked cannot be done; the message says why and what to do."""


@contextmanager
def recorders(settings: Settings, logs: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """A sealed recorder for each log found (or each of those named), tables never created
    here, with its checkpoint policy; closed on exit."""
    opened: dict[str, SealedRecorder] = {}
    factories = []
    with open_logs(settings, logs) as sources:
        found = [source.name for source in sources]
    try:
        for log in found:
            if log != AUDIT and log not in SERVICES:
                continue  # not a log of this version's services
            env = (
                audit_env(settings, create_tables=False)
                if log == AUDIT
                else application_env(settings, log, create_tables=False)
            )
            if settings.postgres is not None:
                env["POSTGRES_POOL_SIZE"], env["POSTGRES_MAX_OVERFLOW"] = "1", "0"
            factory = InfrastructureFactory.construct(Environment(log, env))
            factories.append(factory)
            recorder = factory.application_recorder()
            assert isinstance(recorder, PostgresSeal | SQLiteSeal)
            policy = policy_from_env(env)
            if policy is not None:
                recorder.checkpoints = policy
            opened[log] = recorder
        yield opened
    finally:
        for factory in factories:
            factory.close()


def checkpoint_all(settings: Settings) -> dict[str, int | None]:
    """Sign a checkpoint of every log that grew since its last one: {log: size or None}."""
    with recorders(settings) as found:
        return {log: recorder.checkpoint_now() for log, recorder in found.items()}


class Checkpoints:
    """Every log's sealed recorder, opened at the first use and kept until ``close``: signs
    a checkpoint of each log that grew and gives each log's latest, as often as asked, without
    opening the logs again each time (``checkpoint_all`` and ``latest_checkpoints`` do, once
    for an operator's command). The logs are those found at the first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._opened: ExitStack | None = None
        self._recorders: dict[str, Any] = {}
        self._closed = False

    def sealed_now(self) -> list[tuple[str, int, str | None]]:
        """Sign a checkpoint of every log that grew since its last one, then each log's
        latest: (log, tree size, signed note), in the order of the logs' names; size 0 and
        no note for a log with no checkpoint (nothing in it, or no signer configured)."""
        with self._lock:
            if self._closed:
                raise SealOperationError("the checkpoints were closed")
            if self._opened is None:
                opened = ExitStack()
                self._recorders = opened.enter_context(recorders(self.settings))
                self._opened = opened
            found = []
            for log in sorted(self._recorders):
                recorder = self._recorders[log]
                recorder.checkpoint_now()
                latest = recorder.latest_checkpoint()
                size, text = latest if latest is not None else (0, None)
                found.append((log, size, text))
            return found

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._opened is not None:
                self._opened.close()
                self._opened = None


def latest_checkpoints(settings: Settings) -> list[tuple[str, int, str | None]]:
    """Each log's latest signed checkpoint: (log, tree size, signed note), size 0 and no
    note for a log never checkpointed."""
    found = []
    with open_logs(settings) as logs:
        for log in logs:
            latest = log.checkpoints()
            size, text = latest[-1] if latest else (0, None)
            found.append((log.name, size, text))
    return found


def export_checkpoints(settings: Settings, directory: Path) -> list[Path]:
    """Write every checkpoint (with its co-signatures) as a file
    ``<directory>/<log>/<size>``, and the latest as ``<directory>/<log>/checkpoint``."""
    written: list[Path] = []
    with open_logs(settings) as logs:
        for log in logs:
            lines: dict[int, list[str]] = {}
            for size, _name, line in log.cosignatures():
                lines.setdefault(size, []).append(line)
            folder = directory / log.name
            folder.mkdir(parents=True, exist_ok=True)
            text = None
            for size, text in log.checkpoints():
                full = text + "".join(lines.get(size, []))
                path = folder / str(size)
                path.write_text(full, encoding="utf-8")
                written.append(path)
            if text is not None:
                latest = folder / "checkpoint"
                latest.write_text(written[-1].read_text(encoding="utf-8"), encoding="utf-8")
                written.append(latest)
    return written


def cosign(
    settings: Settings, witness: Signer, keys: Sequence[Verifier], logs: Sequence[str] = ()
) -> dict[str, int | None]:
    """As a witness: check each log in full against the log's keys and, when it holds,
    co-sign its latest checkpoint. Raises SealOperationError naming a log that fails."""
    signed: dict[str, int | None] = {}
    with open_logs(settings, logs) as sources:
        latest: dict[str, tuple[int, str]] = {}
        for source in sources:
            report = verify_log(source, keys)
            if not report.ok:
                raise SealOperationError(
                    f"log {source.name} does not verify, nothing co-signed: "
                    f"{report.problems[0].describe()}"
                )
            checkpoints = source.checkpoints()
            if checkpoints:
                latest[source.name] = checkpoints[-1]
    if not latest:
        return signed
    with recorders(settings, list(latest)) as found:
        for log, recorder in found.items():
            size, text = latest[log]
            note = parse_note(text)
            recorder.add_cosignature(size, witness.name, witness.signature_line(note.body))
            signed[log] = size
    return signed


def prove(settings: Settings, event_id: UUID, logs: Sequence[str] = ()) -> InclusionProof:
    """The inclusion proof of an event (by its stable id) against the latest checkpoint of
    its log that covers it. Raises SealOperationError when it is in no log or no
    checkpoint covers it yet."""
    with open_logs(settings, logs) as sources:
        for source in sources:
            found = _find(source, event_id)
            if found is not None:
                return _proof(source, event_id, *found)
    raise SealOperationError(f"no sealed log holds the event {event_id}")


def _find(source: LogSource, event_id: UUID) -> tuple[int, UUID, int, str] | None:
    # Read in windows of positions: an event id is derived, not stored.
    last, after = source.head().last_position, 0
    while after < last:
        upto = after + 50_000
        for position, oid, version, topic, _ in source.events(after, upto):
            originator = UUID(bytes=oid)
            if event_id_of(originator, version) == event_id:
                return position, originator, version, topic
        after = upto
    return None


def _leaf_hashes(
    source: LogSource, upto: int | None = None, position: int | None = None
) -> tuple[list[bytes], tuple[int, int] | None]:
    """The log's leaf hashes in order (the first ``upto`` of them, or all), and the index
    and sealing time of the leaf of the event at ``position`` when it is among them."""
    hashes: list[bytes] = []
    found = None
    while upto is None or len(hashes) < upto:
        want = 100_000 if upto is None else min(100_000, upto - len(hashes))
        leaves = source.leaves(len(hashes), want)
        if not leaves:
            break
        for idx, leaf_position, at, leaf in leaves:
            if leaf_position == position:
                found = idx, at
            hashes.append(bytes(leaf))
    return hashes, found


def _proof(
    source: LogSource, event_id: UUID, position: int, originator: UUID, version: int, topic: str
) -> InclusionProof:
    hashes, found = _leaf_hashes(source, position=position)
    index, sealed_at = found if found is not None else (None, None)
    if index is None or sealed_at is None:
        raise SealOperationError(f"the event {event_id} is stored but was never sealed")
    for size, text in reversed(source.checkpoints()):
        if size > index and size <= len(hashes):
            path = inclusion_proof(hashes, index, size)
            return InclusionProof(
                log=source.name,
                event_id=event_id,
                index=index,
                position=position,
                sealed_at=sealed_at,
                originator_id=originator,
                originator_version=version,
                topic=topic,
                leaf_hash=hashes[index],
                path=path,
                checkpoint=text,
            )
    raise SealOperationError(
        f"no checkpoint of log {source.name} covers the event {event_id} yet; "
        "run 'ketnoi seal checkpoint' and ask again"
    )


def prove_consistency(
    settings: Settings, log: str, old_size: int, new_size: int | None = None
) -> ConsistencyProof:
    """The proof that the log's checkpoint of ``old_size`` is a prefix of its checkpoint of
    ``new_size`` (by default its latest). Raises SealOperationError when the log or either
    checkpoint does not exist."""
    with open_logs(settings, [log]) as sources:
        source = next((s for s in sources if s.name == log), None)
        if source is None:
            raise SealOperationError(f"there is no log named {log!r}")
        checkpoints = dict(source.checkpoints())
        if not checkpoints:
            raise SealOperationError(f"log {log} has no checkpoint yet")
        new_size = max(checkpoints) if new_size is None else new_size
        for size in (old_size, new_size):
            if size not in checkpoints:
                sizes = ", ".join(str(s) for s in sorted(checkpoints)[-10:])
                raise SealOperationError(
                    f"log {log} has no checkpoint of size {size} (the latest: {sizes})"
                )
        if old_size > new_size:
            raise SealOperationError("the older checkpoint must not be larger than the newer")
        hashes, _ = _leaf_hashes(source, new_size)
    if len(hashes) < new_size:
        raise SealOperationError(f"log {log} holds fewer leaves than its checkpoint {new_size}")
    path = [] if old_size == new_size else consistency_proof(hashes, old_size, new_size)
    return ConsistencyProof(log, checkpoints[old_size], checkpoints[new_size], path)


def verify_report(
    settings: Settings, keys: Sequence[Verifier], witnesses: Sequence[Verifier] = ()
) -> list[LogReport]:
    """Every log checked (for the auditors' API; the command line shows progress)."""
    with open_logs(settings) as sources:
        return [verify_log(source, keys, witnesses) for source in sources]
