"""``commit-email run``: poll a mailbox and process every message exactly once.

The run loop drives any :class:`~commit_email.protocols.MailSession` (POP3 and IMAP are
built in, plugins add others through ``commit_email_register_sources``). Per pass over the
mailbox: list the message ids, and for each message

1. if the processed log already has an outcome for (mailbox, id), skip it: it was handled
   by an earlier pass that did not get to acknowledge it (crash, dropped connection), so
   only the acknowledgement (POP3 DELE, IMAP MOVE) is still owed;
2. otherwise read it (the source reads ahead: POP3 pipelines RETRs, IMAP fetches in
   batches, so the next messages arrive while this one is processed) and hand it to
   :meth:`Connector.process`, which records the outcome (with mailbox and id) in the same
   transaction as every write it caused, or quarantines the message byte-for-byte when
   processing fails;
3. note it as finished;

then ask the log once which finished ids it has an outcome for and acknowledge those in
one batch. POP3 applies its DELEs only at QUIT, so its session ends with every pass; a
session that can wait for mail (IMAP IDLE) stays open and waits instead of sleeping. A
pass ends after ``messages_per_session`` fetched messages and the next one starts, so a
long backlog frees the mailbox as it goes. A crash or dropped connection anywhere
re-delivers some messages on the next pass, and step 1 (or the connector's Message-ID
digest) turns them into no-ops: no message is lost and none is processed twice. Network
and server errors end the poll; the next one is tried after an exponential, jittered and
capped back-off. ``request_stop()`` (or setting the ``stop`` event from any thread) ends
the run after the message in hand, then the acknowledgements and the logout; the CLI maps
SIGTERM/SIGINT onto it, the library installs no signal handler. See
docs/explanation/delivery-guarantees.md.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from queue import Empty
from types import TracebackType
from typing import Any

import attrs
from attrs import frozen

from .config import Config
from .errors import ConfigError, SourceError, StoreError
from .mailboxes import pop3_mailbox
from .model import Outcome, OutcomeKind, SourceRef
from .pipeline import Connector
from .protocols import Closable, IdleMailSession, MailboxLocks, MailSession
from .sources import Mailbox

__all__ = ["PollSummary", "Runner", "Service"]

log = logging.getLogger(__name__)

#: which summary column each outcome counts in
_COLUMN = {
    OutcomeKind.TICKET_CREATED: "tickets",
    OutcomeKind.ALERT_TICKET_CREATED: "tickets",
    OutcomeKind.TICKET_UPDATED: "filed",
    OutcomeKind.ALERT_APPENDED: "filed",
    OutcomeKind.ALERT_RESOLVED: "filed",
    OutcomeKind.XML_APPLIED: "xml",
    OutcomeKind.XML_REJECTED: "xml",
    OutcomeKind.FORWARDED: "forwarded",
    OutcomeKind.ALERT_SKIPPED: "forwarded",
    OutcomeKind.IGNORED: "ignored",
    OutcomeKind.DUPLICATE: "duplicates",
    OutcomeKind.QUARANTINED: "quarantined",
}


@frozen(kw_only=True)
class PollSummary:
    """What one poll did. ``known`` messages had an outcome already and were only deleted."""

    fetched: int = 0
    tickets: int = 0
    filed: int = 0
    forwarded: int = 0
    ignored: int = 0
    quarantined: int = 0
    duplicates: int = 0
    xml: int = 0
    errors: int = 0
    known: int = 0
    deleted: int = 0
    remaining: int = 0
    seconds: float = 0.0
    #: set when the poll was cut short by a network, server or store error
    failure: str = ""
    #: another worker serves the mailbox: this one touched nothing
    standby: bool = False

    @classmethod
    def from_tally(cls, tally: Counter[str], *, seconds: float, failure: str) -> PollSummary:
        counts: dict[str, Any] = dict(tally)
        return cls(**counts, seconds=seconds, failure=failure)

    @property
    def failed(self) -> bool:
        return bool(self.failure)

    def line(self) -> str:
        """The one-line summary ``run`` logs after every poll."""
        text = (
            f"poll: fetched={self.fetched} tickets={self.tickets} filed={self.filed} "
            f"forwarded={self.forwarded} ignored={self.ignored} "
            f"quarantined={self.quarantined} duplicates={self.duplicates} "
            f"errors={self.errors} xml={self.xml} known={self.known} deleted={self.deleted} "
            f"in {self.seconds:.1f}s"
        )
        if self.remaining:
            text += f", {self.remaining} left for the next poll"
        return f"{text}; {self.failure}" if self.failure else text


class Runner:
    """Polls one mailbox into one connector. Build it, then call :meth:`run`.

    The mailbox is ``mailbox`` when given, else the one mailbox the connector's plugins
    register (``commit_email_register_sources``: the built-ins read ``[pop3]`` and
    ``[imap]``). ``mailbox_factory`` replaces only how a POP3 session is opened (tests,
    benchmarks), keeping the ``[pop3]`` schedule.
    """

    def __init__(
        self,
        config: Config,
        connector: Connector,
        *,
        mailbox: Mailbox | None = None,
        mailbox_factory: Callable[[], MailSession] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = 10.0,
        messages_per_session: int | None = None,
        stop: threading.Event | None = None,
        on_outcome: Callable[[SourceRef, Outcome], None] | None = None,
    ) -> None:
        self.config = config
        self.connector = connector
        if mailbox is None and mailbox_factory is not None:
            mailbox = attrs.evolve(pop3_mailbox(config), open_session=mailbox_factory)
        self.mailbox = mailbox if mailbox is not None else _the_mailbox(config, connector)
        #: the mailbox's name, in every log line, outcome and the processed log
        self.name = self.mailbox.name
        #: called with every message's source and outcome (``run --json``), from this thread
        self.on_outcome = on_outcome
        self._sleep_for = sleep if sleep is not None else self._interruptible_sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self.progress_interval = progress_interval
        #: acknowledge and start a new pass (POP3: QUIT and reconnect) after this many
        #: fetched messages
        self.messages_per_session = max(
            1, messages_per_session or self.mailbox.messages_per_session
        )
        #: Set to stop after the message in hand (from any thread). The library installs no
        #: signal handler: the CLI maps SIGTERM/SIGINT onto this event, a host its own way.
        self.stop_event = stop if stop is not None else threading.Event()
        self.last_error: Exception | None = None
        self._box: MailSession | None = None
        self._idle_failures = 0
        #: None until the first poll: whether this worker serves the mailbox (it holds the
        #: store's lock of it) or stands by while another worker does
        self.serving: bool | None = None

    # -- control -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self) -> None:
        """Finish the message in hand, log out, and return from :meth:`run` (from any thread)."""
        self.stop_event.set()

    def run(self, *, once: bool = False) -> int:
        """Poll until stopped (or one complete pass with ``once``); returns an exit status.

        With ``once``, a pass cut short by a connection fault is retried (with back-off) up
        to ``once_attempts`` times; the status is 1 when it never completed or when the
        completed pass had errors. A permanent fault (a refused login, a certificate that
        does not verify: ``SourceError.permanent``) ends ``once`` at once by raising it; the
        endless mode keeps retrying it with
        back-off, since a password can be fixed on the server while the connector waits.
        Between polls a session that can wait for mail (IMAP IDLE) waits on the server;
        otherwise the loop sleeps ``poll_interval``.
        """
        # Mail goes out from threads beside the polls (when the store allows a second
        # connection); ``once`` waits at the end (smtp.drain_timeout) for the outbox to be
        # sent, a stop lets the mails in flight finish; the rest stays queued.
        with self.connector.sending_in_background(
                stop_timeout=min(self.config.smtp.timeout, 30.0)) as sender:
            status = self._run(once=once)
            if once and sender is not None and not self.stopping:
                sender.drain(self.config.smtp.drain_timeout, stop=self.stop_event)
            return status

    def _run(self, *, once: bool) -> int:
        box = self.mailbox
        failures = 0
        try:
            while not self.stopping:
                summary = self.poll()
                if summary.standby:
                    if once:
                        log.warning("%s: served by another worker; this pass leaves it alone",
                                    self.name)
                        return 0
                    self._sleep_for(self.standby_interval)
                    continue
                if summary.failed:
                    error = self.last_error
                    if once and isinstance(error, SourceError) and error.permanent:
                        # a wrong password, a certificate that does not verify: say so now,
                        # not after the back-off
                        raise error
                    failures += 1
                    if once and failures >= box.once_attempts:
                        log.error("%s: giving up after %d attempts: %s", self.name, failures,
                                  summary.failure)
                        return 1
                    delay = self.backoff(failures)
                    log.warning("%s: reconnecting in %.1f s (attempt %d)", self.name, delay,
                                failures + 1)
                    self._sleep_for(delay)
                    continue
                failures = 0
                if once or self.stopping:
                    return 1 if summary.errors else 0
                if not self._wait_for_mail(box.poll_interval):
                    self._sleep_for(box.poll_interval)
            return 0
        finally:
            self._end_session(quiet=True)
            self._release()

    @property
    def standby_interval(self) -> float:
        """Seconds between two attempts of a standby to take the mailbox over: at most 5,
        so that it takes over within seconds of the worker that served it dying."""
        return max(0.05, min(self.mailbox.poll_interval, 5.0))

    # -- one worker per mailbox ----------------------------------------------------------------

    def _claim(self) -> bool:
        """Take (or keep) the store's lock of this mailbox; False while another worker holds
        it. A state without locks (an integrator's) always lets this worker serve. Raises
        StoreError when the store cannot be asked."""
        state = self.connector.state
        got = not isinstance(state, MailboxLocks) or bool(state.lock_mailbox(self.name))
        if got != self.serving:
            if got:
                log.info("%s: serving this mailbox", self.name)
            else:
                log.info("%s: standing by, another worker serves this mailbox", self.name)
        self.serving = got
        return got

    def _still_serving(self) -> bool:
        state = self.connector.state
        return not isinstance(state, MailboxLocks) or bool(state.holds_mailbox(self.name))

    def _release(self) -> None:
        """Hand the mailbox over at once when this worker stops (not after a time-out)."""
        state = self.connector.state
        if isinstance(state, MailboxLocks) and self.serving:
            with contextlib.suppress(StoreError):
                state.unlock_mailbox(self.name)
        self.serving = None

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failed polls: doubling, capped,
        with jitter so that many connectors do not hammer a recovering server in step."""
        box = self.mailbox
        delay = min(box.reconnect_max_delay, box.reconnect_delay * 2.0 ** (failures - 1))
        return delay * self._rng.uniform(0.5, 1.0)

    # -- sessions ----------------------------------------------------------------------------

    def _session(self) -> MailSession:
        """The open session, or a new one (connected and logged in)."""
        if self._box is None or not self._box.connected:
            self._end_session(quiet=True)
            box = self.mailbox.open_session()
            box.__enter__()
            self._box = box
        return self._box

    def _end_session(
        self, exc: BaseException | None = None, *, quiet: bool = False
    ) -> None:
        """Leave the session (POP3: QUIT, which applies the DELEs). With ``exc`` (an error
        is on its way) or ``quiet``, a failing logout changes nothing and raises nothing."""
        box, self._box = self._box, None
        if box is None:
            return
        if exc is None and not quiet:
            box.__exit__(None, None, None)
            return
        error: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
        error = (type(exc), exc, exc.__traceback__) if exc is not None else (None, None, None)
        try:
            box.__exit__(*error)
        except (SourceError, StoreError) as failure:
            log.debug("%s: logout failed: %s", self.mailbox.name, failure)

    def _wait_for_mail(self, seconds: float) -> bool:
        """Wait on the open session for new mail (IMAP IDLE); False when it cannot wait, in
        which case the session is closed and the caller sleeps. A fault while waiting
        closes the session and costs a back-off before the next poll reconnects."""
        box = self._box
        if not isinstance(box, IdleMailSession) or not box.connected:
            self._end_session(quiet=True)
            return False
        try:
            waited = bool(box.wait_for_mail(seconds, self.stop_event))
        except SourceError as exc:
            self._end_session(exc)
            self._idle_failures += 1
            delay = self.backoff(self._idle_failures)
            log.warning("%s: %s; reconnecting in %.1f s", self.name, exc, delay)
            self._sleep_for(delay)
            return True
        self._idle_failures = 0
        if not waited:
            self._end_session(quiet=True)
        return waited

    # -- one poll ----------------------------------------------------------------------------

    def poll(self) -> PollSummary:
        """Handle every message, in one pass or several; logs and returns the summary.
        When another worker serves the mailbox (holds the store's lock of it), returns at
        once with ``standby`` set, having touched nothing."""
        tally: Counter[str] = Counter()
        progress = _Progress(started=self._clock())
        failure = ""
        try:
            if not self._claim():
                self._end_session(quiet=True)
                return PollSummary(standby=True)
            while self._pass(tally, progress):
                log.debug("next pass: what is done is acknowledged, the rest follows")
        except (SourceError, StoreError) as exc:
            self._end_session(exc)
            self.last_error = exc
            failure = str(exc)
            tally["errors"] += 1
        self._flush_outbox()
        summary = PollSummary.from_tally(
            tally, seconds=self._clock() - progress.started, failure=failure
        )
        if summary.failed:
            log.warning("%s: %s", self.name, summary.line())
        else:
            log.info("%s: %s", self.name, summary.line())
        return summary

    def _pass(self, tally: Counter[str], progress: _Progress) -> bool:
        """List, handle the new messages, acknowledge the finished ones in one batch.

        POP3 applies deletions only at QUIT, so a DELE sent the moment a message is done
        is no safer than one sent just before QUIT; batching saves a round trip per message.
        A pass ends after ``messages_per_session`` fetched messages (True is returned and
        the caller starts the next), so that a long backlog frees the mailbox as it goes
        instead of all at the end. A session that cannot wait for mail is closed after
        every pass (POP3: QUIT applies the DELEs; the next pass reconnects).
        """
        box = self._session()
        ids = list(box.message_ids())
        if ids:
            log.debug("%s: %d messages on the server", box.name, len(ids))
        progress.begin_session(len(ids))
        known = self.connector.state.processed_uidls(box.name, ids)
        fresh = [i for i in ids if i not in known]
        wanted = fresh[: self.messages_per_session]
        # The source reads ahead of processing: the server sends the next messages while
        # this one is processed, and the kernel's socket buffer holds them.
        fetched = box.fetch(wanted)
        finished: list[tuple[str, OutcomeKind]] = []
        try:
            if not box.keeps_messages:
                finished += self._owed(box, [i for i in ids if i in known])
            tally["known"] += len(ids) - len(fresh)
            progress.done += len(ids) - len(fresh)
            self._handle_all(box, fresh, wanted=set(wanted), fetched=fetched,
                             finished=finished, tally=tally, progress=progress)
        except (SourceError, StoreError):
            _close(fetched)
            # Whatever is done and recorded may still be acknowledged if the session is
            # usable (a -ERR); it is only an optimisation. With the store down, the log
            # cannot vouch for anything, so nothing is.
            if box.connected:
                with contextlib.suppress(SourceError, StoreError):
                    self._acknowledge(box, finished, tally)
            raise
        finally:
            _close(fetched)  # reads the replies still in flight: acknowledgements come next
        if box.keeps_messages:
            # Processed mail stays; only failed mail may be put aside (quarantine_folder).
            finished = [(i, k) for i, k in finished if k is OutcomeKind.QUARANTINED]
        self._acknowledge(box, finished, tally)
        if not isinstance(box, IdleMailSession):
            self._end_session()
        return len(fresh) > self.messages_per_session and not self.stopping

    def _owed(self, box: MailSession, known: list[str]) -> list[tuple[str, OutcomeKind]]:
        """The messages an earlier pass processed but did not get to acknowledge (a crash,
        a dropped connection), with the outcome kind the log has for each."""
        owed = []
        for uid in known:
            record = self.connector.state.processed_uidl(box.name, uid)
            if record is not None:
                owed.append((uid, record.outcome.kind))
        return owed

    def _handle_all(
        self,
        box: MailSession,
        fresh: list[str],
        *,
        wanted: set[str],
        fetched: Iterator[tuple[str, bytes]],
        finished: list[tuple[str, OutcomeKind]],
        tally: Counter[str],
        progress: _Progress,
    ) -> None:
        """Handle the fetched messages in order; ``finished`` gets those to acknowledge once
        the log vouches for them (see :meth:`_acknowledge`)."""
        handled = 0
        try:
            for uid, raw in fetched:
                if self.stopping:
                    break
                if uid not in wanted:  # a bug, not a server fault: never process one as another
                    raise RuntimeError(f"fetched {uid}, which was not asked for")
                if not self._still_serving():
                    # The store connection that held the mailbox's lock was lost: another
                    # worker may be serving it now. Stop here; what is done stays done.
                    raise StoreError(f"{self.name}: the lock of this mailbox was lost")
                kind = self._handle(box, uid, raw, tally)
                if kind is not None:
                    finished.append((uid, kind))
                handled += 1
                self._progress(progress)
        finally:
            if self.stopping:
                tally["remaining"] += len(fresh) - handled

    def _acknowledge(
        self, box: MailSession, finished: list[tuple[str, OutcomeKind]], tally: Counter[str]
    ) -> None:
        """Acknowledge (POP3: DELE, IMAP: move or delete) the finished messages the processed
        log has an outcome for, under this mailbox and id.

        The log is asked once for the whole batch, right before the acknowledgements: what
        it cannot vouch for is never removed, it stays for the next poll.
        """
        if not finished:
            return
        vouched = self.connector.state.processed_uidls(box.name, [i for i, _ in finished])
        doomed = [(uid, kind) for uid, kind in finished if uid in vouched]
        for uid, _ in finished:
            if uid not in vouched:
                log.error("%s: %s: no outcome recorded under this UIDL; keeping the message",
                          self.name, uid)
                tally["errors"] += 1
        if not doomed:
            return
        refused = box.acknowledge(doomed)
        tally["deleted"] += len(doomed) - len(refused)
        for uid, reason in refused:
            log.error("%s: %s: the server refused to remove it (%s); it stays for the next "
                      "poll", self.name, uid, reason)
        if refused:
            raise SourceError(
                f"{box.kind.upper()} {box.name}: {len(refused)} of {len(doomed)} messages "
                "could not be removed"
            )

    def _flush_outbox(self) -> None:
        """Retry mail an earlier pass could not send (SMTP down), even when no new mail came:
        the connector otherwise sends only after processing a message."""
        try:
            self.connector.send_queued()
        except StoreError as exc:  # the next pass tries again; the poll itself went fine
            log.warning("%s: could not read the outbox: %s", self.name, exc)

    def _handle(
        self, box: MailSession, uid: str, raw: bytes, tally: Counter[str]
    ) -> OutcomeKind | None:
        """Process one fetched message; its outcome kind when processing returned one (the
        log is asked whether it is durable under this id before the acknowledgement)."""
        tally["fetched"] += 1
        source = SourceRef(kind=box.kind, name=box.name, uidl=uid)
        try:
            outcome = self.connector.process(raw, source)
        except StoreError:
            raise  # the store is down: stop this poll, nothing more is acknowledged
        except Exception:
            # process() quarantines bad mail itself; this is a failure of the quarantine or
            # a bug. The message stays on the server and is tried again next poll.
            log.exception("%s: %s: processing failed; the message stays on the server",
                          self.name, uid)
            tally["errors"] += 1
            return None
        tally[_COLUMN[outcome.kind]] += 1
        if log.isEnabledFor(logging.INFO):
            log.info("%s: %s", self.name, _message_line(uid, outcome))
        if self.on_outcome is not None:
            self.on_outcome(source, outcome)
        return outcome.kind

    def _progress(self, progress: _Progress) -> None:
        progress.done += 1
        now = self._clock()
        if now - progress.last < self.progress_interval or progress.done == progress.total:
            return
        rate = progress.done / (now - progress.started) if now > progress.started else 0.0
        log.info("%s: progress: %d of %d messages (%.1f/s)", self.name, progress.done,
                 progress.total, rate)
        progress.last = now

    # -- stopping ----------------------------------------------------------------------------

    def _interruptible_sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)


def _the_mailbox(config: Config, connector: Connector) -> Mailbox:
    """The one mailbox the plugins (built-ins: ``[pop3]``, ``[imap]``) register."""
    boxes: Sequence[Mailbox] = connector.host.sources(
        config, getattr(connector, "credentials", None))
    if not boxes:
        raise ConfigError("no mailbox to read: give [pop3] or [imap] a host", key="pop3.host")
    if len(boxes) > 1:
        names = ", ".join(f"{b.kind} {b.name}" for b in boxes)
        raise ConfigError(f"a Runner serves one mailbox (a Service serves several); this "
                          f"configuration has {names}")
    return boxes[0]


def _close(fetched: Iterable[object]) -> None:
    close = getattr(fetched, "close", None)
    if callable(close):
        close()


class Service:
    """Serves every configured mailbox at once: ``commit-email run``.

    Each mailbox gets a :class:`Runner` with a connector (and so a store connection) of its
    own from ``connector_factory``, in a thread of its own: one mailbox whose server is down
    backs off alone while the others go on. With a PostgreSQL store, a worker serves only the
    mailboxes whose lock it holds and stands by for the others; several ``run`` processes on
    one store and config are each other's standby. ``stop`` (from any thread) ends every
    mailbox after the message in hand.

    ``connector_factory(config)`` makes a connector with a store connection of its own
    (:meth:`Connector.from_config` does); its plugins say which mailboxes there are.

    With ``processes``, several mailboxes are served by one worker *process* each instead
    of threads, so that parsing mail uses every core (threads share one interpreter lock):
    the processes are started with ``spawn`` (no ``fork``: it works the same on Windows),
    so ``config`` and ``connector_factory`` must be picklable (a module-level function)
    and the plugins come from entry points, as the worker builds its own connector.
    ``process_setup(stop)`` runs first in each worker (the CLI sets up logging and
    signals there); a worker whose parent dies stops after the message in hand. Outcomes
    reach ``on_outcome`` in this process.
    """

    def __init__(
        self,
        config: Config,
        connector_factory: Callable[[Config], Connector],
        *,
        stop: threading.Event | None = None,
        on_outcome: Callable[[SourceRef, Outcome], None] | None = None,
        runner_factory: Callable[..., Runner] = Runner,
        sleep: Callable[[float], None] | None = None,
        processes: bool = False,
        process_setup: Callable[[threading.Event], None] | None = None,
    ) -> None:
        self.config = config
        self.processes = processes
        self.process_setup = process_setup
        self.connector_factory = connector_factory
        self.stop_event = stop if stop is not None else threading.Event()
        self.on_outcome = on_outcome
        self.runner_factory = runner_factory
        self._sleep = sleep or self.stop_event.wait
        #: mailbox name -> why its ``run --once`` pass failed
        self.failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def request_stop(self) -> None:
        self.stop_event.set()

    def run(self, *, once: bool = False) -> int:
        """Serve every mailbox until stopped (or one pass each with ``once``); the exit
        status is 1 when any mailbox's pass failed (``failures`` says which and why).

        The mailboxes are those the plugins register (built-ins: ``[pop3]``/``[[pop3]]``,
        ``[imap]``). With one mailbox this is :meth:`Runner.run` in the calling thread,
        errors and all (a refused password raises ``LoginError`` with ``once``)."""
        first = self._connector(self.config, once=once)
        if first is None:
            return 0  # stopped while the store was unreachable
        try:
            boxes = list(first.host.sources(self.config, getattr(first, "credentials", None)))
        except BaseException:
            _close_store(first)
            raise
        names = [b.name for b in boxes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if not boxes or duplicates:
            _close_store(first)
            if not boxes:
                raise ConfigError("no mailbox to read: give [pop3] or [imap] a host",
                                  key="pop3.host")
            raise ConfigError(f"two mailboxes are named {duplicates[0]!r}; give each a name "
                              "of its own")
        if len(boxes) == 1:
            return self._serve(boxes[0], first, once=once)
        url = self.config.store.url
        if url == "memory:" or ":memory:" in url:
            _close_store(first)
            raise ConfigError("a memory: store cannot be shared by several mailboxes (each "
                              "would get its own, lost at exit)", key="store.url")
        if self.processes:
            _close_store(first)
            return self._report(names, self._run_processes(names, once=once))
        statuses: dict[str, int] = {}
        threads = [
            threading.Thread(target=self._serve_in_thread,
                             args=(box, first if i == 0 else None, once, statuses),
                             name=f"commit-email {box.name}", daemon=True)
            for i, box in enumerate(boxes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # a short join keeps the main thread able to take signals
        return self._report(names, statuses)

    def _report(self, names: list[str], statuses: dict[str, int]) -> int:
        failed = [n for n in names if statuses.get(n, 1) != 0]
        if failed:
            log.error("%d of %d mailboxes failed: %s", len(failed), len(names),
                      "; ".join(f"{n}: {self.failures.get(n, 'errors in the pass')}"
                                for n in failed))
            return 1
        return 0

    def _run_processes(self, names: list[str], *, once: bool) -> dict[str, int]:
        """One spawned worker process per mailbox; a worker that dies without reporting is
        started again (not with ``once``: its mailbox has failed then)."""
        pool = _WorkerPool(self, once=once)
        for name in names:
            pool.start(name)
        try:
            while pool.running or pool.restart_at:
                if self.stop_event.is_set():
                    pool.stop_all()
                    pool.restart_at.clear()
                pool.drain()
                pool.reap()
                for name, when in list(pool.restart_at.items()):
                    if time.monotonic() >= when:
                        del pool.restart_at[name]
                        pool.start(name)
                self.stop_event.wait(0.1)
        finally:
            pool.close()
        return pool.statuses


    def _serve_in_thread(self, box: Mailbox, connector: Connector | None, once: bool,
                         statuses: dict[str, int]) -> None:
        status = 1
        try:
            if connector is None:
                connector = self._connector(self.config, once=once)
            status = 0 if connector is None else self._serve(box, connector, once=once)
        except Exception as exc:  # one mailbox's failure never stops the others
            self._fail(box.name, str(exc) or type(exc).__name__)
            if isinstance(exc, SourceError | StoreError | ConfigError):
                log.error("%s: %s", box.name, exc)
            else:
                log.exception("%s: the worker stopped on an error", box.name)
        finally:
            with self._lock:
                statuses[box.name] = status

    def _fail(self, name: str, why: str) -> None:
        with self._lock:
            self.failures[name] = why

    def _connector(self, config: Config, *, once: bool) -> Connector | None:
        """A connector of its own (and so a store connection), retried with back-off while
        the store cannot be opened; None when stopped meanwhile."""
        schedule = config.pop3
        attempts = 0
        while not self.stop_event.is_set():
            try:
                return self.connector_factory(config)
            except StoreError as exc:
                attempts += 1
                if once and attempts >= schedule.once_attempts:
                    raise
                delay = min(schedule.reconnect_max_delay,
                            schedule.reconnect_delay * 2.0 ** (attempts - 1))
                log.warning("cannot open the store (%s); again in %.1f s", exc, delay)
                self._sleep(delay)
        return None

    def _serve(self, box: Mailbox, connector: Connector, *, once: bool) -> int:
        try:
            runner = self.runner_factory(self.config, connector, mailbox=box,
                                         stop=self.stop_event, on_outcome=self.on_outcome)
            status = int(runner.run(once=once))
            if status and once:
                error = runner.last_error
                self._fail(box.name, str(error) if error else "errors in the pass")
            return status
        finally:
            _close_store(connector)


class _WorkerPool:
    """The worker processes of a :class:`Service` with ``processes``, and their reports."""

    def __init__(self, service: Service, *, once: bool) -> None:
        self.service = service
        self.once = once
        self.ctx = multiprocessing.get_context("spawn")
        # A pipe per worker, not a multiprocessing.Event: Event.set() waits for every
        # waiter to wake, and hangs for good on a waiter whose process was killed.
        self.stopping = False
        self.stoppers: dict[str, Any] = {}
        self.results: Any = self.ctx.Queue()
        self.outcomes: Any = self.ctx.Queue() if service.on_outcome is not None else None
        self.statuses: dict[str, int] = {}
        self.running: dict[str, Any] = {}
        self.restart_at: dict[str, float] = {}
        #: name -> (when its worker started, how many times in a row it died young)
        self.started: dict[str, tuple[float, int]] = {}

    def start(self, name: str) -> None:
        s = self.service
        job = _WorkerJob(config=s.config, connector_factory=s.connector_factory, name=name,
                         once=self.once, setup=s.process_setup)
        reader, writer = self.ctx.Pipe(duplex=False)
        worker = self.ctx.Process(target=_serve_in_process, name=f"commit-email {name}",
                                  args=(job, reader, self.results, self.outcomes))
        worker.start()
        reader.close()  # the worker has its own copy
        self.running[name] = worker
        self.stoppers[name] = writer
        self.started[name] = (time.monotonic(), self.started.get(name, (0.0, 0))[1])

    def stop_all(self) -> None:
        """Tell every worker to stop after the message in hand."""
        if self.stopping:
            return
        self.stopping = True
        for writer in self.stoppers.values():
            with contextlib.suppress(OSError):
                writer.send(True)

    def drain(self, timeout: float = 0.0) -> None:
        """Hand on the outcomes and record the reports that arrived."""
        while self.outcomes is not None:
            try:
                source, outcome = self.outcomes.get_nowait()
            except Empty:
                break
            if self.service.on_outcome is not None:
                self.service.on_outcome(source, outcome)
        while True:
            try:
                name, status, why = (self.results.get(timeout=timeout) if timeout
                                     else self.results.get_nowait())
            except Empty:
                break
            self.statuses[name] = status
            if why:
                self.service._fail(name, why)

    def reap(self) -> None:
        """Note the workers that ended; one that ended without a report failed."""
        for name, worker in list(self.running.items()):
            if worker.is_alive():
                continue
            worker.join()
            del self.running[name]
            if name not in self.statuses:
                self.drain(timeout=0.5)  # what it reported just before it ended
            if name in self.statuses:
                continue
            why = f"the worker process ended with exit code {worker.exitcode}"
            if self.once or self.stopping:
                self.statuses[name] = 1
                self.service._fail(name, why)
            else:
                # Again at once (the other mailboxes' workers are unaffected), but a worker
                # that keeps dying young waits longer each time, up to a minute.
                began, young = self.started[name]
                young = young + 1 if time.monotonic() - began < 60 else 1
                self.started[name] = (began, young)
                delay = min(60.0, 0.5 * 2.0 ** (young - 1))
                log.error("%s: %s; starting it again in %.1f s", name, why, delay)
                self.restart_at[name] = time.monotonic() + delay

    def close(self) -> None:
        self.stop_all()
        for worker in self.running.values():
            worker.join(30)
            if worker.is_alive():
                worker.kill()
        self.drain()


@frozen(kw_only=True)
class _WorkerJob:
    """What a worker process is given (pickled: spawn starts a fresh interpreter)."""

    config: Config
    connector_factory: Callable[[Config], Connector]
    name: str
    once: bool
    setup: Callable[[threading.Event], None] | None

def _serve_in_process(job: _WorkerJob, stopper: Any, results: Any, outcomes: Any) -> None:
    """A worker process of :class:`Service`: serves the mailbox ``name`` and reports
    ``(name, status, why)``. It stops when the service does, and when its parent dies (a
    killed ``run`` must not leave workers holding its mailboxes)."""
    config, name, once = job.config, job.name, job.once
    local_stop = threading.Event()
    if job.setup is not None:
        job.setup(local_stop)
    parent = multiprocessing.parent_process()

    def follow() -> None:
        """Stop when the service says so, or when it is gone (a killed ``run`` must not
        leave its workers serving its mailboxes)."""
        waited = [stopper] if parent is None else [stopper, parent.sentinel]
        ready = multiprocessing.connection.wait(waited)
        if stopper not in ready:
            log.warning("%s: the service process ended; stopping after the message in hand",
                        name)
        local_stop.set()

    threading.Thread(target=follow, daemon=True).start()
    send = None if outcomes is None else (lambda s, o: outcomes.put((s, o)))
    service = Service(config, job.connector_factory, stop=local_stop, on_outcome=send)
    status, why = 1, ""
    try:
        connector = service._connector(config, once=once)
        if connector is None:
            status = 0
        else:
            boxes = [b for b in connector.host.sources(config, connector.credentials)
                     if b.name == name]
            if not boxes:
                _close_store(connector)
                raise ConfigError(f"no mailbox named {name!r} in this worker's configuration")
            status = service._serve(boxes[0], connector, once=once)
            why = service.failures.get(name, "")
    except Exception as exc:  # reported to the service, which names the mailbox
        why = str(exc) or type(exc).__name__
        if isinstance(exc, SourceError | StoreError | ConfigError):
            log.error("%s: %s", name, exc)
        else:
            log.exception("%s: the worker stopped on an error", name)
    results.put((name, status, why))
    results.close()
    results.join_thread()
    if outcomes is not None:
        outcomes.close()
        outcomes.join_thread()


def _close_store(connector: Connector) -> None:
    if isinstance(connector.state, Closable):
        with contextlib.suppress(Exception):
            connector.state.close()


class _Progress:
    """Messages handled in one poll, across its sessions, for the ``progress:`` lines."""

    def __init__(self, *, started: float) -> None:
        self.started = started
        self.last = started
        self.done = 0
        self.total = 0

    def begin_session(self, listed: int) -> None:
        # A new session lists only what is still on the server (the rest was deleted).
        self.total = self.done + listed


def _message_line(uidl: str, outcome: Outcome) -> str:
    ticket = f" ticket={outcome.ticket}" if outcome.ticket else ""
    detail = f" ({outcome.detail})" if outcome.detail else ""
    return f"{uidl} {outcome.kind.value} <{outcome.message_id or '-'}>{ticket}{detail}"
