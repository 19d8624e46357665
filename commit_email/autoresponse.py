"""The auto-response to a customer whose mail opened a ticket.

Sent when ``[email_to_ticket] auto_response`` is on, SMTP is configured and
:class:`~commit_email.loops.LoopGuard` finds no reason against it. The mail:

- goes to the envelope sender (Return-Path) when known, else to From (RFC 3834);
- carries the ticket token in its Subject, so the customer's reply threads;
- is marked ``Auto-Submitted: auto-replied`` and ``X-Auto-Response-Suppress: All``
  (so that RFC 3834 robots and Exchange do not answer it), answers the customer's
  mail with ``In-Reply-To``/``References``, has a Message-ID in the connector's domain
  (remembered, so replies to it thread and it is recognised if it comes back) and the
  connector's loop header;
- is counted against the recipient's rate limit.

Its text is a :class:`string.Template` (``$number``, ``$token``, ``$description``,
``$account``, ``$contact``, ``$name``, ``$subject``, ``$address``) from
``auto_response_template`` or ``auto_response_template_file``; the subject from
``auto_response_subject`` (default ``$token $description``).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template

from .config import Config
from .errors import ConfigError
from .hookspecs import hookimpl
from .loops import LOOP_HEADER, LoopGuard
from .message import Message
from .model import Match, OutgoingMail, Ticket
from .outgoing import text_mail
from .replies import TicketToken
from .stages import EMAIL_TO_TICKET_STAGE, Context, Stage

__all__ = ["DEFAULT_SUBJECT", "DEFAULT_TEMPLATE", "AutoResponder", "build_auto_response"]

DEFAULT_SUBJECT = "$token $description"
DEFAULT_TEMPLATE = """\
Hello $name,

thank you for your message. We have opened ticket $number for it:

    $description

A technician will get back to you. If you write to us about this again, please
keep $token in the subject so that your mail is filed under the same ticket.

This is an automatic reply to your message "$subject".
"""
PLACEHOLDERS = frozenset(
    {"number", "token", "description", "account", "contact", "name", "subject", "address"}
)

#: Only tickets email-to-ticket opens for a customer's mail are answered (``ctx.stage`` is
#: EMAIL_TO_TICKET_STAGE): an alert ticket's sender is a monitoring tool, and matches by rule
#: or default are not the sender's own.
_NOT_A_CUSTOMER = frozenset({"rule", "default", "employee"})


def _checked_template(text: str, key: str) -> Template:
    template = Template(text)
    if not template.is_valid():
        raise ConfigError("invalid template ($ placeholders: use $$ for a dollar sign)", key=key)
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
    if unknown:
        raise ConfigError(
            f"unknown placeholder ${unknown[0]} (known: "
            f"{', '.join('$' + p for p in sorted(PLACEHOLDERS))})", key=key,
        )
    return template


def _load_templates(config: Config) -> tuple[Template, Template]:
    e2t = config.email_to_ticket
    body = e2t.auto_response_template or DEFAULT_TEMPLATE
    key = "email_to_ticket.auto_response_template"
    if e2t.auto_response_template_file:
        key = "email_to_ticket.auto_response_template_file"
        path = config.resolve_path(e2t.auto_response_template_file)
        try:
            body = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", key=key) from None
    subject = _checked_template(e2t.auto_response_subject or DEFAULT_SUBJECT,
                                "email_to_ticket.auto_response_subject")
    return subject, _checked_template(body, key)


def build_auto_response(
    message: Message,
    *,
    sender: str,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    loop_token: str,
) -> bytes:
    """The auto-response mail, as bytes ready for SMTP."""
    headers = [
        ("From", sender),
        ("To", to),
        ("Subject", " ".join(subject.split())),
        ("Date", email.utils.formatdate(localtime=False)),
        ("Message-ID", f"<{message_id}>"),
    ]
    if message.message_id:
        refs = [*message.references, message.message_id]
        headers += [("In-Reply-To", f"<{message.message_id}>"),
                    ("References", " ".join(f"<{r}>" for r in dict.fromkeys(refs)))]
    headers += [("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All"),
                (LOOP_HEADER, loop_token)]
    return text_mail(headers, body)


#: How much of what the sender wrote an auto-response repeats: a 5 MB subject must not come
#: back whole (nor make the answer a vehicle for the sender's text).
_MAX_QUOTED_SUBJECT = 200
_MAX_QUOTED_NAME = 100


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class AutoResponder:
    """Answers the mail that opened a ticket, unless the loop guard objects."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.guard = LoopGuard(config)
        self.token = TicketToken.from_config(config.threading)
        self.subject, self.body = _load_templates(config)

    def values(self, message: Message, ticket: Ticket, match: Match | None) -> Mapping[str, str]:
        account = match.account.file_as if match else ""
        contact = match.contact.file_as if match and match.contact else ""
        name = (message.from_.name if message.from_ else "") or contact or account or "Customer"
        return {
            "number": ticket.number,
            "token": self.token.format(ticket.number),
            "description": _bounded(ticket.description, _MAX_QUOTED_SUBJECT),
            "account": account,
            "contact": contact,
            "name": _bounded(name, _MAX_QUOTED_NAME),
            "subject": _bounded(message.subject, _MAX_QUOTED_SUBJECT),
            "address": self.config.connector.public_address,
        }

    def skip_reason(self, message: Message, ticket: Ticket, match: Match | None,
                    ctx: Context) -> str | None:
        if not self.config.email_to_ticket.auto_response:
            return "auto_response is off"
        if not self.config.smtp_configured:
            return "SMTP is not configured"
        if ctx.stage != EMAIL_TO_TICKET_STAGE or ticket.alert_key or match is None or (
            match.how in _NOT_A_CUSTOMER
        ):
            return f"the ticket was opened by {ctx.stage or 'a plugin'}, not for a customer's mail"
        return self.guard.no_response_reason(message, ctx.state, ctx.now)

    def respond(self, message: Message, ticket: Ticket, match: Match | None,
                ctx: Context) -> OutgoingMail | None:
        reason = self.skip_reason(message, ticket, match, ctx)
        if reason is not None:
            ctx.note("auto_response", f"not sent: {reason}")
            return None
        to = self.guard.responder_address(message)
        sender = self.config.smtp.from_address or self.config.connector.public_address
        values = self.values(message, ticket, match)
        message_id = ctx.new_message_id()
        raw = build_auto_response(
            message, sender=sender, to=to, subject=self.subject.substitute(values),
            body=self.body.substitute(values), message_id=message_id,
            loop_token=self.config.message_id_domain,
        )
        mail = OutgoingMail(kind="auto_response", sender=sender, recipients=(to,), raw=raw,
                            message_id=message_id, ticket=ticket.rec_id)
        ctx.state.record_sent_message_id(message_id, ticket.rec_id)
        self.guard.record_response(message, ctx.state, ctx.now)
        ctx.send(mail)
        verb = "would go" if ctx.dry_run else "queued"  # inspect sends nothing
        ctx.note("auto_response", f"{verb} to {to} as <{message_id}>")
        return mail


@hookimpl(trylast=True)
def commit_email_register_stages(config: Config) -> Sequence[Stage]:
    if config.email_to_ticket.auto_response:
        AutoResponder(config)  # a bad template is a configuration error: report it now
    return []


@hookimpl(trylast=True)
def commit_email_ticket_created(
    message: Message, ticket: Ticket, match: Match | None, context: Context
) -> None:
    # Built per ticket (templates are tiny) so that no state outlives a connector.
    AutoResponder(context.config).respond(message, ticket, match, context)
