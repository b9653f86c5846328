"""The seal end to end: a platform's logs verified by ``ketnoi verify`` and by the auditors'
API on PostgreSQL, a hand edit named by the command, inclusion and consistency proofs printed
and checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from psycopg import sql
from typer.testing import CliRunner

from contracts.envelope import event_id_of
from contracts.vocabulary import AgencyKind, Role
from services.cli import app as cli
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.seal.keys import seal_signer
from services.runtime.seal.note import Signer
from services.runtime.seal.proof import check_consistency
from services.runtime.settings import Settings
from tests.integration.test_projections import dong_thap_night
from tests.support.agencies import register_agencies
from tests.support.processes import settings_env

pytestmark = pytest.mark.postgres


@pytest.fixture
def platform(pg_settings: Settings) -> Iterator[Platform]:
    migrate(pg_settings)
    running = start(pg_settings, run_followers=False)
    register_agencies(running)
    dong_thap_night(running)
    running.catch_up()
    yield running
    running.close()


def test_ketnoi_verify_passes_then_names_a_hand_edit(
    platform: Platform, pg_settings: Settings, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = settings_env(pg_settings, log_format=None)
    assert runner.invoke(cli, ["seal", "checkpoint"], env=env).exit_code == 0
    key = seal_signer(pg_settings).verifier.vkey()
    ok = runner.invoke(cli, ["verify", "--key", key], env=env)
    assert ok.exit_code == 0, ok.output
    for log in ("directory", "intake", "consent", "referral"):
        assert f"{log}: ok" in ok.output

    # A proof of the reception, checked by the pure checker through the command.
    with psycopg.connect(pg_settings.database_url or "") as conn:
        schema = sql.Identifier(pg_settings.schema_for("intake"))
        originator, version = conn.execute(
            sql.SQL(
                "SELECT originator_id, originator_version FROM {}.intake_events "
                "ORDER BY notification_id LIMIT 1"
            ).format(schema)
        ).fetchone() or (None, None)
    proved = runner.invoke(cli, ["prove", str(event_id_of(originator, version))], env=env)
    assert proved.exit_code == 0, proved.output
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(proved.stdout)
    assert json.loads(proved.stdout)["log"] == "intake"
    checked = runner.invoke(cli, ["seal", "check-proof", str(proof_file), "--key", key])
    assert checked.exit_code == 0, checked.output

    # The log grows and is signed again: the new checkpoint extends the published one.
    with psycopg.connect(pg_settings.database_url or "") as conn:
        (published,) = conn.execute(
            sql.SQL("SELECT max(size) FROM {}.intake_events_checkpoints").format(schema)
        ).fetchone() or (None,)
    dong_thap_night(platform)
    assert runner.invoke(cli, ["seal", "checkpoint"], env=env).exit_code == 0
    extended = runner.invoke(cli, ["seal", "consistency", "intake", str(published)], env=env)
    assert extended.exit_code == 0, extended.output
    assert json.loads(extended.stdout)["consistency_path"]
    consistency_file = tmp_path / "consistency.json"
    consistency_file.write_text(extended.stdout)
    checked = runner.invoke(cli, ["seal", "check-consistency", str(consistency_file), "--key", key])
    assert checked.exit_code == 0, checked.output
    assert f"extends the one of size {published}" in " ".join(checked.output.split())
    other = Signer("other", Ed25519PrivateKey.generate()).verifier.vkey()
    refused = runner.invoke(
        cli, ["seal", "check-consistency", str(consistency_file), "--key", other]
    )
    assert refused.exit_code == 1

    # Someone edits the intake log by hand: the command fails and names the row.
    with psycopg.connect(pg_settings.database_url or "") as conn:
        position = conn.execute(
            sql.SQL(
                "UPDATE {}.intake_events SET state = convert_to(replace(convert_from("
                "state, 'UTF8'), 'dong-thap', 'lao-cai'), 'UTF8') WHERE notification_id = "
                "(SELECT min(notification_id) FROM {}.intake_events) RETURNING notification_id"
            ).format(schema, schema)
        ).fetchone()
    assert position is not None
    failed = runner.invoke(cli, ["verify", "--key", key], env=env)
    assert failed.exit_code == 1
    assert f"log intake: edited at position {position[0]}" in " ".join(failed.output.split())


def test_auditors_see_checkpoints_and_verification_on_the_api(
    platform: Platform, pg_settings: Settings
) -> None:
    tokens = TokenService(pg_settings)
    platform.checkpoint()

    def as_(role: Role, agency: str, province: str) -> dict[str, str]:
        token = tokens.issue(
            user_id=f"{role.value}-1",
            agency_id=agency,
            province=province,
            roles=[role],
            agency_kind=AgencyKind.LOCAL_AUTHORITY,
        )
        return {"Authorization": f"Bearer {token}"}

    auditor = as_(Role.AUDITOR, "national-inspectorate", "*")
    with TestClient(http_app(platform, tokens)) as client:
        checkpoints = client.get("/seal/checkpoints", headers=auditor)
        assert checkpoints.status_code == 200, checkpoints.text
        by_log = {c["log"]: c for c in checkpoints.json()}
        assert by_log["intake"]["size"] > 0
        assert by_log["intake"]["checkpoint"].startswith(
            f"{pg_settings.seal_origin}/intake\n{by_log['intake']['size']}\n"
        )
        first = by_log["intake"]["size"]
        dong_thap_night(platform)
        platform.checkpoint()
        extended = client.get(f"/seal/consistency/intake?old={first}", headers=auditor)
        assert extended.status_code == 200, extended.text
        keys = [seal_signer(pg_settings).verifier]
        old, new = check_consistency(extended.json(), keys)
        assert old == first < new
        missing = client.get(f"/seal/consistency/intake?old={new + 1}", headers=auditor)
        assert missing.status_code == 404
        verified = client.post("/seal/verify", headers=auditor)
        assert verified.status_code == 200, verified.text
        assert all(log["ok"] for log in verified.json())
        coordinator = as_(Role.COORDINATOR, "dt-dolisa", "dong-thap")
        assert client.get("/seal/checkpoints", headers=coordinator).status_code == 403
        assert client.post("/seal/verify", headers=coordinator).status_code == 403
