"""Versioned schemas: a store made by an earlier version keeps opening, with all it held.

``tests/data/store-schema1.sql`` is a dump of a SQLite store made by the code before schema
versions existed (its ``meta`` says 1): it must open, be migrated to the current version,
keep every row, go on working, and end with the same tables, columns and indexes as a store
created new."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commit_email.cli import main
from commit_email.errors import StoreError
from commit_email.model import OutcomeKind, OutgoingMail, SourceRef, utcnow
from commit_email.pgstore import PG_SCHEMA_VERSION, PostgresStore
from commit_email.store import SCHEMA_VERSION, SQLiteStore, Store
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


# The given-up mark: a column since SQLite schema 4 and PostgreSQL schema 3 ------------------

#: The outbox index of the versions before, which read the mark in the error text.
OLD_DUE_INDEX = ("CREATE INDEX outbox_due ON outbox (id)"
                 " WHERE sent IS NULL AND last_error NOT LIKE 'permanent: %'")
REFUSED = "all recipients refused (jane@customer.example: 550 5.1.1 no such user)"
OUT_OF_ATTEMPTS = "gave up after 5 attempts: 451 4.7.1 greylisted"
TRIED = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def outgoing(n: int) -> OutgoingMail:
    return OutgoingMail(kind="auto_response", sender="support@acme.example",
                        recipients=("jane@customer.example",),
                        raw=f"Subject: mail {n}\r\n\r\nbody\r\n".encode(),
                        message_id=f"{n}@acme.example")


#: (last_error, attempts, tried, sent) of four mails as the versions before wrote them:
#: refused for good, out of attempts (never stamped with a time), waiting, sent
OLD_ROWS = [
    (f"permanent: {REFUSED}", 1, TRIED, None),
    (f"permanent: {OUT_OF_ATTEMPTS}", 5, None, None),
    ("451 4.3.0 try later", 2, TRIED, None),
    ("", 1, TRIED, TRIED),
]


def check_migrated_outbox(store: Store, ids: list[int]) -> None:
    refused, out_of_attempts, waiting, sent = (store.get_mail(i) for i in ids)
    assert refused is not None and refused.status == "failed"
    assert refused.error == refused.last_error == REFUSED  # what `outbox list` shows
    assert refused.given_up_at == TRIED  # given up at its last attempt
    assert out_of_attempts is not None and out_of_attempts.status == "failed"
    assert out_of_attempts.error == OUT_OF_ATTEMPTS and out_of_attempts.attempts == 5
    assert out_of_attempts.given_up_at == out_of_attempts.created  # no attempt time known
    assert waiting is not None and waiting.status == "pending"
    assert waiting.error == "451 4.3.0 try later" and waiting.given_up_at is None
    assert sent is not None and sent.status == "sent" and sent.given_up_at is None
    later = utcnow() + timedelta(days=1)
    assert [m.id for m in store.due_mail(tried_before=later, limit=10)] == [waiting.id]
    # and the column works as the mark did: retry puts mail back, giving up takes it out
    assert store.requeue_mail(refused.id)
    store.mark_mail_failed(waiting.id, "550 5.1.1 no such user", give_up=True)
    assert [m.id for m in store.due_mail(tried_before=later, limit=10)] == [refused.id]


def sqlite_version_3(path: Path) -> list[int]:
    """A SQLite store as schema version 3 made it, with OLD_ROWS in its outbox."""
    with SQLiteStore(path) as store:
        ids = [store.enqueue_mail(outgoing(n)) for n in range(len(OLD_ROWS))]
    db = sqlite3.connect(path)
    db.executescript("DROP INDEX outbox_due; ALTER TABLE outbox DROP COLUMN given_up;"
                     f"{OLD_DUE_INDEX}; UPDATE meta SET value = '3'"
                     " WHERE key = 'schema_version';")
    for mail_id, (error, attempts, tried, sent) in zip(ids, OLD_ROWS, strict=True):
        db.execute("UPDATE outbox SET last_error = ?, attempts = ?, last_attempt = ?, sent = ?"
                   " WHERE id = ?", (error, attempts, tried and tried.isoformat(),
                                     sent and sent.isoformat(), mail_id))
    db.commit()
    db.close()
    return ids


def test_a_version_3_sqlite_store_gets_the_given_up_column(tmp_path: Path) -> None:
    path, fresh = tmp_path / "v3.db", tmp_path / "fresh.db"
    ids = sqlite_version_3(path)
    SQLiteStore(fresh).close()
    assert version(path) == "3"

    with SQLiteStore(path) as store:
        check_migrated_outbox(store, ids)
    assert version(path) == str(SCHEMA_VERSION)
    assert shape(path) == shape(fresh)  # the column, and outbox_due rebuilt on it
    with SQLiteStore(path) as store:  # and it opens again, migrated
        assert [m.status for m in store.all_mail()] == ["pending", "failed", "failed", "sent"]


def test_the_outbox_command_shows_migrated_mail_as_before(tmp_path: Path) -> None:
    """``outbox list`` printed the error without the mark, with status ``failed``: the same
    after the migration."""
    ids = sqlite_version_3(tmp_path / "commit.db")
    config = tmp_path / "commit-email.toml"
    config.write_text('[connector]\npublic_address = "support@acme.example"\n'
                      'internal_address = "helpdesk@acme.example"\nstate_dir = "state"\n'
                      '[store]\nurl = "sqlite:///commit.db"\n')
    out = io.StringIO()
    assert main(["outbox", "--config", str(config), "--json", "list"], out=out) == 0
    docs = json.loads(out.getvalue())
    assert [(d["id"], d["status"], d["last_error"]) for d in docs] == [
        (ids[0], "failed", REFUSED), (ids[1], "failed", OUT_OF_ATTEMPTS),
        (ids[2], "pending", "451 4.3.0 try later")]
    out = io.StringIO()
    assert main(["outbox", "--config", str(config), "list"], out=out) == 0
    assert f"1 attempts, last error: {REFUSED}\n" in out.getvalue()
    assert "permanent" not in out.getvalue()


def pg_shape(store: PostgresStore) -> dict[str, object]:
    """The columns and indexes of the store's schema, without the schema's name."""
    columns = store._execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = current_schema()").fetchall()
    indexes = store._execute(
        "SELECT indexname, replace(indexdef, schemaname || '.', '') FROM pg_indexes"
        " WHERE schemaname = current_schema()").fetchall()
    return {"columns": sorted(columns), "indexes": sorted(indexes)}


@pytest.mark.server
def test_a_version_2_postgres_store_gets_the_given_up_column(
    pg_url_factory: Callable[[], str],
) -> None:
    url = pg_url_factory()
    with PostgresStore(url) as store:
        ids = [store.enqueue_mail(outgoing(n)) for n in range(len(OLD_ROWS))]
        store._execute("DROP INDEX outbox_due")
        store._execute("ALTER TABLE outbox DROP COLUMN given_up")
        store._execute(OLD_DUE_INDEX)
        store._execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        for mail_id, (error, attempts, tried, sent) in zip(ids, OLD_ROWS, strict=True):
            store._execute("UPDATE outbox SET last_error = %s, attempts = %s,"
                           " last_attempt = %s, sent = %s WHERE id = %s",
                           (error, attempts, tried, sent, mail_id))
        assert store.schema_version == 2

    with PostgresStore(url) as store, PostgresStore(pg_url_factory()) as fresh:
        assert store.schema_version == PG_SCHEMA_VERSION
        assert pg_shape(store) == pg_shape(fresh)
        check_migrated_outbox(store, ids)
    with PostgresStore(url) as store:  # and it opens again, migrated
        assert [m.status for m in store.all_mail()] == ["pending", "failed", "failed", "sent"]
