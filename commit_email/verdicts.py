"""Verdicts on what kind of mail a message is: a bounce or other report, an auto-reply.

Every heuristic that tells machine-made mail from a person's lives here, next to the
others it overlaps with; :class:`~commit_email.message.Message` only holds the facts they
read (headers, addresses, the MIME leaves' types, the body), and its ``is_bounce`` and
``is_auto_reply`` ask this module. The stages act on the verdicts: the bounce stage files
reports about our own mail and ignores the rest (:mod:`commit_email.bounces`), the core
filter ignores bounces and auto-replies (:mod:`commit_email.filters`), and the loop guard
answers none of them (:mod:`commit_email.loops`, which adds the robot and list checks
that only matter for an answer).

- **Report**: ``multipart/report`` (delivery status, read receipt, ARF complaint).
- **Bounce**: a report by its headers or parts (also a ``message/delivery-status`` part
  in another multipart, and Exim's ``X-Failed-Recipients``); a mail daemon or an empty
  envelope sender whose subject or body says so or that returns the message (qmail,
  DragonFly, old Exchange); Amazon SES's JSON notifications.
- **Auto-reply**: ``Auto-Submitted: auto-replied``, the ``X-Autoreply`` family,
  ``Precedence: auto_reply``, Outlook's localised out-of-office subject prefixes, and
  "Out of office" without a colon when a robot's header comes with it.
"""

from __future__ import annotations

import email
import re
from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "Mail",
    "auto_reply_reason",
    "bounce_or_auto_reply_reason",
    "from_mail_daemon",
    "is_auto_reply",
    "is_bounce",
    "is_report",
    "report_kind",
]


class _Mailbox(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def normalized(self) -> str: ...


class _Part(Protocol):
    @property
    def content_type(self) -> str: ...


class Mail(Protocol):
    """The facts of a :class:`~commit_email.message.Message` the verdicts read."""

    @property
    def raw(self) -> bytes: ...
    @property
    def subject(self) -> str: ...
    @property
    def from_(self) -> _Mailbox | None: ...
    @property
    def return_path(self) -> str | None: ...
    @property
    def auto_submitted(self) -> str | None: ...
    @property
    def content_type(self) -> str: ...
    @property
    def part_types(self) -> tuple[str, ...]: ...
    @property
    def text(self) -> str: ...
    @property
    def attachments(self) -> Sequence[_Part]: ...
    @property
    def headers(self) -> Sequence[tuple[str, str]]: ...
    def header(self, name: str) -> str | None: ...
    def header_all(self, name: str) -> tuple[str, ...]: ...


# Reports and bounces ----------------------------------------------------------------------

#: Words of a bounce's subject, in the languages mail servers answer in.
_BOUNCE_WORDS = re.compile(
    r"undeliver|returned mail|returned to sender|delivery (?:status|failure|failed|has failed"
    r"|notification|problem)|failure notice|mail delivery (?:failed|failure|subsystem)"
    r"|non-?delivery|could not be delivered|message not delivered|mail system (?:error|notice)"
    r"|delayed mail|still being retried|could not send message|errors from "
    r"|delivery (?:delayed|warning)|warning: message .* delayed|failed delivery|mail failed"
    r"|unable to deliver|returning to sender"
    r"|unzustellbar|nicht zugestellt|nicht zustellbar|non remis|no entregado",
    re.IGNORECASE,
)
_DAEMON_LOCAL_PART = re.compile(r"^(?:mailer-daemon|mail-daemon|postmaster|post_master)$",
                                re.IGNORECASE)
#: The display names mail servers sign their reports with, for ``From: MAILER-DAEMON <>``
#: (DragonFly Mail Agent) and other forms without a usable address.
_DAEMON_NAME = re.compile(
    r"^\W*(?:mailer-daemon|mail-daemon|postmaster|mail delivery (?:system|subsystem)"
    r"|mail administrator)\W*$", re.IGNORECASE)
#: What a mail daemon writes in the body of a report that is neither ``multipart/report``
#: nor titled like one, in the first few kilobytes.
_BOUNCE_BODY = re.compile(
    r"this is the mail system at host|qmail-send program|could not be delivered"
    r"|original message was received at|^\s*final-recipient:|^\s*action:\s*(?:failed|delayed)"
    r"|^\s*status:\s*[45]\.\d|user unknown|permanent error|delivery to the following"
    r"|message (?:was )?not (?:been )?delivered|mailbox (?:unavailable|full|not found)"
    r"|unable to deliver|original message follows",
    re.IGNORECASE | re.MULTILINE,
)
#: Amazon SES / SNS bounce, complaint and delivery notifications: JSON in a text/plain mail.
#: Through SNS the notification is a JSON string inside JSON, its quotes escaped.
_SES_NOTIFICATION = re.compile(r'\\?"notificationType\\?"\s*:\s*\\?"(?:Bounce|Complaint|Delivery)')
_SES_DOMAINS = ("amazonses.com", "amazonaws.com")
#: The attachments by which a daemon's mail returns the message it could not deliver.
_RETURNED = ("message/rfc822", "text/rfc822-headers")
_REPORT_KINDS = {
    "delivery-status": "delivery report",
    "disposition-notification": "read receipt",
    "feedback-report": "abuse report (ARF)",
}


def is_report(mail: Mail) -> bool:
    """A delivery, feedback or disposition report (``multipart/report``): never a person
    writing to us."""
    return mail.content_type == "multipart/report"


def report_kind(mail: Mail) -> str:
    """What a bounce is, in words: ``delivery report``, ``read receipt``, ``abuse report
    (ARF)`` or ``report (TYPE)`` for a ``multipart/report``; ``delivery report`` for the
    other bounces."""
    if is_report(mail):
        std = email.message_from_bytes(mail.raw)
        report_type = str(std.get_param("report-type") or "").lower()
        return _REPORT_KINDS.get(report_type, f"report ({report_type or 'untyped'})")
    return "delivery report"


def _has_report_parts(mail: Mail) -> bool:
    """Every multipart/report is machine-made: delivery status (DSN), read receipts
    (disposition-notification) and abuse complaints (ARF feedback-report) alike; so is a
    delivery-status part in another multipart, and X-Failed-Recipients (Exim)."""
    return (is_report(mail) or mail.header("X-Failed-Recipients") is not None
            or "message/delivery-status" in mail.part_types)


def from_mail_daemon(mail: Mail) -> bool:
    """Whether the mail comes from a mail server rather than a person: an empty envelope
    sender, a daemon's address (``MAILER-DAEMON@``, ``postmaster@``) in From or Return-Path,
    or a daemon's name over an address that is empty (``From: MAILER-DAEMON <>``)."""
    return_path = mail.return_path
    if return_path == "" or (return_path is not None and _DAEMON_LOCAL_PART.match(
            return_path.partition("@")[0])):
        return True
    if mail.from_ is not None:
        return bool(_DAEMON_LOCAL_PART.match(mail.from_.normalized.partition("@")[0])
                    or _DAEMON_NAME.match(mail.from_.name))
    return any(_DAEMON_NAME.match(value) for value in mail.header_all("From"))


def is_bounce(mail: Mail) -> bool:
    """A delivery report, read receipt or complaint (`multipart/report`), or a mail
    daemon returning a message. Decodes the body only for a daemon's mail."""
    if _has_report_parts(mail):
        return True
    # Non-standard bounces (qmail, DragonFly, old Exchange, "Mail System Error"): a mail
    # daemon, or an empty envelope sender, whose subject or body says so or that returns
    # the message.
    if from_mail_daemon(mail):
        return bool(_BOUNCE_WORDS.search(mail.subject)) or any(
            a.content_type in _RETURNED for a in mail.attachments
        ) or bool(_BOUNCE_BODY.search((mail.text or "")[:8192]))
    # Amazon SES's bounce and complaint notifications (through SNS) come from an
    # ordinary no-reply address; the JSON inside says what they are.
    domain = mail.from_.normalized.rpartition("@")[2] if mail.from_ else ""
    return domain.endswith(_SES_DOMAINS) and bool(
        _SES_NOTIFICATION.search((mail.text or "")[:8192]))


# Auto-replies -----------------------------------------------------------------------------

#: The subject prefix Outlook and Exchange put on out-of-office replies, in the user's
#: language: with its colon it is a robot's, without one it may be a person's words.
_OOF_PREFIX = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response)|automatische antwort"
    r"|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[áa]tica|automatisch antwoord"
    r"|automatiskt svar|automatisk svar|autosvar|risposta automatica|resposta autom[áa]tica"
    r"|out of (?:the )?office|fuera de la oficina|absence)\s*:",
    re.IGNORECASE,
)
_OOF_WORDS = re.compile(
    r"^\s*(?:auto(?:matic)?[- ]?(?:reply|response|antwort)|out of (?:the )?office"
    r"|abwesenheitsnotiz|i am out of the office)",
    re.IGNORECASE,
)
_AUTOREPLY_HEADERS = frozenset(("x-autoreply", "x-autorespond", "x-autoreply-from"))
_AUTO_REPLY_READS = _AUTOREPLY_HEADERS | {"precedence", "x-auto-response-suppress"}


def _first_values(mail: Mail, names: frozenset[str]) -> dict[str, str]:
    """The first value of each of these (lower-case) headers the mail has, in one pass."""
    found: dict[str, str] = {}
    for key, value in mail.headers:
        name = key.lower()
        if name in names and name not in found:
            found[name] = value
    return found


def is_auto_reply(mail: Mail) -> bool:
    """An out-of-office or other auto-reply (see the module's list)."""
    auto_submitted = mail.auto_submitted
    if auto_submitted == "auto-replied":
        return True
    headers = _first_values(mail, _AUTO_REPLY_READS)
    if not _AUTOREPLY_HEADERS.isdisjoint(headers):
        return True
    precedence = headers.get("precedence", "").strip().lower()
    if precedence == "auto_reply" or _OOF_PREFIX.match(mail.subject):
        return True
    # "Out of office" without the colon could be a person's subject; it takes a robot's
    # header as well (X-Auto-Response-Suppress alone is on ordinary Outlook mail too).
    suppress = headers.get("x-auto-response-suppress", "").strip()
    robot = bool(auto_submitted and auto_submitted != "no") or bool(suppress) or bool(precedence)
    return robot and bool(_OOF_WORDS.match(mail.subject))


def auto_reply_reason(mail: Mail) -> str | None:
    """Why the message is an auto-reply, naming what gave it away (the bounce stage's
    ``ignored`` detail), or None."""
    if not is_auto_reply(mail):
        return None
    if mail.auto_submitted == "auto-replied":
        return "auto-reply (Auto-Submitted: auto-replied)"
    if ":" in mail.subject:
        return f"out-of-office reply ({mail.subject.split(':')[0].strip()})"
    return "auto-reply"


def bounce_or_auto_reply_reason(mail: Mail) -> str | None:
    """Why the message is a bounce or an auto-reply, in the core filter's words, or None."""
    if is_bounce(mail):
        return "bounce or delivery report (DSN, read receipt, complaint)"
    if is_auto_reply(mail):
        return f"auto-reply ({mail.auto_submitted or 'out-of-office'})"
    return None
