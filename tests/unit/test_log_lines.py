"""Each log line reaches the log in one write, so processes sharing a stderr keep their lines
whole (``ketnoi serve --workers``)."""

from __future__ import annotations

import io
import json

from services.runtime.logging import line_writer


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_a_line_and_its_newline_are_one_write() -> None:
    file = _Writes()
    logger = line_writer(file)()
    logger.msg(json.dumps({"event": "request", "status": 201}))
    logger.msg(json.dumps({"event": "request", "status": 202}))
    assert file.calls == [
        '{"event": "request", "status": 201}\n',
        '{"event": "request", "status": 202}\n',
    ]
