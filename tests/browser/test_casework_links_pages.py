"""The plan's tasks, family referrals and the case file for a newcomer, in the browser, in
Vietnamese and English: a case manager refers the person for a task of the plan (the form
preset to the task's agency and service) and sees the referral on the task; refers a member
of the person's family on their own consent, apart from the person's; and reads the case in
the order a newcomer taking it over reads it."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import Site, open_page, screenshot, sign_in
from tests.browser.test_casework_pages import go, opened, submit
from tests.browser.test_web import LOCALES, assert_translated, serious_violations

pytestmark = pytest.mark.postgres

# Each language works on its own Dong Thap case, so the two runs do not meet.
CASE_OF = {"vi": "dong-thap-1", "en": "dong-thap-2"}
HOSPITAL = "dong-thap-general-hospital"
LEGAL_AID = "dong-thap-legal-aid-centre"
WORDS = {
    "vi": {
        "refer": "Chuyển gửi cho nhiệm vụ này",
        "for_task": "Cho một nhiệm vụ của kế hoạch tái hòa nhập",
        "referral_to": "Chuyển gửi đến",
        "newcomer": "Cho cán bộ mới",
        "parent": "Cha hoặc mẹ",
        "family": "Cho một thành viên gia đình của người được hỗ trợ",
        "not_shown": "Thông tin của thành viên gia đình không hiển thị cho bạn.",
        "for_family": "cho thành viên gia đình",
        "medical_care": "Chăm sóc y tế",
        "nothing_released": "Chưa có thông tin nào được chuyển.",
    },
    "en": {
        "refer": "Refer for this task",
        "for_task": "For a task of the reintegration plan",
        "referral_to": "Referral to",
        "newcomer": "For a newcomer",
        "parent": "Parent",
        "family": "For a member of the person's family",
        "not_shown": "The family member's details are not shown to you.",
        "for_family": "for a family member",
        "medical_care": "Medical care",
        "nothing_released": "Nothing has been released.",
    },
}


def no_serious_violation(page: Page, locale: str) -> None:
    if locale == "vi":
        assert serious_violations(page) == []


def plan_a_hospital_task(page: Page, locale: str) -> None:
    """A plan with a review at the hospital (medical care), agreed by the person."""
    opened(page, "/plan")
    form = page.locator('form[action$="/plan"]')
    form.locator("#goal_health").fill("Khỏe lại" if locale == "vi" else "Healed")
    form.locator("#task_0_goal").select_option("health")
    form.locator("#task_0_action").fill(
        "Tái khám tại bệnh viện" if locale == "vi" else "Review at the hospital"
    )
    form.locator("#task_0_role").select_option("health_worker")
    form.locator("#task_0_agency").select_option(HOSPITAL)
    form.locator("#task_0_service").select_option("medical_care")
    form.locator("#task_0_due").fill((date.today() + timedelta(days=30)).isoformat())
    submit(page, "/plan")
    submit(page, "/plan/agreement")


@pytest.mark.parametrize("locale", LOCALES)
def test_a_plan_task_is_referred_to_its_agency_and_shows_its_referral(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    case = site.case(CASE_OF[locale])
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    go(page, site, CASE_OF[locale], "/plan")
    plan_a_hospital_task(page, locale)
    row = page.locator("#tasks tbody tr").first
    # The task's service is in the plan; the task offers a referral for it.
    expect(row).to_contain_text(words["medical_care"])
    expect(row.locator(".task-referrals")).to_have_count(0)
    row.get_by_role("link", name=words["refer"]).click()
    expect(page).to_have_url(re.compile(r"/referrals/new\?task="))
    task_id = page.url.rsplit("=", 1)[1]

    # The referral form, preset to the task: its agency, its service, the task itself.
    form = page.locator(f'form[action="/cases/{case.case_id}/referrals"]')
    expect(form.locator("#to_agency")).to_have_value(HOSPITAL)
    expect(form.locator("#service_type")).to_have_value("medical_care")
    expect(form.locator('input[name="plan_task_id"]')).to_have_value(task_id)
    expect(page.locator("#for-task")).to_contain_text(
        "Tái khám tại bệnh viện" if locale == "vi" else "Review at the hospital"
    )
    assert_translated(page, locale)
    no_serious_violation(page, locale)

    # Another agency than the task's is refused beside the field, nothing sent; the form
    # stays the task's.
    form.locator('input[name="categories"][value="identity"]').check()
    form.locator("#to_agency").select_option(LEGAL_AID)
    form.locator('button[type="submit"]').click()
    expect(page.locator("#err-referral-to_agency")).to_be_visible()
    expect(form.locator('input[name="plan_task_id"]')).to_have_value(task_id)
    expect(form.locator('input[name="categories"][value="identity"]')).to_be_checked()
    assert_translated(page, locale)

    form.locator("#to_agency").select_option(HOSPITAL)
    form.locator('button[type="submit"]').click()
    expect(page).to_have_url(re.compile(r"/referrals/[0-9a-f-]{36}$"))
    referral_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("main")).to_contain_text(words["for_task"])
    status = page.locator("main p strong").first.inner_text()
    assert_translated(page, locale)
    screenshot(page, f"referral-for-task-{locale}")

    # The task shows its referral and its status.
    page.locator(f'a[href="/cases/{case.case_id}/plan#task-{task_id}"]').click()
    task_row = page.locator(f"#task-{task_id}")
    referral = task_row.locator(".task-referrals li")
    expect(referral).to_have_count(1)
    expect(referral).to_contain_text(words["referral_to"])
    expect(referral).to_contain_text(status)
    expect(referral.locator(f'a[href="/referrals/{referral_id}"]')).to_have_count(1)
    assert_translated(page, locale)
    no_serious_violation(page, locale)
    screenshot(page, f"plan-task-referral-{locale}")

    # The newcomer's case file tells the open task with its referral.
    site.platform.catch_up()
    page.get_by_role("navigation").get_by_role("link", name=words["newcomer"]).click()
    expect(page).to_have_url(re.compile(r"/overview$"))
    task = page.locator("#plan tbody tr").filter(
        has=page.locator(f'a[href="/referrals/{referral_id}"]')
    )
    expect(task).to_have_count(1)
    expect(task).to_contain_text(words["medical_care"])
    expect(page.locator("#referrals")).to_contain_text(words["medical_care"])


@pytest.mark.parametrize("locale", LOCALES)
def test_a_family_member_is_referred_on_their_own_consent(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    case = site.case(CASE_OF[locale])
    name = "Trần Thị Mai" if locale == "vi" else "Tran Thi Mai (en)"
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    page.goto(f"{site.base}/cases/{case.case_id}/referrals/new")
    form = page.locator(f'form[action="/cases/{case.case_id}/referrals"]')
    # The family member's own consent is apart from the person's, in a fieldset of its own.
    expect(page.locator("#family > legend")).to_be_visible()
    assert_translated(page, locale)
    no_serious_violation(page, locale)

    form.locator("#to_agency").select_option(LEGAL_AID)
    form.locator("#service_type").select_option("legal_aid")
    form.locator('input[name="for_whom"][value="family"]').check()
    form.locator("#family_name").fill(name)
    form.locator("#family_relationship").select_option("parent")
    form.locator("#family_age").fill("45")
    # An adult's consent is their own, not a guardian's: refused beside the family fieldset.
    form.locator('input[name="family_given_by"][value="guardian"]').check()
    form.locator('input[name="family_method"][value="written_form"]').check()
    form.locator("#family_form_reference").fill("GĐ-2026-07")
    form.locator("#family_given_on").fill(date.today().isoformat())
    form.locator('input[name="family_withdrawal_explained"]').check()
    form.locator('button[type="submit"]').click()
    expect(page.locator("#err-referral-family_member")).to_be_visible()
    expect(form.locator("#family_name")).to_have_value(name)
    expect(form.locator('input[name="for_whom"][value="family"]')).to_be_checked()
    assert_translated(page, locale)

    form.locator('input[name="family_given_by"][value="family_member"]').check()
    form.locator('button[type="submit"]').click()
    expect(page).to_have_url(re.compile(r"/referrals/[0-9a-f-]{36}$"))
    referral_url = page.url
    family = page.locator("#family")
    expect(family).to_contain_text(words["family"])
    expect(family).to_contain_text(name)
    expect(family).to_contain_text(words["parent"])
    expect(family).to_contain_text("45")
    # None of the person's information was asked for, and none went.
    expect(page.locator('section[aria-labelledby="data-h"]')).to_contain_text(
        words["nothing_released"]
    )
    assert_translated(page, locale)
    no_serious_violation(page, locale)
    screenshot(page, f"family-referral-{locale}")

    # Need-to-know: the coordinator follows the referral, not who the family member is.
    other = open_page(browser, contexts, locale)
    sign_in(other, site, "dong-thap-coordinator")
    other.goto(referral_url)
    expect(other.locator("#family")).to_contain_text(words["not_shown"])
    expect(other.locator("main")).not_to_contain_text(name)
    assert_translated(other, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_case_file_for_a_newcomer_is_in_the_order_to_read_it(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    key = CASE_OF[locale]
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    site.platform.catch_up()
    go(page, site, key)
    page.get_by_role("navigation").get_by_role("link", name=words["newcomer"]).click()
    expect(page).to_have_url(re.compile(r"/overview$"))
    sections = page.locator("main section")
    expect(sections).to_have_count(6)
    ids = [sections.nth(n).get_attribute("id") for n in range(6)]
    assert ids == ["person", "consent", "plan", "referrals", "risks", "history"]
    # Who the person is comes first: how they came, and who manages the case now.
    expect(page.locator("#person li").first).to_be_visible()
    expect(page.locator("#person")).to_contain_text("dt-swc-caseworker-1")
    # The history is everything, newest first.
    times = page.locator("#history time").evaluate_all("els => els.map(e => e.dateTime)")
    assert len(times) > 1
    assert times == sorted(times, reverse=True)
    # Every entry is told in the page's language, none by its event's name.
    expect(page.locator("main")).not_to_contain_text("org.ketnoi.")
    assert_translated(page, locale)
    no_serious_violation(page, locale)
    screenshot(page, f"case-overview-{locale}")
