"""The web app in a real browser: Debian's Chromium driven by Playwright, against the real
platform on PostgreSQL with the demo's scenarios seeded, served by uvicorn on a loopback
port. One platform and one browser per module keep the run short; each test has its own
browser context (its own cookies and language)."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from services.cli.demo import SeededCase, demo_users, seed
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.conftest import drop_schemas, missing_service
from tests.support.processes import free_port

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".screenshots"


@dataclass
class Site:
    base: str
    platform: Platform
    cases: list[SeededCase]

    def case(self, key: str) -> SeededCase:
        return next(c for c in self.cases if c.key == key)


@pytest.fixture(scope="module")
def site(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    prefix = f"w{uuid.uuid4().hex[:10]}_"
    settings = Settings(
        database_url=pg_url,
        schema_prefix=prefix,
        data_dir=tmp_path_factory.mktemp("web") / "data",
        pg_pool_size=2,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings)
    platform = start(settings, poll_interval=0.2)
    try:
        cases = seed(platform, settings.data_dir)
        platform.catch_up()
        app = http_app(platform, TokenService(settings), demo_users=demo_users())
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="web-test-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the web test server did not start"
            time.sleep(0.05)
        try:
            yield Site(f"http://127.0.0.1:{port}", platform, cases)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    finally:
        platform.close()
        drop_schemas(pg_url, prefix)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        missing_service(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM)


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def open_page(
    browser: Browser,
    contexts: list[BrowserContext],
    locale: str,
    *,
    width: int = 1280,
    height: int = 900,
) -> Page:
    """A page of a fresh context whose browser asks for ``locale`` first."""
    language = {"vi": "vi-VN", "en": "en-GB"}[locale]
    context = browser.new_context(
        locale=language, viewport={"width": width, "height": height}, java_script_enabled=True
    )
    context.set_default_timeout(15_000)
    contexts.append(context)
    return context.new_page()


def sign_in(page: Page, site: Site, user_id: str) -> None:
    page.goto(f"{site.base}/signin")
    page.locator(f'button[name="user_id"][value="{user_id}"]').click()
    # Signed in once the answer has left the sign-in page: a page opened before that would
    # race the sign-in's own request (and find no session).
    page.wait_for_url(lambda url: "/signin" not in url)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
