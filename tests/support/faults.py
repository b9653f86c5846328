"""The fault suite's machinery: a PostgreSQL server of its own, processes it may kill, and
clients that send commands through every service while it does.

Everything runs on loopback ports and is stopped by pid. The PostgreSQL server is a
throwaway one (``initdb``/``pg_ctl``) so that it may be restarted under load; the broker is
Tansu (memory storage, see ``services.runtime.tansu``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.runtime.auth import TokenService
from services.runtime.positions import HEADER, merged, parse, render
from services.runtime.settings import Settings
from tests.support.processes import rescue_reception


class Supervised:
    """One of Ketnoi's processes, started (again) on the same port, killed by pid."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], logs: Path, port: int | None
    ) -> None:
        self.name, self.args, self.env, self.port = name, args, env, port
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [*self.args, "--port", str(self.port)] if self.port else self.args
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def wait_ready(self, timeout: float = 90) -> None:
        """Until it answers /healthz (a process without HTTP: until it runs)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.tail()}")
            if self.port is None:
                return
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{self.name} did not answer: {self.tail()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def tail(self, size: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-size:]


def kill_at_random(
    target: Supervised, kills: int, stop: threading.Event, rng: random.Random
) -> None:
    """Kill the process ``kills`` times at random moments, each time starting it again."""
    for _ in range(kills):
        if stop.wait(rng.uniform(0.2, 1.5)):
            return
        with target.lock:
            target.kill()
            target.start()
        target.wait_ready()


# -- the clients -------------------------------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
RECEPTION = rescue_reception()
PERSON = {"full_name": "Trần Thị Hoa", "sex": "female", "estimated_age": 24}
GRANT = {
    "categories": ["identity"],
    "recipients": [{"kind": "hospital"}],
    "purposes": ["service_provision"],
    "valid_from": (NOW - timedelta(days=1)).isoformat(),
    "valid_until": (NOW + timedelta(days=365)).isoformat(),
    "collection": {
        "method": "written_form",
        "form_reference": "F-1",
        "language": "vi",
        "withdrawal_explained": True,
    },
    "given_by": {"kind": "person"},
}
SENDER = "dt-swc"
RECIPIENTS = ("dt-hospital-1", "dt-hospital-2", "dt-hospital-3")
ANSWERS = ("acknowledge", "accept", "start", "complete")
# What may pass while a process or the database is restarting: asked again, same key. A 500
# is never one of them.
PASSING = {502, 503, 504}


class Tokens:
    def __init__(self, settings: Settings) -> None:
        service = TokenService(settings)

        def as_(agency: str, kind: str, role: str) -> dict[str, str]:
            token = service.issue(
                user_id=f"{agency}-{role}",
                agency_id=agency,
                province="dong-thap",
                roles=[role],  # type: ignore[list-item]
                agency_kind=kind,  # type: ignore[arg-type]
            )
            return {"Authorization": f"Bearer {token}"}

        self.officer = as_("dt-police", "police", "intake_officer")
        self.coordinator = as_("dt-dolisa", "local_authority", "coordinator")
        self.manager = as_(SENDER, "social_work_centre", "case_manager")
        self.staff = {a: as_(a, "hospital", "agency_staff") for a in RECIPIENTS}


@dataclass
class Acknowledged:
    """A command a client was told succeeded."""

    route: str
    case_id: str
    result: dict[str, Any]


@dataclass
class Outcomes:
    """What the clients saw, shared by their threads."""

    acknowledged: list[Acknowledged] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # 4xx: must stay empty
    passing: Counter[str] = field(default_factory=Counter)  # 5xx and lost connections, retried
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    abandoned: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def completed(self) -> int:
        """How many sequences were completed (their referral's last answer acknowledged)."""
        with self.lock:
            return sum(a.route.endswith("/complete") for a in self.acknowledged)


class Client:
    """One client sending whole sequences, the position passed on, every command with an
    Idempotency-Key and asked again (same key) while a process or the database restarts."""

    def __init__(
        self, urls: dict[str, str], tokens: Tokens, outcomes: Outcomes, give_up: float = 120
    ) -> None:
        self.urls, self.tokens, self.outcomes, self.give_up = urls, tokens, outcomes, give_up
        self.positions: dict[str, int] = {}
        self.http = httpx.Client(timeout=20)

    def close(self) -> None:
        self.http.close()

    def command(
        self, service: str, route: str, path: str, body: Any, headers: dict[str, str], case: str
    ) -> dict[str, Any] | None:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        deadline = time.monotonic() + self.give_up
        method = "PUT" if route.endswith("case-manager") else "POST"
        while True:
            sent = {**headers, **key}
            if self.positions:
                sent[HEADER] = render(self.positions)
            started = time.perf_counter()
            try:
                r = self.http.request(method, self.urls[service] + path, json=body, headers=sent)
            except httpx.TransportError as exc:
                with self.outcomes.lock:
                    self.outcomes.passing[f"{route}: {type(exc).__name__}"] += 1
            else:
                took = time.perf_counter() - started
                with self.outcomes.lock:
                    self.outcomes.latencies[route].append(took)
                if r.is_success:
                    value = r.headers.get(HEADER)
                    if value:
                        self.positions = merged(self.positions, parse([value]))
                    result: dict[str, Any] = r.json()
                    with self.outcomes.lock:
                        self.outcomes.acknowledged.append(Acknowledged(route, case, result))
                    return result
                with self.outcomes.lock:
                    if r.status_code in PASSING:
                        self.outcomes.passing[f"{route}: {r.status_code}"] += 1
                    else:
                        self.outcomes.refused[f"{route}: {r.status_code} {r.text[:200]}"] += 1
                        return None
            if time.monotonic() > deadline:
                with self.outcomes.lock:
                    self.outcomes.abandoned.append(route)
                return None
            time.sleep(0.05)

    def sequence(self, n: int) -> bool:
        """A case from reception to a completed referral; False when a step failed."""
        t = self.tokens
        created = self.command(
            "intake", "POST /intake/cases", "/intake/cases", RECEPTION, t.officer, ""
        )
        if created is None:
            return False
        case = str(created["case_id"])
        steps: list[tuple[str, str, str, Any, dict[str, str]]] = [
            (
                "intake",
                "POST /intake/cases/{id}/person",
                f"/intake/cases/{case}/person",
                PERSON,
                t.officer,
            ),
            (
                "intake",
                "PUT /intake/cases/{id}/case-manager",
                f"/intake/cases/{case}/case-manager",
                {"case_manager_id": f"{SENDER}-1", "agency": SENDER},
                t.coordinator,
            ),
            (
                "consent",
                "POST /consent/cases/{id}/grants",
                f"/consent/cases/{case}/grants",
                GRANT,
                t.manager,
            ),
        ]
        for service, route, path, body, headers in steps:
            if self.command(service, route, path, body, headers, case) is None:
                return False
        recipient = RECIPIENTS[n % len(RECIPIENTS)]
        referral = self.command(
            "referral",
            "POST /referral/cases/{id}/referrals",
            f"/referral/cases/{case}/referrals",
            {"to_agency": recipient, "service_type": "medical_care", "categories": ["identity"]},
            t.manager,
            case,
        )
        if referral is None:
            return False
        if referral["blocked_by"]:
            with self.outcomes.lock:
                self.outcomes.refused["referral blocked by a consent just granted"] += 1
            return False
        referral_id = referral["referral_id"]
        for answer in ANSWERS:
            body = {"outcome": "Seen and treated."} if answer == "complete" else {}
            done = self.command(
                "referral",
                f"POST /referral/referrals/{{id}}/{answer}",
                f"/referral/referrals/{referral_id}/{answer}",
                body,
                t.staff[recipient],
                case,
            )
            if done is None:
                return False
        return True


def run_clients(
    count: int, urls: dict[str, str], tokens: Tokens, outcomes: Outcomes, stop: threading.Event
) -> list[threading.Thread]:
    """``count`` clients sending sequences until ``stop``; their threads, started."""

    def work(first: int) -> None:
        client = Client(urls, tokens, outcomes)
        try:
            n = first
            while not stop.is_set():
                client.sequence(n)
                n += count
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def report(outcomes: Outcomes, title: str) -> str:
    lines = [title]
    for route in sorted(outcomes.latencies):
        values = sorted(outcomes.latencies[route])
        p50 = values[len(values) // 2] * 1000
        lines.append(
            f"  {route}: {len(values)} answers, p50 {p50:.0f} ms, p99 {p99(values) * 1000:.0f} ms"
        )
    lines.append(f"  asked again (restarts): {dict(outcomes.passing)}")
    lines.append(f"  refused: {dict(outcomes.refused)}; abandoned: {outcomes.abandoned}")
    return "\n".join(lines)


def wait_until(what: str, probe: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
