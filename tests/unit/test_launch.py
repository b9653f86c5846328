"""A stop asked for while the ``ketnoi`` command starts ends it, even when the exception it
raised was lost on the way."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import services.cli as cli_module
from services import launch
from services.cli import app as cli


def test_serve_does_not_serve_after_a_stop_asked_while_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KETNOI_DATABASE_URL", raising=False)
    monkeypatch.setenv("KETNOI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_a: None)
    served: list[object] = []
    monkeypatch.setattr(cli_module, "_run_http", lambda *args: served.append(args))
    # As if SIGTERM came while the platform started and its SystemExit was swallowed there.
    monkeypatch.setattr(launch, "_stop_asked", True)
    result = CliRunner().invoke(cli, ["serve", "intake"])
    assert result.exit_code == 0, result.output
    assert served == []
    # Without the stop, the same command serves.
    monkeypatch.setattr(launch, "_stop_asked", False)
    result = CliRunner().invoke(cli, ["serve", "intake"])
    assert result.exit_code == 0, result.output
    assert len(served) == 1
