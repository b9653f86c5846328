"""The web app's message catalogues: every string translated in Vietnamese and English, the
catalogues up to date with the templates and code, and the compiled files with them."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "services/web/locale"
LANGUAGES = ("vi", "en")
METHODS = [
    ("**/templates/**.html", "jinja2"),
    ("**.py", "python"),
]


def catalogue(language: str, suffix: str = "po") -> dict[str, str]:
    path = LOCALE / language / "LC_MESSAGES" / f"messages.{suffix}"
    with path.open("rb") as f:
        found = read_po(f) if suffix == "po" else read_mo(f)
    assert not found.fuzzy or suffix == "mo", f"{path} is marked fuzzy"
    return {_singular(m.id): _translated(m.string) for m in found if m.id and not m.fuzzy}


def _singular(msgid: object) -> str:
    """A plural message by its singular, as the extraction names it."""
    return str(msgid[0] if isinstance(msgid, tuple | list) else msgid)


def _translated(string: object) -> str:
    """The translation; a plural's forms joined, and empty when any form is."""
    if isinstance(string, tuple | list):
        return " | ".join(string) if all(string) else ""
    return str(string)


def extracted() -> set[str]:
    """What ``make messages`` extracts from the web app's templates and code."""
    messages = extract_from_dir(
        str(ROOT / "services/web"),
        method_map=METHODS,
        options_map={"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}},
        keywords={"_": None, "gettext": None, "ngettext": (1, 2), "N_": None},
    )
    return {m[2] if isinstance(m[2], str) else m[2][0] for m in messages}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_string_is_translated(language: str) -> None:
    missing = sorted(msgid for msgid, text in catalogue(language).items() if not text.strip())
    assert not missing, f"untranslated in {language}: {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_catalogue_holds_every_string_of_the_pages(language: str) -> None:
    missing = sorted(extracted() - set(catalogue(language)))
    assert not missing, f"run `make messages` and translate: {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalogue_matches_its_source(language: str) -> None:
    assert catalogue(language, "mo") == catalogue(language), "run `make messages`"


def test_placeholders_survive_translation() -> None:
    for msgid, text in catalogue("vi").items():
        for name in ("%(minutes)s", "%(time)s", "%(date)s", "%(agency)s", "%(user)s"):
            assert (name in msgid) == (name in text), (msgid, text)


def test_the_extraction_sees_the_templates() -> None:
    assert {"Province board", "Record the reception", "Police"} <= extracted()
