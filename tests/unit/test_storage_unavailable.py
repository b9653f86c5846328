"""A database that went away (a restart, a failover) is answered 503 with Retry-After."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import APIRouter
from fastapi.testclient import TestClient

from services.runtime.auth import TokenService
from services.runtime.http import create_app
from services.runtime.settings import Settings


@pytest.mark.parametrize(
    "error",
    [
        StoreOperationalError("consuming input failed: server closed the connection"),
        psycopg.OperationalError("the connection is lost"),
    ],
)
def test_a_database_gone_away_is_a_503_problem_not_a_500(error: Exception, tmp_path: Path) -> None:
    router = APIRouter()

    @router.post("/commands")
    def command() -> None:
        raise error

    settings = Settings(database_url=None, data_dir=tmp_path)
    client = TestClient(create_app(title="t", routers=[router], tokens=TokenService(settings)))
    response = client.post("/commands")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    assert "try again" in response.json()["detail"]
    assert "server closed" not in response.text  # the database's words stay in the logs
