"""What the projector keeps beside the case overview's documents, so the board and the
statistics of a province read a few rows, not every case of its history.

- **Open cases** (``view_cases_open``): the board's row of each open case, keyed by province,
  with its attention rank and handovers waiting, which the board's pages are ordered and
  counted by; a case leaves it when it closes (``services.projections.board``).
- **Counters** (``view_cases_counts``): per (province, month or day of the instant it
  changed, table, period, dimension, value) how much the cell changed then; the statistics at
  an instant sum the months before it and the days of its month before its day.
- **Moments** (``view_cases_moments``): the same changes of each case, to the instant, per
  (province, day): the statistics add those of the instant's day up to the instant.

A case's contribution is a function of its document alone (``statistics.counted``: the
consent decision run at each instant where its answer may change), kept in the document as
``counted``; when a case is written, what it counted before is taken off and what it counts
now is added. So the counters are sums over the cases' documents as they are, whatever order
the events came in: the live views and a rebuild, in one pass or in windows, make the same
rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from services.projections.board import attention, board_row
from services.projections.statistics import Key, changes, counted

CountKey = tuple[str, str, str, str, str, str, str]  # province, level, bucket, table, ...
OpenRow = tuple[str, str, str | None, int, int, bytes]


@dataclass
class Derived:
    """What a batch of case documents changes in the tables beside them."""

    counts: dict[CountKey, int] = field(default_factory=dict)
    # case -> rows of (province, day, changes as JSON); replaced whole when the case's
    # contribution changed
    moments: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)
    # case -> its board row: province, received_at ("" when not known), review_due_on, its
    # attention rank, how many handovers wait, the row as JSON
    open: dict[str, OpenRow] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.counts or self.moments or self.open or self.closed)

    def case(self, key: str, province: str | None, doc: dict[str, Any]) -> None:
        """A case document about to be written: its contribution brought up to date (and
        kept in it as ``counted``), and its board row."""
        if not key.startswith("case:"):
            return
        case_id = doc["case_id"]
        before = doc.pop("counted", None)
        now = counted(doc, before)
        # Put back as the document's last key at every write: the stored text then does not
        # depend on the order the logs were read in (live, the intake and consent logs
        # interleave as they come; a rebuild reads them otherwise), so a rebuild writes the
        # same text.
        doc["counted"] = now
        if now != before:
            self._add(before, -1)
            self._add(now, 1)
            self.moments[case_id] = _moments(now)
        if province and not doc.get("closed"):
            row = board_row(doc)
            self.open[case_id] = (
                province,
                row["received_at"] or "",
                row["review_due_on"],
                attention(row),
                len(row["open_handovers"]),
                orjson.dumps(row),
            )
            self.closed.discard(case_id)
        else:
            self.open.pop(case_id, None)
            self.closed.add(case_id)

    def forget(self, doc: dict[str, Any]) -> None:
        """A case document being deleted (its person erased): nothing of it counts, nor is
        on any board."""
        if "case_id" not in doc or "referrals" not in doc:
            return
        self._add(doc.get("counted"), -1)
        self.moments[doc["case_id"]] = []
        self.open.pop(doc["case_id"], None)
        self.closed.add(doc["case_id"])

    def _add(self, contribution: dict[str, Any] | None, sign: int) -> None:
        for (at, cell), n in changes(contribution).items():
            for level, bucket in (("m", at[:7]), ("d", at[:10])):
                key = _count_key(cell, level, bucket)
                self.counts[key] = self.counts.get(key, 0) + sign * n


def _count_key(cell: Key, level: str, bucket: str) -> CountKey:
    table, province, period, dimension, value = cell
    return (province, level, bucket, table, period, dimension, value)


def _moments(contribution: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """A case's changes to the instant, one row per (province, day)."""
    days: dict[tuple[str, str], list[list[Any]]] = {}
    for (at, cell), n in sorted(changes(contribution).items()):
        days.setdefault((cell[1], at[:10]), []).append([at, *cell, n])
    return [(province, day, orjson.dumps(rows)) for (province, day), rows in days.items()]
