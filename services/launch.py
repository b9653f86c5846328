"""The ``ketnoi`` command's entry point: a stop asked for while it starts ends it cleanly.

Importing the command line takes a moment; an orchestrator (or a test) may stop a process in
that moment. SIGTERM then ends it at once with status 0, as a stop asked for later would,
until a command installs its own handling (the relay's clean stop, uvicorn's shutdown).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

_stop_asked = False


def _stop_while_starting(_signum: int, _frame: FrameType | None) -> None:
    global _stop_asked
    _stop_asked = True
    raise SystemExit(0)


def stop_asked_while_starting() -> bool:
    """Whether SIGTERM came before the command installed its own handling. The SystemExit
    raised then is lost when it lands in code that ignores exceptions (a finalizer, say),
    so a command that handles stops checks this once its handlers are in place."""
    return _stop_asked


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_while_starting)
    # Data files, keys and logs written by Ketnoi are its user's alone.
    os.umask(0o077)
    from services.cli import main as run

    run()
