"""Check every sealed log offline: recompute each tree from the stored rows, check every
checkpoint's signatures and root, and name the first row that no longer matches its seal.

What is found, per log:

- ``edited``: a row whose content no longer hashes to the leaf sealed at its position;
- ``reordered``: a row that hashes to the leaf sealed at another position (rows swapped);
- ``deleted``: a position that was sealed and has no row any more;
- ``inserted``: a row at a position that was never sealed;
- ``seal``: the seal's own tables are inconsistent (a leaf row missing or out of order, a
  head that does not match the leaves);
- ``checkpoint``: a signed checkpoint whose root is not the recomputed tree's at its size
  (so the leaves were rewritten to match altered rows), or whose signature does not verify.

Each checkpoint is compared with the tree recomputed from the rows, so two successive
checkpoints that both match are consistent (the older tree is a prefix of the newer).
"""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from uuid import UUID

from services.runtime.seal.leaves import chunk_hashes, leaf_hashes
from services.runtime.seal.merkle import Frontier
from services.runtime.seal.note import NoteError, SignedNote, Verifier, parse_note
from services.runtime.seal.sources import Chunk, EventRow, LeafRow, LogSource

CHUNK = 50_000
_BEFORE_ANY = -(2**62)
_UNREADABLE = b"\xff" * 32
_REORDER_CANDIDATES = 64

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Problem:
    log: str
    kind: str
    position: int | None
    detail: str

    def describe(self) -> str:
        where = f" at position {self.position}" if self.position is not None else ""
        return f"log {self.log}: {self.kind}{where}: {self.detail}"


@dataclass
class LogReport:
    log: str
    size: int = 0
    events: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    cosignatures_verified: int = 0
    last_checkpoint: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Report:
    logs: list[LogReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(log.ok for log in self.logs)

    @property
    def first_problem(self) -> Problem | None:
        for log in self.logs:
            if log.problems:
                return log.problems[0]
        return None


def verify_logs(
    logs: Sequence[LogSource],
    keys: Sequence[Verifier],
    witnesses: Sequence[Verifier] = (),
    progress: Progress | None = None,
) -> Report:
    """Check every log; ``progress(log, n)`` is told of each ``n`` leaves checked."""
    return Report([verify_log(log, keys, witnesses, progress) for log in logs])


def verify_log(
    log: LogSource,
    keys: Sequence[Verifier],
    witnesses: Sequence[Verifier] = (),
    progress: Progress | None = None,
) -> LogReport:
    report = LogReport(log.name)
    checker = _TreeCheck(log.name, report, keys, witnesses)
    checker.load_checkpoints(log.checkpoints(), log.cosignatures())
    head = log.head()
    checker.mark_at(head.frontier_size)
    report.size = head.size
    last_position = _BEFORE_ANY
    # Where the leaves are kept in the rows: the index the next sealed row should have, and
    # the position of the last sealed row.
    expected: tuple[int, int] = (0, 0)
    # Leaves whose rows differ, read past ``after`` up to ``upto``: named once the log is read.
    differ: list[tuple[int, int, list[LeafRow]]] = []
    for idx, after, (leaves, events, hashed) in _chunks(log):
        named = len(report.problems)
        if hashed is None:
            hashes = _check_chunk(log, report, idx, after, leaves, events)
            known = {problem.position for problem in report.problems[named:]}
        else:
            hashes = [sha256(leaf).digest() for leaf in hashed]
            known = set()
            if hashes != [leaf[3] for leaf in leaves]:
                bad = [leaf[:4] for leaf, h in zip(leaves, hashes, strict=True) if h != leaf[3]]
                known = {leaf[1] for leaf in bad}
                differ.append((after, leaves[-1][1], bad))
        if log.leaves_in_rows:
            # A row named for its content (moved, with its index) is not named for its index.
            expected = _check_indexes(log.name, report, expected, leaves, known)
        checker.feed(hashes)
        if leaves:
            last_position = max(after, leaves[-1][1])
        if progress is not None:
            progress(log.name, len(leaves))
    for after, upto, bad in differ:  # those rows in full, to name what differs
        wanted = {leaf[1] for leaf in bad}
        rows = [row for row in log.events(after, upto) if row[0] in wanted]
        _slow_chunk(log.name, report, after, bad, rows)
    # Where leaves are kept beside the rows, the chunks end at the last leaf's position.
    for row in [] if log.leaves_in_rows else log.events(last_position, None):
        report.problems.append(
            Problem(log.name, "inserted", row[0], "a row that was never sealed follows the log")
        )
    if log.leaves_in_rows and head.frontier_size > expected[0]:
        # Sealed rows deleted from the end of the log, up to the seal's mark.
        first, before = expected
        upto = head.frontier_position + 1
        _name_missing(log.name, report, first, head.frontier_size - 1, before, upto)
    frontier = checker.frontier
    if (head.size, head.last_position) != (frontier.size, max(last_position, 0)) or (
        head.frontier != checker.frontier_at_mark
    ):
        report.problems.append(
            Problem(
                log.name,
                "seal",
                None,
                f"the seal's head (size {head.size}) does not match its {frontier.size} leaves",
            )
        )
    checker.finish()
    report.events = log.count_events()
    # Rows first, in log order; then what concerns the seal or a checkpoint as a whole.
    report.problems.sort(key=lambda p: (p.position is None, p.position or 0))
    return report


def _chunks(log: LogSource) -> Iterator[tuple[int, int, Chunk]]:
    """The leaves in chunks with the rows up to the chunk's last position, read one chunk
    ahead in a thread of their own: the database sends the next while this one is hashed.
    The log's connection is used by that thread alone until the last chunk is taken. Each
    chunk comes with the first index and the position it was read after."""
    ahead: queue.Queue[tuple[int, int, Chunk] | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def read() -> None:
        try:
            # A row slipped in before the first sealed one is found too.
            idx, after = 0, _BEFORE_ANY
            while not stop.is_set():
                chunk = log.chunk(idx, after, CHUNK)
                leaves, events, _ = chunk
                if not leaves and not events:
                    break
                ahead.put((idx, after, chunk))
                if leaves:
                    if not log.leaves_in_rows:  # read by index
                        idx = max(leaf[0] for leaf in leaves) + 1
                    after = max(after, leaves[-1][1])
                if events:
                    after = max(after, events[-1][0])
            ahead.put(None)
        except BaseException as exc:
            ahead.put(exc)

    reader = threading.Thread(target=read, name=f"seal-read-{log.name}", daemon=True)
    reader.start()
    try:
        while True:
            item = ahead.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            ahead.get_nowait()  # free a reader blocked on a full queue
        reader.join()


def _check_chunk(
    log: LogSource,
    report: LogReport,
    first_idx: int,
    after: int,
    leaves: Sequence[LeafRow],
    events: Sequence[EventRow],
) -> list[bytes]:
    """The leaf hashes of a chunk, recomputed from its rows; problems go to the report."""
    if not leaves:
        for event in events:
            report.problems.append(
                Problem(log.name, "inserted", event[0], "a row that was never sealed is in the log")
            )
        return []
    if not log.leaves_in_rows and [leaf[0] for leaf in leaves] != list(
        range(first_idx, first_idx + len(leaves))
    ):
        report.problems.append(
            Problem(log.name, "seal", leaves[0][1], f"leaf rows missing after index {first_idx}")
        )
    stored = [leaf[3] for leaf in leaves]
    if [leaf[1] for leaf in leaves] == [e[0] for e in events]:
        try:
            hashes = chunk_hashes(leaves, events)
        except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
            hashes = []  # a value of the wrong type: the slow walk names its row
        if hashes == stored:
            return hashes
    return _slow_chunk(log.name, report, after, leaves, events)


def _check_indexes(
    log: str,
    report: LogReport,
    expected: tuple[int, int],
    leaves: Sequence[LeafRow],
    known: set[int | None],
) -> tuple[int, int]:
    """Where each leaf is kept in its event's row, the rows' indexes rise by one from row to
    row, in the order of their positions. They may skip an index for each row deleted, so by
    no more than the positions skip. A row whose index breaks that had its index edited (it
    is named unless it is ``known``, and counted as if in order); the indexes skipped are rows
    deleted, named between the rows sealed before and after them. ``expected``: the index the
    next sealed row should have, and the position of the last sealed row; the same after
    these leaves is returned."""
    following, before = expected
    if not leaves:
        return expected
    if [leaf[0] for leaf in leaves] == list(range(following, following + len(leaves))) and (
        leaves[0][1] > before
    ):
        return following + len(leaves), leaves[-1][1]  # in order: the usual case
    previous = following - 1
    for n, leaf in enumerate(leaves):
        idx, position = leaf[0], leaf[1]
        after_it = leaves[n + 1][0] if n + 1 < len(leaves) else None
        if (
            idx <= previous
            or idx - previous > position - before
            or (after_it is not None and previous < after_it < idx)
        ):
            if position not in known:
                detail = f"its seal's index was edited (leaf {previous + 1} expected, {idx} found)"
                report.problems.append(Problem(log, "edited", position, detail))
            idx = previous + 1
        elif idx > previous + 1:
            _name_missing(log, report, previous + 1, idx - 1, before, position)
        previous, before = idx, position
    return previous + 1, before


def _name_missing(
    log: str, report: LogReport, first: int, last: int, before: int, upto: int
) -> None:
    """Leaves ``first``..``last`` are missing between the sealed positions ``before`` and
    ``upto``: each is named by its position when the positions between can be no others."""
    count = last - first + 1
    if upto - before - 1 == count <= CHUNK:
        for n, position in enumerate(range(before + 1, upto)):
            detail = f"a sealed row (leaf {first + n}) is missing from the log"
            report.problems.append(Problem(log, "deleted", position, detail))
        return
    detail = (
        f"{count} sealed rows (leaves {first} to {last}) are missing after position {before}, "
        f"before {upto}"
    )
    report.problems.append(Problem(log, "deleted", None, detail))


def _slow_chunk(
    log: str,
    report: LogReport,
    after: int,
    leaves: Sequence[LeafRow],
    events: Sequence[EventRow],
) -> list[bytes]:
    """Walk a chunk row by row to name what differs."""
    by_position = {e[0]: e for e in events}
    hashes: list[bytes] = []
    mismatched: list[tuple[LeafRow, EventRow]] = []
    previous = after
    for leaf in leaves:
        position, sealed_at, stored = leaf[1], leaf[2], leaf[3]
        if position <= previous:
            report.problems.append(
                Problem(log, "seal", position, "the seal's positions are out of order")
            )
        previous = max(previous, position)
        event = by_position.pop(position, None)
        if event is None:
            report.problems.append(
                Problem(log, "deleted", position, "a sealed row is missing from the log")
            )
            hashes.append(stored)
            continue
        computed = _leaf_hash(event, sealed_at)
        hashes.append(computed)
        if computed != stored:
            mismatched.append((leaf, event))
    moved = _moved(mismatched)
    for leaf, event in mismatched:
        origin = moved.get(leaf[1])
        if origin is not None:
            detail = f"the row sealed at position {origin} is here (rows reordered)"
            report.problems.append(Problem(log, "reordered", leaf[1], detail))
        else:
            detail = (
                f"the row (aggregate {_uuid(event[1])} version {event[2]}) does not match "
                "its seal: edited"
            )
            report.problems.append(Problem(log, "edited", leaf[1], detail))
    for position in by_position:
        report.problems.append(
            Problem(log, "inserted", position, "a row that was never sealed is in the log")
        )
    return hashes


def _leaf_hash(event: EventRow, sealed_at: int) -> bytes:
    """The leaf hash of a row, or a hash no leaf has when a value is of the wrong type
    (a hand edit through a tool that stored text where bytes were)."""
    p, oid, v, t, s = event
    try:
        (computed,) = leaf_hashes([(p, sealed_at, oid, v, t, s)])
    except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
        return _UNREADABLE
    return computed


def _moved(mismatched: list[tuple[LeafRow, EventRow]]) -> dict[int, int]:
    """Rows whose content hashes to the leaf sealed at another position: {here: there}."""
    candidates = mismatched[:_REORDER_CANDIDATES]
    found: dict[int, int] = {}
    for leaf, (p, oid, v, t, s) in candidates:
        for other, _event in candidates:
            if other[1] == p:
                continue
            # The leaf sealed at the other position is this row's (a leaf kept beside the
            # rows), or this row's own leaf was sealed at the other position (a leaf kept in
            # the row, which moved with it).
            if _leaf_hash((other[1], oid, v, t, s), other[2]) == other[3] or (
                _leaf_hash((other[1], oid, v, t, s), leaf[2]) == leaf[3]
            ):
                found[p] = other[1]
    return found


def _uuid(raw: bytes) -> str:
    return str(UUID(bytes=raw))


class _TreeCheck:
    """Grows the recomputed tree and checks each checkpoint as the tree reaches its size."""

    def __init__(
        self,
        log: str,
        report: LogReport,
        keys: Sequence[Verifier],
        witnesses: Sequence[Verifier],
    ) -> None:
        self.log, self.report, self.keys, self.witnesses = log, report, keys, witnesses
        self.frontier = Frontier()
        self.pending: list[tuple[int, SignedNote]] = []
        self.origin: str | None = None
        self.mark = 0
        self.frontier_at_mark: bytes | None = b""

    def mark_at(self, size: int) -> None:
        """Keep the frontier at ``size`` (the one the seal stores) to compare it."""
        self.mark = size
        self.frontier_at_mark = b"" if size == 0 else None

    def load_checkpoints(
        self, checkpoints: list[tuple[int, str]], cosignatures: list[tuple[int, str, str]]
    ) -> None:
        lines: dict[int, list[str]] = {}
        for size, _name, line in cosignatures:
            lines.setdefault(size, []).append(line)
        for size, text in checkpoints:
            self.report.checkpoints += 1
            try:
                note = parse_note(text)
                for line in lines.get(size, []):
                    note = parse_note(note.with_line(line))
            except NoteError as exc:
                self._problem(size, f"checkpoint of size {size} cannot be read: {exc}")
                continue
            if note.checkpoint.size != size:
                self._problem(size, f"checkpoint row {size} holds a note of another size")
                continue
            self._check_signatures(note)
            self.pending.append((size, note))
            self.report.last_checkpoint = text
        self.pending.sort(key=lambda item: item[0])

    def _check_signatures(self, note: SignedNote) -> None:
        size = note.checkpoint.size
        if self.origin is None:
            self.origin = note.checkpoint.origin
            if not self.origin.endswith(f"/{self.log}"):
                self._problem(size, f"checkpoint origin {self.origin!r} is not this log's")
        elif note.checkpoint.origin != self.origin:
            self._problem(size, f"checkpoint of size {size} names another origin")
        if self.keys and not any(note.signed_by(key) for key in self.keys):
            self._problem(size, f"checkpoint of size {size} is not signed by a trusted key")
        for witness in self.witnesses:
            names = {name for name, _, _ in note.signatures}
            if witness.name in names:
                if note.signed_by(witness):
                    self.report.cosignatures_verified += 1
                else:
                    self._problem(size, f"the co-signature of {witness.name} does not verify")

    def feed(self, hashes: list[bytes]) -> None:
        i = 0
        while i < len(hashes):
            take = len(hashes) - i
            if self.pending:
                take = min(take, self.pending[0][0] - self.frontier.size)
            if self.mark > self.frontier.size:
                take = min(take, self.mark - self.frontier.size)
            if take > 0:
                self.frontier.extend(hashes[i : i + take])
                i += take
            if self.frontier.size == self.mark:
                self.frontier_at_mark = self.frontier.to_bytes()
            self._check_reached()

    def _check_reached(self) -> None:
        while self.pending and self.pending[0][0] <= self.frontier.size:
            size, note = self.pending.pop(0)
            if size < self.frontier.size or size == 0:
                continue  # sizes below the first leaf were checked on an earlier pass
            if note.checkpoint.root != self.frontier.root():
                self._problem(
                    size,
                    f"checkpoint of size {size} does not match the rows: "
                    "a row before it was altered",
                )
            else:
                self.report.checkpoints_verified += 1

    def finish(self) -> None:
        self._check_reached()
        for size, _ in self.pending:
            self._problem(
                size, f"checkpoint of size {size} is beyond the log's {self.frontier.size} rows"
            )
        self.pending.clear()

    def _problem(self, size: int, detail: str) -> None:
        self.report.problems.append(Problem(self.log, "checkpoint", None, detail))
