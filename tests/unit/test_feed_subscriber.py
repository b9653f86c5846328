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
