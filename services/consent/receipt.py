"""Consent receipts: what the person agreed to, in a form they can keep.

The fields follow the Kantara Initiative Consent Receipt (v1.1) and ISO/IEC TS 27560: who
recorded it, the person (by their reference, never by name), what data, to whom, for which
purposes, for how long, how consent was collected, and how to withdraw it.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from uuid import UUID

from contracts.consent import ConsentGranted, Recipient
from services.consent.domain import ConsentRecord, GrantNotFoundError

RECEIPT_VERSION = "ketnoi-consent-receipt-1 (Kantara CR v1.1, ISO/IEC TS 27560)"
WITHDRAWAL = {
    "en": (
        "You can withdraw this consent at any time, for any reason, and it takes effect at once: "
        "tell your case manager, any agency that works with you, or call hotline 111. Your "
        "services do not depend on this consent. You may ask to see your record at any time."
    ),
    "vi": (
        "Bạn có thể rút lại sự đồng ý này bất cứ lúc nào, vì bất kỳ lý do nào, và việc rút lại có "
        "hiệu lực ngay: hãy báo cho cán bộ quản lý ca, bất kỳ cơ quan nào đang hỗ trợ bạn, hoặc "
        "gọi Tổng đài 111. Các dịch vụ hỗ trợ không phụ thuộc vào sự đồng ý này. Bạn có thể yêu "
        "cầu xem hồ sơ của mình bất cứ lúc nào."
    ),
}


GIVERS = {
    "person": ("Chính người được hỗ trợ", "the person themself"),
    "guardian": ("Người giám hộ hoặc cha mẹ", "a guardian or parent"),
    "child_protection_authority": ("Cơ quan bảo vệ trẻ em", "the child protection authority"),
}


def giver_text(given_by: dict[str, Any]) -> str:
    """Who gave the consent, in Vietnamese and English, with the guardian's relationship."""
    vi, en = GIVERS.get(given_by["kind"], (given_by["kind"], given_by["kind"]))
    relationship = given_by.get("relationship")
    return f"{vi} / {en}" + (f" ({relationship})" if relationship else "")


def _recipient_text(recipient: Recipient) -> str:
    if recipient.agency_id:
        return f"agency {recipient.agency_id}"
    if recipient.kind:
        return f"any {recipient.kind.value.replace('_', ' ')}"
    assert recipient.group is not None
    return f"group: {recipient.group.value.replace('_', ' ')}"


def status_of(record: ConsentRecord, grant_id: UUID, at: datetime) -> str:
    if grant_id in record.withdrawn:
        return "withdrawn"
    grant = record.grants[grant_id]
    if at < grant.valid_from:
        return "not_yet_valid"
    if at >= record.valid_until(grant_id):
        return "expired"
    return "active"


def receipt(record: ConsentRecord, grant_id: UUID, at: datetime) -> dict[str, Any]:
    """The receipt of one grant as JSON; raises GrantNotFoundError."""
    grant: ConsentGranted | None = record.grants.get(grant_id)
    if grant is None:
        raise GrantNotFoundError(grant_id)
    withdrawn = record.withdrawn.get(grant_id)
    return {
        "version": RECEIPT_VERSION,
        "receipt_id": str(grant.event_id),
        "consent_id": str(grant_id),
        "jurisdiction": "VN",
        "consent_timestamp": grant.timestamp.isoformat(),
        "collection_method": grant.collection.method.value,
        "collection": grant.collection.model_dump(mode="json"),
        "pii_principal_id": str(grant.person_id),
        "case_id": str(record.case_id),
        "given_by": grant.given_by.model_dump(mode="json"),
        "child_views_recorded": bool(grant.child_views),
        "recorded_by": grant.actor.model_dump(mode="json"),
        "pii_categories": [c.value for c in grant.categories],
        "recipients": [r.model_dump(mode="json", exclude_none=True) for r in grant.recipients],
        "purposes": [p.value for p in grant.purposes],
        "valid_from": grant.valid_from.isoformat(),
        "valid_until": record.valid_until(grant_id).isoformat(),
        "status": status_of(record, grant_id, at),
        "withdrawn_at": withdrawn.timestamp.isoformat() if withdrawn else None,
        "how_to_withdraw": WITHDRAWAL,
        "sensitive": True,
    }


def receipt_html(data: dict[str, Any]) -> str:
    """A printable page of the receipt, in Vietnamese and English."""

    def row(label_vi: str, label_en: str, value: str) -> str:
        return (
            f"<tr><th>{escape(label_vi)}<br><small>{escape(label_en)}</small></th>"
            f"<td>{escape(value)}</td></tr>"
        )

    recipients = ", ".join(_recipient_text(Recipient.model_validate(r)) for r in data["recipients"])
    rows = "".join(
        [
            row("Mã đồng ý", "Consent id", data["consent_id"]),
            row("Trạng thái", "Status", data["status"]),
            row("Thông tin được chia sẻ", "Information shared", ", ".join(data["pii_categories"])),
            row("Chia sẻ với", "Shared with", recipients),
            row("Mục đích", "Purposes", ", ".join(data["purposes"])),
            row("Hiệu lực từ", "Valid from", data["valid_from"]),
            row("Hiệu lực đến", "Valid until", data["valid_until"]),
            row("Người đồng ý", "Given by", giver_text(data["given_by"])),
            *(
                [row("Ý kiến của trẻ", "The child's own views", "Đã ghi nhận / Recorded")]
                if data["child_views_recorded"]
                else []
            ),
            row("Cách ghi nhận", "How collected", data["collection_method"]),
            row("Ngày ghi nhận", "Recorded on", data["consent_timestamp"]),
            row(
                "Người ghi nhận",
                "Recorded by",
                f"{data['recorded_by']['user_id']} ({data['recorded_by']['agency_id']})",
            ),
        ]
    )
    return f"""<!doctype html>
<html lang="vi"><head><meta charset="utf-8">
<title>Biên nhận đồng ý / Consent receipt</title>
<style>
body {{ font-family: sans-serif; max-width: 42rem; margin: 2rem auto; line-height: 1.45; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #999; padding: .4rem .6rem; text-align: left; vertical-align: top; }}
th {{ width: 35%; background: #f3f3f3; }}
.withdraw {{ border: 2px solid #333; padding: .8rem; margin-top: 1.2rem; }}
@media print {{ body {{ margin: 0; }} }}
</style></head>
<body>
<h1>Biên nhận đồng ý chia sẻ thông tin<br><small>Consent receipt</small></h1>
<table>{rows}</table>
<div class="withdraw">
<h2>Cách rút lại sự đồng ý / How to withdraw</h2>
<p lang="vi">{escape(WITHDRAWAL["vi"])}</p>
<p lang="en">{escape(WITHDRAWAL["en"])}</p>
</div>
<p><small>{escape(data["version"])}</small></p>
</body></html>
"""
