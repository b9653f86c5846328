"""The journeys beside case work, in Vietnamese and English, in Chromium: the agency's closed
loop (progress, a structured outcome, the person's feedback), a guardian's consent for a
child, the emergency override (asked, approved, reviewed, lapsed), the person's own copy, and
the seal's checkpoints for auditors. Each page is checked by axe and for untranslated
strings."""

from __future__ import annotations

import re
from datetime import timedelta
from uuid import UUID

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from contracts.envelope import Actor
from contracts.referral import Urgency
from contracts.vocabulary import DataCategory, Purpose, Role, ServiceType
from services.cli.demo import DT_HOSPITAL, DT_SWC
from services.runtime.aggregate import CommandContext, utcnow
from tests.browser.conftest import Site, open_page, screenshot, sign_in
from tests.browser.test_web import NAMES, assert_translated, serious_violations

pytestmark = pytest.mark.postgres

LOCALES = ["vi", "en"]
MANAGER = Actor(user_id="dt-swc-caseworker-1", agency_id=DT_SWC.agency_id, role=Role.CASE_MANAGER)
COORDINATOR = Actor(
    user_id="dong-thap-coordinator", agency_id="dong-thap-dolisa", role=Role.COORDINATOR
)
WORDS = {
    "vi": {
        "acknowledged": "Đã xác nhận nhận",
        "accepted": "Đã chấp nhận",
        "in_progress": "Đang thực hiện",
        "completed": "Đã hoàn thành",
        "partly": "Đã cung cấp một phần",
        "why_needed": "Nêu lý do dịch vụ không được cung cấp đầy đủ.",
        "rating_needed": "Chọn mức đánh giá của chính người được hỗ trợ, từ 1 đến 5.",
        "four": "4 trên 5",
        "child_rule": "Người được hỗ trợ là trẻ em",
        "guardian": "Người giám hộ hoặc cha mẹ",
        "relationship": "bà ngoại",
        "exceptional": "Chia sẻ khẩn cấp (ngoại lệ)",
        "reason_needed": "từ 10 ký tự trở lên",
        "waiting_approval": "Đang chờ người thứ hai phê duyệt",
        "second_person": "người khác, ở vai trò khác",
        "in_force": "Có hiệu lực đến",
        "reviewed": "Đã xem xét lại: Chính đáng",
        "ended": "Đã kết thúc lúc",
        "copy": "Bản sao hồ sơ của bạn",
        "copy_read": "Một bản sao như bản này",
        "name_field": "Nhân thân (Họ tên)",
        "verified": "Đã kiểm tra: mọi nhật ký đều khớp",
        "not_allowed": "vai trò của bạn không cho phép",
    },
    "en": {
        "acknowledged": "Acknowledged",
        "accepted": "Accepted",
        "in_progress": "In progress",
        "completed": "Completed",
        "partly": "Partly delivered",
        "why_needed": "Say why the service was not delivered in full.",
        "rating_needed": "Choose the person's own rating, from 1 to 5.",
        "four": "4 of 5",
        "child_rule": "The person is a child",
        "guardian": "A guardian or parent",
        "relationship": "grandmother",
        "exceptional": "Emergency override (exceptional)",
        "reason_needed": "10 characters or more",
        "waiting_approval": "Waiting for a second person's approval",
        "second_person": "another person in another role",
        "in_force": "In force until",
        "reviewed": "Reviewed: Justified",
        "ended": "Ended at",
        "copy": "Your own copy of your record",
        "copy_read": "A copy like this one",
        "name_field": "Identity (Name)",
        "verified": "Verified now: every log matches",
        "not_allowed": "your role does not allow",
    },
}


def check_page(page: Page, locale: str, problems: dict[str, list[str]]) -> None:
    """No untranslated string, and no serious or critical finding of axe."""
    assert_translated(page, locale)
    found = serious_violations(page)
    if found:
        problems[page.url] = found


def refer(
    site: Site, key: str, to_agency: str, service: ServiceType, ago: timedelta = timedelta()
) -> UUID:
    """A referral of the Dong Thap night reception's first case, made by its case manager
    (the journeys under test start from it)."""
    created = site.platform.referral.create_referral(
        CommandContext(actor=MANAGER, at=utcnow() - ago, idempotency_key=key),
        site.case("dong-thap-1").case_id,
        from_agency=DT_SWC,
        to_agency_id=to_agency,
        service_type=service,
        urgency=Urgency.URGENT,
        purpose=Purpose.SERVICE_PROVISION,
        categories=(DataCategory.IDENTITY,),
    )
    return UUID(created["referral_id"])


@pytest.mark.parametrize("locale", LOCALES)
def test_the_agency_reports_progress_completes_with_an_outcome_and_hears_the_feedback(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    referral_id = refer(site, f"loop-{locale}", DT_HOSPITAL.agency_id, ServiceType.MEDICAL_CARE)
    problems: dict[str, list[str]] = {}
    hospital = open_page(browser, contexts, locale)
    sign_in(hospital, site, "dong-thap-general-hospital-staff-1")
    expect(hospital).to_have_url(re.compile(r"/inbox$"))
    hospital.locator(f'a[href="/referrals/{referral_id}"]').click()
    status = hospital.locator("h1 + p strong")
    for action, shown in (("acknowledge", "acknowledged"), ("accept", "accepted")):
        hospital.locator(f'form[action$="/{action}"] button').click()
        expect(status).to_have_text(words[shown])

    # A progress report sent twice (a double tap) is recorded once.
    hospital.locator("#progress-note").fill("Admitted; tests under way.")
    sent = hospital.evaluate(
        """async () => {
            const form = document.querySelector('form[action$="/progress"]');
            const send = () => fetch(form.action, {method: 'POST', body: new FormData(form)});
            const answers = await Promise.all([send(), send()]);
            return answers.map(a => a.status);
        }"""
    )
    assert sent == [200, 200]
    hospital.reload()
    expect(hospital.locator(".progress li")).to_have_count(1)
    expect(hospital.locator(".progress")).to_contain_text("Admitted; tests under way.")

    hospital.locator('form[action$="/start"] button').click()
    expect(status).to_have_text(words["in_progress"])
    check_page(hospital, locale, problems)

    # Partly delivered without saying why: refused, next to the form, with the outcome kept.
    complete = hospital.locator('form[action$="/complete"]')
    complete.locator('input[value="partially_delivered"]').check()
    complete.locator('input[name="text"]').fill("Treated for the injuries.")
    complete.locator("button").click()
    expect(hospital.locator("#complete-error")).to_have_text(words["why_needed"])
    expect(complete.locator("#why-complete")).to_have_attribute("aria-invalid", "true")
    expect(complete.locator('input[name="text"]')).to_have_value("Treated for the injuries.")
    expect(complete.locator('input[value="partially_delivered"]')).to_be_checked()
    check_page(hospital, locale, problems)
    complete.locator("#why-complete").fill("The follow-up surgery is in Ho Chi Minh City.")
    complete.locator("button").click()
    expect(status).to_have_text(words["completed"])
    outcome = hospital.locator("#outcome-h + dl")
    expect(outcome).to_contain_text(words["partly"])
    expect(outcome).to_contain_text("The follow-up surgery is in Ho Chi Minh City.")
    screenshot(hospital, f"referral-outcome-{locale}")

    # The sender's case manager records what the person said of the service.
    manager = open_page(browser, contexts, locale)
    sign_in(manager, site, "dt-swc-caseworker-1")
    manager.goto(f"{site.base}/referrals/{referral_id}")
    expect(manager.locator(".progress")).to_contain_text("Admitted; tests under way.")
    feedback = manager.locator('form[action$="/feedback"]')
    feedback.locator("#feedback-comment").fill("Kind staff.")
    feedback.locator("button").click()
    expect(manager.locator("#feedback-error")).to_have_text(words["rating_needed"])
    expect(feedback.locator("#feedback-comment")).to_have_value("Kind staff.")
    feedback.locator('input[name="satisfaction"][value="4"]').check()
    feedback.locator("button").click()
    expect(manager.locator(".feedback li")).to_have_count(1)
    expect(manager.locator(".feedback")).to_contain_text(words["four"])
    expect(manager.locator(".feedback")).to_contain_text("Kind staff.")
    check_page(manager, locale, problems)
    assert not problems


@pytest.mark.parametrize("locale", LOCALES)
def test_a_guardian_gives_consent_for_a_child_and_the_receipt_names_them(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    problems: dict[str, list[str]] = {}
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "lc-swc-caseworker-1")
    page.goto(f"{site.base}/cases/{site.case('lao-cai-1').case_id}")
    page.locator('a[href$="/consent/new"]').click()
    # A child: the form offers the guardian first.
    expect(page.locator('input[name="given_by"][value="guardian"]')).to_be_checked()
    check_page(page, locale, problems)
    page.locator('input[name="categories"][value="identity"]').check()
    page.locator("#recipient_kind").select_option("vocational_training_centre")
    page.locator('input[name="purposes"][value="service_provision"]').check()
    reference = f"LC-CF-lao-cai-1-training-{locale}"
    page.locator("#form_reference").fill(reference)
    # As if the child signed alone: the consent service refuses, the form says why.
    page.locator('input[name="given_by"][value="person"]').check()
    page.locator("button.primary").click()
    expect(page.locator("#grant-error")).to_contain_text(words["child_rule"])
    expect(page.locator("#form_reference")).to_have_value(reference)
    expect(page.locator('input[name="categories"][value="identity"]')).to_be_checked()
    check_page(page, locale, problems)

    page.locator('input[name="given_by"][value="guardian"]').check()
    page.locator("#relationship").fill(words["relationship"])
    page.locator("#child_views").fill("He wants to learn a trade near home.")
    page.locator("button.primary").click()
    expect(page).to_have_url(re.compile(r"/cases/[0-9a-f-]{36}#consent$"))
    grant = page.locator(".consents li", has_text=f"({words['relationship']})")
    expect(grant).to_have_count(1)
    expect(grant).to_contain_text(words["guardian"])
    grant.locator('a[href$="/receipt"]').click()
    body = page.locator("body")
    expect(body).to_contain_text(
        f"Người giám hộ hoặc cha mẹ / a guardian or parent ({words['relationship']})"
    )
    expect(body).to_contain_text("Đã ghi nhận / Recorded")
    assert not problems


@pytest.mark.parametrize("locale", LOCALES)
def test_an_emergency_override_is_asked_approved_by_another_role_and_reviewed(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    """Break-glass: the case manager asks, the coordinator approves, the auditor reviews; it
    is marked as exceptional on the referral and on the case file."""
    words = WORDS[locale]
    police = "dong-thap-police"  # no consent covers the police for this case
    referral_id = refer(site, f"override-{locale}", police, ServiceType.SAFE_ACCOMMODATION)
    problems: dict[str, list[str]] = {}
    manager = open_page(browser, contexts, locale)
    sign_in(manager, site, "dt-swc-caseworker-1")
    manager.goto(f"{site.base}/referrals/{referral_id}")
    section = manager.locator("#override")
    section.locator("summary").click()
    section.locator("#override-reason").fill("Urgent")
    section.locator('form[action$="/overrides"] button').click()
    expect(manager.locator("#override-error")).to_contain_text(words["reason_needed"])
    expect(section.locator("#override-reason")).to_have_value("Urgent")
    check_page(manager, locale, problems)
    reason = "Threats from the recruiter tonight: police protection at the shelter."
    section.locator("#override-reason").fill(reason)
    section.locator("#override-hours").fill("12")
    section.locator('form[action$="/overrides"] button').click()
    expect(section.locator(".override-state")).to_have_text(words["waiting_approval"])
    expect(section).to_contain_text(reason)
    # The one who asked cannot approve it: no approval for the same role.
    expect(section.locator('form[action$="/approval"]')).to_have_count(0)
    check_page(manager, locale, problems)

    coordinator = open_page(browser, contexts, locale)
    sign_in(coordinator, site, "dong-thap-coordinator")
    coordinator.goto(f"{site.base}/overrides")
    expect(coordinator.locator(".exceptional").first).to_be_visible()
    check_page(coordinator, locale, problems)
    coordinator.locator(f'a[href="/referrals/{referral_id}#override"]').click()
    expect(coordinator.locator("#override")).to_contain_text(reason)
    coordinator.locator('form[action$="/approval"] button').click()
    expect(coordinator.locator("#override .override-state")).to_contain_text(words["in_force"])
    expect(coordinator.locator(".exceptional").first).to_contain_text(words["exceptional"])
    screenshot(coordinator, f"override-approved-{locale}")
    check_page(coordinator, locale, problems)

    # The case file marks the referral and the override's steps as exceptional.
    manager.goto(f"{site.base}/cases/{site.case('dong-thap-1').case_id}")
    row = manager.locator("#referrals-h ~ table tr.exceptional", has_text=words["exceptional"])
    expect(row.first).to_be_visible()
    expect(manager.locator(".timeline li.exceptional").first).to_be_visible(timeout=20_000)

    auditor = open_page(browser, contexts, locale)
    sign_in(auditor, site, "inspector-1")
    auditor.goto(f"{site.base}/referrals/{referral_id}")
    review = auditor.locator('form[action$="/review"]')
    review.locator('input[value="justified"]').check()
    review.locator("textarea").fill("Short")
    review.locator("button").click()
    expect(auditor.locator("[id^='review-'][id$='-error']")).to_contain_text(words["reason_needed"])
    review = auditor.locator('form[action$="/review"]')
    review.locator("textarea").fill("The threat was real; the police protected the shelter.")
    review.locator("button").click()
    expect(auditor.locator("#override .override-state")).to_contain_text(words["reviewed"])
    check_page(auditor, locale, problems)
    assert not problems


@pytest.mark.parametrize("locale", LOCALES)
def test_an_override_past_the_end_asked_for_shows_as_ended_waiting_for_its_review(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    referral = site.platform.referral
    hours_ago = timedelta(hours=4)
    referral_id = refer(
        site, f"lapse-{locale}", "dong-thap-police", ServiceType.LEGAL_AID, ago=hours_ago
    )
    ask = CommandContext(
        actor=MANAGER, at=utcnow() - hours_ago, idempotency_key=f"lapse-{locale}-1"
    )
    approve = CommandContext(
        actor=COORDINATOR, at=utcnow() - timedelta(hours=3), idempotency_key=f"lapse-{locale}-2"
    )
    asked = referral.request_override(
        ask,
        referral_id,
        "Threats from the recruiter: the police must know where she sleeps.",
        needed_for_hours=1,
    )
    referral.approve_override(approve, referral_id, UUID(asked["override_id"]))
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "inspector-1")
    page.goto(f"{site.base}/referrals/{referral_id}")
    expect(page.locator("#override .override-state")).to_contain_text(words["ended"])
    # Its review is still owed: the auditor may record it.
    expect(page.locator('form[action$="/review"]')).to_have_count(1)
    assert_translated(page, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_person_gets_their_own_copy_printable_in_their_language(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    problems: dict[str, list[str]] = {}
    case_id = site.case("dong-thap-1").case_id
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dt-swc-caseworker-1")
    page.goto(f"{site.base}/cases/{case_id}")
    page.locator(f'a[href="/cases/{case_id}/copy"]').click()
    expect(page.locator("h1")).to_have_text(words["copy"])
    expect(page.locator("#record-h ~ ol")).to_contain_text("Lê Thị Mai")
    # Every disclosure: to whom, under which grant (its receipt one click away).
    hospital = {"vi": "Bệnh viện Đa khoa Đồng Tháp", "en": "Dong Thap General Hospital"}
    by_consent = page.locator("#disclosures-h ~ table tbody tr", has_text=hospital[locale])
    expect(by_consent.first.locator('a[href$="/receipt"]')).to_be_visible()
    expect(by_consent.first).to_contain_text(words["name_field"])
    # Every read, this copy's own last.
    reads = page.locator("#reads-h ~ table tbody tr")
    expect(reads.last).to_contain_text(words["copy_read"])
    # The checkpoints that prove it complete: one per log, each signed.
    seal = page.locator("#seal-h ~ table tbody tr")
    assert seal.count() >= 4
    expect(page.locator("pre.checkpoint").first).to_contain_text("\u2014 ")
    check_page(page, locale, problems)
    screenshot(page, f"person-copy-{locale}")
    # On paper: no menus, no buttons.
    page.emulate_media(media="print")
    expect(page.locator("header.top")).to_be_hidden()
    expect(page.locator("h1")).to_be_visible()
    assert not problems


@pytest.mark.parametrize("locale", LOCALES)
def test_a_coordinator_gets_no_copy_of_the_person(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    case_id = site.case("dong-thap-1").case_id
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "dong-thap-coordinator")
    page.goto(f"{site.base}/cases/{case_id}")
    expect(page.locator(f'a[href="/cases/{case_id}/copy"]')).to_have_count(0)
    response = page.goto(f"{site.base}/cases/{case_id}/copy")
    assert response is not None
    assert response.status in (403, 404)
    assert not any(name in page.content() for name in NAMES)
    assert_translated(page, locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_auditor_sees_the_last_checkpoints_and_verifies_the_logs_now(
    site: Site, browser: Browser, contexts: list[BrowserContext], locale: str
) -> None:
    words = WORDS[locale]
    problems: dict[str, list[str]] = {}
    site.platform.checkpoint()  # what the platform's signer does every few seconds
    page = open_page(browser, contexts, locale)
    sign_in(page, site, "inspector-1")
    page.locator('nav a[href="/proof"]').click()
    rows = page.locator("table.seal tbody tr")
    assert rows.count() >= 4
    expect(rows.locator("code").first).to_be_visible()
    check_page(page, locale, problems)
    page.locator('form[action="/proof/verify"] button').click()
    expect(page.locator("#verdict")).to_contain_text(words["verified"])
    expect(page.locator("table.seal .ok").first).to_be_visible()
    check_page(page, locale, problems)
    screenshot(page, f"seal-{locale}")
    # Not for others: the case manager's role does not allow it.
    other = open_page(browser, contexts, locale)
    sign_in(other, site, "dt-swc-caseworker-1")
    response = other.goto(f"{site.base}/proof")
    assert response is not None
    assert response.status == 403
    assert_translated(other, locale)
    assert not problems
