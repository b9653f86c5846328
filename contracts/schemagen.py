"""Generate the committed JSON Schema of every event type into ``contracts/schemas/``.

Run ``python -m contracts.schemagen`` (or ``make schemas``) after changing an event; the
contract tests fail while the committed files differ from what this produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from contracts.envelope import Event, event_types

SCHEMA_DIR = Path(__file__).with_name("schemas")


def schema_of(cls: type[Event]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:ketnoi:event:{cls.topic()}",
        "x-event-type": cls.event_type,
        "x-event-version": cls.event_version,
        **schema,
    }


def render_all() -> dict[str, str]:
    """File name -> file text for every registered event type."""
    return {
        f"{cls.topic()}.json": json.dumps(schema_of(cls), indent=2, sort_keys=True) + "\n"
        for cls in sorted(event_types().values(), key=lambda c: c.event_type)
    }


def write_all(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(exist_ok=True)
    rendered = render_all()
    for stale in directory.glob("*.json"):
        if stale.name not in rendered:
            stale.unlink()
    for name, text in rendered.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(rendered)


if __name__ == "__main__":
    import contracts  # noqa: F401  (registers every event type)

    written = write_all()
    sys.stdout.write(f"wrote {len(written)} schemas to {SCHEMA_DIR}\n")
