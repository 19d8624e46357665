"""The stores: survive a reopen, transactions are all-or-nothing, look-ups are indexed.

Tests taking ``any_store`` or ``store_url`` run once against SQLite and once against
PostgreSQL (see ``tests/conftest.py``): the two stores must behave the same."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commit_email.errors import ConfigError, StoreError
from commit_email.model import (
    Account,
    AccountKind,
    Document,
    HistoryEntry,
    OutcomeKind,
    TicketDraft,
)
from commit_email.store import DEFAULT_MMAP_SIZE, SQLiteStore, Store, account_keys, open_store
from commit_email.testing import build_message, make_config, make_connector


def test_everything_survives_closing_and_reopening(store_url: str) -> None:
    with open_store(store_url) as store:
        store.import_accounts([Account(rec_id="CRD1", file_as="Acme", email1="acme.example")])
        with store.transaction():
            ticket = store.create_ticket(TicketDraft(account="CRD1", description="x",
                                                     source_key="m:1"))
            store.add_history(ticket.rec_id, HistoryEntry(kind="email", text="hello"))
            store.add_document(ticket.rec_id, Document(filename="a.bin",
                                                       content_type="application/octet-stream",
                                                       data=b"\x00\x01"))
    with open_store(store_url) as store:
        assert [a.file_as for a in store.find_by_domain("ACME.example")] == ["Acme"]
        [reopened] = store.list_tickets()
        assert reopened == ticket
        assert [h.text for h in store.history(ticket.rec_id)] == ["hello"]
        assert store.documents(ticket.rec_id)[0].data == b"\x00\x01"
        again = store.create_ticket(TicketDraft(account="CRD1", description="y"))
        assert again.number == "2"  # the sequence continues


def test_create_ticket_is_idempotent_on_source_key(any_store: Store) -> None:
    store = any_store
    a = store.create_ticket(TicketDraft(account="CRD1", description="x", source_key="k"))
    b = store.create_ticket(TicketDraft(account="CRD1", description="x", source_key="k"))
    assert a == b and store.count_tickets() == 1


def test_a_failed_transaction_changes_nothing_and_nested_ones_are_savepoints(
    any_store: Store,
) -> None:
    store = any_store
    with pytest.raises(RuntimeError), store.transaction():
        store.create_ticket(TicketDraft(account="CRD1", description="lost"))
        raise RuntimeError
    assert store.list_tickets() == []
    with store.transaction():
        store.add_record("ASSET", {"FLDASTNAME": "kept"})
        with pytest.raises(KeyError), store.transaction():
            store.add_record("ASSET", {"FLDASTNAME": "undone"})
            store.update_record("ASSET", "missing", {})
    names = [str(r[0]) for r in store._execute("SELECT fields FROM records")]
    assert len(names) == 1 and "kept" in names[0]


def test_email_fields_become_lookup_keys() -> None:
    account = Account(rec_id="CRD1", email1="Bob@Acme.example; alice@acme.example",
                      email2="@branch.example")
    assert account_keys(account) == [("email", "bob@acme.example"),
                                     ("email", "alice@acme.example"),
                                     ("domain", "branch.example")]


def test_lookups_by_field_are_case_insensitive_and_updates_reindex(any_store: Store) -> None:
    store = any_store
    store.import_accounts([Account(rec_id="CRD1", file_as="Acme", account_number="ACME-001",
                                   email1="old@acme.example")])
    assert [a.rec_id for a in store.find_by_field("account_number", "acme-001")] == ["CRD1"]
    store.update_account("CRD1", {"email1": "new@acme.example", "FLDCRDCITY": "Springfield"})
    assert store.find_by_email("old@acme.example") == []
    [found] = store.find_by_email("new@acme.example")
    assert found.extra == {"FLDCRDCITY": "Springfield"}
    with pytest.raises(ValueError):
        store.find_by_field("email1; DROP TABLE accounts", "x")


def test_sqlite_lookups_use_indexes() -> None:
    store = SQLiteStore.in_memory()
    plan = " ".join(str(r) for r in store._execute(
        "EXPLAIN QUERY PLAN SELECT rec_id FROM account_keys WHERE type = 'email' AND key = ?",
        ("a@b",)))
    assert "USING INDEX account_keys_lookup" in plan
    plan = " ".join(str(r) for r in store._execute(
        "EXPLAIN QUERY PLAN SELECT * FROM accounts WHERE account_number = ? COLLATE NOCASE",
        ("x",)))
    assert "USING INDEX accounts_number" in plan


def test_open_alert_ticket_lookup_and_closing(any_store: Store) -> None:
    store = any_store
    t = store.create_ticket(TicketDraft(account="CRD1", description="disk", alert_key="k1"))
    assert store.find_open_alert_ticket("k1") == t
    store.update_ticket(t.rec_id, {"closed": True, "status": "900", "FLDTKTNOTES": "auto"})
    assert store.find_open_alert_ticket("k1") is None
    closed = store.get_ticket(rec_id=t.rec_id)
    assert closed is not None and closed.closed and closed.extra == {"FLDTKTNOTES": "auto"}


def test_contacts_keep_their_parent(any_store: Store) -> None:
    store = any_store
    store.import_accounts([Account(rec_id="CRD2", email1="c@x.example",
                                   kind=AccountKind.CONTACT, parent="CRD1")])
    [contact] = store.find_by_email("C@X.example")
    assert contact.kind is AccountKind.CONTACT and contact.parent == "CRD1"


def test_store_urls(tmp_path: Path) -> None:
    store = open_store("sqlite:///./sub/c.db?synchronous=FULL", base_dir=tmp_path)
    assert Path(store.path) == tmp_path / "sub" / "c.db"
    assert open_store("memory:").path == ":memory:"
    with pytest.raises(ConfigError, match=r"store\.url"):
        open_store("mysql://db/commit")
    with pytest.raises(ConfigError, match="option"):
        open_store("sqlite:///c.db?journal=off")


def test_the_file_as_it_is_is_read_through_a_memory_map_unless_turned_off(
    tmp_path: Path,
) -> None:
    """What the file holds when it is opened (and the directory after an import) is
    mapped, up to ``mmap_size``; pages appended later are read normally, so a long run
    does not keep every page it reads resident."""

    def mapped(store: SQLiteStore) -> int:
        (size,) = store._db.execute("PRAGMA mmap_size").fetchone()
        return int(size)

    def file_size(store: SQLiteStore) -> int:
        return Path(store.path).stat().st_size

    store = open_store("sqlite:///a.db", base_dir=tmp_path)
    assert 0 < mapped(store) == file_size(store) < DEFAULT_MMAP_SIZE
    store.import_accounts(
        Account(rec_id=f"CRD{n}", file_as=f"Customer {n}", email1=f"it@c{n}.example")
        for n in range(3000)
    )
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    grown = file_size(store)
    assert mapped(store) > 0
    again = open_store("sqlite:///a.db", base_dir=tmp_path)
    assert mapped(again) == grown
    assert mapped(open_store("sqlite:///a.db?mmap_size=4096", base_dir=tmp_path)) == 4096
    assert mapped(open_store("sqlite:///b.db?mmap_size=0", base_dir=tmp_path)) == 0
    with pytest.raises(ConfigError, match="mmap_size must be a number"):
        open_store("sqlite:///d.db?mmap_size=lots", base_dir=tmp_path)


def test_a_store_file_removed_while_in_use_refuses_to_write_on(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(state_dir=state, store={"url": f"sqlite:///{state / 'commit.db'}"})
    connector = make_connector(config, store=open_store(config.store.url))
    connector.process(build_message(subject="first"))
    shutil.rmtree(state)  # an operator cleans up the wrong folder mid-run

    # Nothing is lost: the mail is quarantined (the quarantine folder is made again) with the
    # reason, for a replay once the store is back.
    outcome = connector.process(build_message(subject="second"))
    assert outcome.kind is OutcomeKind.QUARANTINED
    assert "removed or replaced while in use" in outcome.detail
    (entry,) = connector.quarantine.entries()
    assert "removed or replaced" in entry.reason
    with pytest.raises(StoreError, match="removed or replaced"), connector.sink.transaction():
        pass


def test_a_store_file_replaced_while_in_use_refuses_to_write_on(tmp_path: Path) -> None:
    path = tmp_path / "commit.db"
    store = open_store(f"sqlite:///{path}")
    with store.transaction():
        store.record_auto_response("a@b.example", datetime(2026, 1, 1, tzinfo=UTC))
    path.rename(tmp_path / "old.db")
    open_store(f"sqlite:///{path}").close()  # a restore puts another file in its place
    with pytest.raises(StoreError, match="removed or replaced"), store.transaction():
        store.record_auto_response("a@b.example", datetime(2026, 1, 2, tzinfo=UTC))
