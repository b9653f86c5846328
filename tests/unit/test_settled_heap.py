"""A served process's start-up heap is out of the cycle collector's full collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from services.runtime import serving
from services.runtime.settings import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_serving_freezes_what_start_up_left_alive_before_the_first_request(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started_with: list[int] = []

    def run(app: object, **_: Any) -> None:
        started_with.append(gc.get_freeze_count())

    monkeypatch.setattr(serving.uvicorn, "run", run)
    assert gc.get_freeze_count() == 0
    serving.serve(object(), Settings(), "127.0.0.1", 0)  # type: ignore[arg-type]
    assert len(started_with) == 1
    assert started_with[0] > 0
