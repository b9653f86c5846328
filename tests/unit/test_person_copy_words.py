"""The person's copy says every kind of recorded read and every basis in words (translated
like every other string), never as a raw read path."""

from __future__ import annotations

import re
from pathlib import Path

from contracts.audit import ReadBasis
from services.web.person_copy import BASES, READS

SERVICES = Path(__file__).resolve().parents[2] / "services"
# How a read path is named where a read is recorded: what="x.y", or a *_READ_PATH constant.
RECORDED = re.compile(r'(?:\bwhat=|_READ_PATH = )"([a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)+)"')


def recorded_paths() -> set[str]:
    found: set[str] = set()
    for source in SERVICES.rglob("*.py"):
        found.update(RECORDED.findall(source.read_text(encoding="utf-8")))
    return found


def test_every_read_path_the_services_record_has_words_in_the_copy() -> None:
    paths = recorded_paths()
    # The scan finds both ways of naming a path.
    assert {"intake.case", "referral.feed_key", "referral.feed"} <= paths
    assert paths - READS.keys() == set()


def test_every_basis_of_a_read_has_words_in_the_copy() -> None:
    assert {basis.value for basis in ReadBasis} - BASES.keys() == set()
