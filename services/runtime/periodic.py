"""Run a task every few seconds in a background thread, until stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable

from services.runtime.logging import get_logger

log = get_logger("ketnoi.periodic")


class Periodic:
    def __init__(self, name: str, task: Callable[[], object], every: float) -> None:
        self.name, self.task, self.every = name, task, every
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self.every):
            try:
                self.task()
            except Exception:
                log.exception("periodic_task_failed", task=self.name)
