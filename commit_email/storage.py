"""What both built-in stores share: the rows they hand out, Commit record ids, the lookup
keys of a Card's email fields, and how a change to a Card or ticket is applied.

Kept apart from the stores themselves (:mod:`commit_email.store` for SQLite,
:mod:`commit_email.pgstore` for PostgreSQL) so that neither imports the other.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
from attrs import frozen

from .model import Account, Outcome, OutgoingMail, SourceRef, Ticket

__all__ = [
    "ACCOUNT_COLUMNS",
    "COPY_TABLES",
    "SEARCHABLE",
    "TICKET_COLUMNS",
    "OutboxEntry",
    "ProcessedEntry",
    "account_keys",
    "apply_changes",
    "new_rec_id",
    "redact_url",
]

ACCOUNT_COLUMNS = (
    "rec_id", "file_as", "email1", "email2", "account_number", "account_id",
    "field1", "field2", "field3", "field4", "kind", "parent", "active", "extra",
)
TICKET_COLUMNS = (
    "rec_id", "number", "account", "contact", "description", "status", "priority", "kind",
    "source", "manager", "alert_key", "closed", "created", "updated", "extra",
)
#: the Card fields ``find_by_field`` may search
SEARCHABLE = frozenset(
    ("file_as", "account_number", "account_id", "field1", "field2", "field3", "field4", "rec_id")
)
#: Every table a store keeps, with its columns as ``export_rows`` yields them and
#: ``import_rows`` takes them (``store copy``): times as aware datetimes, ``extra`` and
#: ``fields`` as dicts, ``active`` and ``closed`` as booleans, ``recipients`` as a list.
#: A table added to the stores must be added here, or ``store copy`` would leave it behind
#: (a test compares this with the stores' schemas).
COPY_TABLES: dict[str, tuple[str, ...]] = {
    "accounts": ACCOUNT_COLUMNS,
    "account_keys": ("type", "key", "rec_id"),
    "tickets": (*TICKET_COLUMNS, "source_key"),
    "history": ("ticket", "kind", "subject", "text", "author", "message_id", "created"),
    "documents": ("ticket", "filename", "content_type", "kind", "data", "created"),
    "records": ("kind", "rec_id", "fields", "created", "updated"),
    "processed": ("digest", "source_kind", "source_name", "uidl", "message_id", "outcome",
                  "ticket", "account", "detail", "stage", "created"),
    "outbox": ("id", "kind", "sender", "recipients", "raw", "message_id", "ticket", "attempts",
               "last_error", "created", "sent", "last_attempt", "given_up"),
    "sent_ids": ("message_id", "ticket", "created"),
    "filed_ids": ("message_id", "ticket", "created"),
    "auto_responses": ("sender", "at"),
    "ticket_recipients": ("ticket", "address"),
    "failed_logins": ("sender", "at"),
    "recoveries": ("key", "event_time", "remembered"),
}
#: columns of COPY_TABLES by the type they are exported as
TIME_COLUMNS = frozenset(("created", "updated", "sent", "last_attempt", "given_up", "at",
                          "event_time", "remembered"))
JSON_COLUMNS = frozenset(("extra", "fields"))
#: What the stores wrote at the start of ``outbox.last_error`` to mark a given-up mail before
#: the ``given_up`` column (SQLite schema 4, PostgreSQL schema 3); their migrations turn it
#: into the column.
LEGACY_GIVEN_UP_PREFIX = "permanent: "
BOOL_COLUMNS = frozenset(("active", "closed"))

_REC_ALPHABET = string.ascii_uppercase + string.digits
_REC_SPACE = len(_REC_ALPHABET) ** 17
_REC_PREFIX = {
    "ACCOUNT": "CRD", "TICKET": "TKT", "OPPORTUNITY": "OPP", "DOCUMENT": "DOC",
    "CHARGE": "SLP", "APPOINTMENT-OR-TASK": "EVT", "HISTORY-NOTE": "HIS", "ITEM": "ITM",
    "ASSET": "AST", "KBARTICLE": "KBA",
}


def new_rec_id(kind: str = "ACCOUNT") -> str:
    """A Commit-style 20-character record id: a 3-letter kind prefix and 17 random characters."""
    prefix = _REC_PREFIX.get(kind.upper(), kind.upper()[:3].ljust(3, "X"))
    # One draw of 17 base-36 digits: secrets.choice per character cost 17 urandom calls.
    value = secrets.randbelow(_REC_SPACE)
    digits = []
    for _ in range(17):
        value, digit = divmod(value, 36)
        digits.append(_REC_ALPHABET[digit])
    return prefix + "".join(digits)


def account_keys(account: Account) -> list[tuple[str, str]]:
    """The lookup keys of an Account's email fields: ("email", addr) or ("domain", domain)."""
    keys: list[tuple[str, str]] = []
    for value in account.emails:
        for raw_token in value.replace(";", " ").replace(",", " ").split():
            token = raw_token.strip().strip("<>").lower()
            if "@" in token:
                local, _, domain = token.rpartition("@")
                if local in ("", "*"):  # "@acme.example" and "*@acme.example" mean the domain
                    keys.append(("domain", domain))
                else:
                    keys.append(("email", token))
            elif "." in token:
                keys.append(("domain", token))
    return keys


@frozen(kw_only=True)
class ProcessedEntry:
    """One line of the processed log."""

    digest: str
    source: SourceRef
    message_id: str
    outcome: Outcome
    created: datetime


@frozen(kw_only=True)
class OutboxEntry:
    """A queued outgoing mail. ``sent_at`` and ``given_up_at`` are the outbox's ``sent``
    and ``given_up`` columns: when it went out, and when it was given up (refused for good
    or out of attempts), None while it has not."""

    id: int
    mail: OutgoingMail
    attempts: int
    last_error: str
    sent: bool = False
    created: datetime | None = None
    last_attempt: datetime | None = None
    sent_at: datetime | None = None
    given_up_at: datetime | None = None

    @property
    def failed(self) -> bool:
        """Given up: refused for good or out of attempts; not sent until retried."""
        return not self.sent and self.given_up_at is not None

    @property
    def status(self) -> str:
        """``"sent"``, ``"failed"`` or ``"pending"`` (waiting for its first or next try)."""
        return "sent" if self.sent else "failed" if self.failed else "pending"

    @property
    def error(self) -> str:
        """The server's last answer or the reason of the last failure (``last_error``);
        whether the mail was given up is ``status``, not part of the text."""
        return self.last_error


def apply_changes(
    current: Account | Ticket, changes: Mapping[str, object], *, fixed: set[str]
) -> dict[str, Any]:
    """The attrs.evolve arguments for ``changes``: known attributes as given, any other name
    (a Commit FLD* field) into ``extra``; ``fixed`` attributes cannot be changed this way."""
    known = {f.name for f in attrs.fields(type(current))} - fixed
    extra = dict(current.extra)
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key in known:
            values[key] = value
        else:
            extra[key] = str(value)
    values["extra"] = extra
    return values


def redact_url(url: str) -> str:
    """A store URL without its password, for messages and logs."""
    url = re.sub(r"(://[^:/@?]*):[^@/?]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)
