"""The case work in the browser, in Vietnamese and English: a case manager records the
assessments, the exploitation, a plan with a task and the person's agreement, measures,
contacts and notes; a health worker records the medical examination (and only they see its
form); a supervisor signs a review; the case changes stage, closes and reopens."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from contracts.consent_decision import local_date
from tests.browser.conftest import Site, open_page, screenshot, sign_in
from tests.browser.test_web import LOCALES, assert_translated, serious_violations

pytestmark = pytest.mark.postgres

# Each language works on its own Dong Thap case, so the two runs do not meet.
CASE_OF = {"vi": "dong-thap-1", "en": "dong-thap-2"}
WORDS = {
    "vi": {
        "assessments": "Đánh giá",
        "plan": "Kế hoạch và đo lường",
        "contacts": "Liên lạc và ghi chép",
        "reviews": "Rà soát",
        "distressed": "Căng thẳng: cần hỗ trợ tâm lý sớm",
        "unsafe": "Không an toàn",
        "criminal": "Vụ án hình sự",
        "in_training": "Đang học nghề",
        "forced_labour": "Lao động cưỡng bức",
        "debt": "Trói buộc bằng nợ",
        "cambodia": "Campuchia",
        "presumed": "Được cho là nạn nhân",
        "not_agreed": "Người được hỗ trợ chưa đồng ý",
        "agreed": "Người được hỗ trợ đã đồng ý",
        "in_progress": "Đang thực hiện",
        "baseline": "mốc ban đầu",
        "refused_reason": "Người được hỗ trợ đã từ chối cách liên lạc này",
        "against": "Trái với mong muốn của người được hỗ trợ",
        "health_only": "Chỉ cán bộ y tế",
        "next_review": "Lần rà soát tiếp theo",
        "closed": "Đã đóng",
        "crisis": "Giai đoạn ổn định ban đầu",
        "transitional": "Quản lý ca chuyển tiếp",
        "plan_exit_first": "chỉ sau khi đã lập kế hoạch kết thúc",
        "medical_recorded": "Đã ghi nhận khám sức khỏe",
        "exploitation_recorded": "Đã ghi nhận hình thức bóc lột",
        "refused_it": "Từ chối trước khi bắt đầu",
    },
    "en": {
        "assessments": "Assessments",
        "plan": "Plan and measures",
        "contacts": "Contacts and notes",
        "reviews": "Reviews",
        "distressed": "Distressed: needs psychological support soon",
        "unsafe": "Not safe",
        "criminal": "Criminal case",
        "in_training": "In training",
        "forced_labour": "Forced labour",
        "debt": "Debt bondage",
        "cambodia": "Cambodia",
        "presumed": "Presumed victim",
        "not_agreed": "Not agreed by the person yet",
        "agreed": "The person agreed to it",
        "in_progress": "In progress",
        "baseline": "baseline",
        "refused_reason": "The person refused this way of contact",
        "against": "Against the person's wish",
        "health_only": "Only a health worker",
        "next_review": "Next review due",
        "closed": "Closed",
        "crisis": "Crisis stage",
        "transitional": "Transitional case management",
        "plan_exit_first": "only after its exit is planned",
        "medical_recorded": "Medical examination recorded",
        "exploitation_recorded": "Exploitation recorded",
        "refused_it": "Refused it before it started",
    },
}


def go(page: Page, site: Site, key: str, section: str = "") -> None:
    page.goto(f"{site.base}/cases/{site.case(key).case_id}{section}")


def submit(page: Page, action: str) -> None:
    """Open the form's details (if closed) and send it."""
    form = page.locator(f'form[action$="{action}"]')
    details = form.locator("xpath=ancestor::details[1]")
    if details.count() and details.get_attribute("open") is None:
        details.locator("summary").click()
    form.locator('button[type="submit"]').click()
    page.wait_for_load_state()


def opened(page: Page, action: str) -> None:
    form = page.locator(f'form[action$="{action}"]')
    details = form.locator("xpath=ancestor::details[1]")
    if details.count() and details.get_attribute("open") is None:
        details.locator("summary").click()


@pytest.mark.parametrize("locale", LOCALES)
def test_the_case_manager_records_the_assessments_and_the_exploitation(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    key = CASE_OF[locale]
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    go(page, site, key)
    page.get_by_role("navigation").get_by_role("link", name=words["assessments"]).click()
    expect(page).to_have_url(re.compile(r"/assessments$"))
    assert_translated(page, locale)
    # The medical examination is a health worker's: no form for the case manager.
    expect(page.locator('form[action$="/assessments/medical"]')).to_have_count(0)
    expect(page.locator("#medical")).to_contain_text(words["health_only"])

    opened(page, "/assessments/psychosocial")
    form = page.locator('form[action$="/assessments/psychosocial"]')
    form.locator('input[name="mental_state"][value="distressed"]').check()
    form.locator('input[name="psychological_support_needed"][value="yes"]').check()
    submit(page, "/assessments/psychosocial")
    expect(page.locator("#psychosocial dl")).to_contain_text(words["distressed"])

    opened(page, "/assessments/family")
    form = page.locator('form[action$="/assessments/family"]')
    form.locator('input[name="return_safety"][value="unsafe"]').check()
    form.locator('input[name="wishes_to_return_home"][value="no"]').check()
    form.locator('input[name="dependants"]').fill("1")
    submit(page, "/assessments/family")
    expect(page.locator("#family dl")).to_contain_text(words["unsafe"])

    opened(page, "/assessments/legal")
    page.locator('form[action$="/assessments/legal"] input[value="criminal_case"]').check()
    submit(page, "/assessments/legal")
    expect(page.locator("#legal .tags")).to_contain_text(words["criminal"])

    opened(page, "/assessments/livelihood")
    form = page.locator('form[action$="/assessments/livelihood"]')
    form.locator("#education_level").select_option("lower_secondary")
    form.locator('input[name="livelihood"][value="in_training"]').check()
    form.locator("#skill-0").fill("may" if locale == "vi" else "sewing")
    submit(page, "/assessments/livelihood")
    expect(page.locator("#livelihood dl")).to_contain_text(words["in_training"])

    # Exploitation: several types at once, where, how long, the means of control.
    opened(page, "/assessments/exploitation")
    form = page.locator('form[action$="/assessments/exploitation"]')
    form.locator('input[name="types"][value="forced_labour"]').check()
    form.locator('input[name="types"][value="sexual"]').check()
    form.locator('input[name="countries"][value="KH"]').check()
    form.locator("#duration_months").fill("7")
    form.locator('input[name="means_of_control"][value="debt_bondage"]').check()
    form.locator('input[name="means_of_control"][value="withholds_documents"]').check()
    submit(page, "/assessments/exploitation")
    told = page.locator("#exploitation dl")
    expect(told).to_contain_text(words["forced_labour"])
    expect(told).to_contain_text(words["cambodia"])
    expect(told).to_contain_text(words["debt"])

    opened(page, "/assessments/identification")
    page.locator('form[action$="/identification"] input[value="presumed"]').check()
    submit(page, "/assessments/identification")
    expect(page.locator("#identification")).to_contain_text(words["presumed"])
    assert_translated(page, locale)
    screenshot(page, f"assessments-{locale}")

    # The case file shows them, and its timeline tells them in the page's language.
    go(page, site, key)
    expect(page.locator("#casework")).to_contain_text(words["presumed"])
    expect(page.locator(".timeline")).to_contain_text(words["exploitation_recorded"])
    assert_translated(page, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_case_manager_makes_the_plan_with_a_task_its_agreement_and_measures(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    key = CASE_OF[locale]
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    go(page, site, key)
    page.get_by_role("navigation").get_by_role("link", name=words["plan"]).click()
    expect(page).to_have_url(re.compile(r"/plan$"))
    assert_translated(page, locale)

    form = page.locator('form[action$="/plan"]')
    opened(page, "/plan")
    # A task without its team member is refused, with the error beside it: nothing saved.
    form.locator("#goal_income").fill("Một công việc ổn định" if locale == "vi" else "A job")
    form.locator("#task_0_goal").select_option("income")
    form.locator("#task_0_action").fill("Khóa may 3 tháng" if locale == "vi" else "Sewing course")
    form.locator("#task_0_due").fill((date.today() + timedelta(days=60)).isoformat())
    submit(page, "/plan")
    expect(page.locator("#err-revision-task_0")).to_be_visible()
    expect(page.locator("#task_0_action")).to_have_value(re.compile(r"."))
    assert_translated(page, locale)
    go(page, site, key, "/plan")
    expect(page.locator("#plan")).not_to_contain_text(words["not_agreed"])

    opened(page, "/plan")
    form.locator("#goal_income").fill("Một công việc ổn định" if locale == "vi" else "A job")
    form.locator("#task_0_goal").select_option("income")
    form.locator("#task_0_action").fill("Khóa may 3 tháng" if locale == "vi" else "Sewing course")
    form.locator("#task_0_role").select_option("trainer")
    form.locator("#task_0_agency").select_option("dong-thap-social-work-centre")
    form.locator("#task_0_due").fill((date.today() + timedelta(days=60)).isoformat())
    submit(page, "/plan")
    expect(page.locator("#plan .big")).to_contain_text(words["not_agreed"])
    expect(page.locator("#tasks table")).to_have_count(1)

    # The person's agreement; then the work on the task starts.
    submit(page, "/plan/agreement")
    expect(page.locator("#plan .big")).to_contain_text(words["agreed"])
    task = page.locator('#tasks form[action*="/plan/tasks/"]')
    task.locator("select").select_option("in_progress")
    task.locator('button[type="submit"]').click()
    expect(page.locator("#tasks table")).to_contain_text(words["in_progress"])

    # The baseline, then a measure: the trend shows both, with the change.
    for scores in (("0.2", "0,3", "0.25"), ("0.5", "0.4", "0.45")):
        opened(page, "/plan/measures")
        measure = page.locator('form[action$="/plan/measures"]')
        for name, score in zip(("economic", "social", "psychosocial"), scores, strict=True):
            measure.locator(f'input[name="{name}"]').fill(score)
        submit(page, "/plan/measures")
    rows = page.locator("table.measures tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(words["baseline"])
    # Scores as each language writes them: 0,30 in Vietnamese.
    expect(rows.nth(1)).to_contain_text("+0,30" if locale == "vi" else "+0.30")
    expect(page.locator("#measures svg polyline")).to_have_count(4)
    assert_translated(page, locale)
    screenshot(page, f"plan-{locale}")

    # A case conference: who attended, what was decided, a task it adds to the plan (a new
    # revision, for the person to agree to afresh).
    opened(page, "/plan/conferences")
    meeting = page.locator('form[action$="/plan/conferences"]')
    meeting.locator("#attendee_0_agency").select_option("dong-thap-social-work-centre")
    meeting.locator("#attendee_0_capacity").fill("cán bộ quản lý ca" if locale == "vi" else "CM")
    meeting.locator("#attendee_1_agency").select_option("dong-thap-legal-aid-centre")
    meeting.locator("#attendee_1_capacity").fill("luật sư" if locale == "vi" else "lawyer")
    meeting.locator("#decision_0").fill("Trợ giúp pháp lý" if locale == "vi" else "Legal aid")
    meeting.locator("#ctask_0_goal").select_option("0")
    meeting.locator("#ctask_0_action").fill("Gặp luật sư" if locale == "vi" else "See a lawyer")
    meeting.locator("#ctask_0_role").select_option("lawyer")
    meeting.locator("#ctask_0_agency").select_option("dong-thap-legal-aid-centre")
    meeting.locator("#ctask_0_due").fill((date.today() + timedelta(days=14)).isoformat())
    submit(page, "/plan/conferences")
    expect(page.locator("#conferences .card")).to_have_count(1)
    expect(page.locator("#conferences .card")).to_contain_text(
        "Trợ giúp pháp lý" if locale == "vi" else "Legal aid"
    )
    expect(page.locator("#plan .big")).to_contain_text(words["not_agreed"])
    expect(page.locator("#tasks tbody tr")).to_have_count(2)
    expect(page.locator("#history li")).to_have_count(2)
    assert_translated(page, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_a_contact_against_the_persons_wish_needs_a_reason_and_is_flagged(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    key = CASE_OF[locale]
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    go(page, site, key)
    page.get_by_role("navigation").get_by_role("link", name=words["contacts"]).click()
    assert_translated(page, locale)
    rows = page.locator("#contacts table tbody tr")
    before = rows.count()

    # A home visit, which she refused, without a reason: refused, nothing logged.
    opened(page, "/contacts")
    form = page.locator('form[action$="/contacts"]')
    form.locator('input[name="mode"][value="home_visit"]').check()
    submit(page, "/contacts")
    expect(page.locator("form[action$='/contacts'] .alert")).to_contain_text(
        words["refused_reason"]
    )
    assert_translated(page, locale)
    go(page, site, key, "/contacts")
    expect(rows).to_have_count(before)

    opened(page, "/contacts")
    form.locator('input[name="mode"][value="home_visit"]').check()
    form.locator("#reason").fill(
        "Không liên lạc được qua điện thoại ba ngày" if locale == "vi" else "No answer for 3 days"
    )
    submit(page, "/contacts")
    expect(rows).to_have_count(before + 1)
    expect(rows.first).to_contain_text(words["against"])

    opened(page, "/contacts")
    form.locator('input[name="mode"][value="phone"]').check()
    submit(page, "/contacts")
    expect(rows).to_have_count(before + 2)
    expect(rows.first).not_to_contain_text(words["against"])

    # A note sent twice (a double tap on a weak connection) is written once.
    notes = page.locator("#notes .card")
    notes_before = notes.count()
    opened(page, "/notes")
    page.locator("#text").fill("Đã gọi cho chị." if locale == "vi" else "Called her.")
    statuses = page.evaluate(
        """async () => {
            const form = document.querySelector('form[action$="/notes"]');
            const send = () => fetch(form.action, {method: 'POST', body: new FormData(form)});
            const answers = await Promise.all([send(), send()]);
            return answers.map(a => a.status);
        }"""
    )
    assert statuses == [200, 200]
    go(page, site, key, "/contacts")
    expect(notes).to_have_count(notes_before + 1)
    expect(notes.first).to_contain_text("Đã gọi cho chị." if locale == "vi" else "Called her.")
    assert_translated(page, locale)

    # A service she refused: her choice, with what she was told about coming back.
    opened(page, "/declined-services")
    choice = page.locator('form[action$="/declined-services"]')
    choice.locator("#service_type").select_option("vocational_training")
    choice.locator('input[name="choice"][value="refused"]').check()
    choice.locator("#how_to_come_back").fill("Gọi 111" if locale == "vi" else "Call 111")
    submit(page, "/declined-services")
    expect(page.locator("#choices tbody tr").first).to_contain_text(words["refused_it"])
    assert_translated(page, locale)
    screenshot(page, f"contacts-{locale}")


@pytest.mark.parametrize("locale", LOCALES)
def test_only_a_health_worker_records_the_medical_examination(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    key = CASE_OF[locale]
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-health-worker-1")
    go(page, site, key, "/assessments")
    assert_translated(page, locale)
    form = page.locator('form[action$="/assessments/medical"]')
    expect(form).to_be_visible()
    # The rest is the case manager's: no form for them.
    expect(page.locator('form[action$="/assessments/family"]')).to_have_count(0)
    findings = "Vết bầm ở tay, đã băng bó." if locale == "vi" else "Bruises on the arm, dressed."
    form.locator("#findings").fill(findings)
    form.locator('input[name="follow_up_needed"][value="yes"]').check()
    submit(page, "/assessments/medical")
    # A follow-up needed but not said: the error beside the field, what was typed kept.
    expect(page.locator("#err-medical-follow_up")).to_be_visible()
    expect(page.locator("#findings")).to_have_value(findings)
    assert_translated(page, locale)
    page.locator("#follow_up").fill("Tái khám sau 2 tuần" if locale == "vi" else "In 2 weeks")
    submit(page, "/assessments/medical")
    expect(page.locator("#medical dl")).to_contain_text(findings)

    go(page, site, key)
    expect(page.locator(".timeline")).to_contain_text(words["medical_recorded"])
    go(page, site, key, "/plan")
    expect(page.locator('form[action$="/plan"]')).to_have_count(0)
    assert_translated(page, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_a_supervisor_signs_a_review_off(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    key = CASE_OF[locale]
    manager = open_page(browser, contexts, locale)
    sign_in(manager, site, "dt-swc-caseworker-1")
    go(manager, site, key, "/reviews")
    expect(manager.locator('form[action$="/reviews"]')).to_have_count(0)

    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-supervisor-1")
    go(page, site, key)
    page.get_by_role("navigation").get_by_role("link", name=words["reviews"]).click()
    assert_translated(page, locale)
    form = page.locator('form[action$="/reviews"]')
    form.locator("#findings").fill(
        "Chị ổn định, cần kế hoạch việc làm." if locale == "vi" else "Stable; needs a job plan."
    )
    form.locator('input[value="continue"]').check()
    form.locator('input[value="case_conference"]').check()
    submit(page, "/reviews")
    expect(page.locator("#reviews .big")).to_contain_text(words["next_review"])
    expect(page.locator("#reviews .card").first).to_contain_text("dt-swc-supervisor-1")
    assert_translated(page, locale)
    screenshot(page, f"review-{locale}")


@pytest.mark.parametrize("locale", LOCALES)
def test_the_case_moves_on_closes_after_its_exit_plan_and_reopens(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    """The Nghe An case, reopened after a crisis: each run takes it to transitional, is
    refused closure for safe independence before the exit is planned, plans the exit,
    closes, sees the follow-up due, and reopens it in crisis again."""
    words = WORDS[locale]
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "na-swc-caseworker-1")
    go(page, site, "nghe-an-1")
    stage = page.locator("#stage .big")
    expect(stage).to_have_text(words["crisis"])
    assert_translated(page, locale)

    page.locator('form[action$="/stage"] input[value="transitional"]').check()
    submit(page, "/stage")
    expect(stage).to_have_text(words["transitional"])

    opened(page, "/closure")
    page.locator('form[action$="/closure"] input[value="safe_independence"]').check()
    submit(page, "/closure")
    expect(page.locator('form[action$="/closure"] .alert')).to_contain_text(
        words["plan_exit_first"]
    )
    assert_translated(page, locale)
    go(page, site, "nghe-an-1")
    expect(stage).to_have_text(words["transitional"])

    go(page, site, "nghe-an-1", "/plan")
    opened(page, "/plan/exit")
    exit_form = page.locator('form[action$="/plan/exit"]')
    # The day as the server judges it, Viet Nam's: from 17:00 UTC it is a day ahead of UTC's.
    today = local_date(datetime.now(UTC))
    exit_form.locator("#planned_exit_on").fill(today.isoformat())
    exit_form.locator("#follow_up_until").fill((today + timedelta(days=180)).isoformat())
    exit_form.locator("#how_to_come_back").fill("Gọi 111" if locale == "vi" else "Call 111")
    submit(page, "/plan/exit")
    expect(page.locator("#exit dl")).to_contain_text("111")
    assert_translated(page, locale)
    screenshot(page, f"plan-livelihood-{locale}")

    go(page, site, "nghe-an-1")
    opened(page, "/closure")
    page.locator('form[action$="/closure"] input[value="safe_independence"]').check()
    page.locator('form[action$="/closure"] input[name="satisfaction"][value="4"]').check()
    submit(page, "/closure")
    expect(stage).to_have_text(words["closed"])
    go(page, site, "nghe-an-1", "/contacts")
    expect(page.locator("#follow-ups tbody tr")).to_have_count(6)
    assert_translated(page, locale)
    # The province's coordinator sees the follow-up to chase on the board.
    site.platform.catch_up()
    board = open_page(browser, contexts, locale)
    sign_in(board, site, "nghe-an-coordinator")
    expect(board.locator("#follow-ups-h + table tbody tr")).to_have_count(1)
    expect(board.locator("#follow-ups-h + table")).to_contain_text("0")
    assert_translated(board, locale)

    go(page, site, "nghe-an-1")
    page.locator('form[action$="/reopening"] input[value="new_crisis"]').check()
    submit(page, "/reopening")
    expect(stage).to_have_text(words["crisis"])
    expect(page.locator("#stage .timeline li").last).to_contain_text(
        "A new crisis" if locale == "en" else "Khủng hoảng mới"
    )
    assert_translated(page, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_a_coordinator_sees_the_case_works_progress_and_no_form(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dong-thap-coordinator")
    for section in ("/assessments", "/plan", "/contacts", "/reviews"):
        go(page, site, "dong-thap-1", section)
        expect(page.locator("main form")).to_have_count(0)
        expect(page.locator(".withheld").first).to_be_visible()
        assert "Lê Thị Mai" not in page.content()
        assert_translated(page, locale)


def test_the_case_work_pages_have_no_serious_accessibility_violation(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    """axe on the Vietnamese pages (the same markup in English, with shorter words)."""
    problems: dict[str, list[str]] = {}
    visits = {
        "na-swc-caseworker-1": ("nghe-an-1", ("", "/assessments", "/plan", "/contacts")),
        "dt-swc-health-worker-1": ("dong-thap-1", ("/assessments",)),
        "dt-swc-supervisor-1": ("dong-thap-1", ("/reviews",)),
    }
    for user, (key, sections) in visits.items():
        page = open_page(browser, contexts, "vi")
        sign_in(page, site, user)
        for section in sections:
            go(page, site, key, section)
            closed = page.locator("details:not([open]) > summary")
            while closed.count():
                closed.first.click()  # every form open, so axe checks it too
            assert_translated(page, "vi")
            found = serious_violations(page)
            if found:
                problems[f"{user} {section}"] = found
    assert not problems
