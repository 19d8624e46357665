"""``commit-email store copy SRC_URL DST_URL``: move a whole store to another one.

SQLite to PostgreSQL when a team outgrows one machine, and back. Every table is read from
one consistent snapshot of the source and written in one transaction of the destination
(streamed: documents are never all in memory), the ticket number counter goes along, and
before the destination commits, its row counts must equal the source's, table by table;
otherwise nothing is written. A destination that already holds anything is refused: a copy
never merges two stores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import InputError, StoreError
from .storage import COPY_TABLES

if TYPE_CHECKING:
    from .store import Store

__all__ = ["copy_store"]


def copy_store(
    source: Store, destination: Store, *, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Copy every row of ``source`` into the empty ``destination``; returns the rows per
    table, verified equal on both sides. ``progress(table, rows)`` is called per table."""
    present = {t: n for t, n in destination.row_counts().items() if n}
    if present:
        what = ", ".join(f"{n} {t}" for t, n in present.items())
        raise InputError(f"the destination store is not empty ({what}); "
                         "store copy only fills an empty store")
    with source.snapshot():
        expected = source.row_counts()
        last_number = source.last_ticket_number()
        with destination.transaction():
            for table in COPY_TABLES:
                destination.import_rows(table, source.export_rows(table))
                if progress is not None:
                    progress(table, expected[table])
            destination.set_last_ticket_number(last_number)
            copied = destination.row_counts()
            if copied != expected:
                wrong = ", ".join(f"{t}: {expected[t]} in the source, {copied[t]} copied"
                                  for t in COPY_TABLES if copied[t] != expected[t])
                raise StoreError(f"the copy does not match its source ({wrong}); "
                                 "nothing was written")
    return copied
