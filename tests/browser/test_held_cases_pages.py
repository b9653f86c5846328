"""The cases an agency holds, a completed case transfer's new manager, and the case file's
section menu, in the browser in Vietnamese and English: the Nghe An social work centre's own
staff find their case on /cases; a case moved by a case transfer is listed by the agency it
moved to, whose handover page names the case manager taking over; the menu of the case file
keeps to one row at 1280 px and to a grid of two tabs a row at 360 px."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from contracts.envelope import Actor
from contracts.intake import PersonDetails, Place
from contracts.referral import HandoverKind, PartyRole
from contracts.vocabulary import ArrivalRoute, Role, Sex
from services.cli.demo import LC_SWC, agency
from services.cli.demo_directory import DEMO_AGENCIES
from services.referral.application import NamedParty
from services.runtime.aggregate import CommandContext
from tests.browser.conftest import Site, open_page, screenshot, sign_in
from tests.browser.test_web import LOCALES, assert_translated

pytestmark = pytest.mark.postgres

NA_SWC = agency("nghe-an-social-work-centre")
NA_POLICE = agency("nghe-an-police")
WORDS = {
    "vi": {"held": "Các ca cơ quan bạn đang phụ trách"},
    "en": {"held": "Cases your agency holds"},
}


def reads_by(site: Site, case_id: UUID, user_id: str) -> list[str]:
    audit = site.platform.read_audit
    assert audit is not None
    return [r.what for r in audit.reads_of_case(case_id) if r.actor.user_id == user_id]


@pytest.mark.parametrize("locale", LOCALES)
def test_an_agencys_staff_find_the_cases_it_holds(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    """The Nghe An case is held by the centre whose case manager works it: the case manager
    and the supervisor find it among the cases their agency holds, with the person's name
    (a read of her record, recorded)."""
    nghe_an = site.case("nghe-an-1").case_id
    for user in ("na-swc-caseworker-1", "na-swc-supervisor-1"):
        page = open_page(browser, contexts, locale)
        sign_in(page, site, user)
        page.goto(f"{site.base}/cases")
        held = page.locator("#held")
        expect(held.locator("h2")).to_have_text(WORDS[locale]["held"])
        expect(held.locator(f'a[href="/cases/{nghe_an}"]')).to_have_text("Vi Thị Hoa")
        assert_translated(page, locale)
        assert "intake.case" in reads_by(site, nghe_an, user)
        held.locator(f'a[href="/cases/{nghe_an}"]').click()
        expect(page).to_have_url(f"{site.base}/cases/{nghe_an}")
    screenshot(page, f"cases-held-{locale}")
    # An agency that does not hold it does not list it as held (nor learn its name).
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "lc-swc-caseworker-1")
    page.goto(f"{site.base}/cases")
    expect(page.locator(f'#held a[href="/cases/{nghe_an}"]')).to_have_count(0)
    assert "Vi Thị Hoa" not in page.inner_text("body")
    assert_translated(page, locale)


def transferred_case(site: Site, name: str) -> tuple[UUID, UUID]:
    """A Nghe An case its centre hands over to the Lao Cai centre by a case transfer (the
    person goes home), naming Lao Cai's case manager; every party confirms. The case, and the
    handover."""
    platform, now = site.platform, datetime.now(UTC)
    officer = Actor(
        user_id="na-police-officer-1", agency_id=NA_POLICE.agency_id, role=Role.INTAKE_OFFICER
    )
    manager = Actor(
        user_id="na-swc-caseworker-1", agency_id=NA_SWC.agency_id, role=Role.CASE_MANAGER
    )
    received = platform.intake.record_reception(
        CommandContext(actor=officer),
        route=ArrivalRoute.RETURNED_FROM_ABROAD,
        received_at=now - timedelta(days=3),
        place=Place(province="nghe-an"),
        receiving_agency=NA_POLICE,
        returned_from_country="CN",
    )
    case_id = UUID(received["case_id"])
    platform.intake.register_person(
        CommandContext(actor=officer),
        case_id,
        PersonDetails(full_name=name, sex=Sex.FEMALE, estimated_age=24),
    )
    platform.intake.assign_case_manager(
        CommandContext(actor=manager), case_id, "na-swc-caseworker-1", NA_SWC
    )
    platform.catch_up()
    started = platform.referral.start_handover(
        CommandContext(actor=manager),
        case_id,
        kind=HandoverKind.CASE_TRANSFER,
        parties=(
            NamedParty(NA_SWC.agency_id, PartyRole.FROM, "case manager"),
            NamedParty(LC_SWC.agency_id, PartyRole.TO, "case manager"),
        ),
        to_case_manager_id="lc-swc-caseworker-1",
    )
    handover_id = UUID(started["handover_id"])
    platform.catch_up()
    return case_id, handover_id


def confirm(site: Site, handover_id: UUID, of: str, user_id: str) -> None:
    actor = Actor(user_id=user_id, agency_id=of, role=Role.CASE_MANAGER)
    site.platform.referral.confirm_handover(CommandContext(actor=actor), handover_id, of)
    site.platform.catch_up()


def new_manager(page: Page) -> str | None:
    found = page.locator("#new-manager")
    return found.inner_text() if found.count() else None


@pytest.mark.parametrize("locale", LOCALES)
def test_a_completed_case_transfer_names_its_new_case_manager(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    name = f"Lò Thị Mai {locale.upper()}"
    case_id, handover_id = transferred_case(site, name)
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "lc-swc-caseworker-1")
    confirm(site, handover_id, NA_SWC.agency_id, "na-swc-caseworker-1")
    page.goto(f"{site.base}/handovers/{handover_id}")
    assert new_manager(page) is None  # not before every party has confirmed
    expect(page.locator(f'#held a[href="/cases/{case_id}"]')).to_have_count(0)

    confirm(site, handover_id, LC_SWC.agency_id, "lc-swc-caseworker-1")
    page.goto(f"{site.base}/handovers/{handover_id}")
    centre = DEMO_AGENCIES[LC_SWC.agency_id]
    centre_name = centre.name_vi if locale == "vi" else centre.name_en
    told = new_manager(page)
    assert told is not None
    assert "lc-swc-caseworker-1" in told
    assert centre_name in told
    assert LC_SWC.agency_id not in told  # the agency by its name, not its id
    assert_translated(page, locale)
    screenshot(page, f"handover-transfer-{locale}")

    # The case moved: the Lao Cai centre holds it now, and the Nghe An centre no longer.
    page.goto(f"{site.base}/cases")
    expect(page.locator(f'#held a[href="/cases/{case_id}"]')).to_have_text(name)
    before = open_page(browser, contexts, locale)
    sign_in(before, site, "na-swc-caseworker-1")
    before.goto(f"{site.base}/cases")
    expect(before.locator(f'#held a[href="/cases/{case_id}"]')).to_have_count(0)


def menu_rows(page: Page) -> tuple[int, float, list[float], float]:
    """The case file's section menu as laid out: its rows, its height, each tab's height, and
    how far the page overflows the window sideways."""
    found = page.evaluate(
        """() => {
            const nav = document.querySelector('nav.casenav');
            const tabs = [...nav.querySelectorAll('a')].map(a => a.getBoundingClientRect());
            return {
                tops: tabs.map(r => Math.round(r.top)),
                heights: tabs.map(r => r.height),
                height: nav.getBoundingClientRect().height,
                overflow: document.documentElement.scrollWidth - window.innerWidth,
            };
        }"""
    )
    return len(set(found["tops"])), found["height"], found["heights"], found["overflow"]


@pytest.mark.parametrize("locale", LOCALES)
def test_the_case_file_menu_keeps_to_one_row_at_1280_and_a_grid_at_360(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    nghe_an = site.case("nghe-an-1").case_id
    wide = open_page(browser, contexts, locale, width=1280)
    sign_in(wide, site, "na-swc-caseworker-1")
    for section in ("", "/overview", "/plan"):
        wide.goto(f"{site.base}/cases/{nghe_an}{section}")
        rows, height, heights, overflow = menu_rows(wide)
        assert rows == 1, (section, rows)
        # Every label on one line: each tab is as tall as a one-line tab (2.75rem, 44 px).
        assert max(heights) <= 45, heights
        assert height <= 45, height
        assert overflow <= 0
    screenshot(wide, f"casenav-1280-{locale}")

    narrow = open_page(browser, contexts, locale, width=360, height=740)
    sign_in(narrow, site, "na-swc-caseworker-1")
    narrow.goto(f"{site.base}/cases/{nghe_an}")
    rows, height, heights, overflow = menu_rows(narrow)
    assert rows == 3  # six tabs, two a row
    assert overflow <= 0  # nothing sticks out sideways
    assert max(heights) <= 70, heights  # a long label on two lines at most
    # The tabs still lead to their sections.
    narrow.locator('nav.casenav a[href$="/plan"]').click()
    expect(narrow).to_have_url(f"{site.base}/cases/{nghe_an}/plan")
    expect(narrow.locator('nav.casenav a[aria-current="page"]')).to_have_attribute(
        "href", f"/cases/{nghe_an}/plan"
    )
    assert_translated(narrow, locale)
    screenshot(narrow, f"casenav-360-{locale}")
