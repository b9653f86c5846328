"""The cost of per-person encryption on reading: decoding events whose personal fields are
encrypted, beside decoding the same events stored in clear, in the same run.

Run ``python -m bench.crypto`` (or ``make bench``). No database server needed: the key store
is the embedded one (``keys.sqlite`` in a temporary directory). The events are every event
type of the contracts that has personal fields (the golden samples), each given to
``--persons`` people (every person's events under their own key), so each round decodes
``persons x 31`` events. Measured, in alternating rounds:

- **raw**: ``decode_stored`` of the events stored in clear (JSON parsed, upcast, validated
  into their contract classes), as a follower reads a log written before encryption;
- **encrypted**: the same events stored encrypted, through the same function, with the
  persons' keys in the key store's cache (as within ``KETNOI_KEY_CACHE_SECONDS`` of a
  previous read of the person);
- **encrypted, cold**: the same, with no cache at all (every event unwraps its person's
  key read from the key store), the worst case;
- **facts** and **facts, encrypted**: the projections' own reading (``fact_reader``: the JSON
  parsed, no validation), in clear and encrypted.

Figures are medians over ``--rounds`` rounds, in events per second, with the ratio of each
encrypted rate to its clear counterpart (of the medians, and the median of each round's own).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from uuid import uuid4

from eventsourcing.persistence import Notification, StoredEvent
from rich.console import Console
from rich.table import Table

from contracts.envelope import Event
from contracts.personal import personal_paths
from services.projections.views import fact_reader
from services.runtime.field_cipher import FieldCipher
from services.runtime.persistence import PydanticMapper, decode_stored, new_mapper
from services.runtime.person_keys import PersonKeys, person_keys
from services.runtime.settings import Settings
from tests.contract.samples import samples

console = Console(stderr=True)


def personal_samples() -> list[Event]:
    return [e for e in samples() if "person_id" in type(e).model_fields and personal_paths(type(e))]


def events_of(persons: int) -> list[Event]:
    kinds = personal_samples()
    found = []
    for _ in range(persons):
        person = uuid4()
        found += [e.model_copy(update={"person_id": person}) for e in kinds]
    return found


def as_notifications(stored: list[StoredEvent]) -> list[Notification]:
    return [
        Notification(
            id=i + 1,
            originator_id=s.originator_id,
            originator_version=s.originator_version,
            topic=s.topic,
            state=s.state,
        )
        for i, s in enumerate(stored)
    ]


def rate(decode: Callable[[Notification], object], events: list[Notification]) -> float:
    started = time.perf_counter()
    for n in events:
        decode(n)
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with TemporaryDirectory() as tmp:
        settings = Settings(database_url=None, data_dir=Path(tmp) / "data")
        plain, sealed = new_mapper(), new_mapper(settings)
        keys = person_keys(settings)
        cold = PydanticMapper(transcoder=sealed.transcoder)
        cold.fields = FieldCipher(PersonKeys(keys._backend, keys._wrapper, cache_seconds=0))
        events = events_of(args.persons)
        console.print(f"{len(events):,} events of {args.persons:,} persons: storing them...")
        in_clear = as_notifications([plain.to_stored_event(e) for e in events])
        encrypted = as_notifications([sealed.to_stored_event(e) for e in events])
        size = sum(len(n.state) for n in encrypted) / sum(len(n.state) for n in in_clear)
        rates: dict[str, list[float]] = {}
        measures: list[tuple[str, Callable[[Notification], object], list[Notification]]] = [
            ("raw", lambda n: decode_stored(plain, n), in_clear),
            ("encrypted", lambda n: decode_stored(sealed, n), encrypted),
            ("encrypted, cold", lambda n: decode_stored(cold, n), encrypted),
            ("facts", fact_reader(plain), in_clear),
            ("facts, encrypted", fact_reader(sealed), encrypted),
        ]
        keys.cache_seconds = 3600.0  # the warm rounds read every key from the cache
        for _name, decode, log in measures:  # warm up, and fill the cache
            rate(decode, log[:2000])
        rate(lambda n: decode_stored(sealed, n), encrypted)
        for round_ in range(args.rounds):
            order = measures if round_ % 2 == 0 else list(reversed(measures))
            for name, decode, log in order:
                rates.setdefault(name, []).append(rate(decode, log))
            console.print(f"round {round_ + 1}/{args.rounds} done")
        keys.close()

    median = {name: statistics.median(values) for name, values in rates.items()}
    table = Table(title=f"Decoding {len(events):,} events, medians of {args.rounds} rounds")
    table.add_column("reader")
    table.add_column("events/s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("paired ratio", justify="right")
    against = {
        "raw": "raw",
        "encrypted": "raw",
        "encrypted, cold": "raw",
        "facts": "facts",
        "facts, encrypted": "facts",
    }
    for name, value in median.items():
        base = against[name]
        # Each round's own ratio (measured moments apart), then their median: on a shared
        # machine whose speed drifts it moves less than the ratio of the medians.
        paired = statistics.median(a / b for a, b in zip(rates[name], rates[base], strict=True))
        table.add_row(name, f"{value:,.0f}", f"{value / median[base]:.2f}", f"{paired:.2f}")
    Console().print(table)
    print(f"stored size, encrypted / clear: {size:.2f}")


if __name__ == "__main__":
    main()
