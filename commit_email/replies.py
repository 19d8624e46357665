"""Threading: a reply that belongs to a ticket is filed under it.

A message belongs to a ticket when

- its Subject carries the ticket token (``[threading] subject_format``, default
  ``[Ticket#{number}]``), found tolerantly: reply/forward prefixes in any language and
  case, changed case and extra spaces inside the token do not matter; or
- its ``In-Reply-To`` / ``References`` name a Message-ID the connector generated
  (an auto-response, a forward), which the store maps to the ticket; or
- they name the Message-ID of a message filed in a ticket (the mail that opened it, an
  earlier reply): a colleague's reply-all to the customer's first mail, the customer's
  follow-up to their own mail. Only from the ticket's Account (its contacts, its domain)
  or an active employee: a Message-ID is no secret, and a stranger who quotes one must
  not write into someone else's ticket.

A customer's reply is filed with the quoted earlier text stripped (the raw message
keeps everything) and forwarded to the internal address so a human sees it; an
active employee's mail (a technician who BCCs the connector) is filed only. A token
or a filed Message-ID for a ticket that does not exist is not ours: the message goes on
to email-to-ticket. A closed ticket is still the conversation's ticket: the reply is
filed there, whichever way it was found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from attrs import frozen

from .config import Config, ThreadingConfig, compile_regex
from .errors import AmbiguousMatch
from .hookspecs import hookimpl
from .htmltext import html_to_text
from .message import Message
from .model import Match, Outcome, OutcomeKind, Ticket
from .quoting import QuoteRule, StrippedText, cut_html_quote, rules_from_config, strip_quotes
from .stages import THREADING_ORDER, THREADING_STAGE, Context, Stage

__all__ = ["ThreadingStage", "TicketToken", "referenced_ids", "reply_text"]

_BY_FILED_ID = "reply to filed message"

#: What a ticket number may look like inside a token: Commit numbers are digits, but
#: integrators' sinks may add letters or dashes ("HD-1042").
_NUMBER = r"([A-Za-z0-9][A-Za-z0-9._-]*?)"


def _tolerant_literal(text: str) -> str:
    """A regex for literal format text that ignores case (flag) and spacing."""
    pieces = re.findall(r"\w+|[^\w\s]", text)
    return r"\s*".join(re.escape(p) for p in pieces)


def token_regex(subject_format: str) -> str:
    """The tolerant regex for ``subject_format``: ``[Ticket#{number}]`` also finds
    ``[ ticket # 1042 ]`` and ``[TICKET#1042]``."""
    prefix, _, suffix = subject_format.partition("{number}")
    head = _tolerant_literal(prefix)
    tail = _tolerant_literal(suffix)
    # Without a closing delimiter the lazy number must run to the end of the word.
    end = r"\s*" + tail if tail else r"(?![\w.-])"
    return (head + r"\s*" if head else r"(?<![\w.-])") + _NUMBER + end


@frozen(kw_only=True)
class TicketToken:
    """Formats and finds the ticket token in subjects."""

    subject_format: str
    pattern: re.Pattern[str]

    @classmethod
    def from_config(cls, config: ThreadingConfig) -> TicketToken:
        regex = config.subject_regex or token_regex(config.subject_format)
        return cls(
            subject_format=config.subject_format,
            pattern=compile_regex(regex, "threading.subject_regex"),
        )

    def format(self, number: str) -> str:
        return self.subject_format.replace("{number}", number)

    def numbers(self, subject: str) -> Iterator[str]:
        """Every ticket number in ``subject``, in order (a forward may carry two)."""
        for match in self.pattern.finditer(subject):
            yield match.group(1)


def reply_text(message: Message, rules: Sequence[QuoteRule]) -> StrippedText:
    """The new part of a reply. Text rules first; an HTML-only reply whose quote has no
    attribution line in its text is cut at the client's quote container instead."""
    result = strip_quotes(message.text, rules)
    if result.stripped or not message.html:
        return result
    head = cut_html_quote(message.html)
    if head is None:
        return result
    text = html_to_text(head).strip()
    if not text:
        return result
    again = strip_quotes(text, rules)
    rule = again.rule or "HTML quote container"
    return StrippedText(text=again.text, rule=rule, removed=len(message.text) - len(again.text))


class ThreadingStage:
    """Order 300: files replies under their ticket (``ticket_updated``)."""

    name = THREADING_STAGE
    order = THREADING_ORDER

    def __init__(self, config: Config) -> None:
        self.config = config
        self.token = TicketToken.from_config(config.threading)
        self.rules = rules_from_config(config.threading)

    def find_ticket(self, message: Message, ctx: Context) -> tuple[Ticket, str] | None:
        """The ticket this message belongs to and how it was found, or None. The subject
        token wins over references; our own Message-IDs win over the customer's."""
        return (self._by_token(message, ctx) or self._by_sent_id(message, ctx)
                or self._by_filed_id(message, ctx))

    def _by_token(self, message: Message, ctx: Context) -> tuple[Ticket, str] | None:
        for number in self.token.numbers(message.subject):
            ticket = ctx.sink.get_ticket(number=number)
            if ticket is not None:
                return ticket, f"subject token {self.token.format(number)}"
            ctx.note("threading", f"token for unknown ticket {number!r} ignored")
        return None

    def _by_sent_id(self, message: Message, ctx: Context) -> tuple[Ticket, str] | None:
        for message_id in referenced_ids(message):
            rec_id = ctx.state.ticket_for_sent_message_id(message_id)
            if rec_id:
                ticket = ctx.sink.get_ticket(rec_id=rec_id)
                if ticket is not None:
                    return ticket, f"reply to our message {message_id}"
        return None

    def _by_filed_id(self, message: Message, ctx: Context) -> tuple[Ticket, str] | None:
        """A reply to a message filed in a ticket (the customer's first mail, an earlier
        reply), from someone who may add to that ticket."""
        for message_id in referenced_ids(message):
            rec_id = ctx.state.ticket_for_filed_message_id(message_id)
            if not rec_id:
                continue
            ticket = ctx.sink.get_ticket(rec_id=rec_id)
            if ticket is None:
                ctx.note("threading", f"reply to {message_id}, filed in a deleted ticket: ignored")
                continue
            who = _sender_may_join(message, ticket, ctx)
            if who is None and self.config.threading.accept_replies_from == "anyone":
                who = "anyone (accept_replies_from)"
            if who is None:
                ctx.note("threading", f"reply to {message_id} (ticket {ticket.number}) ignored:"
                         f" {message.sender or 'the sender'} is neither of the ticket's"
                         " account nor an active employee")
                continue
            return ticket, f"{_BY_FILED_ID} {message_id}, sender {who}"
        return None

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        found = self.find_ticket(message, ctx)
        if found is None:
            return None
        ticket, how = found
        ctx.note("threading", f"ticket {ticket.number} by {how}")
        lost = ctx.sender_loses(message, "threading")
        if lost is not None:
            ctx.note("threading", f"not filed: [sender_auth] requires an authenticated sender "
                     f"for threading ({lost.reason})")
            return ctx.forward(message, f"unverified reply to ticket {ticket.number}",
                               stage=self.name)
        if self.config.threading.accept_replies_from == "ticket" and not how.startswith(
                _BY_FILED_ID):
            who = _sender_may_join(message, ticket, ctx)
            if who is None:
                # A ticket number is no secret (they are sequential), nor is a Message-ID we
                # sent: a human decides whether this sender may write into the ticket.
                ctx.note("threading", f"{message.sender or 'the sender'} does not belong to "
                         f"ticket {ticket.number}: not filed")
                return ctx.forward(message, f"unverified reply to ticket {ticket.number}",
                                   stage=self.name)
            ctx.note("reply_from", f"may write into ticket {ticket.number}: sender {who}")
            how = f"{how}, sender {who}"
        stripped = reply_text(message, self.rules)
        if stripped.stripped:
            ctx.note("quote", f"stripped {stripped.removed} characters ({stripped.rule})")
        ctx.file_message(ticket, message, text=stripped.text)
        employee = _active_employee(message, ctx)
        if employee is not None:
            return Outcome(
                kind=OutcomeKind.TICKET_UPDATED,
                detail=f"employee {employee.account.file_as or message.sender} filed ({how})",
                ticket=ticket.number, account=ticket.account, stage=self.name,
            )
        detail = f"customer reply filed ({how})"
        if not self.config.threading.forward_customer_replies:
            return Outcome(kind=OutcomeKind.TICKET_UPDATED, detail=detail, ticket=ticket.number,
                           account=ticket.account, stage=self.name)
        return ctx.forward(
            message, f"reply to ticket {ticket.number}", kind=OutcomeKind.TICKET_UPDATED,
            ticket=ticket.number, account=ticket.account, stage=self.name,
        )


def referenced_ids(message: Message) -> tuple[str, ...]:
    """The Message-IDs a reply names, the one it answers first: ``In-Reply-To``, then
    ``References`` newest first (each once)."""
    return tuple(dict.fromkeys((*message.in_reply_to, *reversed(message.references))))


def _sender_match(message: Message, ctx: Context) -> Match | None:
    try:
        return ctx.match_sender(message)
    except AmbiguousMatch:
        return None  # an ambiguous domain belongs to no one here, and never to an employee


def _active_employee(message: Message, ctx: Context) -> Match | None:
    """The sender's employee card, when they are an active employee whose mail may be
    trusted as such (``[sender_auth] require_for = ["employee"]`` takes that from a From
    that is not authenticated: a forged employee is then a stranger)."""
    match = _sender_match(message, ctx)
    if match is None or not match.is_employee or not match.account.active:
        return None
    lost = ctx.sender_loses(message, "employee")
    if lost is not None:
        ctx.note("threading", f"{message.sender} is an employee address, but not authenticated "
                 f"({lost.reason}): treated as a stranger")
        return None
    return match


def _sender_may_join(message: Message, ticket: Ticket, ctx: Context) -> str | None:
    """Who the sender is, if they may write into ``ticket``; None if not.

    A ticket number or a Message-ID is no secret (numbers are sequential, a mailing list on
    Cc archives a Message-ID, a forward quotes it), so naming one is not enough: the sender
    must belong to the ticket's Account (its addresses, a contact of it, a colleague when
    the Account has the domain), be an address the ticket's mail went to, or be an active
    employee.
    """
    match = _sender_match(message, ctx)
    if match is not None:
        if match.is_employee:
            if _active_employee(message, ctx) is not None:
                return "an active employee"
        elif match.account.rec_id == ticket.account:
            return f"of the ticket's account {match.account.file_as or match.account.rec_id}"
    if message.sender and ctx.state.ticket_mailed_to(ticket.rec_id, message.sender):
        return f"{message.sender}, whom the ticket's mail went to"
    return None


@hookimpl(trylast=True)
def commit_email_register_stages(config: Config) -> Sequence[Stage]:
    return [ThreadingStage(config)] if config.threading.enabled else []
