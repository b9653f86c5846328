"""Published statistics never single anyone out, and count only the cases whose consent,
as the consent decision says at that instant, covers statistics."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    ConsentGranted,
    ConsentRecordOpened,
    ConsentRefused,
    ConsentWithdrawn,
    GiverKind,
    Recipient,
    RecipientGroup,
    SubjectAgeNoted,
    consent_record_id,
)
from contracts.envelope import Actor, AgencyRef, Event
from contracts.vocabulary import AgencyKind, DataCategory, Purpose, Role
from services.projections.derived import Derived
from services.projections.statistics import (
    PUBLISHER,
    STEP,
    THRESHOLD,
    bucket,
    counts_in_statistics,
    publish,
    publishable,
    raw_counts,
    to_csv,
)
from services.projections.views import VIEWS, Docs, Fact, fact_reader
from services.runtime.persistence import new_mapper
from tests.support.stored import as_notifications

SERVICES = ["health_check", "psychological_first_aid", "legal_aid"]
STATUSES = ["requested", "in-progress", "completed", "failed"]
T0 = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
AT = datetime(2026, 6, 1, tzinfo=UTC)  # when the statistics are computed in these tests
MANAGER = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F",
    language="vi",
    withdrawal_explained=True,
)


def statistics_grant(
    record_id: UUID,
    version: int = 1,
    *,
    minutes: float = 0,
    days: int = 365,
    giver: GiverKind = GiverKind.PERSON,
    recipients: tuple[Recipient, ...] = (Recipient(group=RecipientGroup.ANY),),
) -> ConsentGranted:
    return ConsentGranted(
        originator_id=record_id,
        originator_version=version,
        timestamp=T0 + timedelta(minutes=minutes),
        actor=MANAGER,
        grant_id=uuid4(),
        person_id=record_id,
        categories=(DataCategory.IDENTITY,),
        recipients=recipients,
        purposes=(Purpose.SERVICE_PROVISION, Purpose.STATISTICS),
        valid_from=T0,
        valid_until=T0 + timedelta(days=days),
        collection=WRITTEN,
        given_by=ConsentGiver(kind=giver),
        child_views="agrees to be counted" if giver is not GiverKind.PERSON else None,
    )


def consent_entries(*events: Event) -> list[list[Any]]:
    """Consent events as the case overview keeps them."""
    return [
        [
            type(e).event_type,
            e.model_dump(mode="json", exclude={"originator_id", "originator_version"}),
        ]
        for e in events
    ]


def case(
    province: str,
    month: int,
    consent: bool,
    referrals: list[tuple[str, str, int | None]],
    reopenings: int = 0,
) -> dict[str, Any]:
    refs = {}
    for n, (service, status, hours) in enumerate(referrals):
        started = None if hours is None else f"2026-{month:02d}-02T{hours:02d}:00:00+00:00"
        refs[str(n)] = {
            "service_type": service,
            "status": status,
            "dispatched_at": f"2026-{month:02d}-02T00:00:00+00:00",
            "started_at": started,
        }
    return {
        "case_id": str(uuid4()),
        "province": province,
        "received_at": f"2026-{month:02d}-01T10:00:00+00:00",
        "reopenings": reopenings,
        "consent": consent_entries(statistics_grant(uuid4())) if consent else [],
        "referrals": refs,
    }


cases = st.lists(
    st.builds(
        case,
        province=st.sampled_from(["dong-thap", "lao-cai"]),
        month=st.integers(1, 3),
        consent=st.booleans(),
        referrals=st.lists(
            st.tuples(
                st.sampled_from(SERVICES),
                st.sampled_from(STATUSES),
                st.one_of(st.none(), st.integers(0, 23)),
            ),
            max_size=3,
        ),
        reopenings=st.integers(0, 2),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(cases)
def test_no_published_cell_is_below_the_threshold(docs: list[dict[str, Any]]) -> None:
    for cell in publish(docs, at=AT):
        assert cell.count is None or (cell.count >= THRESHOLD and cell.count % STEP == 0)


@settings(max_examples=200, deadline=None)
@given(cases)
def test_cases_without_statistics_consent_never_count(docs: list[dict[str, Any]]) -> None:
    with_consent = [d for d in docs if d["consent"]]
    assert raw_counts(docs, AT) == raw_counts(with_consent, AT)


@settings(max_examples=200, deadline=None)
@given(cases, st.integers(1, 10))
def test_one_more_person_never_shows_as_a_difference_of_one(
    docs: list[dict[str, Any]], extra_month: int
) -> None:
    """Reports before and after one case is added differ by 0 or by whole steps."""
    before = {
        (c.table, c.province, c.period, c.dimension, c.value): c.count for c in publish(docs, at=AT)
    }
    added = case("dong-thap", 1, True, [("health_check", "completed", 3)])
    after = {
        (c.table, c.province, c.period, c.dimension, c.value): c.count
        for c in publish([*docs, added], at=AT)
    }
    for key, count in after.items():
        old = before.get(key)
        if count is not None and old is not None:
            assert (count - old) % STEP == 0


def test_rounding_and_suppression() -> None:
    assert [publishable(n) for n in (0, 10, 11, 14, 15, 19, 20, 37)] == [
        None,
        None,
        None,
        None,
        15,
        15,
        20,
        35,
    ]


def test_counts_by_province_period_service_and_outcome() -> None:
    docs = [case("lao-cai", 2, True, [("health_check", "completed", 3)]) for _ in range(17)]
    docs += [case("lao-cai", 2, False, [("health_check", "completed", 3)]) for _ in range(9)]
    cells = {(c.table, c.dimension, c.value): c.count for c in publish(docs, at=AT)}
    assert cells[("cases", "all", "all")] == 15  # 17 consenting cases, rounded down
    assert cells[("referrals", "health_check", "completed")] == 15
    assert cells[("time_to_service", "health_check", "1-6 hours")] == 15
    assert bucket(0.5) == "under 1 hour"
    assert bucket(100) == "over 3 days"
    csv_text = to_csv(publish(docs[:5], at=AT))
    assert csv_text.splitlines()[0] == "table,province,period,dimension,value,count"
    assert "suppressed" in csv_text


# -- the consent decision decides who counts -------------------------------------------------


class CaseLog:
    """One case's consent record, as the consent log would hold it."""

    def __init__(self) -> None:
        self.case_id = uuid4()
        self.record_id = consent_record_id(self.case_id)
        self.events: list[Event] = []
        self.add(
            ConsentRecordOpened,
            0,
            case_id=self.case_id,
            person_id=self.record_id,
            province="dong-thap",
            received_at=T0,
        )

    def add(self, event_type: type[Event], minutes: float, **fields: Any) -> Event:
        event = event_type(
            originator_id=self.record_id,
            originator_version=len(self.events) + 1,
            timestamp=T0 + timedelta(minutes=minutes),
            actor=MANAGER,
            **fields,
        )
        self.events.append(event)
        return event

    def grant(self, minutes: float = 5, **changes: Any) -> ConsentGranted:
        event = statistics_grant(self.record_id, len(self.events) + 1, minutes=minutes, **changes)
        self.events.append(event)
        return event


def five_cases() -> list[CaseLog]:
    """Expired, refused, withdrawn, a guardian's grant past the 18th birthday, and valid."""
    expired = CaseLog()
    expired.grant(days=30)
    refused = CaseLog()
    refused.grant()
    refused.add(
        ConsentRefused,
        10,
        refusal_id=uuid4(),
        person_id=refused.record_id,
        recipients=(Recipient(group=RecipientGroup.GOVERNMENT),),
        purposes=(Purpose.STATISTICS,),
        statement="Not to the authorities",
    )
    withdrawn = CaseLog()
    grant = withdrawn.grant()
    withdrawn.add(
        ConsentWithdrawn,
        60 * 24,
        grant_id=grant.grant_id,
        person_id=withdrawn.record_id,
        heard_by=HOSPITAL,
        reason="changed my mind",
    )
    minor = CaseLog()
    minor.add(
        SubjectAgeNoted,
        1,
        person_id=minor.record_id,
        minor=True,
        adult_on=date(2026, 3, 1),  # 18 between the grant and the statistics
        age_is_estimated=False,
    )
    minor.grant(giver=GiverKind.GUARDIAN)
    valid = CaseLog()
    valid.grant()
    return [expired, refused, withdrawn, minor, valid]


def facts(logs: list[CaseLog]) -> list[Fact]:
    """The logs' events as the views read them from the store, in log order."""
    mapper = new_mapper()
    read = fact_reader(mapper)
    events = [e for log in logs for e in log.events]
    notifications = as_notifications(mapper, events)
    return read(notifications)


def rebuilt(logs: list[CaseLog]) -> list[dict[str, Any]]:
    """The case documents as a rebuild makes them: every fact applied in memory at once."""
    docs = Docs(lambda _key: None)
    for fact in facts(logs):
        VIEWS["cases"].apply(docs, "consent", fact)
    return [doc for key, (_p, _a, doc) in docs.rows.items() if key.startswith("case:")]


def live(logs: list[CaseLog]) -> list[dict[str, Any]]:
    """The case documents as the live projector makes them: one fact a batch, each batch
    loading the stored JSON documents and writing them back."""
    stored: dict[str, tuple[Any, Any, bytes]] = {}
    for fact in facts(logs):

        def load(key: str) -> tuple[Any, Any, Any] | None:
            row = stored.get(key)
            return None if row is None else (row[0], row[1], orjson.loads(row[2]))

        docs = Docs(load)
        VIEWS["cases"].apply(docs, "consent", fact)
        for key in docs.dirty:
            province, agency, doc = docs.rows[key]
            stored[key] = (province, agency, orjson.dumps(doc))
    return [orjson.loads(row[2]) for key, row in stored.items() if key.startswith("case:")]


def counted(docs: list[dict[str, Any]], at: datetime) -> set[str]:
    return {doc["case_id"] for doc in docs if counts_in_statistics(doc, at)}


def test_only_a_grant_in_force_counts_in_statistics() -> None:
    logs = five_cases()
    expired, _refused, _withdrawn, minor, valid = (str(log.case_id) for log in logs)
    docs = rebuilt(logs)
    assert counted(docs, AT) == {valid}
    # Earlier, before the grant expired and before the 18th birthday, those two counted.
    assert counted(docs, T0 + timedelta(days=10)) == {expired, minor, valid}
    counts = raw_counts(docs, AT)
    assert counts[("cases", "dong-thap", "unknown", "all", "all")] == 1


def test_the_live_view_and_a_rebuild_give_the_same_statistics() -> None:
    logs = five_cases()
    from_rebuild, from_live = rebuilt(logs), live(logs)
    assert sorted(from_live, key=lambda d: d["case_id"]) == sorted(
        from_rebuild, key=lambda d: d["case_id"]
    )
    for at in (T0 + timedelta(days=10), AT):
        assert raw_counts(from_live, at) == raw_counts(from_rebuild, at)
        assert publish(from_live, threshold=1, step=1, at=at) == publish(
            from_rebuild, threshold=1, step=1, at=at
        )


def test_the_case_overview_keeps_no_free_text_of_the_person() -> None:
    text = orjson.dumps(rebuilt(five_cases()))
    for said in (b"agrees to be counted", b"Not to the authorities", b"changed my mind"):
        assert said not in text


def test_the_publisher_is_a_state_authority_named_once() -> None:
    """A grant naming the group any, the government or the kind local_authority covers the
    publisher; one naming only a hospital does not."""
    for recipient, counts in (
        (Recipient(group=RecipientGroup.ANY), True),
        (Recipient(group=RecipientGroup.GOVERNMENT), True),
        (Recipient(kind=AgencyKind.LOCAL_AUTHORITY), True),
        (Recipient(agency_id=PUBLISHER.agency_id), True),
        (Recipient(kind=AgencyKind.HOSPITAL), False),
    ):
        log = CaseLog()
        log.grant(recipients=(recipient,))
        assert counted(rebuilt([log]), AT) == ({str(log.case_id)} if counts else set()), recipient


def _with_exploitation(doc: dict[str, Any], legal: bool) -> dict[str, Any]:
    """A case whose statistics grant covers ``legal_case`` too when ``legal``."""
    record = uuid4()
    grant = statistics_grant(record)
    if legal:
        grant = grant.model_copy(
            update={"categories": (DataCategory.IDENTITY, DataCategory.LEGAL_CASE)}
        )
    return {
        **doc,
        "consent": consent_entries(grant),
        "exploitation": {
            "types": ["forced_labour", "forced_criminality"],
            "means_of_control": ["debt_bondage"],
        },
        "identification": "identified",
    }


def test_exploitation_counts_by_the_ctdc_names_where_legal_data_may_count() -> None:
    legal = [_with_exploitation(case("dong-thap", 3, True, []), legal=True) for _ in range(16)]
    other = [_with_exploitation(case("dong-thap", 3, True, []), legal=False) for _ in range(12)]
    counts = raw_counts(legal + other, AT)
    assert counts[("cases", "dong-thap", "2026-03", "all", "all")] == 28
    key = ("exploitation", "dong-thap", "2026-03", "typeOfExploit")
    assert counts[(*key, "isForcedLabour")] == 16  # the other 12 do not permit legal_case
    assert counts[(*key, "isForcedCriminality")] == 16
    means = ("means_of_control", "dong-thap", "2026-03", "meansOfControl")
    assert counts[(*means, "meansOfControlDebtBondage")] == 16
    assert counts[("identification", "dong-thap", "2026-03", "status", "identified")] == 16
    cells = {(c.table, c.value): c.count for c in publish(legal + other, at=AT)}
    assert cells[("exploitation", "isForcedLabour")] == 15  # rounded down to the step
    few = publish(legal[:12], at=AT)
    assert all(c.count is None for c in few)  # 10 after rounding: below the threshold


def test_what_a_case_counts_stays_its_documents_last_key() -> None:
    """Live, a key may come after the case first counted (the case manager's agency, read
    from intake after consent); a rebuild reads the logs in another order. The stored text
    is the same either way only if ``counted`` is written last every time."""
    doc = case("lao-cai", 2, True, [("health_check", "completed", 3)])
    derived = Derived()
    derived.case(f"case:{doc['case_id']}", None, doc)
    first = derived.counts.copy()
    doc["case_manager_agency"] = "lao-cai-social-work-centre"
    derived.case(f"case:{doc['case_id']}", None, doc)
    assert list(doc)[-1] == "counted"
    assert derived.counts == first  # counted once, not again
