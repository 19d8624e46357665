"""Threading by the customer's own Message-IDs: a reply to a message filed in a ticket (the
mail that opened it, an earlier reply) threads there without our token, but only from the
ticket's Account or an active employee - a Message-ID is no secret."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from commit_email.message import Message
from commit_email.model import Account, AccountKind, OutcomeKind, Ticket
from commit_email.pipeline import Connector
from commit_email.store import SQLiteStore
from commit_email.testing import RecordingMailer, build_message, make_config, make_connector
from tests.alert_fixtures import alert_path, sequence
from tests.automated_fixtures import ACCOUNT_RULES
from tests.automated_fixtures import ACCOUNTS as ALERT_ACCOUNTS
from tests.shared import FORMER, TECH

#: The Account has its domain typed in, so every colleague at customer.example is matched.
CUSTOMER = Account(rec_id="CRD-CUST-000000000001", file_as="Customer Ltd",
                   email1="jane@customer.example", email2="customer.example")
#: A secondary contact of the Account, writing from another domain.
CONTACT = Account(rec_id="CRD-CUST-CONTACT-0001", file_as="Carl Consultant",
                  email1="carl@consulting.example", kind=AccountKind.CONTACT,
                  parent=CUSTOMER.rec_id)
#: Another customer of the help desk: known, but not of Customer Ltd.
MALLORY = Account(rec_id="CRD-GLOBEX-0000000001", file_as="Globex",
                  email1="mallory@globex.example")
ACCOUNTS = [CUSTOMER, CONTACT, MALLORY, TECH, FORMER]

FIRST_ID = "first.1@customer.example"
QUOTED_REPLY = (
    "Same here on the second floor.\n\nOn Mon, 5 Feb 2024 at 10:52, Jane "
    "<jane@customer.example> wrote:\n> The printer is jammed.\n"
)


def build_connector(mailer: RecordingMailer, store: SQLiteStore | None = None) -> Connector:
    config = make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": "127.0.0.1"},
    )
    return make_connector(config, accounts=ACCOUNTS, mailer=mailer, store=store)


def first_mail(message_id: str = FIRST_ID, subject: str = "Printer jammed") -> bytes:
    """Jane's first mail, with her colleague Bob on Cc."""
    return build_message(sender="jane@customer.example", to="support@acme.example",
                         cc=["bob@customer.example"], subject=subject, message_id=message_id,
                         body="The printer is jammed.\n")


def open_ticket(c: Connector, message_id: str = FIRST_ID,
                subject: str = "Printer jammed") -> Ticket:
    outcome = c.process(first_mail(message_id, subject))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.ticket
    ticket = c.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    return ticket


def reply(sender: str, *, to: str = FIRST_ID, references: tuple[str, ...] | None = None,
          subject: str = "Re: Printer jammed", body: str = QUOTED_REPLY,
          message_id: str | None = None) -> bytes:
    """A reply without our token: a reply-all keeps the customer, the colleague and us."""
    return build_message(sender=sender, to=["jane@customer.example", "support@acme.example"],
                         cc=["bob@customer.example"], subject=subject, body=body,
                         in_reply_to=to, references=references or (to,), message_id=message_id)


def history_of(c: Connector, ticket: Ticket) -> list[tuple[str, str]]:
    return [(h.author, h.text) for h in c.sink.history(ticket.rec_id)]


# Who may thread by a filed Message-ID -------------------------------------------------------

def test_colleagues_reply_all_to_the_first_mail_is_filed_stripped_and_forwarded() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    ticket = open_ticket(c)
    mailer.sent.clear()

    outcome = c.process(reply("bob@customer.example"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number
    assert outcome.account == CUSTOMER.rec_id
    assert history_of(c, ticket)[-1] == ("bob@customer.example",
                                         "Same here on the second floor.")
    assert [m.kind for m in mailer.sent] == ["forward"]
    assert len(c.sink.list_tickets()) == 1


def test_customers_follow_up_to_her_own_first_mail_is_filed() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    ticket = open_ticket(c)

    outcome = c.process(build_message(
        sender="jane@customer.example", subject="Re: Printer jammed",
        body="Forgot to say: it is the HP on floor 2.\n", in_reply_to=FIRST_ID,
        references=[FIRST_ID]))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number
    assert history_of(c, ticket)[-1][1].strip() == "Forgot to say: it is the HP on floor 2."


def test_a_contact_of_the_account_from_another_domain_is_filed() -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)

    outcome = c.process(reply("carl@consulting.example"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number


def test_active_employee_replying_to_the_customers_mail_is_filed_not_forwarded() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    ticket = open_ticket(c)
    mailer.sent.clear()

    outcome = c.process(reply("tom@acme.example", body="Fuser replaced.\n"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number
    assert "employee" in outcome.detail
    assert mailer.sent == []
    assert history_of(c, ticket)[-1] == ("tom@acme.example", "Fuser replaced.\n")


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        # Another customer: the reply opens a ticket of their own, never joins Jane's.
        ("mallory@globex.example", OutcomeKind.TICKET_CREATED),
        # Nobody we know: forwarded to the help desk like any unplaceable mail.
        ("eve@attacker.example", OutcomeKind.FORWARDED),
        # A former employee is no longer trusted.
        ("fay@acme.example", OutcomeKind.FORWARDED),
        # A public mail domain never matches by domain, so the Account's domain does not help.
        ("jane.doe@gmail.com", OutcomeKind.FORWARDED),
    ],
)
def test_a_stranger_quoting_a_leaked_message_id_is_not_filed(
    sender: str, expected: OutcomeKind
) -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)
    before = history_of(c, ticket)

    outcome = c.process(reply(sender, body="Click here for cheap toner.\n"))

    assert outcome.kind is expected
    assert outcome.ticket != ticket.number
    assert history_of(c, ticket) == before


def test_inspect_says_which_message_id_matched_and_why() -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)

    allowed = dict(c.inspect(reply("bob@customer.example")).notes)
    refused = c.inspect(reply("mallory@globex.example")).notes

    assert allowed["threading"] == (
        f"ticket {ticket.number} by reply to filed message {FIRST_ID},"
        " sender of the ticket's account Customer Ltd")
    assert ("threading", f"reply to {FIRST_ID} (ticket {ticket.number}) ignored:"
            " mallory@globex.example is neither of the ticket's account nor an active"
            " employee") in refused


def test_a_reply_to_the_alert_mail_that_opened_a_ticket_is_filed_there() -> None:
    config = make_config(automated={"account": ACCOUNT_RULES},
                         email_to_ticket={"auto_response": False})
    c = make_connector(config, accounts=[*ALERT_ACCOUNTS, TECH])
    alert = alert_path(sequence("nagios", "service")[0]).read_bytes()
    opened = c.process(alert)
    assert opened.kind is OutcomeKind.ALERT_TICKET_CREATED

    outcome = c.process(reply("tom@acme.example", to=Message.from_bytes(alert).message_id,
                              subject="Re: ** PROBLEM Service Alert **",
                              body="Restarted the service.\n"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == opened.ticket


# Which reference wins ----------------------------------------------------------------------

def test_references_chain_where_only_an_older_id_is_known() -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)

    outcome = c.process(reply(
        "bob@customer.example", to="never-seen.3@customer.example",
        references=("older-unknown.0@customer.example", FIRST_ID,
                    "never-seen.2@customer.example", "never-seen.3@customer.example")))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number


def test_the_most_recent_known_reference_wins() -> None:
    c = build_connector(RecordingMailer())
    old = open_ticket(c, "old.1@customer.example", "Printer jammed")
    new = open_ticket(c, "new.1@customer.example", "Scanner broken")

    outcome = c.process(reply("jane@customer.example", to="new.1@customer.example",
                              references=("old.1@customer.example", "new.1@customer.example")))

    assert outcome.ticket == new.number != old.number


def test_a_reply_filed_this_way_is_itself_remembered() -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)
    c.process(reply("bob@customer.example", message_id="bob.2@customer.example"))

    outcome = c.process(reply("jane@customer.example", to="bob.2@customer.example",
                              references=("bob.2@customer.example",)))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number


def test_the_subject_token_keeps_priority() -> None:
    c = build_connector(RecordingMailer())
    first = open_ticket(c)
    other = open_ticket(c, "other.1@customer.example", "Scanner broken")

    outcome = c.process(reply("bob@customer.example",
                              subject=f"Re: [Ticket#{other.number}] Scanner broken"))

    assert outcome.ticket == other.number != first.number


def test_our_own_message_ids_keep_priority_over_the_customers() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    open_ticket(c)
    other = open_ticket(c, "other.1@customer.example", "Scanner broken")
    auto = next(m for m in mailer.of_kind("auto_response") if m.ticket == other.rec_id)

    outcome = c.process(reply("jane@customer.example", to=FIRST_ID,
                              references=(auto.message_id, FIRST_ID)))

    assert outcome.ticket == other.number


@pytest.mark.parametrize("found_by", ["token", "filed message id"])
def test_a_closed_ticket_is_filed_into_as_with_the_token(found_by: str) -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)
    c.sink.update_ticket(ticket.rec_id, {"closed": True})
    subject = f"Re: [Ticket#{ticket.number}]" if found_by == "token" else "Re: Printer jammed"

    outcome = c.process(reply("jane@customer.example", subject=subject))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number


def test_a_message_id_of_a_deleted_ticket_falls_through_to_email_to_ticket() -> None:
    c = build_connector(RecordingMailer())
    with c.state.transaction():
        c.state.record_filed_message_id(FIRST_ID, "TKT-DELETED-00000001")

    result = c.inspect(reply("jane@customer.example"))
    outcome = c.process(reply("jane@customer.example"))

    assert ("threading", f"reply to {FIRST_ID}, filed in a deleted ticket: ignored") in \
        result.notes
    assert outcome.kind is OutcomeKind.TICKET_CREATED


# What is remembered, and where -------------------------------------------------------------

def test_the_customers_message_id_never_counts_as_our_own() -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)

    assert c.state.ticket_for_filed_message_id(FIRST_ID) == ticket.rec_id
    assert c.state.ticket_for_sent_message_id(FIRST_ID) is None
    assert not c.state.is_own_message_id(FIRST_ID)


def test_a_later_mail_reusing_a_message_id_does_not_take_it_over() -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)
    # Same Message-ID, different sender and subject: not a duplicate, a ticket of its own.
    hijack = build_message(sender="mallory@globex.example", subject="Invoice",
                           message_id=FIRST_ID)
    assert c.process(hijack).kind is OutcomeKind.TICKET_CREATED

    outcome = c.process(reply("bob@customer.example"))

    assert outcome.ticket == ticket.number


def test_inspect_remembers_nothing() -> None:
    c = build_connector(RecordingMailer())

    c.inspect(first_mail())

    assert c.state.ticket_for_filed_message_id(FIRST_ID) is None


def test_duplicates_are_still_duplicates() -> None:
    c = build_connector(RecordingMailer())
    ticket = open_ticket(c)
    c.process(reply("bob@customer.example", message_id="bob.2@customer.example"))
    filed = history_of(c, ticket)

    again_first = c.process(first_mail())
    again_reply = c.process(reply("bob@customer.example", message_id="bob.2@customer.example"))

    assert again_first.kind is again_reply.kind is OutcomeKind.DUPLICATE
    assert history_of(c, ticket) == filed
    assert len(c.sink.list_tickets()) == 1


def test_the_memory_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "commit.db"
    with SQLiteStore(path) as store:
        ticket = open_ticket(build_connector(RecordingMailer(), store))

    with SQLiteStore(path) as store:
        outcome = build_connector(RecordingMailer(), store).process(reply("bob@customer.example"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == ticket.number


def test_a_store_from_before_the_memory_opens_and_learns_it_from_the_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "commit.db"
    with SQLiteStore(path) as store:
        ticket = open_ticket(build_connector(RecordingMailer(), store))
    db = sqlite3.connect(path)  # what a store written by an earlier release looks like
    db.execute("DROP TABLE filed_ids")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()

    with SQLiteStore(path) as store:
        c = build_connector(RecordingMailer(), store)
        known = c.state.ticket_for_filed_message_id(FIRST_ID)
        outcome = c.process(reply("bob@customer.example"))
        later = open_ticket(c, "later.1@customer.example", "Scanner broken")
        follow_up = c.process(reply("jane@customer.example", to="later.1@customer.example"))

    assert known == ticket.rec_id
    assert outcome.ticket == ticket.number
    assert follow_up.ticket == later.number
