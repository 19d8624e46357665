"""The contract between the engine and its stages: ``Stage``, ``Context``, the stage order.

A stage (built-in or a plugin's) sees one message and a :class:`Context`, and returns an
``Outcome`` to decide or ``None`` to pass the message on. The built-in stages and the hook
specifications import this module, never the engine (``pipeline``), so the package has no
import cycle and a plugin author reads the whole contract in one place.

The orders of the built-in stages (lower runs first)::

    FILTER_ORDER          10   loops, bounces, ignored senders
    AUTOMATED_ORDER      100   monitoring alerts and Commit's rule lists
    XML_ORDER            200   API by email
    THREADING_ORDER      300   replies filed under their ticket
    EMAIL_TO_TICKET_ORDER 400  a known sender opens a ticket
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .alerts import AlertParser
from .config import Config
from .deadline import check as check_deadline
from .message import Message
from .model import (
    Document,
    HistoryEntry,
    Match,
    Outcome,
    OutcomeKind,
    OutgoingMail,
    SourceRef,
    Ticket,
    TicketDraft,
)
from .outgoing import build_forward, make_message_id
from .protocols import AccountDirectory, ConnectorState, TicketSink
from .senderauth import Verdict
from .senderauth import verdict as sender_verdict

if TYPE_CHECKING:
    from .xml_api import Transaction

__all__ = [
    "AUTOMATED_ORDER",
    "AUTOMATED_STAGE",
    "BOUNCES_STAGE",
    "EMAIL_TO_TICKET_ORDER",
    "EMAIL_TO_TICKET_STAGE",
    "FILTER_ORDER",
    "FILTER_STAGE",
    "THREADING_ORDER",
    "THREADING_STAGE",
    "XML_ORDER",
    "XML_STAGE",
    "Context",
    "Hooks",
    "Stage",
    "XmlAction",
    "describe",
]

log = logging.getLogger("commit_email")

FILTER_ORDER = 10
AUTOMATED_ORDER = 100
XML_ORDER = 200
THREADING_ORDER = 300
EMAIL_TO_TICKET_ORDER = 400

#: The names of the built-in stages, as outcomes and ``inspect`` show them.
FILTER_STAGE = "filter"
BOUNCES_STAGE = "bounces"
AUTOMATED_STAGE = "automated"
XML_STAGE = "xml_api"
THREADING_STAGE = "threading"
EMAIL_TO_TICKET_STAGE = "email_to_ticket"


class Stage(Protocol):
    """One step of the pipeline. Return an Outcome to decide, None to pass the message on."""

    @property
    def name(self) -> str:
        """Shown in outcomes and ``inspect``."""
        ...

    @property
    def order(self) -> int:
        """Position in the pipeline; lower runs first."""
        ...

    def handle(self, message: Message, ctx: Context) -> Outcome | None: ...


#: An XML action: applies one transaction of its DataKind, returns the record's REC ID.
XmlAction = Callable[["Transaction", "Context"], str]


class Hooks(Protocol):
    """The plugin hooks a stage can call through ``ctx.host`` (``PluginHost`` is the one
    implementation; a test may pass its own)."""

    def match_account(
        self, message: Message, directory: AccountDirectory, config: Config
    ) -> Match | None: ...

    def alert_parsers(self, config: Config) -> Sequence[AlertParser]: ...

    def xml_actions(self, config: Config) -> Mapping[str, XmlAction]: ...

    def ticket_created(
        self, message: Message, ticket: Ticket, match: Match | None, context: Context
    ) -> None: ...


class Context:
    """What a stage can see and do while it handles one message."""

    def __init__(
        self,
        *,
        config: Config,
        directory: AccountDirectory,
        sink: TicketSink,
        state: ConnectorState,
        host: Hooks,
        source: SourceRef,
        digest: str,
        now: datetime,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.directory = directory
        self.sink = sink
        self.state = state
        self.host = host
        self.source = source
        self.digest = digest
        self.dry_run = dry_run
        #: the time the message is handled (one value for all its stages)
        self.now = now
        self.notes: list[tuple[str, Any]] = []
        self.queued: list[OutgoingMail] = []
        #: The name of the stage handling the message now (hooks it fires can tell who opened
        #: a ticket: the auto-responder answers email-to-ticket, never an alert).
        self.stage = ""
        self._verdict: tuple[Message, Verdict] | None = None

    def sender_verdict(self, message: Message) -> Verdict:
        """Whether the message's From domain is authenticated (``[sender_auth]``); worked
        out once per message."""
        if self._verdict is None or self._verdict[0] is not message:
            self._verdict = (message, sender_verdict(message, self.config))
        return self._verdict[1]

    def sender_loses(self, message: Message, privilege: str) -> Verdict | None:
        """The verdict when ``message`` must lose ``privilege`` (``"employee"``,
        ``"xml_api"`` or ``"threading"``, as listed in ``[sender_auth] require_for``)
        because its sender is not authenticated; None when it keeps it."""
        settings = self.config.sender_auth
        if not settings.enabled or privilege not in settings.require_for:
            return None
        found = self.sender_verdict(message)
        return None if found.authenticated else found

    @staticmethod
    def check_time() -> None:
        """Raise ``MessageTimeout`` once the message is over ``connector.message_time_limit``.
        A stage with a loop of its own calls this in it: the limit has no other way to stop
        Python code on every platform."""
        check_deadline()

    def note(self, key: str, value: Any) -> None:
        """Record an explanation (``inspect`` shows them in order)."""
        self.notes.append((key, value))

    def new_message_id(self) -> str:
        return make_message_id(self.config.message_id_domain)

    def send(self, mail: OutgoingMail) -> None:
        """Queue a mail; it is sent after the message's outcome is committed."""
        self.queued.append(mail)
        mail_id = self.state.enqueue_mail(mail)
        if mail.ticket:
            # Whoever the ticket's mail goes to may answer into the ticket.
            for address in mail.recipients:
                self.state.record_ticket_recipient(mail.ticket, address)
        if not mail.recipients:
            # Nothing could ever send it: give it up now, where `outbox list` shows
            # failures, instead of leaving it pending for good.
            self.state.mark_mail_failed(mail_id, "no recipients", give_up=True)
            log.error("%s mail %d (Message-ID %s) has no recipients; kept in the outbox as "
                      "failed", mail.kind, mail_id, mail.message_id or "-")

    def match_sender(self, message: Message) -> Match | None:
        """Plugins' matchers first, then the built-in one. May raise AmbiguousMatch."""
        return self.host.match_account(message, self.directory, self.config)

    def forward(
        self,
        message: Message,
        reason: str,
        *,
        kind: OutcomeKind = OutcomeKind.FORWARDED,
        ticket: str | None = None,
        account: str | None = None,
        stage: str = "",
    ) -> Outcome:
        """Forward the message, unchanged, to the internal address; returns the outcome."""
        connector = self.config.connector
        sender = self.config.smtp.from_address or connector.public_address
        to = connector.internal_address
        message_id = self.new_message_id()
        raw = build_forward(
            message,
            sender=sender or "commit-email@localhost",
            to=to or "undisclosed-recipients:;",
            reason=reason,
            message_id=message_id,
            loop_token=self.config.message_id_domain,
        )
        self.send(
            OutgoingMail(
                kind="forward",
                sender=sender,
                recipients=[to] if to else [],
                raw=raw,
                message_id=message_id,
                ticket="",
            )
        )
        self.note("forwarded", reason)
        return Outcome(kind=kind, detail=reason, ticket=ticket, account=account, stage=stage)

    def file_message(
        self,
        ticket: Ticket,
        message: Message,
        *,
        kind: str = "email",
        text: str | None = None,
    ) -> None:
        """File a message under a ticket: a history entry, the raw .eml and the attachments.

        Its Message-ID is remembered for the ticket, so that a reply to it without the token
        (a colleague's reply-all, the customer's follow-up to their own mail) threads here.
        """
        self.sink.add_history(
            ticket.rec_id,
            HistoryEntry(
                kind=kind,
                subject=message.subject,
                text=message.text if text is None else text,
                author=message.sender,
                message_id=message.message_id,
                created=message.date or self.now,
            ),
        )
        stem = (message.message_id or self.digest[2:18]).replace("/", "_")[:80]
        self.sink.add_document(
            ticket.rec_id,
            Document(filename=f"{stem}.eml", content_type="message/rfc822", data=message.raw,
                     kind="raw"),
        )
        for attachment in message.attachments:
            self.sink.add_document(
                ticket.rec_id,
                Document(filename=attachment.filename, content_type=attachment.content_type,
                         data=attachment.data, kind="attachment"),
            )
        if message.message_id:
            self.state.record_filed_message_id(message.message_id, ticket.rec_id)

    def open_ticket(
        self,
        message: Message,
        match: Match,
        *,
        description: str | None = None,
        alert_key: str = "",
        text: str | None = None,
        **overrides: str,
    ) -> Ticket:
        """Open a ticket for ``match`` with the configured defaults and file the message in it.

        ``overrides`` set ticket attributes (status, priority, kind, source, manager) over the
        ``[email_to_ticket] ticket_defaults``. Fires ``commit_email_ticket_created``.
        """
        defaults = dict(self.config.email_to_ticket.ticket_defaults)
        defaults.update(overrides)
        draft = TicketDraft(
            account=match.account.rec_id,
            contact=match.contact.rec_id if match.contact else "",
            description=description if description is not None else describe(message),
            status=defaults.get("status", ""),
            priority=defaults.get("priority", ""),
            kind=defaults.get("kind", ""),
            source=defaults.get("source", ""),
            manager=defaults.get("manager", ""),
            alert_key=alert_key,
            source_key=self.digest,
        )
        ticket = self.sink.create_ticket(draft)
        self.file_message(ticket, message, text=text)
        self.host.ticket_created(message, ticket, match, self)
        return ticket


def describe(message: Message, limit: int = 250) -> str:
    """A ticket description: the subject, or the first line of the body when there is none."""
    description = message.subject.strip()
    if not description:
        first = next((line.strip() for line in message.text.splitlines() if line.strip()), "")
        description = first or "(no subject)"
    return description if len(description) <= limit else description[: limit - 1] + "…"
