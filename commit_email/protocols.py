"""The interfaces between the pipeline and the world, all in one place.

An integrator wires commit-email to its own Commit database by implementing
:class:`AccountDirectory` (read-only look-ups) and :class:`TicketSink` (tickets,
history, documents, records). :class:`ConnectorState` is the connector's own
bookkeeping (processed log, outbox, the Message-IDs it sent and filed, rate limits);
the SQLite store implements all three and is the reference implementation
(``commit_email.store``). :class:`MailSession` is the seam between ``commit-email run``
and a mailbox: POP3 and IMAP implement it, and a plugin adds another source (Microsoft
Graph, a queue) by returning a :class:`~commit_email.sources.Mailbox` from the
``commit_email_register_sources`` hook.

Exactly-once: the pipeline wraps each message in ``state.transaction()`` and, if
the sink is a different object, ``sink.transaction()`` too. When the sink lives in
another database than the state, make ``create_ticket`` idempotent on
``draft.source_key`` (return the existing ticket) so that a crash between the two
commits cannot open a second ticket.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from .errors import MailerError
from .model import (
    Account,
    Document,
    HistoryEntry,
    Outcome,
    OutcomeKind,
    OutgoingMail,
    SourceRef,
    Ticket,
    TicketDraft,
)

__all__ = [
    "AccountDirectory",
    "BatchMailer",
    "Closable",
    "ConnectorState",
    "IdleMailSession",
    "MailSession",
    "MailboxLocks",
    "Mailer",
    "ProcessedRecord",
    "QueuedMail",
    "RecordsUidlAliases",
    "Replayable",
    "TicketSink",
]


@runtime_checkable
class AccountDirectory(Protocol):
    """Read-only access to Commit's Cards (Accounts, secondary contacts, employees)."""

    def find_by_email(self, address: str) -> Sequence[Account]:
        """Cards whose email1 or email2 is ``address`` (lower-case; compare case-insensitively)."""
        ...

    def find_by_domain(self, domain: str) -> Sequence[Account]:
        """Cards with the bare ``domain`` (no ``@``) typed into email1 or email2."""
        ...

    def find_by_field(self, name: str, value: str) -> Sequence[Account]:
        """Cards whose ``name`` (file_as, account_number, account_id, field1..4, rec_id) equals
        ``value``, case-insensitively."""
        ...

    def get_account(self, rec_id: str) -> Account | None:
        """The Card with this rec_id, or None."""
        ...


@runtime_checkable
class TicketSink(Protocol):
    """Where tickets, their history and documents, and other Commit records are written."""

    def transaction(self) -> AbstractContextManager[None]:
        """A unit of work: everything inside commits together or not at all. Re-entrant: a
        nested call is a savepoint, and an exception inside it undoes that block only (the XML
        API relies on this to make each transaction of a mail all-or-nothing)."""
        ...

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        """Open a ticket and assign its number. Idempotent on a non-empty ``draft.source_key``."""
        ...

    def get_ticket(self, *, number: str | None = None, rec_id: str | None = None) -> Ticket | None:
        """Look a ticket up by its number or its rec_id."""
        ...

    def update_ticket(self, rec_id: str, changes: Mapping[str, object]) -> Ticket:
        """Change ticket attributes (``status``, ``closed``, other FLDTKT* via ``extra``)."""
        ...

    def find_open_alert_ticket(self, alert_key: str) -> Ticket | None:
        """The newest open ticket carrying this alert correlation key, if any."""
        ...

    def add_history(self, ticket_rec_id: str, entry: HistoryEntry) -> None:
        """Append an entry to a ticket's history."""
        ...

    def add_document(self, ticket_rec_id: str, document: Document) -> None:
        """Link a document (attachment, raw message) to a ticket."""
        ...

    def history(self, ticket_rec_id: str) -> Sequence[HistoryEntry]:
        """A ticket's history, oldest first."""
        ...

    def documents(self, ticket_rec_id: str) -> Sequence[Document]:
        """A ticket's documents, in the order they were linked."""
        ...

    def list_tickets(self) -> Sequence[Ticket]:
        """Every ticket, oldest first."""
        ...

    def add_account(self, account: Account) -> Account:
        """Create a Card; an empty rec_id gets a generated one. Returns the stored Card."""
        ...

    def update_account(self, rec_id: str, changes: Mapping[str, object]) -> Account:
        """Change a Card's attributes (unknown FLDCRD* fields go to ``extra``)."""
        ...

    def add_record(self, kind: str, fields: Mapping[str, str]) -> str:
        """Create a record of another Commit DataKind (CHARGE, ASSET, …); returns its rec_id."""
        ...

    def update_record(self, kind: str, rec_id: str, fields: Mapping[str, str]) -> None:
        """Update such a record; raises KeyError when it does not exist."""
        ...

    def get_record(self, kind: str, rec_id: str) -> Mapping[str, str] | None:
        """Such a record's fields, or None."""
        ...


class ProcessedRecord(Protocol):
    """One line of the processed log (read-only, so frozen records satisfy it)."""

    @property
    def digest(self) -> str: ...
    @property
    def source(self) -> SourceRef: ...
    @property
    def message_id(self) -> str: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def created(self) -> datetime: ...


class QueuedMail(Protocol):
    """A mail waiting in the outbox (read-only, so frozen records satisfy it)."""

    @property
    def id(self) -> int: ...
    @property
    def mail(self) -> OutgoingMail: ...
    @property
    def attempts(self) -> int: ...
    @property
    def last_error(self) -> str: ...
    @property
    def last_attempt(self) -> datetime | None:
        """When the mail was last tried (None: never), for ``smtp.retry_interval``."""
        ...
    @property
    def failed(self) -> bool:
        """Given up (refused for good, or out of attempts): not sent again until it is
        put back in the queue (``commit-email outbox retry``)."""
        ...


@runtime_checkable
class ConnectorState(Protocol):
    """The connector's own durable bookkeeping."""

    def transaction(self) -> AbstractContextManager[None]:
        """A unit of work, re-entrant; the outcome and the outbox commit with the sink's writes."""
        ...

    def processed(self, digest: str) -> ProcessedRecord | None:
        """The recorded outcome of the message with this digest, if it was processed."""
        ...

    def processed_uidl(self, mailbox: str, uidl: str) -> ProcessedRecord | None:
        """The recorded outcome of this POP3 UIDL in this mailbox, if any."""
        ...

    def processed_uidls(self, mailbox: str, uidls: Iterable[str]) -> set[str]:
        """Those of ``uidls`` that have a recorded outcome in this mailbox (the POP3 runner
        asks once per session, not once per message)."""
        ...

    def record_processed(
        self, *, digest: str, source: SourceRef, message_id: str, outcome: Outcome
    ) -> None:
        """Record a message's outcome (with its mailbox and UIDL when it came from POP3)."""
        ...

    def iter_processed(self) -> Iterator[ProcessedRecord]:
        """The processed log, oldest first."""
        ...

    def enqueue_mail(self, mail: OutgoingMail) -> int:
        """Put a mail in the outbox; it is sent after the current transaction commits."""
        ...

    def pending_mail(self) -> Sequence[QueuedMail]:
        """Mails not yet sent, oldest first."""
        ...

    def due_mail(self, *, tried_before: datetime, limit: int) -> Sequence[QueuedMail]:
        """What the outbox should try now, oldest first, at most ``limit``: not sent, not
        given up, with recipients, and never tried or last tried before ``tried_before``.
        Asked after every processed message, so it must not cost more as given-up or
        waiting mail accumulates (an index, a limit)."""
        ...

    def claim_mail(
        self, *, owner: str, now: datetime, until: datetime, tried_before: datetime, limit: int
    ) -> Sequence[QueuedMail]:
        """Claim what ``owner`` is about to send, so that no other sender sends it too.

        In one atomic step: extend every claim ``owner`` holds on unsent mail to ``until``;
        then claim for ``owner`` until ``until`` at most ``limit`` mails that are due (as
        ``due_mail`` picks them) and not claimed by anyone, or whose claim ended at or before
        ``now``; return those, oldest first. Two senders (threads, processes, machines)
        calling this at the same time never get the same mail. ``limit=0`` only renews.

        A claim is a lease: a sender renews it while it works, so a sender that dies
        (``kill -9``) leaves its mails to the next one once ``until`` has passed. With SQL:
        ``UPDATE outbox SET claimed_by = :owner, claimed_until = :until WHERE id IN (SELECT
        id ... ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED) RETURNING ...`` (PostgreSQL),
        or the select and update inside one write transaction (SQLite's ``BEGIN
        IMMEDIATE``). ``mark_mail_sent`` and ``mark_mail_failed`` end the claim."""
        ...

    def release_mail(self, owner: str, mail_ids: Iterable[int]) -> None:
        """End ``owner``'s claim on these mails without an attempt (they were not tried)."""
        ...

    def mark_mail_sent(self, mail_id: int) -> None:
        """Record that the mail went out (an attempt, at the current time); ends its claim."""
        ...

    def mark_mail_failed(self, mail_id: int, error: str, *, give_up: bool = False) -> None:
        """Record a failed attempt (at the current time) with the error, and end its claim.
        ``give_up``: the mail is given up (refused for good, or out of attempts) and must
        not be sent again until it is put back in the queue; it stays given up whatever
        later attempts say. The error is kept as given, without any marker."""
        ...

    def record_sent_message_id(self, message_id: str, ticket_rec_id: str) -> None:
        """Remember a Message-ID the connector generated (for threading and loop checks)."""
        ...

    def ticket_for_sent_message_id(self, message_id: str) -> str | None:
        """The ticket rec_id a connector-generated Message-ID belongs to, or None."""
        ...

    def record_filed_message_id(self, message_id: str, ticket_rec_id: str) -> None:
        """Remember that an incoming message was filed in this ticket (opened it, or was
        filed as a reply or an alert), so that a reply naming its Message-ID threads there.
        Kept apart from the sent Message-IDs: a customer's Message-ID is never our own. When
        the Message-ID is already known, keep the ticket it was first filed in."""
        ...

    def ticket_for_filed_message_id(self, message_id: str) -> str | None:
        """The ticket rec_id an incoming message with this Message-ID was filed in, or None."""
        ...

    def is_own_message_id(self, message_id: str) -> bool:
        """Whether the connector generated this Message-ID."""
        ...

    def count_auto_responses(self, sender: str, since: datetime) -> int:
        """Auto-responses sent to ``sender`` since ``since`` (for the per-sender rate limit)."""
        ...

    def record_auto_response(self, sender: str, at: datetime) -> None: ...

    def record_ticket_recipient(self, ticket_rec_id: str, address: str) -> None:
        """Remember that mail about this ticket went to ``address`` (case-insensitive), so
        that its replies may be filed in the ticket."""
        ...

    def ticket_mailed_to(self, ticket_rec_id: str, address: str) -> bool:
        """Whether mail about this ticket went to ``address``."""
        ...

    def count_failed_logins(self, sender: str, since: datetime) -> int:
        """XML API logins with a wrong password from ``sender`` since ``since``."""
        ...

    def record_failed_login(self, sender: str, at: datetime, *, expire_before: datetime) -> None:
        """Count a failed XML API login from ``sender`` at ``at``; forget every failed login
        before ``expire_before`` (the window has passed for them)."""
        ...

    def remember_recovery(
        self, key: str, event_time: datetime, at: datetime, *, expire_before: datetime
    ) -> None:
        """Remember that the alert with correlation ``key`` recovered at ``event_time`` (keep
        the latest), noted at ``at``; forget every recovery noted before ``expire_before``."""
        ...

    def recovery_of(self, key: str) -> tuple[datetime, datetime] | None:
        """(recovered at, noted at) of the remembered recovery of ``key``, or None."""
        ...


# Optional capabilities of a ConnectorState: the built-in stores have them all; an
# integrator's state may leave any out, and the connector then does without (as each says).


@runtime_checkable
class MailboxLocks(Protocol):
    """One worker per mailbox: ``run`` serves a mailbox only while its state holds the
    mailbox's lock, and stands by otherwise (PostgreSQL: a session advisory lock, released
    by the server when the worker's connection dies). Without it, every worker serves."""

    def lock_mailbox(self, name: str) -> bool:
        """Take (or keep) the lock of mailbox ``name``; True when this state holds it."""
        ...

    def holds_mailbox(self, name: str) -> bool:
        """Whether this state still holds the lock (a connection lost loses it)."""
        ...

    def unlock_mailbox(self, name: str) -> None:
        """Hand the mailbox over at once (a stopping worker)."""
        ...


@runtime_checkable
class Replayable(Protocol):
    """A processed log whose lines can be dropped: ``quarantine replay`` needs it to give a
    quarantined message its new outcome. Without it, replay is refused."""

    def forget_processed(self, digest: str) -> None:
        """Drop the processed-log line of ``digest``, in the current transaction."""
        ...


@runtime_checkable
class RecordsUidlAliases(Protocol):
    """A processed log that also records where a re-delivered copy was seen, so that the
    copy is deleted from the server like the original. Without it, such a copy is
    processed (as a duplicate) again on every poll of a mailbox that keeps mail."""

    def record_uidl_alias(self, *, digest: str, mailbox: str, uidl: str) -> None:
        """Note that ``uidl`` in ``mailbox`` is a copy of the message of ``digest``."""
        ...


@runtime_checkable
class Closable(Protocol):
    """A state (or a mailer) holding a connection or file that the connector closes when
    it is done with it."""

    def close(self) -> None: ...


@runtime_checkable
class Mailer(Protocol):
    """Hands a mail to an SMTP server. Raises :class:`~commit_email.errors.MailerError`."""

    def send(self, mail: OutgoingMail) -> None: ...


@runtime_checkable
class MailSession(Protocol):
    """One session with a mailbox, as ``commit-email run`` drives it.

    The run loop enters the session (connect and log in), asks for :meth:`message_ids`,
    skips those the processed log already has under (:attr:`name`, id), reads the others
    with :meth:`fetch`, processes each (its outcome is committed with the id), then calls
    :meth:`acknowledge` for what is done and leaves the session. Exactly-once delivery rests
    on three promises a source keeps:

    - an id names one message for good: the same id in a later session (after a reconnect,
      a crash, a restart) is the same message, and a message keeps its id;
    - a message is removed, moved or marked only in :meth:`acknowledge`, which the run loop
      calls only once the outcome is durable; what is never acknowledged (a crash, a dropped
      connection) is listed again by a later session;
    - every fault is raised as :class:`~commit_email.errors.SourceError` (a refused login as
      :class:`~commit_email.errors.LoginError`); the run loop then leaves the session, backs
      off and reconnects.

    A message the processed log has already seen is not fetched again but acknowledged
    (with the outcome kind the log has), unless :attr:`keeps_messages`.
    """

    @property
    def kind(self) -> str:
        """The source kind written into the processed log (``pop3``, ``imap``, ``graph``)."""
        ...

    @property
    def name(self) -> str:
        """The mailbox name ids are filed under; stable across runs (``user@host:port``)."""
        ...

    @property
    def connected(self) -> bool:
        """False once the session is closed or broken (nothing more can be acknowledged)."""
        ...

    @property
    def keeps_messages(self) -> bool:
        """True when processed mail stays in the mailbox (POP3 ``leave_on_server``, IMAP
        ``after = "keep"``): only messages this session quarantined are then acknowledged
        (so that failed mail can be put aside), nothing else."""
        ...

    def __enter__(self) -> Self:
        """Connect and log in."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the session (POP3 applies its deletions at QUIT); never raises for a broken
        connection while an error propagates."""
        ...

    def message_ids(self) -> Sequence[str]:
        """The ids of the messages in the mailbox now, in the order to process them."""
        ...

    def fetch(self, ids: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(id, raw bytes)`` for the messages, in order, reading ahead as it likes.

        A message the source will not hand over (too big to download, say) is left out,
        with the reason logged by the source; it is then not acknowledged either. If the
        iterator has a ``close()`` method, the run loop calls it when it stops early.
        """
        ...

    def acknowledge(self, done: Sequence[tuple[str, OutcomeKind]]) -> Sequence[tuple[str, str]]:
        """Remove (or move, or mark) these messages: each outcome is durably recorded.

        :param done: ``(id, outcome kind)`` pairs; ``quarantined`` lets a source put failed
            mail aside (IMAP ``quarantine_folder``).
        :return: ``(id, reason)`` for each message the server refused; they stay for a later
            session. A broken connection raises :class:`~commit_email.errors.SourceError`.
        """
        ...


@runtime_checkable
class IdleMailSession(MailSession, Protocol):
    """A session that can wait on the server for new mail (IMAP IDLE), and stays open
    between passes instead of being closed and reopened for every poll."""

    def wait_for_mail(self, seconds: float, stop: threading.Event) -> bool:
        """Wait at most ``seconds`` for new mail, returning early when ``stop`` is set.

        :return: False when this session cannot wait (the server does not offer it, or it
            is turned off): the run loop then closes the session and sleeps instead.
        """
        ...


@runtime_checkable
class BatchMailer(Mailer, Protocol):
    """A :class:`Mailer` that keeps one session for many mails (``SmtpMailer`` is one).

    The outbox hands it several mails at once when it has this method; one instance is used
    by one thread at a time."""

    def send_many(
        self, mails: Iterable[OutgoingMail]
    ) -> Iterator[tuple[OutgoingMail, MailerError | None]]:
        """Send ``mails`` in order, yielding each with ``None`` (the server accepted it: its
        reply to the end of DATA came) or the error, as soon as that is known. ``mails`` is
        read lazily. A generator that stops before the end (the server cannot be reached)
        leaves the mails it did not yield untried."""
        ...

    def close(self) -> None:
        """End the session (QUIT); the next send opens a new one."""
        ...
