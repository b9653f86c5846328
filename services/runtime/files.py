"""Files that hold personal data or keys: readable by the service's own user alone.

The data directory is made 0700 and each SQLite file (its journal files take the file's
mode) and key file 0600, before anything is written into them. ``ketnoi`` also starts with a
umask of 077, so whatever else a process creates is private too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if missing; make it readable by its owner only."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a directory of another owner stays as it is
        path.chmod(PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, in a private directory; make it 0600 either way."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    with contextlib.suppress(PermissionError):
        path.chmod(PRIVATE_FILE)
    return path
