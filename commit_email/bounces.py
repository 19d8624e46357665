"""Bounces, reports and auto-replies (runs just before the core filter).

A delivery status notification (DSN, RFC 3464) whose embedded original is a mail the
connector sent — an auto-response to a customer, a forward — is filed under that
mail's ticket as a note: the help desk learns that the customer's address bounces.
Every other report (DSNs about mail we do not know, ARF spam complaints, read
receipts), auto-replies (``Auto-Submitted: auto-replied (vacation)``, Outlook's
"Automatische Antwort:" and its other languages) and our own mail coming back are
``ignored``, each with the reason :mod:`commit_email.verdicts` gives. Nothing here opens
a ticket or sends mail; what this stage passes on, the core filter (order 10) still checks.
"""

from __future__ import annotations

import email
import email.parser
import re
from collections.abc import Iterator, Sequence
from email.message import Message as StdMessage

from .config import Config
from .hookspecs import hookimpl
from .message import Message
from .model import Outcome, OutcomeKind, Ticket
from .stages import BOUNCES_STAGE, FILTER_ORDER, Context, Stage
from .verdicts import auto_reply_reason, report_kind

__all__ = ["BounceStage", "delivery_summary", "embedded_message_ids"]

_MSGID_LINE = re.compile(rb"^[ \t>]*Message-ID:[ \t]*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)
_MSGID = re.compile(r"<([^<>\s]+)>")


def _ids(value: object) -> list[str]:
    return _MSGID.findall(str(value or ""))


def _embedded_headers(part: StdMessage) -> Iterator[StdMessage]:
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", "message/global"):
        payload = part.get_payload()
        if isinstance(payload, list):
            yield from (p for p in payload if isinstance(p, StdMessage))
    elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            yield email.parser.BytesHeaderParser().parsebytes(data)


def embedded_message_ids(message: Message) -> tuple[str, ...]:
    """Message-IDs of the original(s) a report is about, most reliable first.

    The attached original (``message/rfc822`` or ``text/rfc822-headers``) first, then the
    report's own In-Reply-To/References, then any ``Message-ID:`` line in the body — the
    last catches the non-standard bounces (qmail, old Exchange) that quote the original
    as text.
    """
    std = email.message_from_bytes(message.raw)
    found: list[str] = []
    for part in std.walk():
        for headers in _embedded_headers(part):
            found.extend(_ids(headers.get("Message-ID")))
    found.extend(message.in_reply_to)
    found.extend(message.references)
    found.extend(m.decode("ascii", "replace") for m in _MSGID_LINE.findall(message.raw))
    own = message.message_id
    return tuple(i for i in dict.fromkeys(found) if i and i != own)


def delivery_summary(message: Message) -> str:
    """One line per recipient from a DSN's ``message/delivery-status`` part."""
    std = email.message_from_bytes(message.raw)
    lines = []
    for part in std.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        groups = payload if isinstance(payload, list) else []
        for group in groups[1:]:  # the first group is per-message, the rest per-recipient
            if not isinstance(group, StdMessage):
                continue
            recipient = str(group.get("Final-Recipient") or group.get("Original-Recipient")
                            or "").rpartition(";")[2].strip()
            action = str(group.get("Action") or "").strip()
            status = str(group.get("Status") or "").strip()
            diagnostic = " ".join(str(group.get("Diagnostic-Code") or "").split())
            lines.append(" ".join(
                x for x in (recipient + ":", action, status, f"({diagnostic})" if diagnostic
                            else "") if x and x != ":"
            ))
    return "\n".join(lines)



class BounceStage:
    """Order 9: reports about our own mail are filed; other reports are ignored."""

    name = BOUNCES_STAGE
    order = FILTER_ORDER - 1

    def our_ticket(self, message: Message, ctx: Context) -> tuple[Ticket, str] | None:
        for message_id in embedded_message_ids(message):
            rec_id = ctx.state.ticket_for_sent_message_id(message_id)
            ticket = ctx.sink.get_ticket(rec_id=rec_id) if rec_id else None
            if ticket is not None:
                return ticket, message_id
        return None

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        if not message.is_bounce:
            reason = auto_reply_reason(message)
            if reason is None and message.message_id and ctx.state.is_own_message_id(
                message.message_id
            ):
                reason = f"our own message {message.message_id} came back"
            if reason is None:
                return None
            ctx.note("ignored", reason)
            return Outcome(kind=OutcomeKind.IGNORED, detail=reason, stage=self.name)
        kind = report_kind(message)
        found = self.our_ticket(message, ctx)
        if found is None:
            reason = f"{kind}, not about a mail of ours"
            ctx.note("ignored", reason)
            return Outcome(kind=OutcomeKind.IGNORED, detail=reason, stage=self.name)
        ticket, message_id = found
        summary = delivery_summary(message) or message.subject
        ctx.file_message(ticket, message, kind="bounce",
                         text=f"{kind.capitalize()} for our mail <{message_id}>:\n{summary}")
        ctx.note("bounce", f"{kind} for <{message_id}> filed under ticket {ticket.number}")
        return Outcome(kind=OutcomeKind.TICKET_UPDATED,
                       detail=f"{kind} for our mail filed as a note", ticket=ticket.number,
                       account=ticket.account, stage=self.name)


@hookimpl(trylast=True)
def commit_email_register_stages(config: Config) -> Sequence[Stage]:
    return [BounceStage()]
