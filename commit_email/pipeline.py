"""The pipeline: one message in, exactly one outcome out.

``Connector.process(raw, source)``:

1. refuses mail over ``max_message_bytes`` and mail that cannot be parsed (quarantined);
2. computes the message's digest and answers ``duplicate`` if it was processed before;
3. runs the stages in ``order`` inside one transaction (filter, automated emails, XML API,
   threading, email-to-ticket); the first stage that returns an outcome decides, and a
   message no stage claims is forwarded to the internal address;
4. records the outcome in the processed log in that same transaction, so that the ticket and
   the record that the message was handled commit together or not at all;
5. after the commit, sends the mail the stages queued (a failed send stays queued and is
   retried by the next run) and notifies ``commit_email_message_processed``.

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
from datetime import datetime, timedelta
from typing import Any, cast

import attrs
from attrs import frozen

from .config import Config
from .deadline import MessageTimeout, time_limit
from .deadline import check as check_time
from .errors import CommitEmailError, MailerError, MessageError
from .message import Message
from .model import (
    PERMANENT_FAILURE,
    Outcome,
    OutcomeKind,
    OutgoingMail,
    SourceRef,
    utcnow,
)
from .oauth import OAuthCredentials
from .outgoing import replied_to
from .plugins import PluginHost
from .protocols import AccountDirectory, ConnectorState, Mailer, QueuedMail, TicketSink
from .quarantine import Quarantine
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
from .store import open_store

__all__ = [
    "AUTOMATED_ORDER",
    "EMAIL_TO_TICKET_ORDER",
    "FILTER_ORDER",
    "PERMANENT_FAILURE",
    "THREADING_ORDER",
    "XML_ORDER",
    "Connector",
    "Context",
    "Inspection",
    "Stage",
    "message_digest",
]

log = logging.getLogger("commit_email")



#: mails loaded from the outbox at a time (a flush after an outage may have thousands)
_FLUSH_BATCH = 50


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
        #: after the SMTP server could not be reached, the outbox rests until then
        self._smtp_resumes: datetime | None = None

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
        (the OAuth tokens' cache) may be shared by several connectors of one process."""
        if store is None:
            store = open_store(config.store.url, base_dir=config.base_dir,
                               password=config.store.resolved_password())
        if host is None:
            host = PluginHost(plugins, autoload=autoload)
        credentials = credentials if credentials is not None else OAuthCredentials(config)
        if mailer is None and config.smtp_configured:
            mailer = SmtpMailer(config.smtp, tokens=credentials.for_login(
                config.smtp.oauth, config.smtp.sasl_mechanism))
        return cls(config, directory=store, sink=store, state=store, mailer=mailer, host=host,
                   credentials=credentials)

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
        self.flush_outbox()
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
        forget = getattr(self.state, "forget_processed", None)
        if forget is None:
            raise CommitEmailError("this state store cannot replay quarantined messages")
        forget(digest)

    def _duplicate(
        self, message: Message, digest: str, source: SourceRef, previous: Outcome
    ) -> Outcome:
        if source.uidl and self.state.processed_uidl(source.name, source.uidl) is None:
            # A re-delivered copy under a new UIDL: remember the UIDL so it is deleted.
            alias = getattr(self.state, "record_uidl_alias", None)
            if alias is not None:
                alias(digest=digest, mailbox=source.name, uidl=source.uidl)
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
        """Send queued mail, oldest first; returns how many were sent.

        A transient failure (server down, ``4xx``) stops the flush: the mail stays queued and
        is tried again once ``smtp.retry_interval`` has passed. When the server could not be
        reached at all (no SMTP reply), no mail is tried for that long: a backlog processed
        during an outage does not pay a connection attempt per message. Only mail that may
        be sent is read (``ConnectorState.due_mail``, in batches). A permanent one (``5xx``, a
        mailer error with ``permanent = True``), or the ``smtp.max_attempts``-th transient
        one, gives the mail up: it is recorded with ``permanent:`` before the error, is not
        sent again (``commit-email outbox retry`` puts it back), and does not hold back the
        mail queued behind it.

        Several workers sharing a store send one at a time: when the state offers
        ``sending_outbox()`` (both built-in stores do), a flush that finds another worker
        sending leaves the mail to it, so no mail is sent by two workers.
        """
        if self.mailer is None:
            return 0
        now = self.clock()
        if self._smtp_resumes is not None and now < self._smtp_resumes:
            return 0
        interval = timedelta(seconds=self.config.smtp.retry_interval)
        sending = getattr(self.state, "sending_outbox", None)
        if sending is None:
            return self._send_due(now, interval)
        if not self.state.due_mail(tried_before=now - interval, limit=1):
            return 0  # nothing to send: no need to ask who sends
        with sending() as may_send:
            return self._send_due(now, interval) if may_send else 0

    def _send_due(self, now: datetime, interval: timedelta) -> int:
        sent = 0
        assert self.mailer is not None
        while batch := self.state.due_mail(tried_before=now - interval, limit=_FLUSH_BATCH):
            for entry in batch:
                try:
                    self.mailer.send(entry.mail)
                except MailerError as exc:
                    if self._record_failure(entry, exc):
                        continue
                    if getattr(exc, "code", None) is None:
                        # No SMTP reply at all (refused, timed out, dropped): the server is
                        # down. Rest instead of paying a connection attempt, with the
                        # mailer's own retries, after every processed message.
                        self._smtp_resumes = now + interval
                    return sent  # the rest waits for a later flush, in order
                with self.state.transaction():
                    self.state.mark_mail_sent(entry.id)
                sent += 1
        return sent

    def _record_failure(self, entry: QueuedMail, exc: MailerError) -> bool:
        """Record a failed send; True when the mail is given up (kept, never sent again)."""
        attempts = entry.attempts + 1
        cap = self.config.smtp.max_attempts
        permanent = exc.permanent
        error = str(exc)
        if not permanent and cap and attempts >= cap:
            permanent = True
            error = f"gave up after {attempts} attempts: {error}"
        with self.state.transaction():
            self.state.mark_mail_failed(entry.id, (PERMANENT_FAILURE if permanent else "") + error)
        mail = entry.mail
        if permanent:
            # Nobody reads a WARNING in time: this mail is lost unless someone acts on it.
            about = replied_to(mail.raw)
            log.error(
                "%s mail %d to %s (Message-ID %s%s) not sent, kept in the outbox: %s",
                mail.kind, entry.id, ", ".join(mail.recipients), mail.message_id or "-",
                f", about <{about}>" if about else "", error,
            )
        else:
            log.warning("sending %s mail %d failed (attempt %d): %s", mail.kind, entry.id,
                        attempts, error)
        return permanent

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
