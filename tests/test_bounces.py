"""Bounces: reports about our mail are filed under its ticket; no report opens or sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commit_email.bounces import delivery_summary, embedded_message_ids
from commit_email.message import Message
from commit_email.model import Account, OutcomeKind
from commit_email.pipeline import Connector
from commit_email.testing import RecordingMailer, build_message, make_config, make_connector
from tests.corpus import require_corpus
from tests.shared import JANE


def build_connector(mailer: RecordingMailer, accounts: tuple[Account, ...] = (JANE,)) -> Connector:
    config = make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": "127.0.0.1"},
    )
    return make_connector(config, accounts=accounts, mailer=mailer)


def dsn_for(original: bytes, *, headers_only: bool = False) -> bytes:
    """A Postfix-style DSN returning ``original`` (or just its headers)."""
    if headers_only:
        part = b"Content-Type: text/rfc822-headers\r\n\r\n" + original.split(b"\r\n\r\n")[0]
    else:
        part = b"Content-Type: message/rfc822\r\n\r\n" + original
    return (
        b"Return-Path: <>\r\n"
        b"From: MAILER-DAEMON@mx.customer.example (Mail Delivery System)\r\n"
        b"To: support@acme.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <20240205105301.9F1C2@mx.customer.example>\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="9F1C2"\r\n'
        b"\r\n--9F1C2\r\nContent-Type: text/plain\r\n\r\n"
        b"I'm sorry to have to inform you that your message could not\r\n"
        b"be delivered to one or more recipients.\r\n"
        b"\r\n--9F1C2\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        b"Final-Recipient: rfc822; jane@customer.example\r\n"
        b"Action: failed\r\nStatus: 5.2.2\r\n"
        b"Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n"
        b"\r\n--9F1C2\r\n" + part + b"\r\n--9F1C2--\r\n"
    )


def open_ticket_with_auto_response(c: Connector, mailer: RecordingMailer) -> tuple[str, bytes]:
    outcome = c.process(build_message(sender="jane@customer.example", subject="Printer"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.ticket
    [auto] = mailer.of_kind("auto_response")
    mailer.sent.clear()
    return outcome.ticket, auto.raw


@pytest.mark.parametrize("headers_only", [False, True])
def test_bounce_of_our_auto_response_is_filed_as_a_note(headers_only: bool) -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number, auto = open_ticket_with_auto_response(c, mailer)

    outcome = c.process(dsn_for(auto, headers_only=headers_only))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == number
    ticket = c.sink.get_ticket(number=number)
    assert ticket is not None
    note = c.sink.history(ticket.rec_id)[-1]
    assert note.kind == "bounce"
    assert "jane@customer.example: failed 5.2.2 (smtp; 552 5.2.2 mailbox full)" in note.text
    assert mailer.sent == []  # no answer, no forward
    assert len(c.sink.list_tickets()) == 1


def test_non_standard_bounce_quoting_our_message_id_as_text_is_filed() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number, auto = open_ticket_with_auto_response(c, mailer)
    our_id = Message.from_bytes(auto).message_id
    qmail = (
        b"From: MAILER-DAEMON@mail.customer.example\r\nTo: support@acme.example\r\n"
        b"Subject: failure notice\r\nMessage-ID: <qm.1@mail.customer.example>\r\n\r\n"
        b"Hi. This is the qmail-send program at mail.customer.example.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
        b"<jane@customer.example>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\n"
        b"Message-ID: <" + our_id.encode() + b">\r\nSubject: whatever\r\n"
    )

    outcome = c.process(qmail)

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == number


def test_bounce_about_mail_we_do_not_know_is_ignored() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer,
                        accounts=(JANE, Account(rec_id="CRD-MX", email1="mx.customer.example")))
    stranger = build_message(sender="support@acme.example", message_id="not.ours@elsewhere")

    outcome = c.process(dsn_for(stranger))

    assert outcome.kind is OutcomeKind.IGNORED
    assert c.sink.list_tickets() == []
    assert mailer.sent == []


def test_our_own_message_coming_back_is_ignored() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    _, auto = open_ticket_with_auto_response(c, mailer)
    stripped = b"\r\n".join(
        line for line in auto.split(b"\r\n")
        if not line.startswith((b"X-Commit-Email-Loop", b"Auto-Submitted", b"From:"))
    )
    stripped = b"From: jane@customer.example\r\n" + stripped

    outcome = c.process(stripped)

    assert outcome.kind is OutcomeKind.IGNORED
    assert "came back" in outcome.detail


def test_embedded_ids_and_summary_of_a_dsn() -> None:
    original = build_message(message_id="orig.1@acme.example")
    dsn = Message.from_bytes(dsn_for(original))

    assert embedded_message_ids(dsn)[0] == "orig.1@acme.example"
    assert delivery_summary(dsn) == (
        "jane@customer.example: failed 5.2.2 (smtp; 552 5.2.2 mailbox full)"
    )


# Auto-replies -----------------------------------------------------------------------------

AUTOREPLIES = Path(__file__).parent / "data" / "autoreplies"

#: file -> outcome; a mailing list may open a ticket (only answering it is forbidden).
AUTOREPLY_OUTCOMES = {
    "exchange-oof.eml": OutcomeKind.IGNORED,  # "Automatische Antwort:", auto-generated
    "freshdesk-ack.eml": OutcomeKind.IGNORED,  # another help desk's acknowledgement
    "gmail-vacation.eml": OutcomeKind.IGNORED,
    "outlook-com-oof-no-auto-submitted.eml": OutcomeKind.IGNORED,
    "postfix-vacation.eml": OutcomeKind.IGNORED,  # Auto-Submitted: auto-replied (vacation)
    "mailing-list.eml": OutcomeKind.TICKET_CREATED,
}


def test_auto_replies_from_known_senders_open_nothing_and_get_no_answer() -> None:
    raws = {p.name: p.read_bytes() for p in sorted(AUTOREPLIES.glob("*.eml"))}
    assert set(raws) == set(AUTOREPLY_OUTCOMES)
    accounts = tuple(Account(rec_id=f"CRD-{i}", email1=Message.from_bytes(raw).sender)
                     for i, raw in enumerate(raws.values()))
    mailer = RecordingMailer()
    c = build_connector(mailer, accounts=accounts)

    outcomes = {name: c.process(raw).kind for name, raw in raws.items()}

    assert outcomes == AUTOREPLY_OUTCOMES
    assert mailer.sent == []


# The shared corpus ------------------------------------------------------------------------

#: Every delivery report, read receipt and spam complaint in the shared corpus.
CORPUS_REPORTS = (
    "flanker/bounce/broken-mime.eml",
    "flanker/bounce/delayed-broken.eml",
    "flanker/bounce/delayed.eml",
    "flanker/bounce/gmail-invalid-address.eml",
    "flanker/bounce/gmail-no-dns.eml",
    "flanker/bounce/mailbox-full.eml",
    "flanker/bounce/no-mx.eml",
    "flanker/bounce/office365.eml",
    "flanker/bounce/zed.eml",
    "flanker/disposition-notification.eml",
    "flanker/complaints/aol.eml",
    "flanker/complaints/yahoo.eml",
    "nodemailer-mailparser/delivery-status.eml",
    "cpython-test_email/msg_05.txt",
    "cpython-test_email/msg_16.txt",
    "cpython-test_email/msg_25.txt",
    "cpython-test_email/msg_43.txt",
    "spamscope-mail-parser/mail_malformed_2",
    "mime4j/mimetools-testmsgs/badbound.msg",
)


def test_corpus_reports_are_all_recognised_and_none_gets_a_ticket_or_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = require_corpus()
    raws = [(name, (root / name).read_bytes()) for name in CORPUS_REPORTS]
    # Worst case: every report's sender is a known customer, so only recognition stops a
    # ticket (and with it an auto-response) from happening.
    senders = {Message.from_bytes(raw).sender for _, raw in raws} - {""}
    accounts = tuple(Account(rec_id=f"CRD-{i}", file_as=s, email1=s)
                     for i, s in enumerate(sorted(senders)))
    mailer = RecordingMailer()
    c = build_connector(mailer, accounts=accounts)

    recognised = [name for name, raw in raws
                  if Message.from_bytes(raw).is_bounce]
    outcomes = {name: c.process(raw) for name, raw in raws}

    with capsys.disabled():
        print(f"\ncorpus reports recognised: {len(recognised)}/{len(raws)}; "
              f"tickets: {len(c.sink.list_tickets())}; mails sent: {len(mailer.sent)}")
    assert {n: o.kind for n, o in outcomes.items()} == dict.fromkeys(
        CORPUS_REPORTS, OutcomeKind.IGNORED)
    assert len(recognised) == len(CORPUS_REPORTS)
    assert c.sink.list_tickets() == []
    assert mailer.sent == []


def test_corpus_has_no_other_reports() -> None:
    """Keeps CORPUS_REPORTS honest: no multipart/report in the corpus is left out."""
    root = require_corpus()
    from tests.corpus import corpus_messages

    found = {
        str(p.relative_to(root)) for p in corpus_messages(root)
        if b"multipart/report" in p.read_bytes().lower()
        and Message.from_bytes(p.read_bytes()).content_type == "multipart/report"
    }

    assert found <= set(CORPUS_REPORTS)


def test_corpus_path_exists_when_set() -> None:
    root = require_corpus()
    assert all((root / name).is_file() for name in CORPUS_REPORTS), Path(root)


# Properties -------------------------------------------------------------------------------

_junk = st.binary(max_size=300).map(lambda b: b.replace(b"--9F1C2", b""))


@settings(max_examples=60, deadline=None)
@given(status=_junk, embedded=_junk,
       embedded_type=st.sampled_from([b"message/rfc822", b"text/rfc822-headers",
                                      b"message/global", b"text/plain"]))
def test_any_report_is_ignored_never_quarantined(
    status: bytes, embedded: bytes, embedded_type: bytes
) -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: support@acme.example\r\n"
        b"Subject: Undelivered\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="9F1C2"\r\n'
        b"\r\n--9F1C2\r\nContent-Type: message/delivery-status\r\n\r\n" + status
        + b"\r\n--9F1C2\r\nContent-Type: " + embedded_type + b"\r\n\r\n" + embedded
        + b"\r\n--9F1C2--\r\n"
    )
    mailer = RecordingMailer()
    c = build_connector(mailer, accounts=(JANE, Account(rec_id="CRD-MX", email1="mx.example")))

    outcome = c.process(raw)

    assert outcome.kind is OutcomeKind.IGNORED, outcome.detail
    assert mailer.sent == []


BOUNCE_SET = sorted((Path(__file__).parent / "data" / "bounces").glob("*.eml"))


@pytest.mark.parametrize("path", BOUNCE_SET, ids=lambda p: p.stem)
def test_reports_that_are_not_multipart_report_are_still_reports(path: Path) -> None:
    """One report per MTA family that writes no ``multipart/report``: DragonFly's
    ``From: MAILER-DAEMON <>``, qmail, Exim, Sendmail and Postfix warnings, Exchange, a
    carrier's notice (also from ``post_master@``), X2's "failed delivery", Amazon SES and
    its SNS JSON (plain, or escaped inside the SNS envelope). None is forwarded to a human
    or answered."""
    mailer = RecordingMailer()
    c = build_connector(mailer)
    outcome = c.process(path.read_bytes())
    assert Message.from_bytes(path.read_bytes()).is_bounce
    assert outcome.kind is OutcomeKind.IGNORED, outcome
    c.flush_outbox()
    assert mailer.sent == []


@pytest.mark.parametrize("sender, name, body", [
    ("jane@customer.example", "", "My mail to the bank could not be delivered, user unknown."),
    ("no-reply@sns.amazonaws.com", "AWS", "Your AWS bill is ready."),
    ("pat@customer.example", "Postmaster Pat", "Mail to the bank could not be delivered."),
])
def test_a_person_writing_about_a_bounce_is_not_a_bounce(sender: str, name: str,
                                                          body: str) -> None:
    """The body phrases count only for a mail daemon; a customer quoting them gets a ticket
    (or, for an unknown sender, the usual forward), never silence."""
    raw = build_message(sender=sender, sender_name=name, subject="Mail problem", body=body)
    assert not Message.from_bytes(raw).is_bounce
    assert build_connector(RecordingMailer()).process(raw).kind is not OutcomeKind.IGNORED
