"""The people's journeys through the web app, in Vietnamese and English, in Chromium."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from babel.messages.pofile import read_po
from playwright.sync_api import Browser, BrowserContext, Page, expect

from contracts.envelope import Actor
from contracts.erasure import ErasureReason
from contracts.intake import PersonDetails, Place
from contracts.vocabulary import ArrivalRoute, Role, Sex
from services.cli.demo import LC_SWC
from services.runtime.aggregate import CommandContext
from tests.browser.conftest import Site, open_page, screenshot, sign_in

pytestmark = pytest.mark.postgres

LOCALES = ["vi", "en"]
CATALOGUE = Path(__file__).resolve().parents[2] / "services/web/locale/vi/LC_MESSAGES/messages.po"
WORDS = {
    "vi": {
        "board": "Bảng theo dõi của tỉnh",
        "case": "Hồ sơ ca",
        "withheld": "Không hiển thị cho bạn",
        "minutes": "Biên bản bàn giao",
        "health_check": "Khám sức khỏe",
        "nothing": "Không có gì ở đây cho bạn",
        "erased": "Dữ liệu của người này đã bị xóa",
        "confirmed": "Cơ quan của bạn đã xác nhận.",
        "demo": "Bản trình diễn",
    },
    "en": {
        "board": "Province board",
        "case": "Case file",
        "withheld": "Not shown to you",
        "minutes": "Handover minutes",
        "health_check": "Health check",
        "nothing": "There is nothing here for you",
        "erased": "This person's data was erased",
        "confirmed": "Your agency has confirmed.",
        "demo": "Demo",
    },
}
NAMES = ("Lê Thị Mai", "Phạm Thị Lan", "N.T.M.")


def english_lines() -> set[str]:
    """Every English string of the catalogue whose Vietnamese differs, without placeholders:
    a Vietnamese page showing one of them on a line of its own shows an untranslated
    string."""
    with CATALOGUE.open("rb") as f:
        catalogue = read_po(f)
    return {
        str(m.id)
        for m in catalogue
        if m.id and "%(" not in str(m.id) and m.string and m.string != m.id
    }


ENGLISH = english_lines()


def assert_translated(page: Page, locale: str) -> None:
    assert page.locator("html").get_attribute("lang") == locale
    if locale == "vi":
        lines = {line.strip() for line in page.inner_text("body").splitlines()}
        untranslated = sorted(lines & ENGLISH)
        assert not untranslated, f"untranslated on {page.url}: {untranslated}"


@pytest.mark.parametrize("locale", LOCALES)
def test_the_coordinator_follows_the_night_reception(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    """Sign in as the Dong Thap coordinator; board -> case -> handover -> referrals."""
    words = WORDS[locale]
    page = open_page(browser, contexts, locale)
    page.goto(site.base + "/")
    expect(page).to_have_url(re.compile(r"/signin$"))
    expect(page.locator(".demo")).to_contain_text(words["demo"])
    assert_translated(page, locale)
    screenshot(page, f"signin-{locale}")

    sign_in(page, site, "dong-thap-coordinator")
    expect(page).to_have_url(re.compile(r"/board$"))
    expect(page.locator("h1")).to_contain_text(words["board"])
    night = site.case("dong-thap-1")
    expect(page.locator(f'a[href="/cases/{night.case_id}"]')).to_be_visible()
    assert_translated(page, locale)
    screenshot(page, f"board-{locale}")

    page.locator(f'a[href="/cases/{night.case_id}"]').click()
    expect(page.locator("h1")).to_have_text(words["case"])
    # A coordinator sees the case's progress, never the person's details.
    expect(page.locator("#person-h + p.withheld")).to_contain_text(words["withheld"])
    body = page.inner_text("body")
    assert not any(name in body for name in NAMES)
    expect(page.locator("#referrals-h ~ table")).to_contain_text(words["health_check"])
    assert_translated(page, locale)
    screenshot(page, f"case-coordinator-{locale}")

    page.locator('a[href^="/handovers/"]').first.click()
    expect(page.locator("h1")).to_have_text(words["minutes"])
    expect(page.locator("tbody tr")).to_have_count(3)
    assert_translated(page, locale)
    page.go_back()
    page.locator('a[href^="/referrals/"]').first.click()
    expect(page.locator("h1")).to_contain_text(words["health_check"])
    assert not any(name in page.inner_text("body") for name in NAMES)
    assert_translated(page, locale)


def test_the_language_is_switched_on_any_page_and_kept(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = open_page(browser, contexts, "en")
    sign_in(page, site, "dt-swc-caseworker-1")
    expect(page.locator("h1")).to_have_text("Cases")
    page.get_by_role("button", name="Tiếng Việt").click()
    expect(page.locator("h1")).to_have_text("Các ca")
    page.goto(f"{site.base}/cases/{site.case('dong-thap-1').case_id}")
    expect(page.locator("h1")).to_have_text("Hồ sơ ca")
    # The case manager's own case: the person, and how she wants to be contacted, first.
    expect(page.locator(".contact")).to_contain_text("Gặp ở thị trấn gần đó")
    expect(page.locator(".contact .refused")).to_contain_text("Thăm tại nhà")
    expect(page.locator("#person-h ~ dl")).to_contain_text("Lê Thị Mai")
    # Dates as each language writes them.
    expect(page.locator("#person-h ~ dl")).to_contain_text("14 thg 3, 2002")
    assert_translated(page, "vi")
    screenshot(page, "case-manager-vi")
    page.get_by_role("button", name="English").click()
    expect(page.locator("h1")).to_have_text("Case file")
    expect(page.locator("#person-h ~ dl")).to_contain_text("Mar 14, 2002")


@pytest.mark.parametrize("locale", LOCALES)
def test_a_case_url_of_another_province_typed_by_hand_is_refused(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "lc-swc-caseworker-1")
    for path in (
        f"/cases/{site.case('dong-thap-2').case_id}",
        f"/cases/{UUID(int=7)}",  # one that does not exist: the same answer
    ):
        response = page.goto(site.base + path)
        assert response is not None
        assert response.status == 404
        expect(page.locator("main")).to_contain_text(WORDS[locale]["nothing"])
        body = page.content()
        assert not any(name in body for name in NAMES)
        assert "Cambodia" not in body
        assert "Hồng Ngự" not in body
        assert_translated(page, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_an_erased_person_s_case_says_so_and_shows_nothing_of_them(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    name = f"Erased Person {locale}"
    holder = Actor(
        user_id="lc-swc-caseworker-1", agency_id=LC_SWC.agency_id, role=Role.CASE_MANAGER
    )
    intake = site.platform.intake
    case_id = UUID(
        str(
            intake.record_reception(
                CommandContext(actor=holder),
                route=ArrivalRoute.SELF_REFERRAL,
                received_at=datetime.now(UTC) - timedelta(hours=1),
                place=Place(province="lao-cai", location="A distinctive hamlet"),
                receiving_agency=LC_SWC,
            )["case_id"]
        )
    )
    intake.register_person(
        CommandContext(actor=holder),
        case_id,
        PersonDetails(full_name=name, sex=Sex.FEMALE, estimated_age=30),
    )
    intake.request_erasure(CommandContext(actor=holder), case_id, ErasureReason.PERSON_REQUEST)
    supervisor = Actor(
        user_id="lc-swc-supervisor-9", agency_id=LC_SWC.agency_id, role=Role.SUPERVISOR
    )
    intake.approve_erasure(CommandContext(actor=supervisor), case_id)
    site.platform.catch_up()

    page = open_page(browser, contexts, locale)
    sign_in(page, site, "lc-swc-caseworker-1")
    response = page.goto(f"{site.base}/cases/{case_id}")
    assert response is not None
    assert response.status == 410
    expect(page.locator("main")).to_contain_text(WORDS[locale]["erased"])
    body = page.content()
    assert name not in body
    assert "A distinctive hamlet" not in body
    assert_translated(page, locale)
    screenshot(page, f"erased-{locale}")


def _board_cases(site: Site) -> int:
    assert site.platform.projections is not None
    return int(site.platform.projections.board("dong-thap")["open"])


def test_a_reception_sent_twice_from_a_phone_is_recorded_once_and_the_board_shows_it(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    board = open_page(browser, contexts, "vi")
    sign_in(board, site, "dong-thap-coordinator")
    cards = board.locator("#board section.card")
    before = cards.count()
    assert before == _board_cases(site)

    phone = open_page(browser, contexts, "vi", width=360, height=740)
    sign_in(phone, site, "dt-police-officer-1")
    expect(phone).to_have_url(re.compile(r"/reception$"))
    assert_translated(phone, "vi")
    # Nothing wider than the phone's screen.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    phone.get_by_label("Được giải cứu").check()
    phone.get_by_label("Họ tên, hoặc tên người được hỗ trợ muốn được gọi").fill("Trần Thị Hoa")
    phone.get_by_label("Hoặc tuổi ước tính").fill("24")
    phone.get_by_label("Chỗ ở đêm nay").check()
    phone.get_by_label("Khám sức khỏe").check()
    phone.get_by_label("Gọi điện thoại").first.check()
    screenshot(phone, "reception-phone-vi")
    # A double tap on a weak connection: the same form sent twice.
    landed = phone.evaluate(
        """async () => {
            const form = document.querySelector('form[action="/reception"]');
            const send = () => fetch(form.action, {method: 'POST', body: new FormData(form)});
            const answers = await Promise.all([send(), send()]);
            return answers.map(a => [a.status, a.url]);
        }"""
    )
    (status_1, url_1), (status_2, url_2) = landed
    assert status_1 == status_2 == 200
    assert url_1 == url_2
    assert re.search(r"/cases/[0-9a-f-]{36}$", url_1)
    site.platform.catch_up()
    assert _board_cases(site) == before + 1

    phone.goto(url_1)
    expect(phone.locator("#person-h ~ dl")).to_contain_text("Trần Thị Hoa")
    # The coordinator's open board shows the new case by itself.
    expect(cards).to_have_count(before + 1, timeout=20_000)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_last_party_confirms_the_border_handover_on_its_own_screen(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    referral = site.platform.referral
    referral.index.refresh()
    onward = [
        h for h in referral.index.handovers.values() if "lao-cai-commune-office" in h.party_ids
    ]
    assert len(onward) == 1, "the Lao Cai onward handover waits for the commune office"
    handover_id = onward[0].handover_id
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "lao-cai-commune-office-staff-1")
    page.goto(f"{site.base}/handovers/{handover_id}")
    expect(page.locator("h1")).to_have_text(WORDS[locale]["minutes"])
    assert_translated(page, locale)
    if onward[0].status == "open":
        screenshot(page, f"handover-{locale}")
        page.locator('form[action$="/confirm"] button').click()
        expect(page.locator(".ok")).to_have_text(WORDS[locale]["confirmed"])
        expect(page.locator("tbody")).not_to_contain_text("chưa")
    page.goto(f"{site.base}/handovers/{handover_id}?print=1")
    expect(page.locator("th", has_text={"vi": "Chữ ký", "en": "Signature"}[locale])).to_be_visible()


@pytest.mark.parametrize("locale", LOCALES)
def test_the_school_answers_its_referral_from_its_inbox(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "lao-cai-bat-xat-secondary-school-staff-1")
    expect(page).to_have_url(re.compile(r"/inbox$"))
    assert_translated(page, locale)
    page.locator('a[href^="/referrals/"]').first.click()
    assert_translated(page, locale)
    if locale == "en":
        # The English run looks only; the Vietnamese run answers.
        expect(page.locator("main")).to_contain_text("Education")
        return
    status = page.locator("h1 + p strong")
    for action, shown in (
        ("acknowledge", "Đã xác nhận nhận"),
        ("accept", "Đã chấp nhận"),
        ("start", "Đang thực hiện"),
    ):
        page.locator(f'form[action$="/{action}"] button').click()
        expect(status).to_have_text(shown)
    page.locator('form[action$="/complete"] input[name="text"]').fill("Đã trở lại lớp 9.")
    page.locator('form[action$="/complete"] button').click()
    expect(status).to_have_text("Đã hoàn thành")
    screenshot(page, "referral-school-vi")


def test_a_withdrawal_is_in_force_on_the_recipients_next_request(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    hospital = open_page(browser, contexts, "vi")
    sign_in(hospital, site, "dong-thap-general-hospital-staff-1")
    hospital.locator('a[href^="/referrals/"]').first.click()
    referral_url = hospital.url
    released = hospital.locator("#data-h ~ dl")
    names = [n for n in NAMES[:2] if n in released.inner_text()]
    assert len(names) == 1

    manager = open_page(browser, contexts, "vi")
    sign_in(manager, site, "dt-swc-caseworker-1")
    key = "dong-thap-1" if names[0] == NAMES[0] else "dong-thap-2"
    manager.goto(f"{site.base}/cases/{site.case(key).case_id}")
    manager.locator('form[action*="/withdraw"] button').first.click()
    expect(manager.locator("#consent")).to_contain_text("Đã rút lại")

    hospital.goto(referral_url)
    expect(hospital.locator("main")).to_contain_text(
        "Sự đồng ý đang có hiệu lực không cho phép bạn xem thông tin"
    )
    assert names[0] not in hospital.content()


def test_the_api_documentation_renders_without_internet(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = open_page(browser, contexts, "en")
    outside: list[str] = []

    def only_this_site(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(site.base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_site)
    page.goto(f"{site.base}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Ketnoi", timeout=30_000)
    expect(page.locator(".opblock-tag", has_text="referral")).to_be_visible()
    page.goto(f"{site.base}/redoc")
    expect(page.locator("h1", has_text="Ketnoi")).to_be_visible(timeout=30_000)
    assert outside == []


SERIOUS = {"serious", "critical"}


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page, as 'rule: target' lines."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [
        f"{v['id']}: {node['target']}"
        for v in found
        if v["impact"] in SERIOUS
        for node in v["nodes"]
    ]


@pytest.mark.parametrize("locale", LOCALES)
def test_no_page_has_a_serious_accessibility_violation(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    lao_cai = site.case("lao-cai-1").case_id
    visits = {
        "dong-thap-coordinator": ["/signin", "/board", "/statistics", f"/cases/{lao_cai}"],
        # The case file last: its handover link is followed below.
        "lc-swc-caseworker-1": [
            "/cases",
            *(f"/cases/{lao_cai}/{s}" for s in ("assessments", "plan", "contacts", "reviews")),
            f"/cases/{lao_cai}",
        ],
        "lc-border-guard-1": ["/reception"],
        "lao-cai-general-hospital-staff-1": ["/inbox"],
        "inspector-1": [f"/audit?case_id={lao_cai}&as_of=2030-01-01T00:00"],
    }
    # axe checks each page in both languages (the same markup, other words and lengths);
    # both are checked for untranslated strings too.
    audit = serious_violations
    problems: dict[str, list[str]] = {}
    for user, paths in visits.items():
        page = open_page(browser, contexts, locale)
        sign_in(page, site, user)
        for path in paths:
            page.goto(site.base + path)
            assert_translated(page, locale)
            found = audit(page)
            if found:
                problems[f"{user} {path}"] = found
        # A referral and a handover, from the inbox and the case.
        if user == "lao-cai-general-hospital-staff-1":
            page.locator('a[href^="/referrals/"]').first.click()
            assert_translated(page, locale)
            problems.update({f"{user} {page.url}": audit(page)})
        if user == "lc-swc-caseworker-1":
            page.locator('a[href^="/handovers/"]').first.click()
            assert_translated(page, locale)
            problems.update({f"{user} {page.url}": audit(page)})
    assert not {k: v for k, v in problems.items() if v}


def test_the_referral_form_shows_what_will_be_released_before_sending(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = open_page(browser, contexts, "vi")
    sign_in(page, site, "lc-swc-caseworker-1")
    page.goto(f"{site.base}/cases/{site.case('lao-cai-1').case_id}")
    page.get_by_text("Chuyển gửi người được hỗ trợ đến cơ quan khác").click()
    page.locator("#to_agency").select_option("lao-cai-general-hospital")
    page.locator("#service_type").select_option("medical_care")
    form = page.locator('form[action$="/referrals"]')
    form.get_by_label("Nhân thân").check()
    form.get_by_label("Sức khỏe").check()
    preview = page.locator("#preview")
    expect(preview.locator("li.released")).to_have_count(2)
    # His own view: the commune is not to be told (a refusal beside his guardian's grant).
    page.locator("#to_agency").select_option("lao-cai-commune-office")
    expect(preview.locator("li.withheld")).to_have_count(2)
    expect(preview).to_contain_text("Không chuyển: người được hỗ trợ đã từ chối")
    assert_translated(page, "vi")
    screenshot(page, "referral-preview-vi")
    page.locator("#to_agency").select_option("lao-cai-general-hospital")
    expect(preview.locator("li.released")).to_have_count(2)
    page.get_by_role("button", name="Gửi chuyển gửi").click()
    expect(page).to_have_url(re.compile(r"/referrals/[0-9a-f-]{36}$"))
    expect(page.locator("h1")).to_contain_text("Chăm sóc y tế")
    expect(page.locator("h1 + p strong")).to_have_text("Đã gửi, chờ xác nhận nhận")

    page.goto(f"{site.base}/cases/{site.case('lao-cai-1').case_id}")
    page.locator('a[href$="/receipt"]').first.click()
    expect(page.locator("h1")).to_contain_text("Biên nhận đồng ý")
    expect(page.locator("h1")).to_contain_text("Consent receipt")


def test_sign_in_and_the_board_work_from_the_keyboard(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = open_page(browser, contexts, "vi")
    page.goto(f"{site.base}/signin")
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    button = page.locator('button[value="dong-thap-coordinator"]')
    for _ in range(40):  # through the page in order, to the coordinator's button
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    expect(button).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/board$"))
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the skip link again
    case_link = page.locator("#board a").first
    for _ in range(40):
        page.keyboard.press("Tab")
        if case_link.evaluate("a => a === document.activeElement"):
            break
    expect(case_link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Hồ sơ ca")


def test_a_case_link_opened_before_signing_in_opens_after_it(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    """The demo prints each case's page: opened signed out, it comes back after sign-in."""
    page = open_page(browser, contexts, "en")
    case_page = f"/cases/{site.case('dong-thap-1').case_id}"
    page.goto(site.base + case_page)
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    page.locator('button[value="dt-swc-caseworker-1"]').click()
    expect(page).to_have_url(site.base + case_page)
    expect(page.locator("h1")).to_have_text("Case file")


CATCHING_UP = {
    "vi": "Ketnoi vẫn đang cập nhật những việc bạn vừa làm",
    "en": "Ketnoi is still catching up with what you have just done",
}
HEADING = {"vi": "Vẫn đang cập nhật", "en": "Still catching up"}


@pytest.mark.parametrize("locale", LOCALES)
def test_a_page_that_cannot_wait_for_what_the_user_just_did_says_so(
    site: Site,
    browser: Browser,
    contexts: list[BrowserContext],
    locale: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The case page after a consent is recorded waits for the referral service to read it;
    while that service's follower is held past the bound, the page says Ketnoi is still
    catching up, and the same page a moment later is the case file. (Last in the file: it
    adds a grant to a seeded case.)"""
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    case_page = f"{site.base}/cases/{site.case('dong-thap-1').case_id}"
    page.goto(case_page)
    page.locator('a[href$="/consent/new"]').click()
    form = page.locator('form[action$="/consent/grant"]')
    form.locator('input[name="categories"][value="identity"]').check()
    form.locator('input[name="purposes"][value="service_provision"]').check()
    form.locator('select[name="recipient_kind"]').select_option("legal_aid_centre")
    form.locator('input[name="form_reference"]').fill(f"F-WAIT-{locale}")
    monkeypatch.setattr(site.platform.settings, "position_wait_timeout", 0.3)
    follower = site.platform.followers["referral"]
    with follower._processing:  # type: ignore[attr-defined]
        form.locator('button[type="submit"]').click()
        expect(page.locator("main")).to_contain_text(CATCHING_UP[locale])
    expect(page.locator("h1")).to_have_text(HEADING[locale])
    assert_translated(page, locale)
    screenshot(page, f"catching-up-{locale}")
    if locale == "vi":
        assert serious_violations(page) == []
    page.goto(case_page)
    expect(page.locator("h1")).to_have_text(WORDS[locale]["case"])
    assert CATCHING_UP[locale] not in page.content()
