"""structlog, configured once: JSON in production, a readable console in the demo.

Personal data never goes into logs. Code logs ids (``case_id``, ``event_id``,
``correlation_id``) and never the person's details; as a safety net, values under keys that
usually hold personal data are replaced before anything is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

PERSONAL_KEYS = frozenset(
    {
        "full_name",
        "name",
        "date_of_birth",
        "details",
        "person",
        "feedback",
        "notes",
        "note",
        "management_plan",
        "phone",
        "address",
        "body",
        "authorization",
        "token",
    }
)

_configured = False


def redact_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in PERSONAL_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def line_writer(file: TextIO) -> structlog.WriteLoggerFactory:
    """Loggers that write each line, its newline included, in one call. ``print`` writes the
    line and its newline apart, and ``sys.stderr`` passes every write through: the worker
    processes of ``ketnoi serve --workers`` share one stderr, and their lines ran together."""
    return structlog.WriteLoggerFactory(file=file)


def configure_logging(fmt: Literal["console", "json"] = "console", level: str = "info") -> None:
    """Configure structlog and the standard library's logging, once per process."""
    global _configured
    if _configured:
        return
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_personal_data,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=line_writer(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
