"""Email to ticket: every matching rule, with real RFC 822 bytes, through the whole pipeline."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from commit_email.message import Message
from commit_email.model import OutcomeKind
from commit_email.pipeline import Connector
from commit_email.testing import RecordingMailer, build_message
from tests.shared import ACME, ACME_BOB, GLOBEX, TINA

ConnectorFactory = Callable[..., Connector]


def test_full_address_match_opens_a_ticket_with_defaults(connector: Connector) -> None:
    raw = build_message(sender="it@globex.example", subject="Server down",
                        body="The file server does not answer.\n")
    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert outcome.account == GLOBEX.rec_id
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    assert ticket.description == "Server down"
    assert (ticket.status, ticket.priority, ticket.kind, ticket.source) == (
        "100", "10", "General", "Email")
    history = connector.sink.history(ticket.rec_id)
    assert [h.text for h in history] == ["The file server does not answer.\n"]
    assert history[0].author == "it@globex.example"
    raw_docs = [d for d in connector.sink.documents(ticket.rec_id) if d.kind == "raw"]
    assert [d.data for d in raw_docs] == [raw]


def test_email2_and_case_and_display_name_do_not_matter(connector: Connector) -> None:
    raw = build_message(sender="BILLING@globex.EXAMPLE", sender_name="Accounts Payable")
    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert outcome.account == GLOBEX.rec_id


def test_secondary_contact_resolves_to_parent_and_sets_contact(connector: Connector) -> None:
    outcome = connector.process(build_message(sender="bob@acme-hq.example"))
    assert outcome.account == ACME.rec_id
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None and ticket.contact == ACME_BOB.rec_id


def test_bare_domain_matches_any_sender_of_that_domain(connector: Connector) -> None:
    outcome = connector.process(build_message(sender="new.hire@acme.example"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert outcome.account == ACME.rec_id
    assert "domain" in outcome.detail


def test_full_address_wins_over_domain(connector_factory: ConnectorFactory) -> None:
    from commit_email.model import Account
    specific = Account(rec_id="CRDSPECIFIC000000001", file_as="Acme Branch",
                       email1="branch@acme.example")
    connector = connector_factory(accounts=[ACME, specific])
    outcome = connector.process(build_message(sender="branch@acme.example"))
    assert outcome.account == specific.rec_id


def test_public_domains_never_match_by_domain(connector_factory: ConnectorFactory) -> None:
    from commit_email.model import Account
    careless = Account(rec_id="CRDCARELESS000000001", file_as="Careless", email1="gmail.com")
    custom = Account(rec_id="CRDCUSTOM00000000001", file_as="Custom", email1="isp.example")
    connector = connector_factory(accounts=[careless, custom],
                                  email_to_ticket={"public_domains": ["isp.example"]})
    for sender in ("someone@gmail.com", "someone@isp.example"):
        outcome = connector.process(build_message(sender=sender))
        assert outcome.kind is OutcomeKind.FORWARDED, sender


def test_domain_matching_can_be_switched_off(connector_factory: ConnectorFactory) -> None:
    connector = connector_factory(email_to_ticket={"match_domains": False})
    outcome = connector.process(build_message(sender="new.hire@acme.example"))
    assert outcome.kind is OutcomeKind.FORWARDED


def test_domain_on_two_accounts_is_an_ambiguity_error_and_forwarded(
    connector: Connector, mailer: RecordingMailer
) -> None:
    outcome = connector.process(build_message(sender="carol@shared.example"))
    assert outcome.kind is OutcomeKind.FORWARDED
    assert "ambiguous" in outcome.detail
    assert "Initech" in outcome.detail and "Umbrella" in outcome.detail
    assert connector.sink.list_tickets() == []
    [forward] = mailer.of_kind("forward")
    assert b"ambiguous sender" in forward.raw


def test_employee_mail_without_ticket_number_is_forwarded(
    connector: Connector, mailer: RecordingMailer
) -> None:
    outcome = connector.process(build_message(sender="Tina@MSP.example"))
    assert outcome.kind is OutcomeKind.FORWARDED
    assert outcome.account == TINA.rec_id
    assert "employee" in outcome.detail
    assert len(mailer.of_kind("forward")) == 1


def test_inactive_accounts_never_match(connector: Connector) -> None:
    outcome = connector.process(build_message(sender="boss@gone.example"))
    assert outcome.kind is OutcomeKind.FORWARDED


def test_unknown_sender_is_forwarded_unchanged(
    connector: Connector, mailer: RecordingMailer
) -> None:
    raw = build_message(sender="stranger@nowhere.example", subject="Hi")
    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.FORWARDED
    [forward] = mailer.sent
    assert forward.recipients == ("helpdesk@helpdesk.example",)
    assert raw in forward.raw  # the original, byte for byte
    fwd = Message.from_bytes(forward.raw)
    assert fwd.header("Auto-Submitted") == "auto-forwarded"
    assert fwd.header("X-Commit-Email-Loop")
    assert [a.content_type for a in fwd.attachments] == ["message/rfc822"]


def test_attachments_are_linked_as_documents(connector: Connector) -> None:
    raw = build_message(sender="it@globex.example",
                        attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 x"),
                                     ("photo.jpg", "image/jpeg", b"\xff\xd8\xff")])
    outcome = connector.process(raw)
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    docs = connector.sink.documents(ticket.rec_id)
    assert [(d.kind, d.filename) for d in docs][1:] == [
        ("attachment", "report.pdf"), ("attachment", "photo.jpg")]
    assert docs[1].data == b"%PDF-1.4 x"


def test_description_falls_back_to_first_body_line(connector: Connector) -> None:
    outcome = connector.process(build_message(sender="it@globex.example", subject="",
                                              body="\n\nNothing works today.\nMore.\n"))
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None and ticket.description == "Nothing works today."


def test_ticket_defaults_come_from_config(connector_factory: ConnectorFactory) -> None:
    connector = connector_factory(email_to_ticket={"ticket_defaults": {
        "status": "200", "manager": "CRDEMPTECH0000000006"}})
    outcome = connector.process(build_message(sender="it@globex.example"))
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    assert (ticket.status, ticket.priority, ticket.manager) == ("200", "10",
                                                                "CRDEMPTECH0000000006")


@pytest.mark.parametrize("headers,subject", [
    ({"Auto-Submitted": "auto-replied"}, "Out of office"),
    ({"X-Autoreply": "yes"}, "Away"),
    ({}, "Automatic reply: Printer"),
])
def test_auto_replies_never_open_tickets(
    connector: Connector, mailer: RecordingMailer, headers: dict[str, str], subject: str
) -> None:
    hdrs = {"X-Auto-Response-Suppress": "All", **headers}
    outcome = connector.process(build_message(sender="it@globex.example", subject=subject,
                                              headers=hdrs))
    assert outcome.kind is OutcomeKind.IGNORED
    assert connector.sink.list_tickets() == []
    assert mailer.sent == []


def test_numbers_are_a_sequence(connector: Connector) -> None:
    numbers = [connector.process(build_message(sender="it@globex.example",
                                               subject=f"n{i}")).ticket for i in range(3)]
    assert numbers == ["1", "2", "3"]
