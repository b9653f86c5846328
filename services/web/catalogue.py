"""``python -m services.web.catalogue``: the English catalogue says each string as it is
written in the code (run by ``make messages`` after the update, before compiling); the
Vietnamese one is translated by hand."""

from __future__ import annotations

from babel.messages.pofile import read_po, write_po

from services.web.i18n import LOCALE_DIR


def fill_english() -> int:
    """Give every untranslated English message its own text (both forms of a plural);
    returns how many."""
    path = LOCALE_DIR / "en" / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as f:
        catalogue = read_po(f, locale="en")
    filled = 0
    for message in catalogue:
        if not message.id:
            continue
        if isinstance(message.id, tuple):  # a plural: its singular and plural forms
            if not (isinstance(message.string, tuple) and all(message.string)):
                message.string = message.id
                filled += 1
        elif not message.string:
            message.string = message.id
            filled += 1
    with path.open("wb") as f:
        write_po(f, catalogue, no_location=True, sort_output=True, width=100)
    return filled


if __name__ == "__main__":
    print(f"{fill_english()} English messages filled")
