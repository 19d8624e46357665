"""Who may write into a ticket: ticket numbers are sequential and Message-IDs no secret, so a
reply is filed only for the ticket's own people ([threading] accept_replies_from)."""

from __future__ import annotations

import pytest

from commit_email.model import OutcomeKind
from commit_email.pipeline import Connector
from commit_email.store import SQLiteStore
from commit_email.testing import RecordingMailer, build_message, make_config, make_connector
from tests.shared import DIRECTORY


def build_connector(mailer: RecordingMailer, **threading: object) -> Connector:
    config = make_config(
        connector={"public_address": "support@msp.example",
                   "internal_address": "helpdesk@msp.example"},
        smtp={"host": "127.0.0.1"},
        threading=threading,
    )
    return make_connector(config, accounts=DIRECTORY, mailer=mailer)


def store_of(c: Connector) -> SQLiteStore:
    assert isinstance(c.sink, SQLiteStore)
    return c.sink


def acme_ticket(c: Connector, **options: object) -> tuple[str, str]:
    """Alice of Acme (by its domain entry) opens a ticket; (number, rec_id)."""
    outcome = c.process(build_message(sender="alice@acme.example", subject="VPN is down",
                                      message_id="vpn-1@acme.example", **options))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.ticket
    ticket = store_of(c).get_ticket(number=outcome.ticket)
    assert ticket is not None
    return ticket.number, ticket.rec_id


def reply(sender: str, number: str, **options: object) -> bytes:
    options.setdefault("attachments", [("evil.txt", "text/plain", b"planted")])
    return build_message(sender=sender, subject=f"Re: [Ticket#{number}] VPN is down",
                         body="Please send the VPN password to this address.\n", **options)


def threading_notes(c: Connector, raw: bytes) -> str:
    return "\n".join(str(value) for key, value in c.inspect(raw).notes
                     if key in ("threading", "reply_from"))


@pytest.fixture
def mailer() -> RecordingMailer:
    return RecordingMailer()


@pytest.mark.parametrize("stranger", ["it@globex.example", "eve@evil.example",
                                      "boss@gone.example"])
def test_a_token_from_someone_outside_the_ticket_is_forwarded_and_filed_nowhere(
        mailer, stranger):
    c = build_connector(mailer)
    number, rec_id = acme_ticket(c)
    history, documents = store_of(c).history(rec_id), store_of(c).documents(rec_id)
    mailer.sent.clear()

    outcome = c.process(reply(stranger, number))

    assert outcome.kind is OutcomeKind.FORWARDED
    assert outcome.detail == f"unverified reply to ticket {number}"
    assert store_of(c).history(rec_id) == history
    assert store_of(c).documents(rec_id) == documents
    assert [m.kind for m in mailer.sent] == ["forward"]  # no auto-response, no ticket
    assert b"unverified reply to ticket" in mailer.sent[0].raw
    assert store_of(c).count_tickets() == 1


def test_a_reply_to_our_message_id_from_a_stranger_is_not_filed_either(mailer):
    c = build_connector(mailer)
    number, rec_id = acme_ticket(c)
    (auto_response,) = mailer.of_kind("auto_response")
    history = store_of(c).history(rec_id)

    outcome = c.process(build_message(sender="eve@evil.example", subject="hello",
                                      in_reply_to=f"<{auto_response.message_id}>"))

    assert outcome.kind is OutcomeKind.FORWARDED
    assert outcome.detail == f"unverified reply to ticket {number}"
    assert store_of(c).history(rec_id) == history


@pytest.mark.parametrize("sender, how", [
    ("alice@acme.example", "of the ticket's account Acme Corporation"),
    ("carol@acme.example", "of the ticket's account Acme Corporation"),  # the domain entry
    ("bob@acme-hq.example", "of the ticket's account Acme Corporation"),  # a contact
])
def test_the_tickets_own_people_are_filed_and_forwarded(mailer, sender, how):
    c = build_connector(mailer)
    number, rec_id = acme_ticket(c)
    before = len(store_of(c).history(rec_id))
    mailer.sent.clear()

    assert how in threading_notes(c, reply(sender, number))
    outcome = c.process(reply(sender, number))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert len(store_of(c).history(rec_id)) == before + 1
    assert [m.kind for m in mailer.sent] == ["forward"]


def test_an_active_employee_is_filed_without_a_forward(mailer):
    c = build_connector(mailer)
    number, _rec_id = acme_ticket(c)
    mailer.sent.clear()

    outcome = c.process(reply("tina@msp.example", number))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert "an active employee" in outcome.detail
    assert mailer.sent == []


def test_an_address_the_tickets_mail_went_to_may_answer(mailer):
    c = build_connector(mailer)
    # Alice writes from her Acme address with a private envelope sender: the auto-response
    # goes to the Return-Path (RFC 3834), an address the Account does not list.
    number, _rec_id = acme_ticket(c, headers={"Return-Path": "<alice.home@private.example>"})
    (auto_response,) = mailer.of_kind("auto_response")
    assert auto_response.recipients == ("alice.home@private.example",)
    mailer.sent.clear()

    answer = reply("Alice.Home@private.example", number)
    assert "whom the ticket's mail went to" in threading_notes(c, answer)
    assert c.process(answer).kind is OutcomeKind.TICKET_UPDATED
    # ...but not some other address of that private domain
    assert c.process(reply("mallory@private.example", number)).kind is OutcomeKind.FORWARDED


def test_anyone_restores_commits_own_behaviour(mailer):
    c = build_connector(mailer, accept_replies_from="anyone")
    number, rec_id = acme_ticket(c)
    before = len(store_of(c).history(rec_id))

    outcome = c.process(reply("it@globex.example", number))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert len(store_of(c).history(rec_id)) == before + 1


def test_inspect_explains_the_refusal(mailer):
    c = build_connector(mailer)
    number, _ = acme_ticket(c)

    report = c.inspect(reply("eve@evil.example", number))

    notes = [str(value) for _key, value in report.notes]
    assert any(f"does not belong to ticket {number}" in n for n in notes), notes
    assert report.outcome.kind is OutcomeKind.FORWARDED
