"""The pipeline: one message in, exactly one outcome out.

``Connector.process(raw, source)``:

1. refuses mail over ``max_message_bytes`` and mail that cannot be parsed (quarantined);
2. computes the message's digest and answers ``duplicate`` if it was processed before;
3. runs the stages in ``order`` inside one transaction (filter, automated emails, XML API,
   threading, email-to-ticket); the first stage that returns an outcome decides, and a
   message no stage claims is forwarded to the internal address;
4. records the outcome in the processed log in that same transaction, so that the ticket and
   the record that the message was handled commit together or not at all;
5. after the commit, sends the mail the stages queued, or wakes the sender that sends it
   beside processing (``Connector.sending_in_background``; a failed send stays queued and
   is retried later), and notifies ``commit_email_message_processed``.

Anything a stage raises rolls its writes back, puts the raw bytes in quarantine and gives
the outcome ``quarantined``; the run goes on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any, cast

import attrs
from attrs import frozen

from .config import Config
from .deadline import MessageTimeout, time_limit
from .deadline import check as check_time
from .errors import CommitEmailError, MessageError
from .message import Message
from .model import (
    Outcome,
    OutcomeKind,
    OutgoingMail,
    SourceRef,
    utcnow,
)
from .oauth import OAuthCredentials
from .plugins import PluginHost
from .protocols import (
    AccountDirectory,
    ConnectorState,
    Mailer,
    RecordsUidlAliases,
    Replayable,
    TicketSink,
)
from .quarantine import Quarantine
from .sender import BackgroundSender, Outbox, background_sender, flush, inline_lease
from .smtp import SmtpMailer
from .stages import (
    AUTOMATED_ORDER,
    EMAIL_TO_TICKET_ORDER,
    FILTER_ORDER,
    THREADING_ORDER,
    XML_ORDER,
    Context,
    Stage,
)
from .store import is_memory_url, open_store

__all__ = [
    "AUTOMATED_ORDER",
    "EMAIL_TO_TICKET_ORDER",
    "FILTER_ORDER",
    "THREADING_ORDER",
    "XML_ORDER",
    "Connector",
    "Context",
    "Inspection",
    "Stage",
    "message_digest",
]

log = logging.getLogger("commit_email")



def message_digest(message: Message) -> str:
    """The idempotency key of a message.

    With a Message-ID, the digest covers the Message-ID, From, Date and Subject: a copy of
    the same mail that arrives again (POP3 re-delivery, the same mail through two routes
    with different Received headers) is a duplicate, while a tool that reuses Message-IDs
    for different alerts is not. Without a Message-ID it is the digest of the raw bytes.
    """
    h = hashlib.sha256()
    if message.message_id:
        for part in (message.message_id, message.sender, message.header("date") or "",
                     message.subject):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return "m:" + h.hexdigest()
    h.update(message.raw)
    return "r:" + h.hexdigest()


#: Outlook saves mail as .msg, an OLE compound file; people drop those into mail folders.
_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


class _DryRun(Exception):
    """Raised inside the transaction of ``inspect`` so that every write is rolled back."""


# Header fields that mail carries; a file with none of them in its header block is not mail
# (a note, a binary, a CSV), however many "word: text" lines it has.
_MAIL_FIELDS = frozenset({
    b"from", b"to", b"cc", b"bcc", b"subject", b"date", b"message-id", b"received",
    b"return-path", b"sender", b"reply-to", b"mime-version", b"content-type",
    b"delivered-to", b"in-reply-to", b"references", b"x-mailer", b"auto-submitted",
})
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")


def not_mail_reason(raw: bytes) -> str:
    """Why ``raw`` is not an RFC 822 message (empty, binary, no header), or ``""``."""
    if not raw.strip():
        return "an empty file"
    end = raw.find(b"\n\n")
    crlf = raw.find(b"\r\n\r\n")
    if crlf >= 0 and (end < 0 or crlf < end):
        end = crlf
    head = raw[: end if 0 <= end < 65536 else 65536]
    if b"\x00" in head:
        return "binary data"
    for line in head.splitlines()[:200]:
        match = _FIELD_NAME.match(line)
        if match and match.group(1).lower() in _MAIL_FIELDS:
            return ""
    return "no mail header fields"


@frozen(kw_only=True)
class Inspection:
    """What ``inspect`` found: the parsed message, the route it would take and why."""

    message: Message
    outcome: Outcome
    digest: str
    already_processed: Outcome | None
    notes: tuple[tuple[str, Any], ...]
    mails: tuple[OutgoingMail, ...]


class Connector:
    """The pipeline an integrator builds with its directory, sink, state and mailer."""

    def __init__(
        self,
        config: Config,
        *,
        directory: AccountDirectory,
        sink: TicketSink,
        state: ConnectorState,
        mailer: Mailer | None = None,
        host: PluginHost | None = None,
        quarantine: Quarantine | None = None,
        clock: Callable[[], datetime] = utcnow,
        credentials: OAuthCredentials | None = None,
        sender_state: Callable[[], ConnectorState] | None = None,
        mailer_factory: Callable[[], Mailer] | None = None,
    ) -> None:
        self.config = config
        #: the ``[oauth.NAME]`` credentials, shared by the mailboxes ``run`` serves and the
        #: SMTP relay, so that each section's token is fetched once and cached for all
        self.credentials = credentials if credentials is not None else OAuthCredentials(config)
        self.directory = directory
        self.sink = sink
        self.state = state
        self.mailer = mailer
        self.host = host if host is not None else PluginHost()
        self.quarantine = quarantine or Quarantine(config.state_dir / "quarantine")
        self.clock = clock
        self.stages: Sequence[Stage] = self.host.stages(config)
        #: opens another connection to the state, for the sender beside processing
        self._sender_state = sender_state
        #: one mailer per SMTP session of that sender (default: ``mailer`` alone)
        self._mailer_factory = mailer_factory
        self._outbox: Outbox | None = None
        self._background: BackgroundSender | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        store: Any = None,
        mailer: Mailer | None = None,
        host: PluginHost | None = None,
        plugins: Sequence[object] = (),
        autoload: bool = True,
        credentials: OAuthCredentials | None = None,
    ) -> Connector:
        """The connector a configuration describes: its store serves as directory, sink and
        state. ``mailer`` defaults to SMTP when ``[smtp]`` is configured. ``credentials``
        (the OAuth tokens' cache) may be shared by several connectors of one process.

        A store opened here from a URL (not ``memory:``) can be opened a second time, for
        the sender beside processing (:meth:`sending_in_background`); each of its SMTP
        sessions gets a mailer of its own."""
        sender_state: Callable[[], ConnectorState] | None = None
        if store is None:
            url, base = config.store.url, config.base_dir
            password = config.store.resolved_password()
            store = open_store(url, base_dir=base, password=password)
            if not is_memory_url(url):  # a second connection sees the same data
                def sender_state() -> ConnectorState:
                    return open_store(url, base_dir=base, password=password)
        if host is None:
            host = PluginHost(plugins, autoload=autoload)
        credentials = credentials if credentials is not None else OAuthCredentials(config)
        factory: Callable[[], Mailer] | None = None
        if mailer is None and config.smtp_configured:
            tokens = credentials.for_login(config.smtp.oauth, config.smtp.sasl_mechanism)
            mailer = SmtpMailer(config.smtp, tokens=tokens)

            def factory() -> Mailer:
                return SmtpMailer(config.smtp, tokens=tokens)
        return cls(config, directory=store, sink=store, state=store, mailer=mailer, host=host,
                   credentials=credentials, sender_state=sender_state, mailer_factory=factory)

    # Processing ------------------------------------------------------------------------

    @contextmanager
    def _unit_of_work(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(self.state.transaction())
            if cast(object, self.sink) is not self.state:
                stack.enter_context(self.sink.transaction())
            yield

    def _context(self, source: SourceRef, digest: str, *, dry_run: bool = False) -> Context:
        return Context(config=self.config, directory=self.directory, sink=self.sink,
                       state=self.state, host=self.host, source=source, digest=digest,
                       now=self.clock(), dry_run=dry_run)

    def _route(self, message: Message, ctx: Context) -> Outcome:
        if self.config.sender_auth.enabled:
            ctx.note("sender_auth", str(ctx.sender_verdict(message)))
        for stage in self.stages:
            check_time()
            ctx.stage = stage.name
            outcome = stage.handle(message, ctx)
            if outcome is not None:
                if not outcome.stage:
                    outcome = attrs.evolve(outcome, stage=stage.name)
                return outcome
        return ctx.forward(message, "no account, ticket or rule matched", stage="forward")

    def parse(self, raw: bytes) -> Message:
        """Parse raw bytes, refusing what is over ``max_message_bytes``."""
        limit = self.config.connector.max_message_bytes
        if limit and len(raw) > limit:
            raise MessageError(f"message of {len(raw)} bytes exceeds max_message_bytes={limit}")
        if raw.startswith(_OLE_SIGNATURE):
            raise MessageError("an Outlook .msg file (OLE compound document), not RFC 822 mail")
        not_mail = not_mail_reason(raw)
        if not_mail:
            raise MessageError(f"{not_mail}, not an RFC 822 message")
        return Message.from_bytes(raw)

    def process(
        self, raw: bytes, source: SourceRef | None = None, *, replay: bool = False
    ) -> Outcome:
        """Process one message and return its outcome. Never raises for bad mail."""
        source = source or SourceRef(kind="bytes")
        message: Message | None = None
        try:
            with time_limit(self.config.connector.message_time_limit):
                message = self.parse(raw)
                digest = message_digest(message)
                outcome = self._process_parsed(message, digest, source, replay=replay)
        except (Exception, MessageTimeout) as exc:  # one bad message must never stop the run
            outcome = self._quarantine(raw, source, message, exc)
        if message is not None:
            outcome = attrs.evolve(outcome, message_id=message.message_id)
        self.send_queued()
        self._notify(message, outcome)
        return outcome

    def _process_parsed(
        self, message: Message, digest: str, source: SourceRef, *, replay: bool
    ) -> Outcome:
        with self._unit_of_work():
            previous = self.state.processed(digest)
            if previous is not None and not (
                replay and previous.outcome.kind is OutcomeKind.QUARANTINED
            ):
                return self._duplicate(message, digest, source, previous.outcome)
            ctx = self._context(source, digest)
            outcome = self._route(message, ctx)
            if previous is not None:  # a replayed quarantine entry gets its real outcome
                self._forget(digest)
            self.state.record_processed(
                digest=digest, source=source, message_id=message.message_id, outcome=outcome
            )
        log.info("%s %s %s", outcome.kind.value, message.message_id or "-", outcome.detail)
        return outcome

    def _forget(self, digest: str) -> None:
        if not isinstance(self.state, Replayable):
            raise CommitEmailError("this state store cannot replay quarantined messages")
        self.state.forget_processed(digest)

    def _duplicate(
        self, message: Message, digest: str, source: SourceRef, previous: Outcome
    ) -> Outcome:
        # A re-delivered copy under a new UIDL: remember the UIDL so it is deleted.
        if (source.uidl and isinstance(self.state, RecordsUidlAliases)
                and self.state.processed_uidl(source.name, source.uidl) is None):
            self.state.record_uidl_alias(digest=digest, mailbox=source.name, uidl=source.uidl)
        return Outcome(
            kind=OutcomeKind.DUPLICATE,
            detail=f"already processed: {previous.kind.value}",
            ticket=previous.ticket,
            account=previous.account,
            stage="dedup",
        )

    def _quarantine(
        self, raw: bytes, source: SourceRef, message: Message | None,
        exc: Exception | MessageTimeout,
    ) -> Outcome:
        reason = f"{type(exc).__name__}: {exc}"
        message_id = message.message_id if message else ""
        log.warning("quarantined %s: %s", message_id or source, reason)
        entry = self.quarantine.add(
            raw, reason=reason, source=source, message_id=message_id,
            details="".join(traceback.format_exception(exc)),
        )
        outcome = Outcome(
            kind=OutcomeKind.QUARANTINED, detail=f"{reason} (quarantine id {entry.id})",
            stage="quarantine",
        )
        digest = message_digest(message) if message else "r:" + hashlib.sha256(raw).hexdigest()
        try:
            with self._unit_of_work():
                if self.state.processed(digest) is None:
                    self.state.record_processed(
                        digest=digest, source=source, message_id=message_id, outcome=outcome
                    )
        except CommitEmailError as store_exc:  # the quarantine file is the record that counts
            log.error("could not record the quarantine of %s: %s", entry.id, store_exc)
        return outcome

    def _notify(self, message: Message | None, outcome: Outcome) -> None:
        try:
            self.host.message_processed(message, outcome)
        except Exception:  # observers must not change the outcome
            log.exception("a commit_email_message_processed hook failed")

    def flush_outbox(self) -> int:
        """Send queued mail in this thread, oldest first; returns how many were sent.

        Each mail is claimed in the store before it is sent (``ConnectorState.claim_mail``),
        so a flush running beside another sender, in this process or another one, never
        sends a mail twice. A mail is marked sent once the server replied to its DATA. A
        transient failure (``4xx``) keeps the mail queued; it is tried again once
        ``smtp.retry_interval`` has passed, and the mails behind it go on. When the server
        could not be reached at all (no SMTP reply), no mail is tried for that long: a
        backlog processed during an outage does not pay a connection attempt per message.
        A permanent failure (``5xx``, a mailer error with ``permanent = True``), or the
        ``smtp.max_attempts``-th transient one, gives the mail up: it is recorded with
        ``permanent:`` before the error, is not sent again (``commit-email outbox retry``
        puts it back), and does not hold back the mail queued behind it.
        """
        if self.mailer is None:
            return 0
        if self._outbox is None or self._outbox.state is not self.state:
            self._outbox = Outbox(self.config, self.state, lease=inline_lease(self.config))
        return flush(self._outbox, self.mailer, self.clock())

    def send_queued(self) -> None:
        """Mail was queued: wake the sender beside processing, or flush here without one."""
        if self._background is not None:
            self._background.wake()
        else:
            self.flush_outbox()

    @contextmanager
    def sending_in_background(self, *, drain: float = 0.0,
                              stop_timeout: float = 30.0) -> Iterator[BackgroundSender | None]:
        """Send the outbox from threads beside processing while the block runs, so that
        :meth:`process` never waits for SMTP (``commit-email run`` and ``process`` do this).

        Needs a second connection to the state (``sender_state``; ``from_config`` opens one
        for a store file) and a mailer; without them it yields None and mail is sent inline,
        after each message, as before. At the end of the block it waits up to ``drain``
        seconds for the outbox to empty, then lets the mails in flight finish (at most
        ``stop_timeout`` seconds); what is left stays queued for the next sender.
        """
        if self.mailer is None or self._background is not None:
            yield self._background
            return
        mailers = self._mailer_factory
        if mailers is None:
            only = self.mailer
            mailers = lambda: only  # noqa: E731 - one lane, the integrator's own mailer
        sender = background_sender(self.config, self._sender_state, mailers, clock=self.clock)
        if sender is None:
            yield None
            return
        sender.start()
        self._background = sender
        try:
            yield sender
            if drain > 0:
                sender.drain(drain)
        finally:
            self._background = None
            sender.stop(stop_timeout)

    # Inspection ------------------------------------------------------------------------

    def inspect(self, raw: bytes) -> Inspection:
        """Parse and route a message without writing anything (every write is rolled back)."""
        message = self.parse(raw)
        digest = message_digest(message)
        ctx = self._context(SourceRef(kind="inspect"), digest, dry_run=True)
        previous = self.state.processed(digest)
        result: Outcome | None = None
        try:
            with self._unit_of_work():
                result = self._route(message, ctx)
                raise _DryRun
        except _DryRun:
            pass
        assert result is not None
        return Inspection(
            message=message,
            outcome=result,
            digest=digest,
            already_processed=previous.outcome if previous else None,
            notes=tuple(ctx.notes),
            mails=tuple(ctx.queued),
        )
