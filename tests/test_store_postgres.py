"""What the PostgreSQL store adds for several workers sharing it: mailbox locks, ticket
numbers and tickets that stay unique across connections, one message at a time per digest,
and a connection that comes back after the server dropped it.

Each test opens several stores (connections) on one schema of the private server."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from commit_email.errors import ConfigError, StoreError
from commit_email.model import Account, Outcome, OutcomeKind, SourceRef, TicketDraft
from commit_email.pgstore import PostgresStore
from commit_email.storage import redact_url
from commit_email.store import open_store
from commit_email.testing import build_message, make_config, make_connector
from tests.pg_fixtures import PostgresServer

pytestmark = pytest.mark.server


def terminate(server: PostgresServer, store: PostgresStore) -> None:
    """Drop the store's connection from the server side (as a crash of its host would)."""
    pid = store._conn.info.backend_pid
    server.sql(f"SELECT pg_terminate_backend({pid})")
    time.sleep(0.2)


def test_a_mailbox_lock_is_held_by_one_store_at_a_time(pg_url: str) -> None:
    with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        assert a.lock_mailbox("support") and a.lock_mailbox("support")  # re-entrant for a
        assert not b.lock_mailbox("support")
        assert b.lock_mailbox("alerts")  # another mailbox is free
        assert a.holds_mailbox("support") and not b.holds_mailbox("support")
        a.unlock_mailbox("support")
        assert not a.holds_mailbox("support")
        assert b.lock_mailbox("support")
        assert not a.lock_mailbox("support")
    with PostgresStore(pg_url) as c:  # b closed: the server released both of its locks
        assert c.lock_mailbox("support") and c.lock_mailbox("alerts")


def test_a_lost_connection_loses_the_lock_and_says_so(
    pg_server: PostgresServer, pg_url: str
) -> None:
    with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        assert a.lock_mailbox("support")
        terminate(pg_server, a)
        assert b.lock_mailbox("support")  # the server let go of it at once
        with pytest.raises(StoreError):
            a.processed("x")  # noticed on the next use...
        with pytest.raises(StoreError, match="lock of mailbox support"):
            a.processed("x")  # ...and not silently replaced while a lock was held
        assert not a.holds_mailbox("support")
        assert a.processed("x") is None  # reconnected, without the lock
        assert not a.lock_mailbox("support")


def test_a_store_reconnects_after_the_server_dropped_it(
    pg_server: PostgresServer, pg_url: str
) -> None:
    with PostgresStore(pg_url) as store:
        store.add_record("ASSET", {"n": "1"})
        terminate(pg_server, store)
        with pytest.raises(StoreError):
            store.count_tickets()
        assert store.count_tickets() == 0


def test_ticket_numbers_stay_unique_across_workers(pg_url_factory: Callable[[], str]) -> None:
    url = pg_url_factory()
    stores = [PostgresStore(url) for _ in range(3)]

    def open_tickets(store: PostgresStore) -> list[str]:
        numbers = []
        for n in range(40):
            with store.transaction():
                numbers.append(store.create_ticket(
                    TicketDraft(account="CRD1", description=f"t{n}")).number)
        return numbers

    try:
        with ThreadPoolExecutor(3) as pool:
            numbers = [n for got in pool.map(open_tickets, stores) for n in got]
    finally:
        for store in stores:
            store.close()
    assert len(numbers) == len(set(numbers)) == 120
    assert sorted(map(int, numbers)) == list(range(1, 121))


def test_create_ticket_waits_for_another_worker_opening_the_same_ticket(pg_url: str) -> None:
    with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        draft = TicketDraft(account="CRD1", description="x", source_key="m:1")
        got: list[str] = []
        with a.transaction():
            first = a.create_ticket(draft)
            worker = threading.Thread(target=lambda: got.append(b.create_ticket(draft).rec_id))
            worker.start()
            worker.join(0.5)
            assert worker.is_alive()  # b waits for a's transaction
        worker.join(5)
        assert got == [first.rec_id] and b.count_tickets() == 1


def test_a_message_in_two_mailboxes_is_processed_once(
    pg_url: str, tmp_path: Path
) -> None:
    """The same mail, delivered to two mailboxes served by two workers at the same moment:
    one ticket, one duplicate, nothing quarantined."""
    accounts = [Account(rec_id="CRD1", file_as="Customer", email1="customer.example")]
    workers = []
    for n in range(2):
        store = PostgresStore(pg_url)
        config = make_config(state_dir=tmp_path / f"state{n}")
        workers.append(make_connector(config, accounts=accounts if n == 0 else (),
                                      store=store))
    mails = [build_message(sender=f"user{i}@customer.example", subject=f"Request {i}")
             for i in range(25)]
    start = threading.Barrier(2)

    def work(n: int) -> list[Outcome]:
        start.wait()
        return [workers[n].process(raw, SourceRef(kind="pop3", name=f"box{n}", uidl=str(i)))
                for i, raw in enumerate(mails)]

    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(work, range(2)))
        per_message = [Counter(r[i].kind for r in results) for i in range(len(mails))]
        assert all(c == Counter({OutcomeKind.TICKET_CREATED: 1, OutcomeKind.DUPLICATE: 1})
                   for c in per_message), per_message
        assert workers[0].sink.count_tickets() == len(mails)  # type: ignore[attr-defined]
    finally:
        for worker in workers:
            worker.state.close()  # type: ignore[attr-defined]


def test_the_password_stays_out_of_messages(pg_server: PostgresServer) -> None:
    url = f"postgresql://commit:s3cret@127.0.0.1:{pg_server.port}/nosuchdb?password=s3cret"
    assert "s3cret" not in redact_url(url)
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert "s3cret" not in str(caught.value)


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(ConfigError, match=r"pip install 'commit-email\[postgres\]'"):
        open_store("postgresql://localhost/commit")


def test_accounts_import_into_postgres_from_the_command_line(
    tmp_path: Path, pg_url: str
) -> None:
    from benchmarks import gen_corpus
    from commit_email.cli import main

    rows = gen_corpus.accounts(3000)
    csv = gen_corpus.write_accounts_csv(tmp_path / "accounts.csv", rows)
    config = tmp_path / "commit-email.toml"
    config.write_text(f'[connector]\npublic_address = "support@msp.example"\n'
                      f'state_dir = "{tmp_path / "state"}"\n[store]\nurl = "{pg_url}"\n')
    out = io.StringIO()
    assert main(["accounts", "import", str(csv), "--config", str(config)], out=out) == 0
    assert "3000" in out.getvalue().replace(",", "")
    with PostgresStore(pg_url) as store:
        assert len(store.list_accounts()) == len(rows)
        sample = next(r for r in rows if "@" in r["email1"])
        [found] = store.find_by_email(sample["email1"].upper())
        assert found.rec_id == sample["rec_id"]
