"""``commit-email store copy``: SQLite to PostgreSQL and back, every row, verified by counts."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gen_corpus
from commit_email.accounts_csv import read_accounts_csv
from commit_email.cli import main
from commit_email.errors import StoreError
from commit_email.model import SourceRef, TicketDraft, utcnow
from commit_email.pgstore import _PG_SCHEMA, PostgresStore
from commit_email.storage import COPY_TABLES
from commit_email.store import _SCHEMA, SQLiteStore, Store, open_store
from commit_email.storecopy import copy_store
from commit_email.testing import make_config, make_connector

ORDERED = {"accounts", "tickets", "history", "documents", "processed", "outbox"}


def filled_store(path: Path) -> SQLiteStore:
    """A store with something in every table: 60 generated mails (tickets, history,
    attachments, alerts, XML records, the outbox), plus the state tables."""
    store = SQLiteStore(path)
    csv = gen_corpus.write_accounts_csv(path.parent / "accounts.csv", gen_corpus.accounts(60))
    config = make_config(state_dir=path.parent / "state",
                         xml_api={"enabled": True, "password": gen_corpus.XML_PASSWORD})
    connector = make_connector(config, accounts=read_accounts_csv(csv), store=store)
    for i, raw in enumerate(gen_corpus.generate(60, n_accounts=60)):
        connector.process(raw, SourceRef(kind="pop3", name="support@pop:110", uidl=f"u{i}"))
    now = utcnow()
    with store.transaction():
        first, second, *_ = store.pending_mail()
        store.mark_mail_sent(first.id)
        store.mark_mail_failed(second.id, "550 no such user", give_up=True)
        store.record_sent_message_id("1.a@commit-email.example", "TKT1")
        store.record_ticket_recipient("TKT1", "jane@customer.example")
        store.record_failed_login("eve@evil.example", now, expire_before=now - timedelta(1))
        store.remember_recovery("web1/disk", now, now, expire_before=now - timedelta(1))
        store.record_auto_response("jane@customer.example", now)
        store.add_record("ASSET", {"FLDASTNAME": "Laptop"})
    assert all(store.row_counts().values()), store.row_counts()
    return store


def contents(store: Store) -> dict[str, list[Any]]:
    """Every row of every table; tables whose order means nothing, sorted."""
    with store.snapshot():
        out = {t: list(store.export_rows(t)) for t in COPY_TABLES}
    return {t: rows if t in ORDERED else sorted(rows, key=repr) for t, rows in out.items()}


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_copy_sqlite_to_postgres_and_back_keeps_every_row(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = filled_store(tmp_path / "src" / "commit.db")
    expected = contents(src)
    last = src.last_ticket_number()
    src.close()
    src_url = f"sqlite:///{tmp_path / 'src' / 'commit.db'}"

    status, out = run_cli("store", "copy", src_url, pg_url)
    assert status == 0, capsys.readouterr().err
    assert "verified:" in out and re.search(r"tickets +\d+", out)
    with PostgresStore(pg_url) as pg:
        assert contents(pg) == expected
        assert pg.last_ticket_number() == last

    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    status, out = run_cli("store", "copy", pg_url, back_url)
    assert status == 0, capsys.readouterr().err
    with open_store(back_url) as back:
        assert contents(back) == expected
        # and the copy goes on where the source stopped
        assert back.create_ticket(TicketDraft(account="", description="next")).number == str(
            last + 1)
    with PostgresStore(pg_url) as pg, pg.transaction():
        assert pg.create_ticket(TicketDraft(account="", description="n")).number == str(
            last + 1)
        queued = [m.id for m in pg.all_mail()]
        assert pg.enqueue_mail(pg.all_mail()[0].mail) > max(queued)


def test_a_destination_that_holds_anything_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = filled_store(tmp_path / "src" / "commit.db")
    src.close()
    dst = SQLiteStore(tmp_path / "dst.db")
    with dst.transaction():
        dst.record_auto_response("x@y.example", utcnow())
    dst.close()
    status, _ = run_cli("store", "copy", f"sqlite:///{tmp_path / 'src' / 'commit.db'}",
                        f"sqlite:///{tmp_path / 'dst.db'}")
    assert status == 2
    assert "not empty (1 auto_responses)" in capsys.readouterr().err
    with SQLiteStore(tmp_path / "dst.db") as again:
        assert sum(again.row_counts().values()) == 1
    status, _ = run_cli("store", "copy", "memory:", f"sqlite:///{tmp_path / 'x.db'}")
    assert status == 2 and "in-memory" in capsys.readouterr().err


def test_a_copy_whose_counts_differ_writes_nothing(tmp_path: Path) -> None:
    src = filled_store(tmp_path / "src" / "commit.db")
    dst = SQLiteStore(tmp_path / "dst.db")
    real = dst.import_rows

    def lossy(table: str, rows: Any) -> None:
        real(table, list(rows)[1:] if table == "history" else rows)

    dst.import_rows = lossy  # type: ignore[method-assign]
    with pytest.raises(StoreError, match=r"history: \d+ in the source, \d+ copied"):
        copy_store(src, dst)
    assert sum(dst.row_counts().values()) == 0


@pytest.mark.parametrize("schema", [_SCHEMA, _PG_SCHEMA], ids=["sqlite", "postgresql"])
def test_store_copy_knows_every_table(schema: str) -> None:
    """A table added to a store's schema must be added to COPY_TABLES too."""
    tables = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", schema))
    assert tables - {"meta", "counters"} == set(COPY_TABLES)
    for table, columns in COPY_TABLES.items():
        body = re.search(rf"CREATE TABLE (?:IF NOT EXISTS )?{table} \((.*?)\n\);", schema + "\n",
                         re.S)
        assert body is not None, table
        for column in columns:
            assert re.search(rf"\b{column}\b", body.group(1)), (table, column)


def test_a_sqlite_file_copies_while_it_is_open_elsewhere(tmp_path: Path) -> None:
    """The snapshot is a read transaction: another connection may go on writing."""
    src = filled_store(tmp_path / "src" / "commit.db")
    writer = sqlite3.connect(tmp_path / "src" / "commit.db", timeout=5)
    dst = SQLiteStore(tmp_path / "dst.db")
    rows: Callable[[str], Any] = src.export_rows

    def export_and_write(table: str) -> Any:
        if table == "tickets":
            writer.execute("INSERT INTO auto_responses (sender, at) VALUES ('z', 'x')")
            writer.commit()
        return rows(table)

    src.export_rows = export_and_write  # type: ignore[method-assign]
    counts = copy_store(src, dst)
    assert counts["auto_responses"] == 1  # the snapshot's, not the later write
    writer.close()
