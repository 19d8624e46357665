"""Versioned schemas: a store made by an earlier version keeps opening, with all it held.

``tests/data/store-schema1.sql`` is a dump of a SQLite store made by the code before schema
versions existed (its ``meta`` says 1): it must open, be migrated to the current version,
keep every row, go on working, and end with the same tables, columns and indexes as a store
created new."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from commit_email.errors import StoreError
from commit_email.model import OutcomeKind, SourceRef
from commit_email.pgstore import PG_SCHEMA_VERSION, PostgresStore
from commit_email.store import SCHEMA_VERSION, SQLiteStore
from commit_email.testing import build_reply, make_config, make_connector

OLD_DUMP = Path(__file__).parent / "data" / "store-schema1.sql"


def old_store(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.executescript(OLD_DUMP.read_text())
    db.close()
    return path


def shape(path: Path) -> dict[str, object]:
    """Tables with their columns (name, type, not null, default, pk) and indexes with
    their columns, uniqueness and WHERE: what a migration must reproduce."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out: dict[str, object] = {}
        for table in tables:
            out[table] = sorted(tuple(r[1:]) for r in db.execute(f"PRAGMA table_info({table})"))
        for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ):
            out["index " + name] = " ".join(sql.replace("IF NOT EXISTS ", "").split())
        return out
    finally:
        db.close()


def version(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
    finally:
        db.close()


def test_a_store_made_before_schema_versions_opens_with_everything_in_it(tmp_path: Path) -> None:
    path = old_store(tmp_path / "old.db")
    assert version(path) == "1"

    with SQLiteStore(path) as store:
        [ticket] = store.list_tickets()
        assert ticket.number == "1" and ticket.description == "Printer on fire"
        assert [h.text.splitlines()[0] for h in store.history(ticket.rec_id)] == [
            "help", "still burning"]
        assert len(store.documents(ticket.rec_id)) == 2
        assert store.outcome_counts() == {"ticket_created": 1, "ticket_updated": 1}
        assert store.processed_uidls("support@mail:110", ["u1", "u2", "u3"]) == {"u1", "u2"}
        [queued] = store.pending_mail()
        assert queued.mail.kind == "forward" and queued.last_attempt is None
        assert store.ticket_for_filed_message_id("m1@acme.example") == ticket.rec_id
        assert store.recovery_of("host/disk") is not None
        [acme] = store.find_by_domain("acme.example")

        connector = make_connector(make_config(state_dir=tmp_path / "state"), store=store)
        reply = connector.process(build_reply(1, sender="bob@acme.example"),
                                  SourceRef(kind="pop3", name="support@mail:110", uidl="u3"))
        assert reply.kind is OutcomeKind.TICKET_UPDATED and reply.ticket == "1"
        again = connector.process(build_reply(2, sender="bob@acme.example", subject="New"))
        assert again.account == acme.rec_id
        assert [t.number for t in store.list_tickets()] == ["1", "2"]  # the count goes on

    assert version(path) == str(SCHEMA_VERSION)
    fresh = tmp_path / "fresh.db"
    SQLiteStore(fresh).close()
    assert shape(path) == shape(fresh)
    with SQLiteStore(path) as store:  # and it opens again, migrated
        assert len(store.list_tickets()) == 2


def test_an_even_older_store_gets_the_tables_and_columns_that_came_late(tmp_path: Path) -> None:
    """Early development builds wrote no meta row and had no filed_ids, no recoveries and no
    outbox.last_attempt: they are brought up as well, the filed Message-IDs learned from the
    history."""
    path = old_store(tmp_path / "older.db")
    db = sqlite3.connect(path)
    db.executescript("""
        DROP TABLE filed_ids; DROP TABLE recoveries; DROP INDEX outbox_due;
        ALTER TABLE outbox DROP COLUMN last_attempt; DROP TABLE meta;
    """)
    db.close()

    with SQLiteStore(path) as store:
        [ticket] = store.list_tickets()
        assert store.ticket_for_filed_message_id("m1@acme.example") == ticket.rec_id
        assert store.recovery_of("host/disk") is None
        [queued] = store.pending_mail()
        assert queued.last_attempt is None

    fresh = tmp_path / "fresh.db"
    SQLiteStore(fresh).close()
    assert shape(path) == shape(fresh)
    assert version(path) == str(SCHEMA_VERSION)


def test_a_store_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*newer"):
        SQLiteStore(path)
    assert version(path) == str(SCHEMA_VERSION + 1)


@pytest.mark.server
def test_postgres_stores_are_versioned_and_a_newer_one_is_refused(
    pg_url_factory: Callable[[], str],
) -> None:
    url = pg_url_factory()
    with PostgresStore(url) as store:
        assert store.schema_version == PG_SCHEMA_VERSION
        store._execute("UPDATE meta SET value = %s WHERE key = 'schema_version'",
                       (str(PG_SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=f"schema version {PG_SCHEMA_VERSION + 1}.*newer"):
        PostgresStore(url)
    again = pg_url_factory()
    with PostgresStore(again) as first, PostgresStore(again) as second:  # no second CREATE
        assert first.schema_version == second.schema_version == PG_SCHEMA_VERSION
