"""The reintegration plan's page: goals per domain and tasks, each with a member of the team
responsible and a due date, made with the person and agreed by them, revised with its
history kept; the measures of reintegration (IOM's Reintegration Sustainability Survey
dimensions) with the case's trend; interagency case conferences; the exit plan. Read and
written through the intake service's plan routes, which ask the access gate."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import Response

from contracts.plan import AgreementMethod, PlanDomain, TaskStatus, TeamRole
from contracts.vocabulary import ContactMode
from services.intake import plan_api
from services.intake.plan import TASK_STEPS
from services.referral import api as referral_api
from services.runtime.auth import Principal
from services.web.casework import key, page, read_case, recorded
from services.web.deps import Csrf, User, page_router
from services.web.forms import Failure, FieldError, Form, Posted
from services.web.i18n import N_, TIME_ZONE, choose_locale
from services.web.labels import province
from services.web.positions import service
from services.web.referrals import recipients
from services.web.render import agency_name

router = page_router()
NEW_TASK_ROWS = 3
ATTENDEE_ROWS = 5
DECISION_ROWS = 3
CONFERENCE_TASK_ROWS = 2
DIMENSIONS = ("economic", "social", "psychosocial")
# The trend chart: a small SVG drawn on the server, no script.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 560, 200, 30


def trend(measures: list[Any]) -> dict[str, Any]:
    """Points of each dimension's line across the measures, oldest first, scaled to the
    chart (a score of 1 at the top)."""
    count = len(measures)
    inner_w = CHART_WIDTH - 2 * CHART_PAD
    inner_h = CHART_HEIGHT - 2 * CHART_PAD
    xs = [
        CHART_PAD + (inner_w * n / (count - 1) if count > 1 else inner_w / 2) for n in range(count)
    ]

    def y(score: float) -> float:
        return round(CHART_PAD + inner_h * (1 - score), 1)

    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "pad": CHART_PAD,
        "xs": [round(x, 1) for x in xs],
        "grid": [(score, y(score)) for score in (0, 0.25, 0.5, 0.75, 1)],
        "lines": {
            d: " ".join(f"{x:.1f},{y(getattr(m, d))}" for x, m in zip(xs, measures, strict=True))
            for d in (*DIMENSIONS, "composite")
        },
        "dots": {
            d: [(x, y(getattr(m, d))) for x, m in zip(xs, measures, strict=True)]
            for d in (*DIMENSIONS, "composite")
        },
    }


def plan_page(
    request: Request, principal: Principal, case_id: UUID, failure: Failure | None = None
) -> Response:
    case = read_case(request, principal, case_id)
    plan = plan_api.read_plan(case_id, service(request, "intake"), principal, request)
    current = plan.revisions[-1] if plan.revisions else None
    domain_of = {g.goal_id: g.domain for g in current.goals} if current else {}
    status_of = {t.task_id: t for t in plan.tasks}
    # Each task's referrals, with their status: read as the referral list tells them.
    task_referrals: dict[UUID, list[Any]] = {}
    for referral in referral_api.list_referrals(
        service(request, "referral"), principal, request, case_id=case_id
    ):
        if referral.plan_task_id is not None:
            task_referrals.setdefault(referral.plan_task_id, []).append(referral)
    locale = choose_locale(request)
    return page(
        request,
        principal,
        case_id,
        "plan.html",
        failure,
        case,
        plan=plan,
        current=current,
        domain_of=domain_of,
        goal_text={g.domain.value: g.goal for g in current.goals} if current else {},
        today=datetime.now(TIME_ZONE).date().isoformat(),
        status_of=status_of,
        task_referrals=task_referrals,
        steps={s.value: list(n) for s, n in TASK_STEPS.items()},
        trend=trend(plan.measures) if plan.measures else None,
        domains=list(PlanDomain),
        team_roles=list(TeamRole),
        methods=list(AgreementMethod),
        task_statuses=list(TaskStatus),
        follow_up_modes=list(ContactMode),
        # Each agency's name once: a page has ten lists of them.
        agency_options=[
            (a.agency_id, f"{agency_name(request, a.agency_id, locale)} ({province(a.province)})")
            for a in recipients(request, principal)
        ],
        new_rows=range(NEW_TASK_ROWS),
        attendee_rows=range(ATTENDEE_ROWS),
        decision_rows=range(DECISION_ROWS),
        conference_rows=range(CONFERENCE_TASK_ROWS),
        dimensions=DIMENSIONS,
    )


@router.get("/cases/{case_id}/plan")
def plan(case_id: UUID, request: Request, principal: User) -> Response:
    return plan_page(request, principal, case_id)


def _recorded(
    request: Request,
    principal: Principal,
    case_id: UUID,
    form: str,
    posted: Posted,
    messages: Mapping[str, str],
    send: Callable[[], object],
    where: str,
    rules: Mapping[str, str] | None = None,
) -> Response:
    """Send one form of the plan's page: back to ``where`` on it once recorded; else the
    page again, with the form's error beside it."""
    return recorded(
        form,
        posted,
        messages,
        send,
        where=f"/cases/{case_id}/plan#{where}",
        again=lambda failure: plan_page(request, principal, case_id, failure),
        rules=rules,
    )


def task_row(posted: Posted, prefix: str, goal: Any) -> dict[str, Any] | None:
    """A task from the row ``prefix`` (None when the row is left empty): what, by whom (a
    member of the team, from an agency), and when. ``goal`` turns the chosen goal into its
    index in the revision."""
    action = posted.text(f"{prefix}_action")
    if action is None:
        return None
    role = posted.text(f"{prefix}_role")
    agency = posted.text(f"{prefix}_agency")
    due = posted.day(f"{prefix}_due")
    index = goal(posted.text(f"{prefix}_goal"))
    if role is None or agency is None or due is None or index is None:
        raise FieldError(prefix)
    return {
        "goal": index,
        "action": action,
        "responsible": {
            "team_role": role,
            "agency": agency,
            "member_id": posted.text(f"{prefix}_member"),
        },
        "due_on": due.isoformat(),
        "service_type": posted.text(f"{prefix}_service"),
    }


TASK_ROW = N_(
    "Give each new task its goal (a domain with a goal), what is to be done, the team member "
    "responsible and their agency, and a due date in the future."
)
REVISION = {
    "goals": N_("Write at least one goal, in the domain it belongs to."),
    "keep": N_("A task kept needs a goal in its domain in this revision."),
    "tasks": TASK_ROW,
    "reason": N_("Say why the plan is revised."),
    **{f"task_{n}": TASK_ROW for n in range(NEW_TASK_ROWS)},
}


@router.post("/cases/{case_id}/plan")
def revise_plan(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """The whole plan, made with the person: the goals written per domain, the tasks kept
    from the plan as it stands, and new ones."""
    state = request.app.state

    def send() -> object:
        goals = [
            {"domain": d.value, "goal": text}
            for d in PlanDomain
            if (text := posted.text(f"goal_{d.value}"))
        ]
        index = {g["domain"]: n for n, g in enumerate(goals)}
        tasks: list[dict[str, Any]] = []
        kept = set(posted.all("keep"))
        if kept:
            now = plan_api.read_plan(case_id, service(request, "intake"), principal, request)
            current = now.revisions[-1] if now.revisions else None
            domain_of = {g.goal_id: g.domain.value for g in current.goals} if current else {}
            for task in current.tasks if current else ():
                if str(task.task_id) not in kept:
                    continue
                if domain_of.get(task.goal_id) not in index:
                    raise FieldError("keep")
                tasks.append(
                    {
                        "goal": index[domain_of[task.goal_id]],
                        "action": task.action,
                        "responsible": {
                            "team_role": task.responsible.team_role.value,
                            "agency": task.responsible.agency.agency_id,
                            "member_id": task.responsible.member_id,
                        },
                        "due_on": task.due_on.isoformat(),
                        "service_type": task.service_type,
                        "task_id": str(task.task_id),
                    }
                )
        for n in range(NEW_TASK_ROWS):
            row = task_row(posted, f"task_{n}", lambda d: index.get(d or ""))
            if row is not None:
                tasks.append(row)
        body = plan_api.PlanRevision.model_validate(
            {"goals": goals, "tasks": tasks, "reason": posted.text("reason")}
        )
        return plan_api.revise_plan(
            case_id,
            body,
            service(request, "intake"),
            principal,
            state.agencies,
            request,
            key(posted),
        )

    return _recorded(request, principal, case_id, "revision", posted, REVISION, send, "plan")


AGREEMENT = {
    "method": N_(
        "Choose how the person agreed: an adult signs or agrees before a witness; a minor's "
        "plan is signed by the guardian, with the child's own views written below."
    ),
    "person_views": N_("Write the person's own views (under 1000 characters)."),
}


@router.post("/cases/{case_id}/plan/agreement")
def agree_plan(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = plan_api.AgreementCreate.model_validate(
            {"method": posted.text("method") or "", "person_views": posted.text("person_views")}
        )
        return plan_api.agree_plan(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    rules = {"_": N_("The person has already agreed to the plan as it stands.")}
    return _recorded(
        request, principal, case_id, "agreement", posted, AGREEMENT, send, "plan", rules
    )


PROGRESS = {
    "to_status": N_("Choose the task's new status."),
    "note": N_("Keep the note under 1000 characters."),
}


@router.post("/cases/{case_id}/plan/tasks/{task_id}")
def progress_task(
    case_id: UUID,
    task_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    posted: Form,
) -> Response:
    def send() -> object:
        body = plan_api.TaskProgress.model_validate(
            {"to_status": posted.text("to_status") or "", "note": posted.text("note")}
        )
        return plan_api.progress_task(
            case_id, task_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(
        request, principal, case_id, f"task-{task_id}", posted, PROGRESS, send, "tasks"
    )


MEASURE = {
    "measured_at": N_("Give the date and time of the measure (not in the future)."),
    **{d: N_("Give each score from 0 to 1 (for example 0.45).") for d in DIMENSIONS},
}
MEASURE_RULES = {
    "_": N_("The first measure is the baseline: take it at reception or in the crisis stage.")
}


@router.post("/cases/{case_id}/plan/measures")
def measure(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = plan_api.MeasureCreate.model_validate(
            {
                "measured_at": posted.moment("measured_at"),
                **{d: posted.score(d) for d in DIMENSIONS},
            }
        )
        return plan_api.measure(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(
        request, principal, case_id, "measure", posted, MEASURE, send, "measures", MEASURE_RULES
    )


EXIT = {
    "planned_exit_on": N_("Give the date of the exit, in the future."),
    "follow_up_every_days": N_("Give how often to follow up, every 7 to 180 days."),
    "follow_up_until": N_("Give the last day of follow-up, after the exit."),
    "follow_up_modes": N_(
        "Tick at least one way to follow up, among those the person accepts (not one they refused)."
    ),
    "how_to_come_back": N_("Write what the person was told about coming back: whom to call."),
}


@router.post("/cases/{case_id}/plan/exit")
def plan_exit(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = plan_api.ExitPlanCreate.model_validate(
            {
                "planned_exit_on": posted.day("planned_exit_on", required=True),
                "follow_up_every_days": posted.number("follow_up_every_days", required=True),
                "follow_up_until": posted.day("follow_up_until", required=True),
                "follow_up_modes": tuple(posted.all("follow_up_modes")),
                "how_to_come_back": posted.text("how_to_come_back") or "",
            }
        )
        return plan_api.plan_exit(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    rules = {
        "_": N_(
            "The exit is planned once the person is stable: in the transitional or the "
            "external support stage."
        )
    }
    return _recorded(request, principal, case_id, "exit", posted, EXIT, send, "exit", rules)


CONFERENCE = {
    "held_on": N_("Give the date of the conference, not in the future."),
    "attendees": N_(
        "Name at least two agencies that attended, each with the capacity they came in."
    ),
    "decisions": N_("Write at least one decision."),
    "tasks": TASK_ROW,
    **{f"ctask_{n}": TASK_ROW for n in range(CONFERENCE_TASK_ROWS)},
}


@router.post("/cases/{case_id}/plan/conferences")
def hold_conference(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """Who attended, what was decided, and the tasks it adds to the plan (a new revision,
    for the person to agree to)."""
    state = request.app.state

    def goal_index(chosen: str | None) -> int | None:
        return int(chosen) if chosen and chosen.isdigit() else None

    def send() -> object:
        attendees = []
        for n in range(ATTENDEE_ROWS):
            agency = posted.text(f"attendee_{n}_agency")
            capacity = posted.text(f"attendee_{n}_capacity")
            if agency is None and capacity is None:
                continue
            if agency is None or capacity is None:
                raise FieldError("attendees")
            attendees.append({"agency": agency, "capacity": capacity})
        tasks = [
            row
            for n in range(CONFERENCE_TASK_ROWS)
            if (row := task_row(posted, f"ctask_{n}", goal_index)) is not None
        ]
        body = plan_api.ConferenceCreate.model_validate(
            {
                "held_on": posted.day("held_on", required=True),
                "attendees": attendees,
                "decisions": [
                    text for n in range(DECISION_ROWS) if (text := posted.text(f"decision_{n}"))
                ],
                "tasks": tasks,
            }
        )
        return plan_api.hold_conference(
            case_id,
            body,
            service(request, "intake"),
            principal,
            state.agencies,
            request,
            key(posted),
        )

    return _recorded(
        request, principal, case_id, "conference", posted, CONFERENCE, send, "conferences"
    )
