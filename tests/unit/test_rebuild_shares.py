"""A rebuild in several processes: each takes a share of the cases, and applies to its views
only the facts about its own cases, however the fact names its case."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from services.projections.runner import Part, Windows, case_of
from services.projections.views import (
    CREATED,
    DISPATCHED,
    RECEPTION,
    CasesView,
    Docs,
    Fact,
    QueueView,
)

AT = "2026-03-01T10:30:00Z"


def fact(type_: str, originator: str, version: int, **data: Any) -> Fact:
    return Fact(type=type_, originator_id=originator, version=version, at=AT, data=data)


def test_every_case_is_in_exactly_one_share_and_the_shares_are_even() -> None:
    cases = [str(uuid4()) for _ in range(3000)]
    parts = [Part(i, 3) for i in range(3)]
    held = [[c for c in cases if part.holds(c)] for part in parts]
    assert sorted(c for share in held for c in share) == sorted(cases)
    assert all(800 < len(share) < 1200 for share in held), [len(s) for s in held]
    # The same case in the same share in every process: the hash does not depend on the
    # process (Python's own ``hash`` of a string does).
    assert [Part(i, 3).holds(cases[0]) for i in range(3)] == [p.holds(cases[0]) for p in parts]
    assert all(Part(i, 3).holds_key("ref:anything") for i in range(3))
    assert [Part(i, 3).holds_key("case:" + cases[0]) for i in range(3)].count(True) == 1
    with pytest.raises(ValueError, match="part 2 of 2"):
        Part(2, 2)


def test_a_fact_names_its_case_by_its_originator_its_case_id_or_its_link() -> None:
    case_id, referral, handover = str(uuid4()), str(uuid4()), str(uuid4())
    docs = Docs(lambda _key: None)
    assert case_of(docs, "intake", fact("x.stage_changed", case_id, 2)) == case_id
    created = fact("x.referral_created", referral, 1, case_id=case_id)
    assert case_of(docs, "referral", created) == case_id
    # A later event names only its referral: its case is the link the first one made.
    later = fact("x.referral_dispatched", referral, 2)
    assert case_of(docs, "referral", later) is None
    docs.put("ref:" + referral, {"case_id": case_id})
    docs.put("hand:" + handover, {"case_id": case_id})
    assert case_of(docs, "referral", later) == case_id
    assert case_of(docs, "referral", fact("x.handover_confirmed", handover, 2)) == case_id


def test_a_share_applies_only_the_facts_about_its_own_cases() -> None:
    views = {"cases": CasesView(), "queue": QueueView()}
    ids = [str(uuid4()) for _ in range(40)]
    mine, theirs = Part(0, 2), Part(1, 2)
    ours = next(c for c in ids if mine.holds(c))
    other = next(c for c in ids if theirs.holds(c))
    windows = Windows(None, views, ["cases"], {}, set(), mine)  # type: ignore[arg-type]
    for case_id in (ours, other):
        windows.apply(views["cases"], "cases", "intake", reception(case_id))
    rows = windows.docs["cases"].rows
    assert "case:" + ours in rows
    assert all(ours in key for key in rows), sorted(rows)
    # A referral of the other share's case: neither its link nor its case is made here, and
    # its later events, whose link this share never saw, are passed over.
    referral = str(uuid4())
    windows.apply(views["cases"], "cases", "referral", created(referral, other))
    windows.apply(views["cases"], "cases", "referral", fact(DISPATCHED, referral, 2, actor={}))
    assert "ref:" + referral not in windows.docs["cases"].rows
    assert "case:" + other not in windows.docs["cases"].rows
    # Its own referral is applied, and so are its later events.
    own = str(uuid4())
    windows.apply(views["cases"], "cases", "referral", created(own, ours))
    windows.apply(views["cases"], "cases", "referral", fact(DISPATCHED, own, 2, actor={}))
    doc = windows.docs["cases"].rows["case:" + ours][2]
    assert doc["referrals"][own]["status"] == "requested"
    assert windows.docs["cases"].rows["ref:" + own][2] == {"case_id": ours}


def reception(case_id: str) -> Fact:
    return fact(
        RECEPTION,
        case_id,
        1,
        place={"province": "lao-cai"},
        received_at=AT,
        route="rescued",
        receiving_agency={"agency_id": "police"},
    )


def created(referral: str, case_id: str) -> Fact:
    return fact(
        CREATED,
        referral,
        1,
        case_id=case_id,
        province="lao-cai",
        service_type="health_check",
        to_agency={"agency_id": "hospital"},
        from_agency={"agency_id": "police"},
        urgency="routine",
    )
