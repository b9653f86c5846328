"""The coordinator's board of a province with more open cases than a page, in Chromium, in
Vietnamese and English: the province's totals above the page, and the next page reached by
its link, without a case shown twice."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from contracts.envelope import Actor
from contracts.intake import Place
from contracts.vocabulary import ArrivalRoute, Role
from services.cli.demo import DT_POLICE
from services.runtime.aggregate import CommandContext
from services.web.board import ROWS
from tests.browser.conftest import Site, open_page, screenshot, sign_in
from tests.browser.test_web import LOCALES, assert_translated

pytestmark = pytest.mark.postgres

TOTALS = {"vi": "Số ca đang mở của tỉnh: {n}", "en": "Open cases in the province: {n}"}
NEXT = {"vi": "Trang sau", "en": "Next page"}
FIRST = {"vi": "Trang đầu", "en": "First page"}


@pytest.fixture(scope="module")
def crowded(site: Site) -> Site:
    """Dong Thap with more open cases than a page of the board: receptions of the last
    days added to the demo's."""
    officer = Actor(
        user_id="dt-police-officer-1", agency_id=DT_POLICE.agency_id, role=Role.INTAKE_OFFICER
    )
    now = datetime.now(UTC)
    for hours in range(ROWS + 5):
        site.platform.intake.record_reception(
            CommandContext(actor=officer),
            route=ArrivalRoute.RESCUED,
            received_at=now - timedelta(hours=hours + 1),
            place=Place(province="dong-thap"),
            receiving_agency=DT_POLICE,
        )
    site.platform.catch_up()
    return site


@pytest.mark.parametrize("locale", LOCALES)
def test_the_board_shows_the_province_totals_and_reaches_the_next_page(
    crowded: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    projections = crowded.platform.projections
    assert projections is not None
    whole = projections.board("dong-thap", 500)
    assert ROWS < whole["open"] <= 2 * ROWS
    page = open_page(browser, contexts, locale)
    sign_in(page, crowded, "dong-thap-coordinator")
    expect(page).to_have_url(re.compile(r"/board$"))
    expect(page.locator("#totals-h")).to_have_text(TOTALS[locale].format(n=whole["open"]))
    breached = str(whole["attention"]["deadlines_breached"])
    expect(page.locator(".totals li").first).to_contain_text(breached)
    cards = page.locator("#board section.card")
    expect(cards).to_have_count(ROWS)
    first = [c.get_attribute("aria-labelledby") for c in cards.all()]
    assert_translated(page, locale)
    screenshot(page, f"board-page-1-{locale}")

    page.get_by_role("link", name=NEXT[locale]).click()
    expect(page).to_have_url(re.compile(r"/board\?after="))
    expect(cards).to_have_count(whole["open"] - ROWS)
    second = [c.get_attribute("aria-labelledby") for c in cards.all()]
    shown = first + second
    assert sorted(shown) == sorted(f"case-{row['case_id']}" for row in whole["rows"])
    assert shown == [f"case-{row['case_id']}" for row in whole["rows"]]  # in the board's order
    expect(page.locator("#totals-h")).to_have_text(TOTALS[locale].format(n=whole["open"]))
    expect(page.get_by_role("link", name=NEXT[locale])).to_have_count(0)
    assert_translated(page, locale)
    screenshot(page, f"board-page-2-{locale}")

    page.get_by_role("link", name=FIRST[locale]).click()
    expect(page).to_have_url(re.compile(r"/board$"))
    expect(cards).to_have_count(ROWS)
