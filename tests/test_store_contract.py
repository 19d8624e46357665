"""Both stores keep the same contract: every test here runs against SQLite and PostgreSQL.

The processed log, the outbox, the Message-ID memories, rate limits and alert memory, read
and written directly; then a whole corpus through a connector on each store, which must give
the same outcomes, tickets and history."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks import gen_corpus
from commit_email.accounts_csv import read_accounts_csv
from commit_email.message import Message
from commit_email.model import Account, Outcome, OutcomeKind, OutgoingMail, SourceRef, utcnow
from commit_email.pgstore import PostgresStore
from commit_email.protocols import (
    Closable,
    ConnectorState,
    MailboxLocks,
    RecordsUidlAliases,
    Replayable,
)
from commit_email.store import SQLiteStore, Store, open_store
from commit_email.testing import build_reply, make_config, make_connector

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def mail(n: int, recipients: tuple[str, ...] = ("jane@customer.example",)) -> OutgoingMail:
    return OutgoingMail(kind="auto_response", sender="support@acme.example",
                        recipients=recipients, raw=f"Subject: {n}\r\n\r\nx\r\n".encode(),
                        message_id=f"m{n}@acme.example", ticket="TKT1")


def test_the_postgres_store_has_every_public_method_of_the_sqlite_store() -> None:
    """Whatever the SQLite store gains, the PostgreSQL store must have too (same names,
    same parameters), or a command would work on one store and fail on the other."""
    sqlite_only = {"in_memory"}  # ":memory:" has no PostgreSQL counterpart
    missing, different = [], []
    for name, member in inspect.getmembers(SQLiteStore):
        if name.startswith("_") and name not in ("__enter__", "__exit__"):
            continue
        if not callable(member) or name in sqlite_only:
            continue
        other = getattr(PostgresStore, name, None)
        if other is None:
            missing.append(name)
        elif list(inspect.signature(member).parameters) != list(
            inspect.signature(other).parameters
        ):
            different.append(name)
    assert missing == [] and different == []


def test_both_stores_have_every_optional_capability(any_store: Store) -> None:
    """The connector does without a capability an integrator's state lacks; the built-in
    stores must not lack any."""
    for capability in (ConnectorState, MailboxLocks, Replayable, RecordsUidlAliases, Closable):
        assert isinstance(any_store, capability), capability.__name__


def test_the_processed_log(any_store: Store) -> None:
    store = any_store
    pop = SourceRef(kind="pop3", name="support@mail:110", uidl="u1")
    created = Outcome(kind=OutcomeKind.TICKET_CREATED, ticket="1", account="CRD1",
                      detail="new", stage="email_to_ticket")
    with store.transaction():
        assert store.processed("d1") is None
        store.record_processed(digest="d1", source=pop, message_id="a@x", outcome=created)
        store.record_processed(digest="d2", source=SourceRef(kind="file", name="x.eml"),
                               message_id="b@x", outcome=Outcome(kind=OutcomeKind.IGNORED))
    entry = store.processed("d1")
    assert entry is not None and entry.source == pop and entry.outcome == created
    assert entry.message_id == "a@x" and entry.created.tzinfo is not None
    assert store.processed_uidl("support@mail:110", "u1") == entry
    assert store.processed_uidl("other@mail:110", "u1") is None
    assert store.processed_uidl("support@mail:110", "") is None
    assert store.processed_uidls("support@mail:110", ["u1", "u2", "", "u1"]) == {"u1"}
    assert store.processed_uidls("support@mail:110", []) == set()

    with store.transaction():
        store.record_uidl_alias(digest="d1", mailbox="support@mail:110", uidl="u9")
        store.record_uidl_alias(digest="d1", mailbox="support@mail:110", uidl="u9")  # again
    alias = store.processed_uidl("support@mail:110", "u9")
    assert alias is not None and alias.outcome.kind is OutcomeKind.DUPLICATE
    assert alias.outcome.ticket == "1" and alias.message_id == "a@x"
    assert [e.digest for e in store.iter_processed()] == ["d1", "d2", "d1:support@mail:110:u9"]
    assert store.outcome_counts() == {"ticket_created": 1, "ignored": 1, "duplicate": 1}

    store.forget_processed("d2")
    assert store.processed("d2") is None
    with pytest.raises(Exception, match=r"(?i)unique|duplicate|constraint"):
        store.record_processed(digest="d1", source=pop, message_id="a@x", outcome=created)


def test_the_outbox(any_store: Store) -> None:
    store = any_store
    with store.transaction():
        ids = [store.enqueue_mail(mail(n)) for n in range(4)]
        nobody = store.enqueue_mail(mail(9, recipients=()))
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [m.id for m in store.pending_mail()] == [*ids, nobody]
    first = store.get_mail(ids[0])
    assert first is not None and first.mail == mail(0) and first.status == "pending"
    assert first.created is not None and first.last_attempt is None
    assert store.get_mail(10_000) is None

    later = utcnow() + timedelta(days=1)
    # no recipients: never due; the limit is honoured, oldest first
    assert [m.id for m in store.due_mail(tried_before=later, limit=10)] == ids
    assert [m.id for m in store.due_mail(tried_before=later, limit=2)] == ids[:2]

    store.mark_mail_sent(ids[0])
    store.mark_mail_failed(ids[1], "451 later")
    store.mark_mail_failed(ids[2], "550 no such user", give_up=True)
    sent, waiting, given_up = (store.get_mail(i) for i in ids[:3])
    assert sent is not None and sent.status == "sent" and sent.sent_at is not None
    assert waiting is not None and waiting.status == "pending" and waiting.attempts == 1
    assert waiting.last_attempt is not None and waiting.error == "451 later"
    assert given_up is not None and given_up.status == "failed"
    assert given_up.error == given_up.last_error == "550 no such user"  # no marker in it
    assert given_up.given_up_at is not None and given_up.given_up_at == given_up.last_attempt
    assert waiting.given_up_at is None and sent.given_up_at is None
    # a later failure does not put a given-up mail back in the queue
    store.mark_mail_failed(ids[2], "421 try later")
    again = store.get_mail(ids[2])
    assert again is not None and again.failed and again.given_up_at == given_up.given_up_at
    assert again.attempts == 2 and again.error == "421 try later"
    # just tried: not due before retry_interval has passed; given up: never
    assert [m.id for m in store.due_mail(tried_before=utcnow() - timedelta(hours=1),
                                         limit=10)] == [ids[3]]
    assert [m.id for m in store.due_mail(tried_before=later, limit=10)] == [ids[1], ids[3]]
    assert [m.id for m in store.pending_mail()] == [*ids[1:], nobody]
    assert [m.id for m in store.all_mail()] == [*ids, nobody]

    assert store.requeue_mail(ids[2]) is True
    requeued = store.get_mail(ids[2])
    assert requeued is not None and requeued.attempts == 0 and requeued.status == "pending"
    assert requeued.given_up_at is None and requeued.error == ""
    assert [m.id for m in store.due_mail(tried_before=later, limit=10)] == ids[1:]
    assert store.requeue_mail(ids[0]) is False  # sent mail stays sent
    assert store.delete_mail(ids[3]) is True and store.delete_mail(ids[3]) is False
    assert store.delete_sent_mail(utcnow() - timedelta(days=1)) == []
    assert store.delete_sent_mail(utcnow() + timedelta(seconds=1)) == [ids[0]]
    assert [m.id for m in store.all_mail()] == [ids[1], ids[2], nobody]


def test_an_enqueued_mail_goes_with_a_rolled_back_transaction(any_store: Store) -> None:
    store = any_store
    with pytest.raises(RuntimeError), store.transaction():
        store.enqueue_mail(mail(1))
        raise RuntimeError
    with store.rolled_back():
        store.enqueue_mail(mail(2))
        assert len(store.pending_mail()) == 1
    assert store.pending_mail() == []


def test_message_id_memories(any_store: Store) -> None:
    store = any_store
    with store.transaction():
        store.record_sent_message_id("<1.a@commit-email.acme.example>", "TKT1")
        store.record_sent_message_id("1.a@commit-email.acme.example", "TKT2")  # replaced
        store.record_filed_message_id("<jane.1@customer.example>", "TKT1")
        store.record_filed_message_id("jane.1@customer.example", "TKT2")  # the first wins
    assert store.ticket_for_sent_message_id("1.a@commit-email.acme.example") == "TKT2"
    assert store.is_own_message_id("<1.a@commit-email.acme.example>")
    assert not store.is_own_message_id("jane.1@customer.example")
    assert store.ticket_for_filed_message_id("<jane.1@customer.example>") == "TKT1"
    assert store.ticket_for_filed_message_id("nobody@x") is None
    assert store.ticket_for_sent_message_id("nobody@x") is None


def test_rate_limits_and_alert_memory(any_store: Store) -> None:
    store = any_store
    with store.transaction():
        store.record_auto_response("Jane@Customer.example", T0)
        store.record_auto_response("jane@customer.example", T0 + timedelta(minutes=5))
    assert store.count_auto_responses("JANE@customer.example", T0) == 2
    assert store.count_auto_responses("jane@customer.example", T0 + timedelta(minutes=1)) == 1
    assert store.count_auto_responses("bob@customer.example", T0) == 0

    day = timedelta(days=1)
    store.remember_recovery("web1/disk", T0, T0, expire_before=T0 - day)
    store.remember_recovery("web1/disk", T0 - timedelta(hours=1), T0 + timedelta(minutes=1),
                            expire_before=T0 - day)  # an older recovery: the latest is kept
    assert store.recovery_of("web1/disk") == (T0, T0 + timedelta(minutes=1))
    # a naive time is UTC, as everywhere in the store
    store.remember_recovery("db1/load", T0.replace(tzinfo=None), T0, expire_before=T0 - day)
    assert store.recovery_of("db1/load") == (T0, T0)
    store.remember_recovery("other", T0 + 2 * day, T0 + 2 * day, expire_before=T0 + day)
    assert store.recovery_of("web1/disk") is None  # forgotten: noted before expire_before
    assert store.recovery_of("other") is not None


def test_ticket_recipients_and_failed_logins(any_store: Store) -> None:
    store = any_store
    with store.transaction():
        store.record_ticket_recipient("TKT1", " Jane@Customer.example ")
        store.record_ticket_recipient("TKT1", "jane@customer.example")  # once is enough
    assert store.ticket_mailed_to("TKT1", "JANE@customer.example")
    assert not store.ticket_mailed_to("TKT2", "jane@customer.example")
    assert not store.ticket_mailed_to("TKT1", "bob@customer.example")

    hour = timedelta(hours=1)
    store.record_failed_login("Eve@evil.example", T0, expire_before=T0 - hour)
    store.record_failed_login("eve@evil.example", T0 + hour, expire_before=T0 - hour)
    assert store.count_failed_logins("EVE@evil.example", T0) == 2
    assert store.count_failed_logins("eve@evil.example", T0 + timedelta(minutes=1)) == 1
    store.record_failed_login("mallory@evil.example", T0 + 2 * hour,
                              expire_before=T0 + timedelta(minutes=30))
    assert store.count_failed_logins("eve@evil.example", T0 - hour) == 1  # the first expired


def test_accounts_and_their_lookups(any_store: Store) -> None:
    store = any_store
    store.import_accounts([
        Account(rec_id="CRD1", file_as="Acme", email1="help@acme.example; acme.example",
                account_number="ACME-001", extra={"FLDCRDCITY": "Springfield"}),
        Account(rec_id="CRD2", file_as="Acme Branch", email1="acme.example"),
        Account(rec_id="CRD3", file_as="Gone", email1="boss@gone.example", active=False),
    ])
    assert [a.rec_id for a in store.find_by_domain("ACME.example")] == ["CRD1", "CRD2"]
    [acme] = store.find_by_email("Help@acme.example")
    assert acme.extra == {"FLDCRDCITY": "Springfield"} and acme.active
    [gone] = store.find_by_field("file_as", " gone ")
    assert gone.active is False
    assert store.get_account("CRD9") is None
    added = store.add_account(Account(rec_id="", file_as="New", email1="x@new.example"))
    assert len(added.rec_id) == 20 and store.get_account(added.rec_id) == added
    with pytest.raises(Exception, match="already exists"):
        store.add_account(Account(rec_id="CRD1", file_as="Again"))
    store.upsert_account(Account(rec_id="CRD1", file_as="Acme Ltd", email1="acme.example"))
    # a replaced Card moves to the end, in both stores
    assert [a.rec_id for a in store.find_by_domain("acme.example")] == ["CRD2", "CRD1"]
    assert [a.rec_id for a in store.list_accounts()] == ["CRD2", "CRD3", added.rec_id, "CRD1"]
    assert store.find_by_email("help@acme.example") == []


def test_reimporting_accounts_replaces_cards_and_their_email_keys(any_store: Store) -> None:
    store = any_store
    first = [Account(rec_id="CRD1", file_as="Acme", email1="old@acme.example"),
             Account(rec_id="", file_as="No id yet", email1="new@globex.example")]
    assert store.import_accounts(first) == 2
    again = [Account(rec_id="CRD1", file_as="Acme", email1="first@acme.example"),
             Account(rec_id="CRD1", file_as="Acme Ltd", email1="help@acme.example",
                     email2="acme.example")]
    assert store.import_accounts(again) == 2
    assert store.import_accounts([]) == 0
    assert store.find_by_email("old@acme.example") == []
    assert store.find_by_email("first@acme.example") == []  # the last row of a rec_id wins
    assert [a.file_as for a in store.find_by_email("help@acme.example")] == ["Acme Ltd"]
    assert [a.rec_id for a in store.find_by_domain("acme.example")] == ["CRD1"]
    generated = store.find_by_email("new@globex.example")
    assert len(generated) == 1 and len(generated[0].rec_id) == 20


def test_records_and_history_counts(any_store: Store) -> None:
    store = any_store
    rec = store.add_record("asset", {"FLDASTNAME": "Laptop"})
    assert rec.startswith("AST") and store.get_record("ASSET", rec) == {"FLDASTNAME": "Laptop"}
    store.update_record("ASSET", rec, {"FLDASTSERIAL": "S1"})
    assert store.get_record("asset", rec) == {"FLDASTNAME": "Laptop", "FLDASTSERIAL": "S1"}
    with pytest.raises(KeyError):
        store.update_record("ASSET", "AST0", {})
    assert store.get_record("CHARGE", rec) is None
    assert store.history_counts() == {} and store.count_tickets() == 0


def test_a_corpus_gives_the_same_outcomes_on_both_stores(tmp_path: Path, store_url: str) -> None:
    """The pipeline end to end: 120 generated messages (requests, replies, alerts, XML,
    bounces, attachments), each processed twice under two UIDLs, on this store, compared
    with the same run on a fresh SQLite store."""
    csv = gen_corpus.write_accounts_csv(tmp_path / "accounts.csv", gen_corpus.accounts(120))
    corpus = gen_corpus.generate(120, n_accounts=120)

    def run(store: Store) -> tuple[list[tuple[str, str | None, str]], list[tuple[str, ...]]]:
        config = make_config(state_dir=tmp_path / f"state-{id(store)}",
                             xml_api={"enabled": True, "password": gen_corpus.XML_PASSWORD})
        connector = make_connector(config, accounts=read_accounts_csv(csv), store=store)
        outcomes = []
        senders: dict[str, str] = {}
        for i, raw in enumerate(corpus):
            for copy in ("u", "v"):
                got = connector.process(raw, SourceRef(kind="pop3", name="support@pop:110",
                                                       uidl=f"{copy}{i}"))
                detail = re.sub(r"\b[A-Z]{3}[A-Z0-9]{17}\b", "REC_ID", got.detail)
                outcomes.append((got.kind.value, got.ticket, detail))
                if got.kind is OutcomeKind.TICKET_CREATED and got.ticket:
                    senders[got.ticket] = Message.from_bytes(raw).sender
        for number in sorted(senders, key=int)[:3]:  # the customer answers
            got = connector.process(build_reply(number, sender=senders[number]))
            outcomes.append((got.kind.value, got.ticket, got.detail))
        tickets = [(t.number, t.account, t.description, t.status, str(t.closed),
                    str(len(store.history(t.rec_id))), str(len(store.documents(t.rec_id))))
                   for t in store.list_tickets()]
        return outcomes, tickets

    with open_store(store_url) as store:
        got = run(store)
        assert store.processed_uidls("support@pop:110", [f"v{i}" for i in range(120)]) == {
            f"v{i}" for i in range(120)}
        assert len(store.pending_mail()) > 0
    with SQLiteStore(tmp_path / "reference.db") as reference:
        expected = run(reference)
    assert got == expected
    kinds = {kind for kind, _, _ in got[0]}
    assert {"ticket_created", "ticket_updated", "duplicate", "xml_applied",
            "alert_ticket_created", "forwarded"} <= kinds
