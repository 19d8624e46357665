"""The XML API through the whole pipeline, against the SQLite store."""

from __future__ import annotations

import email
import email.policy
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commit_email import hookimpl
from commit_email.model import OutcomeKind
from commit_email.pipeline import Connector
from commit_email.store import SQLiteStore
from commit_email.testing import build_message
from commit_email.xml_api import ErrorCode, Transaction, XmlApiError, render_transaction
from commit_email.xml_catalogue import DATA_KINDS

PASSWORD = "Tr0ub4dor&3-xml"
NEAR_MISS = "Tr0ub4dor&3-xmX"
ACME = "CRDACME0000000000001"
FORMS = "forms@acme.example"

RECORD_KINDS = [k for k in DATA_KINDS if k not in ("ACCOUNT", "TICKET")]


def xml(kind: str, fields: dict[str, str], *, password: str = PASSWORD, rid: str = "t1",
        respond: str = FORMS) -> str:
    transaction = Transaction(external_application_name="Web form", send_response_to=respond,
                              password=password, return_transaction_id=rid, data_kind=kind,
                              fields=fields)
    return render_transaction(transaction).decode()


def mail(*transactions: str, sender: str = FORMS, **options: Any) -> bytes:
    options.setdefault("subject", "API call")
    options.setdefault("body", "Hello,\n\n" + "\n".join(transactions) + "\n-- \nForms robot\n")
    return build_message(sender=sender, **options)


def domain_rows(store: SQLiteStore) -> list[tuple[Any, ...]]:
    """Every row of the Commit-side tables. Reads SQLite directly on purpose: the records
    table has no public listing, and "the store is unchanged" must cover every table."""
    rows: list[tuple[Any, ...]] = []
    for table in ("accounts", "tickets", "records", "history", "documents"):
        rows += [(table, *r) for r in store._db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    return rows


@pytest.fixture
def xml_connector(connector_factory: Callable[..., Connector]) -> Connector:
    return connector_factory(xml_api={"enabled": True, "password": PASSWORD})


@pytest.fixture
def store(xml_connector: Connector) -> SQLiteStore:
    assert isinstance(xml_connector.sink, SQLiteStore)
    return xml_connector.sink


def applied_rec_id(outcome: Any) -> str:
    assert outcome.kind is OutcomeKind.XML_APPLIED, outcome.detail
    return str(outcome.detail.rsplit(" ", 1)[1])


# -- add and update, every DataKind -----------------------------------------------------------


def test_account_add_then_update(xml_connector, store):
    added = xml_connector.process(mail(xml("ACCOUNT", {
        "FLDCRDFULLNAME": "Initrode", "FLDCRDEMAIL1": "it@initrode.example",
        "FLDCRDCARDID2": "INI-9", "FLDCRDCITY": "Springfield"})))
    rec_id = applied_rec_id(added)
    account = store.get_account(rec_id)
    assert account is not None
    assert (account.file_as, account.email1, account.account_number) == (
        "Initrode", "it@initrode.example", "INI-9")
    assert account.extra == {"FLDCRDCITY": "Springfield"}
    assert added.account == rec_id

    updated = xml_connector.process(mail(xml("ACCOUNT", {
        "FLDCRDRECID": rec_id, "FLDCRDUSER2": "gold", "FLDCRDCITY": "Shelbyville"})))
    assert applied_rec_id(updated) == rec_id
    account = store.get_account(rec_id)
    assert account is not None
    assert (account.file_as, account.field1) == ("Initrode", "gold")
    assert account.extra == {"FLDCRDCITY": "Shelbyville"}


def test_an_account_added_by_xml_is_matched_as_a_sender_at_once(xml_connector, store):
    rec_id = applied_rec_id(xml_connector.process(mail(xml("ACCOUNT", {
        "FLDCRDFULLNAME": "Initrode", "FLDCRDEMAIL1": "boss@initrode.example"}))))
    outcome = xml_connector.process(build_message(sender="boss@initrode.example"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert outcome.account == rec_id


def test_ticket_add_then_update(xml_connector, store):
    added = xml_connector.process(mail(xml("TICKET", {
        "FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "Printer is out of toner",
        "FLDTKTPRIORITY": "20", "FLDTKTDUEDATETIME": "2026-03-01"})))
    rec_id = applied_rec_id(added)
    ticket = store.get_ticket(rec_id=rec_id)
    assert ticket is not None
    assert (ticket.account, ticket.description, ticket.priority) == (
        ACME, "Printer is out of toner", "20")
    assert ticket.extra == {"FLDTKTDUEDATETIME": "2026-03-01"}
    assert added.ticket == ticket.number

    updated = xml_connector.process(mail(xml("TICKET", {
        "FLDTKTRECID": rec_id, "FLDTKTSTATUS": "300", "FLDTKTSOLUTION": "Toner replaced"})))
    assert applied_rec_id(updated) == rec_id
    ticket = store.get_ticket(rec_id=rec_id)
    assert ticket is not None
    assert (ticket.status, ticket.description) == ("300", "Printer is out of toner")
    assert ticket.extra["FLDTKTSOLUTION"] == "Toner replaced"


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_record_add_then_update(xml_connector, store, kind):
    prefix = DATA_KINDS[kind].rec_id_field[3:6]
    name, note = f"FLD{prefix}NAME", f"FLD{prefix}NOTES"
    rec_id = applied_rec_id(xml_connector.process(mail(xml(kind, {name: "first", note: "a"}))))
    assert store.get_record(kind, rec_id) == {name: "first", note: "a"}

    rec_field = DATA_KINDS[kind].rec_id_field
    updated = xml_connector.process(mail(xml(kind, {rec_field: rec_id, note: "b"}, rid="t2")))
    assert applied_rec_id(updated) == rec_id
    assert store.get_record(kind, rec_id) == {name: "first", note: "b"}


def test_a_charge_must_reference_an_existing_account(xml_connector, store):
    before = domain_rows(store)
    charge = {"FLDSLPCARDID": "CRDNOPE", "FLDSLPDESC": "x"}
    outcome = xml_connector.process(mail(xml("CHARGE", charge)))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "error 401 " in outcome.detail
    assert domain_rows(store) == before
    ok = xml_connector.process(mail(xml("CHARGE", {"FLDSLPCARDID": ACME, "FLDSLPDESC": "1h"})))
    assert ok.kind is OutcomeKind.XML_APPLIED


# -- several transactions, carriers, never a ticket --------------------------------------------


def test_several_transactions_apply_in_order(xml_connector, store):
    outcome = xml_connector.process(mail(
        xml("ACCOUNT", {"FLDCRDFULLNAME": "Initrode"}, rid="a"),
        xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "VPN down"}, rid="b"),
        xml("HISTORY-NOTE", {"FLDHISCARDID": ACME, "FLDHISDESCRIPTION": "called"}, rid="c"),
    ))
    assert outcome.kind is OutcomeKind.XML_APPLIED
    assert outcome.detail.startswith("ACCOUNT CRD")
    assert [t.description for t in store.list_tickets()] == ["VPN down"]
    assert any(a.file_as == "Initrode" for a in store.list_accounts())


def test_a_failing_transaction_changes_nothing_and_the_others_still_apply(xml_connector, store):
    inner = "".join(
        part.split("?>", 1)[1] for part in (
            xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "first"}, rid="a"),
            xml("TICKET", {"FLDTKTRECID": "TKTNOSUCHTICKET00001", "FLDTKTSTATUS": "1"}, rid="b"),
            xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "third"}, rid="c"),
        )
    )
    outcome = xml_connector.process(mail(f"<CommitCRMTransactions>{inner}</CommitCRMTransactions>"))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert outcome.detail.startswith("transaction 2 (TICKET): error 400 (RECORD_NOT_FOUND)")
    assert [t.description for t in store.list_tickets()] == ["first", "third"]


def test_a_handler_that_writes_then_refuses_leaves_nothing(connector_factory):
    def half_then_fail(transaction, ctx):
        ctx.sink.add_record("ASSET", {"FLDASTNAME": "orphan"})
        raise XmlApiError(ErrorCode.MISSING_REQUIRED, "changed my mind")

    class Plugin:
        @hookimpl
        def commit_email_register_xml_actions(self):
            return {"ASSET": half_then_fail}

    connector = connector_factory(xml_api={"enabled": True, "password": PASSWORD},
                                  plugins=[Plugin()])
    before = domain_rows(connector.sink)
    outcome = connector.process(mail(xml("ASSET", {"FLDASTNAME": "laptop"})))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "changed my mind" in outcome.detail
    assert domain_rows(connector.sink) == before


def test_the_html_body_carries_a_transaction(xml_connector, store):
    escaped = xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "from HTML"})
    escaped = escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    html = f"<html><body><p>Form data:</p><pre>{escaped}</pre><p>Thanks</p></body></html>"
    outcome = xml_connector.process(build_message(sender=FORMS, body="", html=html))
    assert outcome.kind is OutcomeKind.XML_APPLIED
    assert [t.description for t in store.list_tickets()] == ["from HTML"]


def test_an_xml_attachment_carries_a_transaction(xml_connector, store):
    data = xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "from attachment"}).encode()
    outcome = xml_connector.process(build_message(
        sender=FORMS, body="See the attached request.", attachments=[("request.xml",
                                                                       "application/octet-stream",
                                                                       data)]))
    assert outcome.kind is OutcomeKind.XML_APPLIED
    assert [t.description for t in store.list_tickets()] == ["from attachment"]


def test_a_quoted_printable_body_with_a_signature_is_read(xml_connector, store):
    one_line = xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "QP " + "x" * 200})
    raw = build_message(sender=FORMS, body="Hi\n" + one_line.replace("\n", "") + "\n-- \nBob\n")
    assert b"=\n" in raw or b"=\r\n" in raw  # soft line breaks inside the XML
    assert xml_connector.process(raw).kind is OutcomeKind.XML_APPLIED


def test_an_xml_mail_never_becomes_a_ticket_even_from_a_known_sender(xml_connector, store):
    # forms@acme.example matches ACME by domain: without the XML stage this opens a ticket.
    outcome = xml_connector.process(mail("<CommitCRMTransaction><DataKind>TICKET"))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert store.count_tickets() == 0


def test_the_stage_is_off_unless_enabled(connector_factory):
    connector = connector_factory()
    outcome = connector.process(mail(xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "x"})))
    assert outcome.kind is OutcomeKind.TICKET_CREATED  # plain email-to-ticket


def test_inspect_shows_the_route_and_writes_nothing(xml_connector, store):
    before = domain_rows(store)
    inspection = xml_connector.inspect(mail(xml("ACCOUNT", {"FLDCRDFULLNAME": "Dry Run"})))
    assert inspection.outcome.kind is OutcomeKind.XML_APPLIED
    assert any(key == "xml" for key, _ in inspection.notes)
    assert domain_rows(store) == before


# -- hostile input ------------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1 if i > 1 else "") + ";") * 10}">'
              for i in range(1, 10))
    + f"]><CommitCRMTransaction><Password>{PASSWORD.replace('&', '&amp;')}</Password>"
    "<DataKind>TICKET</DataKind><RecordData><FLDTKTCARDID>" + ACME + "</FLDTKTCARDID>"
    "<FLDTKTPROBLEM>&lol9;</FLDTKTPROBLEM></RecordData></CommitCRMTransaction>"
)


def hostile_cases(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE")
    body = xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "PLACEHOLDER"})
    tail = body.split("?>", 1)[1]
    return {
        "billion laughs": (mail(BILLION_LAUGHS), "101"),
        "quadratic blow-up": (mail(
            f'<!DOCTYPE q [<!ENTITY a "{"A" * 50_000}">]>'
            + tail.replace("PLACEHOLDER", "&a;" * 5_000)), "101"),
        "external entity": (mail(
            f'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
            + tail.replace("PLACEHOLDER", "&xxe;")), "101"),
        "external DTD": (mail(
            '<!DOCTYPE CommitCRMTransaction SYSTEM "http://127.0.0.1:9/evil.dtd">' + tail), "101"),
        "XInclude": (mail(tail.replace(
            "PLACEHOLDER",
            f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{secret}" '
            'parse="text"/>')), "105"),
        "10,000-deep nesting": (mail(tail.replace(
            "PLACEHOLDER", "<a>" * 10_000 + "</a>" * 10_000)), "103"),
        "invalid UTF-8 attachment": (build_message(
            sender=FORMS, body="attached",
            attachments=[("t.xml", "text/xml", body.encode().replace(b"PLACEHOLDER", b"\xff\xfe"))]
        ), "104"),
        "wrong password": (mail(xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "x"},
                                    password=NEAR_MISS)), "200"),
        "missing password": (mail(xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "x"},
                                      password="")), "200"),
        "unknown DataKind": (mail(xml("SPACESHIP", {"FLDSPCNAME": "x"})), "300"),
        "unknown field": (mail(xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "x",
                                              "FLDTKTBOGUS": "y"})), "301"),
        "update of a missing REC ID": (mail(xml("ACCOUNT", {
            "FLDCRDRECID": "CRDNOSUCHACCOUNT0001", "FLDCRDCITY": "x"})), "400"),
        "ticket for a missing Account": (mail(xml("TICKET", {
            "FLDTKTCARDID": "CRDNOSUCHACCOUNT0001", "FLDTKTPROBLEM": "x"})), "401"),
        "ticket number set by the sender": (mail(xml("TICKET", {
            "FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "x", "FLDTKTTICKETNO": "1"})), "303"),
    }


HOSTILE = [
    "billion laughs", "quadratic blow-up", "external entity", "external DTD", "XInclude",
    "10,000-deep nesting", "invalid UTF-8 attachment", "wrong password", "missing password",
    "unknown DataKind", "unknown field", "update of a missing REC ID",
    "ticket for a missing Account", "ticket number set by the sender",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_is_rejected_leaves_the_store_unchanged_and_the_run_alive(
    xml_connector, store, tmp_path, case
):
    raw, code = hostile_cases(tmp_path)[case]
    before = domain_rows(store)
    outcome = xml_connector.process(raw)
    assert outcome.kind is OutcomeKind.XML_REJECTED, outcome.detail
    assert f"error {code} " in outcome.detail
    assert "TOP-SECRET" not in outcome.detail
    assert domain_rows(store) == before
    after = xml_connector.process(mail(xml("TICKET", {"FLDTKTCARDID": ACME,
                                                      "FLDTKTPROBLEM": "still alive"})))
    assert after.kind is OutcomeKind.XML_APPLIED


def test_a_body_with_invalid_utf8_is_rejected(xml_connector, store):
    body = xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "PLACEHOLDER"}).encode()
    raw = (b"From: forms@acme.example\r\nTo: support@helpdesk.example\r\nSubject: bad\r\n"
           b"Message-ID: <bad-utf8@acme.example>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           + body.replace(b"PLACEHOLDER", b"caf\xe9 \xff"))
    before = domain_rows(store)
    outcome = xml_connector.process(raw)
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "error 104 " in outcome.detail
    assert domain_rows(store) == before


def test_a_50_mb_transaction_is_rejected(connector_factory):
    connector = connector_factory(xml_api={"enabled": True, "password": PASSWORD},
                                  connector={"max_message_bytes": 200 * 1024 * 1024})
    before = domain_rows(connector.sink)
    huge = xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "x" * (50 * 1024 * 1024)})
    outcome = connector.process(build_message(sender=FORMS, body="", attachments=[
        ("big.xml", "text/xml", huge.encode())]))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "error 102 " in outcome.detail
    assert domain_rows(connector.sink) == before


def test_a_sender_not_allowed_is_rejected(connector_factory):
    connector = connector_factory(xml_api={"enabled": True, "password": PASSWORD,
                                           "allowed_senders": ["*@erp.example", "ops@x.example"]})
    before = domain_rows(connector.sink)
    outcome = connector.process(mail(xml("ACCOUNT", {"FLDCRDFULLNAME": "Mallory"})))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "error 201 " in outcome.detail
    assert domain_rows(connector.sink) == before
    allowed = connector.process(mail(xml("ACCOUNT", {"FLDCRDFULLNAME": "Erp"}),
                                     sender="robot@ERP.example"))
    assert allowed.kind is OutcomeKind.XML_APPLIED


# -- responses ------------------------------------------------------------------------------


def parsed(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_one_response_per_transaction_with_rec_id_or_error(connector_factory, mailer):
    connector = connector_factory(xml_api={"enabled": True, "password": PASSWORD,
                                           "response_bcc": "audit@helpdesk.example"})
    connector.process(mail(
        xml("ACCOUNT", {"FLDCRDFULLNAME": "Initrode"}, rid="r-1"),
        xml("ACCOUNT", {"FLDCRDNOPE": "x"}, rid="r-2"),
    ))
    responses = mailer.of_kind("xml_response")
    assert len(responses) == 2
    ok, error = (parsed(m.raw) for m in responses)
    assert responses[0].recipients == (FORMS, "audit@helpdesk.example")
    assert "Bcc" not in ok
    assert ok["Auto-Submitted"] == "auto-replied"
    body = ok.get_content()
    assert "<Status>OK</Status>" in body
    assert "<ReturnTransactionID>r-1</ReturnTransactionID>" in body
    assert "<RecID>CRD" in body
    error_body = error.get_content()
    assert "<Status>ERROR</Status>" in error_body
    assert "<ErrorCode>301</ErrorCode>" in error_body
    assert "FLDCRDNOPE" in error_body


def test_no_response_when_switched_off_or_not_asked_for(connector_factory, mailer):
    off = connector_factory(xml_api={"enabled": True, "password": PASSWORD,
                                     "send_response": False})
    off.process(mail(xml("ACCOUNT", {"FLDCRDFULLNAME": "A"})))
    on = connector_factory(xml_api={"enabled": True, "password": PASSWORD})
    on.process(mail(xml("ACCOUNT", {"FLDCRDFULLNAME": "B"}, respond="")))
    assert mailer.of_kind("xml_response") == []


def test_an_unauthenticated_transaction_is_answered_only_to_its_sender(xml_connector, mailer):
    xml_connector.process(mail(xml("ACCOUNT", {"FLDCRDFULLNAME": "A"}, password=NEAR_MISS,
                                   respond="victim@elsewhere.example")))
    assert mailer.of_kind("xml_response") == []
    xml_connector.process(mail(xml("ACCOUNT", {"FLDCRDFULLNAME": "A"}, password=NEAR_MISS,
                                   respond=FORMS), subject="second try"))
    (response,) = mailer.of_kind("xml_response")
    assert "<ErrorCode>200</ErrorCode>" in parsed(response.raw).get_content()


def test_the_password_is_never_echoed(xml_connector, mailer, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    outcomes = [xml_connector.process(mail(
        xml("ACCOUNT", {"FLDCRDFULLNAME": f"says {pw} here"}, password=pw, rid=f"id {pw}"),
        xml("ACCOUNT", {"FLDCRDNOPE": pw}, password=pw),
        subject=f"try {n}")) for n, pw in enumerate((PASSWORD, NEAR_MISS))]
    texts = [o.detail for o in outcomes] + [caplog.text]
    texts += [m.raw.decode("utf-8", "replace") for m in mailer.sent]
    texts += [p.read_text("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (PASSWORD, NEAR_MISS, PASSWORD.replace("&", "&amp;")):
        assert not any(secret in text for text in texts), secret
    # the first mail: two answers; the second: one (its second transaction is not tried)
    assert len(mailer.of_kind("xml_response")) == 3


# -- plugins ------------------------------------------------------------------------------------


def test_a_plugin_adds_a_datakind_and_the_last_registered_overrides(connector_factory):
    class First:
        @hookimpl
        def commit_email_register_xml_actions(self):
            return {"CONTRACT": lambda t, ctx: ctx.sink.add_record("CONTRACT", {"BY": "first"})}

    class Second:
        @hookimpl
        def commit_email_register_xml_actions(self):
            return {"contract": lambda t, ctx: ctx.sink.add_record("CONTRACT", {"BY": "second"})}

    connector = connector_factory(xml_api={"enabled": True, "password": PASSWORD},
                                  plugins=[First(), Second()])
    rec_id = applied_rec_id(connector.process(mail(xml("CONTRACT", {"FLDBCTNAME": "x"}))))
    assert connector.sink.get_record("CONTRACT", rec_id) == {"BY": "second"}


# -- generated envelopes --------------------------------------------------------------------------

field_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@st.composite
def envelopes(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from([*DATA_KINDS, "BOGUS", ""]))
    names = st.sampled_from(["FLDTKTCARDID", "FLDTKTPROBLEM", "FLDCRDFULLNAME", "FLDCRDRECID",
                             "FLDTKTRECID", "FLDSLPCARDID", "FLDASTNAME", "FLDX", "BAD"])
    fields = draw(st.dictionaries(names, st.one_of(field_values, st.just(ACME)), max_size=4))
    password = draw(st.sampled_from([PASSWORD, NEAR_MISS, ""]))
    if kind:
        return xml(kind, fields, password=password)
    # A truncated envelope: still detectable (the root start tag survives), never complete.
    text = xml("X", fields)
    root_end = text.index("<CommitCRMTransaction>") + len("<CommitCRMTransaction>")
    return text[: draw(st.integers(root_end, len(text) - 1))]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(envelopes(), min_size=1, max_size=3))
def test_generated_envelopes_never_crash_the_pipeline(xml_connector, batch):
    # A fresh Message-ID each time: Hypothesis replays examples, which would be duplicates.
    outcome = xml_connector.process(mail(*batch, message_id=f"{uuid.uuid4()}@gen.example"))
    assert outcome.kind in (OutcomeKind.XML_APPLIED, OutcomeKind.XML_REJECTED), outcome.detail


def test_a_ticket_opened_by_xml_is_keyed_to_its_mail_and_position(xml_connector, store):
    # Two identical transactions in one mail are two tickets; each has its own source key,
    # so a separate-database sink can find it again after a crash instead of opening another.
    same = xml("TICKET", {"FLDTKTCARDID": ACME, "FLDTKTPROBLEM": "twice"})
    assert xml_connector.process(mail(same, same)).kind is OutcomeKind.XML_APPLIED
    keys = [row[0] for row in store._db.execute("SELECT source_key FROM tickets ORDER BY rowid")]
    assert len(keys) == 2
    assert keys[0].endswith("#xml1")
    assert keys[1].endswith("#xml2")
