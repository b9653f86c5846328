"""The reference subscriber (``ketnoi subscribe``) without a broker: de-duplication."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.cli.feed import SeenIds, handle


@dataclass
class Record:
    ce_id: str
    value: bytes = b'{"referral_id": "r"}'
    partition: int = 0
    extra: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [("ce_id", self.ce_id.encode()), ("ce_type", b"t.v1"), *self.extra]


def test_each_event_is_handled_once_however_often_it_arrives() -> None:
    seen, out = SeenIds(), []
    records = [Record("a"), Record("b"), Record("a"), Record("c"), Record("b")]
    assert handle(records, seen, out.append) == 3
    assert [e["id"] for e in out] == ["a", "b", "c"]
    assert out[0]["data"] == {"referral_id": "r"}
    assert handle([Record("c")], seen, out.append) == 0


def test_records_without_a_cloud_event_id_are_skipped() -> None:
    @dataclass
    class Bare:
        headers: list[tuple[str, bytes]]
        value: bytes = b"{}"
        partition: int = 0

    out: list[dict[str, Any]] = []
    assert handle([Bare([])], SeenIds(), out.append) == 0
    assert out == []


def test_memory_is_bounded_and_the_file_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "seen.txt"
    seen = SeenIds(capacity=3, path=path)
    for event_id in "abcd":
        seen.add(event_id)
    assert "a" not in seen  # forgotten: the oldest beyond the capacity
    assert {"b", "c", "d"} <= {i for i in "abcd" if i in seen}
    seen.save()

    again = SeenIds(capacity=3, path=path)
    assert [i for i in "abcd" if i in again] == ["b", "c", "d"]
    assert path.read_text().split() == ["b", "c", "d"]  # compacted on opening
    out: list[dict[str, Any]] = []
    handle([Record("d"), Record("e")], again, out.append)
    assert [json.dumps(e["id"]) for e in out] == ['"e"']


class RebalancingConsumer:
    """A consumer whose group rebalances at the first commit: the refused commit leaves the
    batch uncommitted, and the partition's new holder (here, this consumer again) receives
    it once more after rejoining."""

    def __init__(self, batches: list[list[Record]], refusals: list[Exception]) -> None:
        self.batches = batches
        self.refusals = refusals
        self.committed: list[int] = []
        self.polls = 0

    def poll(self, timeout_ms: int) -> dict[str, list[Record]]:
        self.polls += 1
        return {"tp": self.batches.pop(0)} if self.batches else {}

    def commit(self) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        self.committed.append(self.polls)


def test_a_commit_refused_by_a_rebalance_loses_nothing_and_handles_nothing_twice() -> None:
    from kafka.errors import CommitFailedError, RebalanceInProgressError

    from services.cli.feed import consume

    first = [Record("a"), Record("b")]
    consumer = RebalancingConsumer(
        # After the refused commits the uncommitted records come again, then new ones.
        [first, first, [*first, Record("c")], [Record("d")]],
        [RebalanceInProgressError(), CommitFailedError("the group rebalanced")],
    )
    out: list[dict[str, Any]] = []
    handled = consume(consumer, SeenIds(), out.append, max_messages=4, idle_timeout=5)
    assert handled == 4
    assert [e["id"] for e in out] == ["a", "b", "c", "d"]  # each once, none lost
    assert consumer.committed == [3, 4]  # committing resumed once the group settled
