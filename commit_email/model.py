"""Commit's domain records and the connector's own value types.

Everything here is a frozen attrs class with keyword-only fields: records are
built once and replaced (``attrs.evolve``), never mutated.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from attrs import field, frozen

from ._frozen import PicklesByFields, frozen_mapping

__all__ = [
    "ACCOUNT_FIELDS",
    "TICKET_FIELDS",
    "Account",
    "AccountKind",
    "Document",
    "HistoryEntry",
    "Match",
    "Outcome",
    "OutcomeKind",
    "OutgoingMail",
    "SourceRef",
    "Ticket",
    "TicketDraft",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


class AccountKind(enum.StrEnum):
    ACCOUNT = "account"
    CONTACT = "contact"
    EMPLOYEE = "employee"


#: Commit database field name -> Account attribute (table Cards).
ACCOUNT_FIELDS: Mapping[str, str] = {
    "FLDCRDRECID": "rec_id",
    "FLDCRDFULLNAME": "file_as",
    "FLDCRDEMAIL1": "email1",
    "FLDCRDEMAIL2": "email2",
    "FLDCRDCARDID2": "account_number",
    "FLDCRDCARDID3": "account_id",
    "FLDCRDUSER2": "field1",
    "FLDCRDUSER3": "field2",
    "FLDCRDUSER4": "field3",
    "FLDCRDUSER5": "field4",
}

#: Commit database field name -> Ticket attribute (table Tickets).
TICKET_FIELDS: Mapping[str, str] = {
    "FLDTKTRECID": "rec_id",
    "FLDTKTTICKETNO": "number",
    "FLDTKTCARDID": "account",
    "FLDTKTCONTACTID": "contact",
    "FLDTKTPROBLEM": "description",
    "FLDTKTSTATUS": "status",
    "FLDTKTPRIORITY": "priority",
    "FLDTKTKIND": "kind",
    "FLDTKTSOURCE": "source",
    "FLDTKTWORKERID": "manager",
}


@frozen(kw_only=True)
class Account(PicklesByFields):
    """A Commit Card: an Account, a secondary contact (``parent`` = its Account) or an employee.

    ``email1``/``email2`` hold a full address or, for domain matching, a bare domain.
    ``extra`` carries any other FLDCRD* field by its Commit name.
    """

    rec_id: str
    file_as: str = ""
    email1: str = ""
    email2: str = ""
    account_number: str = ""
    account_id: str = ""
    field1: str = ""
    field2: str = ""
    field3: str = ""
    field4: str = ""
    kind: AccountKind = field(default=AccountKind.ACCOUNT, converter=AccountKind)
    parent: str = ""
    active: bool = True
    extra: Mapping[str, str] = field(factory=dict, converter=frozen_mapping)

    @property
    def emails(self) -> tuple[str, ...]:
        """The non-empty email fields, as typed."""
        return tuple(e for e in (self.email1, self.email2) if e)


@frozen(kw_only=True)
class TicketDraft(PicklesByFields):
    """What a stage asks the sink to open. ``source_key`` makes creation idempotent."""

    account: str
    description: str
    contact: str = ""
    status: str = ""
    priority: str = ""
    kind: str = ""
    source: str = ""
    manager: str = ""
    alert_key: str = ""
    source_key: str = ""
    extra: Mapping[str, str] = field(factory=dict, converter=frozen_mapping)


@frozen(kw_only=True)
class Ticket(PicklesByFields):
    """A Commit ticket as the sink stores it."""

    rec_id: str
    number: str
    account: str
    description: str
    contact: str = ""
    status: str = ""
    priority: str = ""
    kind: str = ""
    source: str = ""
    manager: str = ""
    alert_key: str = ""
    closed: bool = False
    created: datetime = field(factory=utcnow)
    updated: datetime = field(factory=utcnow)
    extra: Mapping[str, str] = field(factory=dict, converter=frozen_mapping)


@frozen(kw_only=True)
class HistoryEntry:
    """One entry in a ticket's history: a filed email, a note, an alert update."""

    kind: str  # "email", "note", "alert", "bounce"
    text: str
    subject: str = ""
    author: str = ""
    message_id: str = ""
    created: datetime = field(factory=utcnow)


@frozen(kw_only=True)
class Document:
    """A file linked to a ticket: an attachment or the raw ``.eml`` of a filed message."""

    filename: str
    content_type: str
    data: bytes = field(repr=lambda d: f"<{len(d)} bytes>")
    kind: str = "attachment"  # "attachment" or "raw"

    @property
    def size(self) -> int:
        return len(self.data)


@frozen(kw_only=True)
class Match:
    """The result of sender matching: the Account to use and, for a secondary contact, who."""

    account: Account
    contact: Account | None = None
    how: str = "email"  # "email", "contact", "domain", "employee", "plugin", "rule", "default"

    @property
    def is_employee(self) -> bool:
        return self.account.kind is AccountKind.EMPLOYEE


class OutcomeKind(enum.StrEnum):
    """The outcome words: every processed message gets exactly one (see the outcomes
    reference page)."""

    TICKET_CREATED = "ticket_created"
    TICKET_UPDATED = "ticket_updated"
    ALERT_TICKET_CREATED = "alert_ticket_created"
    ALERT_APPENDED = "alert_appended"
    ALERT_RESOLVED = "alert_resolved"
    ALERT_SKIPPED = "alert_skipped"
    XML_APPLIED = "xml_applied"
    XML_REJECTED = "xml_rejected"
    FORWARDED = "forwarded"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


@frozen(kw_only=True)
class Outcome:
    """What happened to one message. ``ticket`` is the ticket number, ``account`` a rec_id."""

    kind: OutcomeKind = field(converter=OutcomeKind)
    detail: str = ""
    ticket: str | None = None
    account: str | None = None
    stage: str = ""
    message_id: str = ""


@frozen(kw_only=True)
class SourceRef:
    """Where a message came from: a POP3 mailbox + UIDL, or a file path (+ index in an mbox)."""

    kind: str  # "pop3", "file", "maildir", "mbox", "bytes", "quarantine"
    name: str = ""  # mailbox ("user@host:port") or path
    uidl: str = ""  # POP3 UIDL, Maildir key or mbox index

    def __str__(self) -> str:
        return f"{self.name}#{self.uidl}" if self.uidl else (self.name or self.kind)


@frozen(kw_only=True)
class OutgoingMail:
    """A mail the connector wants sent. Queued in the store, sent after the outcome commits."""

    kind: str  # "forward", "auto_response", "xml_response", ...
    sender: str  # envelope sender (MAIL FROM)
    recipients: tuple[str, ...] = field(converter=_str_tuple)
    raw: bytes = field(repr=lambda d: f"<{len(d)} bytes>")
    message_id: str = ""
    ticket: str = ""  # ticket rec_id this mail belongs to, if any
