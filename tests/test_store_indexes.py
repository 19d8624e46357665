"""Per-message store work must not grow with the size of the store: every look-up the
pipeline makes for a message is an index search, never a scan of tickets or the processed
log (a scan makes a backlog of N messages cost N² - the issue-7 profile found three)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gen_corpus
from commit_email.accounts_csv import read_accounts_csv
from commit_email.model import SourceRef, utcnow
from commit_email.pgstore import PostgresStore
from commit_email.store import SQLiteStore
from commit_email.testing import make_connector


class RecordingConnection:
    """The store's connection, remembering each SQL text as written (with its ``?``s: the
    plan for a bound parameter is what matters; a literal lets SQLite prove more)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.statements: set[str] = set()

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.statements.add(sql)
        return self.db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _plan(db: sqlite3.Connection, sql: str) -> list[str]:
    rows = db.execute("EXPLAIN QUERY PLAN " + sql, ("x",) * sql.count("?")).fetchall()
    return [row[3] for row in rows]


def test_every_select_of_a_message_uses_an_index(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "commit.db")
    csv = gen_corpus.write_accounts_csv(tmp_path / "accounts.csv", gen_corpus.accounts(200))
    connector = make_connector(accounts=read_accounts_csv(csv), store=store)
    recorder = RecordingConnection(store._db)
    store._db = recorder  # type: ignore[assignment]
    for i, raw in enumerate(gen_corpus.generate(150, n_accounts=200)):
        connector.process(raw, SourceRef(kind="pop3", name="support@pop:110", uidl=f"u{i}"))
        connector.process(raw, SourceRef(kind="pop3", name="support@pop:110", uidl=f"v{i}"))
    assert store.processed_uidls("support@pop:110", ["u0", "v3", "w0", "u0"]) == {"u0", "v3"}
    selects = [s for s in recorder.statements
               if s.lstrip().upper().startswith("SELECT") and "count(*)" not in s]
    assert any("FROM tickets WHERE source_key" in s for s in selects)
    assert any("FROM processed WHERE source_name" in s for s in selects)
    assert any("uidl IN (" in s for s in selects)  # the runner's look-up of a whole session
    # Replies in the corpus name Message-IDs: threading looks each one up among filed mail.
    assert any("FROM filed_ids WHERE message_id" in s for s in selects)
    scans = {}
    for sql in selects:
        plan = _plan(recorder.db, sql)
        if any(step.startswith("SCAN") for step in plan):
            scans[sql] = plan
    assert not scans, scans



def test_the_outbox_flush_reads_only_sendable_mail_through_its_index(tmp_path: Path) -> None:
    """The flush after every message asks for due mail; given-up mail (which piles up)
    must not be read by it. A scan of the partial index that holds only sendable mail,
    in id order with a LIMIT, is the plan."""
    store = SQLiteStore(tmp_path / "commit.db")
    recorder = RecordingConnection(store._db)
    store._db = recorder  # type: ignore[assignment]
    store.due_mail(tried_before=utcnow(), limit=50)
    (sql,) = [s for s in recorder.statements if "FROM outbox" in s]
    assert _plan(recorder.db, sql) == ["SCAN outbox USING INDEX outbox_due"]


@pytest.mark.server
def test_every_select_of_a_message_uses_an_index_on_postgres(
    tmp_path: Path, pg_url: str
) -> None:
    """The same check on PostgreSQL: with sequential scans priced out, a query that still
    plans one has no index it can use."""
    store = PostgresStore(pg_url)
    csv = gen_corpus.write_accounts_csv(tmp_path / "accounts.csv", gen_corpus.accounts(200))
    connector = make_connector(accounts=read_accounts_csv(csv), store=store)
    seen: dict[str, Any] = {}
    execute = store._execute

    def recording(sql: str, params: Any = None) -> Any:
        if sql.lstrip().upper().startswith("SELECT") and "count(*)" not in sql \
                and "pg_" not in sql:
            seen.setdefault(sql, params)
        return execute(sql, params)

    store._execute = recording  # type: ignore[method-assign]
    for i, raw in enumerate(gen_corpus.generate(150, n_accounts=200)):
        connector.process(raw, SourceRef(kind="pop3", name="support@pop:110", uidl=f"u{i}"))
        connector.process(raw, SourceRef(kind="pop3", name="support@pop:110", uidl=f"v{i}"))
    store.processed_uidls("support@pop:110", ["u0", "v3"])
    store.due_mail(tried_before=utcnow(), limit=50)
    store._execute = execute  # type: ignore[method-assign]
    assert any("FROM tickets WHERE source_key" in s for s in seen)
    assert any("uidl = ANY(" in s for s in seen)
    assert any("FROM filed_ids WHERE message_id" in s for s in seen)
    assert any("FROM outbox WHERE sent IS NULL AND given_up IS NULL" in s for s in seen)
    store._execute("ANALYZE")
    store._execute("SET enable_seqscan = off")
    scans = {}
    for sql, params in seen.items():
        plan = "\n".join(r[0] for r in store._execute("EXPLAIN " + sql, params))
        if "Seq Scan" in plan:
            scans[sql] = plan
    store.close()
    assert not scans, scans
