"""For auditors: the seal's latest signed checkpoint of every log, and a verification of
every log now (each tree recomputed, each checkpoint's signature and consistency checked),
through the seal's own routes. The person's copy shows its checkpoints the same way."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from services.runtime.auth import Principal
from services.runtime.seal import api as seal_api
from services.runtime.seal.note import NoteError, parse_note
from services.web.deps import Csrf, User, page_router
from services.web.render import render

router = page_router()


@dataclass(frozen=True)
class CheckpointFacts:
    """What a signed checkpoint says: the log's origin, how many events it held, its root
    hash, and the names of the keys that signed it."""

    origin: str
    size: int
    root: str
    signers: tuple[str, ...]


def checkpoint_facts(text: str | None) -> CheckpointFacts | None:
    if not text:
        return None
    try:
        note = parse_note(text)
    except NoteError:
        return None
    checkpoint = note.checkpoint
    root = note.body.split("\n")[2]
    return CheckpointFacts(
        checkpoint.origin, checkpoint.size, root, tuple(name for name, _, _ in note.signatures)
    )


def seal_page(
    request: Request, principal: Principal, verified: list[seal_api.LogVerification] | None
) -> Response:
    settings = request.app.state.settings
    latest = seal_api.checkpoints(settings, principal)
    return render(
        request,
        "seal.html",
        latest=latest,
        verified={v.log: v for v in verified} if verified is not None else None,
        checkpoint_facts=checkpoint_facts,
    )


@router.get("/proof")
def seal(request: Request, principal: User) -> Response:
    """The latest checkpoint of every log (auditors)."""
    return seal_page(request, principal, None)


@router.post("/proof/verify")
def verify_now(request: Request, principal: User, _csrf: Csrf) -> Response:
    """Recompute every log's tree now and check every checkpoint against it (auditors)."""
    verified = seal_api.verify(request.app.state.settings, principal)
    return seal_page(request, principal, verified)
