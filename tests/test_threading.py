"""Threading: replies are filed under their ticket, employees are not forwarded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commit_email.config import ThreadingConfig
from commit_email.model import OutcomeKind
from commit_email.pipeline import Connector
from commit_email.replies import TicketToken
from commit_email.testing import RecordingMailer, build_message, make_config, make_connector
from tests.shared import FORMER, JANE, TECH


def build_connector(mailer: RecordingMailer, **threading: object) -> Connector:
    config = make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": "127.0.0.1"},
        threading=threading,
    )
    return make_connector(config, accounts=[JANE, TECH, FORMER], mailer=mailer)


def open_ticket(c: Connector) -> str:
    outcome = c.process(build_message(sender="jane@customer.example", subject="Printer jammed",
                                      message_id="first@customer.example"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.ticket
    return outcome.ticket


REPLY_BODY = (
    "It is still jammed.\n\nOn Mon, 5 Feb 2024 at 10:52, Acme Support "
    "<support@acme.example> wrote:\n> Dear Customer,\n> please restart it.\n"
)


# The token --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "subject",
    ["Re: [Ticket#1042] Printer", "RE: [Ticket#1042] Printer", "AW: WG: [ticket#1042]",
     "Fwd: [TICKET # 1042 ] Printer", "SV:[ Ticket#1042] x", "Fw: Re:  [Ticket#  1042]"],
)
def test_token_is_found_tolerantly(subject: str) -> None:
    token = TicketToken.from_config(ThreadingConfig())

    assert list(token.numbers(subject)) == ["1042"]


def test_custom_format_and_regex() -> None:
    fmt = TicketToken.from_config(ThreadingConfig(subject_format="(Case {number})"))
    rx = TicketToken.from_config(ThreadingConfig(subject_regex=r"#HD-(\d+)"))

    assert fmt.format("77") == "(Case 77)"
    assert list(fmt.numbers("Re: ( case 77 ) again")) == ["77"]
    assert list(rx.numbers("Re: question #hd-9001")) == ["9001"]


def test_a_format_that_ends_with_the_number_does_not_swallow_the_next_word() -> None:
    token = TicketToken.from_config(ThreadingConfig(subject_format="Ticket {number}"))

    assert list(token.numbers("Re: Ticket 55 printer")) == ["55"]


@given(
    number=st.from_regex(r"[0-9]{1,9}", fullmatch=True),
    prefix=st.lists(st.sampled_from(["Re:", "RE:", "Fw:", "FWD:", "AW:", "WG:", "SV:", "re :"]),
                    max_size=4),
    before=st.text(alphabet="abc xyz", max_size=20),
    after=st.text(alphabet="abc xyz", max_size=20),
    upper=st.booleans(),
)
def test_formatted_token_is_always_found_again(
    number: str, prefix: list[str], before: str, after: str, upper: bool
) -> None:
    token = TicketToken.from_config(ThreadingConfig())
    formatted = token.format(number)
    subject = " ".join([*prefix, before, formatted.upper() if upper else formatted, after])

    assert list(token.numbers(subject)) == [number]


# The stage --------------------------------------------------------------------------------

def test_customer_reply_is_filed_stripped_and_forwarded() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number = open_ticket(c)
    mailer.sent.clear()

    outcome = c.process(build_message(sender="jane@customer.example",
                                      subject=f"RE: [ticket#{number}] Printer jammed",
                                      body=REPLY_BODY))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == number
    ticket = c.sink.get_ticket(number=number)
    assert ticket is not None
    history = c.sink.history(ticket.rec_id)
    assert [h.text for h in history][-1] == "It is still jammed."
    raw_docs = [d for d in c.sink.documents(ticket.rec_id) if d.kind == "raw"]
    assert b"please restart it" in raw_docs[-1].data  # the full original is kept
    assert [m.kind for m in mailer.sent] == ["forward"]
    assert mailer.sent[0].recipients == ("helpdesk@acme.example",)


def test_reply_found_by_in_reply_to_our_auto_response() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number = open_ticket(c)
    [auto] = mailer.of_kind("auto_response")

    outcome = c.process(build_message(sender="jane@customer.example",
                                      subject="Re: Printer jammed", body=REPLY_BODY,
                                      in_reply_to=auto.message_id))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert outcome.ticket == number
    assert "reply to our message" in outcome.detail or "reply to ticket" in outcome.detail


def test_active_employee_is_filed_but_not_forwarded() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number = open_ticket(c)
    mailer.sent.clear()

    outcome = c.process(build_message(sender="tom@acme.example", to="jane@customer.example",
                                      cc=["support@acme.example"],
                                      subject=f"Re: [Ticket#{number}] Printer jammed",
                                      body="Replaced the fuser unit.\n"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert "employee" in outcome.detail
    assert mailer.sent == []
    ticket = c.sink.get_ticket(number=number)
    assert ticket is not None
    assert c.sink.history(ticket.rec_id)[-1].author == "tom@acme.example"


def test_inactive_employee_writes_into_no_ticket() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number = open_ticket(c)
    mailer.sent.clear()

    outcome = c.process(build_message(sender="fay@acme.example",
                                      subject=f"Re: [Ticket#{number}]", body="Hello\n"))

    assert outcome.kind is OutcomeKind.FORWARDED
    assert outcome.detail == f"unverified reply to ticket {number}"
    assert [m.kind for m in mailer.sent] == ["forward"]


def test_inactive_employee_is_treated_like_a_customer_when_anyone_may_reply() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer, accept_replies_from="anyone")
    number = open_ticket(c)
    mailer.sent.clear()

    outcome = c.process(build_message(sender="fay@acme.example",
                                      subject=f"Re: [Ticket#{number}]", body="Hello\n"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert [m.kind for m in mailer.sent] == ["forward"]


def test_forwarding_customer_replies_can_be_turned_off() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer, forward_customer_replies=False)
    number = open_ticket(c)
    mailer.sent.clear()

    outcome = c.process(build_message(sender="jane@customer.example",
                                      subject=f"Re: [Ticket#{number}]", body="Thanks\n"))

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert mailer.sent == []


def test_token_of_an_unknown_ticket_falls_through_to_email_to_ticket() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)

    outcome = c.process(build_message(sender="jane@customer.example",
                                      subject="Re: [Ticket#999999] Old issue"))

    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert outcome.ticket != "999999"


def test_threading_can_be_disabled() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer, enabled=False)
    number = open_ticket(c)

    outcome = c.process(build_message(sender="jane@customer.example",
                                      subject=f"Re: [Ticket#{number}] Printer jammed"))

    assert outcome.kind is OutcomeKind.TICKET_CREATED


def test_inspect_explains_the_route_and_writes_nothing() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number = open_ticket(c)
    ticket = c.sink.get_ticket(number=number)
    assert ticket is not None
    before = len(c.sink.history(ticket.rec_id))

    result = c.inspect(build_message(sender="jane@customer.example",
                                     subject=f"Re: [Ticket#{number}]", body=REPLY_BODY))

    notes = dict(result.notes)
    assert result.outcome.kind is OutcomeKind.TICKET_UPDATED
    assert f"ticket {number} by subject token" in notes["threading"]
    assert "On … wrote:" in notes["quote"]
    assert len(c.sink.history(ticket.rec_id)) == before


def test_inspect_says_an_auto_response_would_go_and_queues_nothing() -> None:
    mailer = RecordingMailer()
    c = build_connector(mailer)

    result = c.inspect(build_message(sender="jane@customer.example", subject="New issue"))

    assert result.outcome.kind is OutcomeKind.TICKET_CREATED
    assert dict(result.notes)["auto_response"].startswith("would go to jane@customer.example")
    assert c.state.pending_mail() == []
    assert mailer.sent == []
