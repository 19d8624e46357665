"""The outbox claim (``ConnectorState.claim_mail``) of both stores: a row is claimed before
it is sent, so two senders never send the same mail, and the claim of a sender that died
ends with its lease. The contract tests run against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from commit_email.model import OutgoingMail, utcnow
from commit_email.pgstore import PG_SCHEMA_VERSION, PostgresStore
from commit_email.store import SQLiteStore, Store, open_store
from tests.test_store_indexes import RecordingConnection, _plan

LEASE = timedelta(minutes=2)


def queue(store: Store, n: int, *, start: int = 0) -> list[int]:
    with store.transaction():
        return [store.enqueue_mail(OutgoingMail(
            kind="forward", sender="support@acme.example", recipients=("a@customer.example",),
            raw=b"Subject: x\r\n\r\nx\r\n", message_id=f"m{i}@acme.example"))
            for i in range(start, start + n)]


def claim(store: Store, owner: str, limit: int, *, at: timedelta = timedelta(0),
          lease: timedelta = LEASE) -> list[int]:
    now = utcnow() + at
    # tried_before: mail tried in the last minute waits (smtp.retry_interval)
    return [e.id for e in store.claim_mail(owner=owner, now=now, until=now + lease,
                                           tried_before=now - timedelta(minutes=1),
                                           limit=limit)]


def test_claimed_mail_is_not_claimed_again_until_sent_failed_released_or_expired(
    any_store: Store,
) -> None:
    store = any_store
    ids = queue(store, 6)

    assert claim(store, "a", 2) == ids[:2]
    assert claim(store, "b", 3) == ids[2:5]
    assert claim(store, "a", 10) == ids[5:]  # the oldest unclaimed, never a claimed one
    assert claim(store, "c", 10) == []

    with store.transaction():
        store.mark_mail_sent(ids[0])
        store.mark_mail_failed(ids[1], "451 later")
        store.release_mail("b", [ids[2]])
        store.release_mail("a", [ids[3]])  # not a's claim: nothing happens
    # The failed one waits for retry_interval (tried_before = now excludes it).
    assert claim(store, "c", 10) == [ids[2]]
    # b's claim on ids[3], ids[4] ends with its lease, a's on ids[5] as well; by then the
    # failed one is due again.
    assert claim(store, "c", 10, at=LEASE + timedelta(seconds=1)) == [ids[1], *ids[3:]]


def test_claiming_renews_the_owners_lease(any_store: Store) -> None:
    store = any_store
    ids = queue(store, 2)
    assert claim(store, "a", 1, lease=timedelta(seconds=10)) == ids[:1]
    # Later, a is still working: a claim with limit 0 only extends what a holds.
    assert claim(store, "a", 0, at=timedelta(seconds=8), lease=timedelta(seconds=10)) == []
    assert claim(store, "b", 5, at=timedelta(seconds=12)) == ids[1:]  # ids[0] is a's still
    assert claim(store, "c", 5, at=timedelta(seconds=17)) == []  # a's lease: until 18 s
    assert claim(store, "c", 5, at=timedelta(seconds=19)) == ids[:1]


def test_two_connections_claiming_at_once_never_get_the_same_mail(store_url: str) -> None:
    with open_store(store_url) as first:
        ids = queue(first, 400)
    got: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def sender(name: str) -> None:
        with open_store(store_url) as store:  # a connection of its own, as a process has
            mine: list[int] = []
            start.wait()
            while batch := claim(store, name, 7):
                mine += batch
                with store.transaction():
                    for mail_id in batch[::2]:
                        store.mark_mail_sent(mail_id)
            got[name] = mine

    threads = [threading.Thread(target=sender, args=(f"s{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    claimed = [i for mine in got.values() for i in mine]
    assert sorted(claimed) == ids  # each row claimed exactly once
    assert len(got) == 4  # every sender finished


def test_an_old_database_gets_the_claim_columns(tmp_path: Path) -> None:
    import sqlite3
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, sender TEXT NOT NULL,"
        " recipients TEXT NOT NULL, raw BLOB NOT NULL, message_id TEXT NOT NULL,"
        " ticket TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT NOT NULL DEFAULT '', created TEXT NOT NULL, sent TEXT);"
        "INSERT INTO outbox (kind, sender, recipients, raw, message_id, ticket, created)"
        " VALUES ('forward', 's@acme.example', '[\"h@acme.example\"]', X'78', 'f1', '',"
        " '2026-01-05T10:00:00+00:00');")
    db.close()
    store = SQLiteStore(path)
    assert claim(store, "a", 5) == [1]


def test_the_claim_reads_due_mail_through_the_outbox_index(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "commit.db")
    recorder = RecordingConnection(store._db)
    store._db = recorder  # type: ignore[assignment]
    queue(store, 3)
    claim(store, "a", 2)
    plans = {sql: _plan(recorder.db, sql) for sql in recorder.statements
             if "outbox" in sql and not sql.startswith(("INSERT", "BEGIN"))}
    [select] = [sql for sql in plans if sql.startswith("SELECT id FROM outbox")]
    assert plans[select] == ["SCAN outbox USING INDEX outbox_due"]
    [renew] = [sql for sql in plans if "WHERE claimed_by = ? AND sent IS NULL" in sql]
    assert any("USING INDEX outbox_claimed" in step for step in plans[renew])


def test_sent_and_given_up_mail_is_never_claimed(any_store: Store) -> None:
    store = any_store
    ids = queue(store, 3)
    with store.transaction():
        store.mark_mail_sent(ids[0])
        store.mark_mail_failed(ids[1], "550 no such user", give_up=True)
    assert claim(store, "a", 10) == ids[2:]
    assert claim(store, "b", 10, at=LEASE * 2) == ids[2:]  # a's lease ended


@pytest.mark.server
def test_a_postgres_store_from_before_the_claim_gets_it(pg_url: str) -> None:
    with PostgresStore(pg_url) as store:
        ids = queue(store, 2)
        store._execute("DROP INDEX outbox_claimed")
        store._execute("DROP INDEX outbox_due")
        store._execute("ALTER TABLE outbox DROP COLUMN claimed_by, DROP COLUMN claimed_until,"
                       " DROP COLUMN given_up")
        store._execute("CREATE INDEX outbox_due ON outbox (id)"
                       " WHERE sent IS NULL AND last_error NOT LIKE 'permanent: %'")
        store._execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with PostgresStore(pg_url) as store:
        assert store.schema_version == PG_SCHEMA_VERSION
        assert claim(store, "a", 5) == ids
        assert claim(store, "b", 5) == []


def test_a_version_2_sqlite_store_gets_the_claim(tmp_path: Path) -> None:
    import sqlite3

    from tests.test_store_migrations import shape
    path, fresh = tmp_path / "v2.db", tmp_path / "fresh.db"
    SQLiteStore(fresh).close()
    with SQLiteStore(path) as store:
        ids = queue(store, 2)
    db = sqlite3.connect(path)
    db.executescript("DROP INDEX outbox_claimed; ALTER TABLE outbox DROP COLUMN claimed_by;"
                     " ALTER TABLE outbox DROP COLUMN claimed_until;"
                     " UPDATE meta SET value = '2' WHERE key = 'schema_version';")
    db.close()
    with SQLiteStore(path) as store:
        assert claim(store, "a", 5) == ids
    assert shape(path) == shape(fresh)
