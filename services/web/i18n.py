"""Languages of the web app: Babel catalogues, the user's choice, dates in Vietnam's time.

The language is the user's setting (a cookie set by the switch on every page), then the
browser's ``Accept-Language``, then Vietnamese. Catalogues live in ``locale/`` and are built
with ``make messages`` (pybabel extract, update, compile).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations
from fastapi import Request

LOCALES = ("vi", "en")
DEFAULT_LOCALE = "vi"
LANGUAGE_COOKIE = "ketnoi_lang"
TIME_ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"

_current: ContextVar[str] = ContextVar("ketnoi_web_locale", default=DEFAULT_LOCALE)


def N_(message: str) -> str:  # noqa: N802 (the gettext convention)
    """Mark ``message`` for extraction; it is translated where it is shown."""
    return message


@cache
def translations(locale: str) -> NullTranslations:
    return Translations.load(str(LOCALE_DIR), [locale], domain=DOMAIN)


def choose_locale(request: Request) -> str:
    """The user's setting, then the browser's preference, then Vietnamese."""
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LOCALES:
        return chosen
    for tag, _q in _accepted(request.headers.get("accept-language", "")):
        primary = tag.split("-")[0].lower()
        if primary in LOCALES:
            return primary
    return DEFAULT_LOCALE


def _accepted(header: str) -> list[tuple[str, float]]:
    found: list[tuple[str, float]] = []
    for part in header.split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag:
            found.append((tag, quality))
    return sorted(found, key=lambda item: -item[1])


def use_locale(locale: str) -> None:
    """Translate what is rendered next in this context into ``locale``."""
    _current.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def current_locale() -> str:
    return _current.get()


def gettext(message: str) -> str:
    return translations(_current.get()).ugettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ungettext(singular, plural, n)


def when(value: datetime | str | None, format: str = "medium") -> str:
    """A moment as the user's locale writes it, in Vietnam's time zone; empty for none."""
    if value is None or value == "":
        return ""
    return _when(value, format, _current.get())


@lru_cache(maxsize=4096)
def _when(value: datetime | str, format: str, locale: str) -> str:
    # A page shows the same moments again and again (a case's timeline at each visit):
    # Babel's formatting is the costly part of its rendering, so each is formatted once.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return format_datetime(moment, format=format, tzinfo=TIME_ZONE, locale=locale)


def day(value: date | str | None) -> str:
    """A calendar day (a date of birth; an ISO date from a read model) as the user's locale
    writes it."""
    if value is None or value == "":
        return ""
    calendar_day = date.fromisoformat(value) if isinstance(value, str) else value
    return format_date(calendar_day, format="medium", locale=_current.get())


def score(value: float, signed: bool = False) -> str:
    """A score (0 to 1) with two decimals, as the user's locale writes them (0,45 in
    Vietnamese); ``signed`` for a change (+0,30)."""
    pattern = "+0.00;-0.00" if signed else "0.00"
    return format_decimal(value, format=pattern, locale=_current.get())
