"""``commit-email run``: poll the POP3 mailbox and process every message exactly once.

Per poll, one session (or several, see below): connect, list UIDLs, and for each message

1. if the processed log already has an outcome for (mailbox, UIDL), skip it: it was
   handled by an earlier poll that did not get to delete it (crash, dropped connection,
   ``leave_on_server``), so only the DELE is still owed;
2. otherwise read it (its RETR went out ahead, pipelined, so the server sent it while
   the message before was processed) and hand it to :meth:`Connector.process`, which records
   the outcome (with mailbox and UIDL) in the same transaction as every write it caused,
   or quarantines the message byte-for-byte when processing fails;
3. note it as finished (unless ``leave_on_server``);

then ask the log once which finished UIDLs it has an outcome for, send their DELEs in one
(pipelined) batch and QUIT, which is when the server applies them. A DELE sent right after
each message would be no safer: nothing is deleted before QUIT either way. A session ends
after ``pop3.messages_per_session`` fetched messages and the poll reconnects, so a long
backlog frees the mailbox as it goes. A crash or dropped connection anywhere re-delivers
some messages on the next poll, and step 1 (or the connector's Message-ID digest) turns
them into no-ops: no message is lost and none is processed twice. Network and server
errors end the poll; the next one is tried after an exponential, jittered and capped
back-off. ``request_stop()`` (or setting the ``stop`` event from any thread) ends the run
after the message in hand, then the DELE batch and QUIT; the CLI maps SIGTERM/SIGINT onto it,
the library installs no signal handler. See docs/explanation/delivery-guarantees.md.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from attrs import frozen

from .config import Config
from .errors import SourceError, StoreError
from .model import Outcome, OutcomeKind, SourceRef
from .pipeline import Connector
from .pop3 import LoginError, Pop3Mailbox

__all__ = ["PollSummary", "Runner"]

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

    @classmethod
    def from_tally(cls, tally: Counter[str], *, seconds: float, failure: str) -> PollSummary:
        return cls(**tally, seconds=seconds, failure=failure)

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
    """Polls one POP3 mailbox into one connector. Build it, then call :meth:`run`."""

    def __init__(
        self,
        config: Config,
        connector: Connector,
        *,
        mailbox_factory: Callable[[], Pop3Mailbox] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = 10.0,
        messages_per_session: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.connector = connector
        self._mailbox_factory = mailbox_factory or (lambda: Pop3Mailbox.from_config(config))
        self._sleep_for = sleep if sleep is not None else self._interruptible_sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self.progress_interval = progress_interval
        #: QUIT (applying the deletions) and reconnect after this many fetched messages
        self.messages_per_session = max(1, messages_per_session or config.pop3.messages_per_session)
        #: Set to stop after the message in hand (from any thread). The library installs no
        #: signal handler: the CLI maps SIGTERM/SIGINT onto this event, a host its own way.
        self.stop_event = stop if stop is not None else threading.Event()
        self.last_error: Exception | None = None

    # -- control -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self) -> None:
        """Finish the message in hand, QUIT, and return from :meth:`run` (from any thread)."""
        self.stop_event.set()

    def run(self, *, once: bool = False) -> int:
        """Poll until stopped (or one complete pass with ``once``); returns an exit status.

        With ``once``, a pass cut short by a connection fault is retried (with back-off) up
        to ``pop3.once_attempts`` times; the status is 1 when it never completed or when
        the completed pass had errors. A refused login ends ``once`` at once (raising the
        :class:`LoginError`); the endless mode keeps retrying it with back-off, since a
        password can be fixed on the server while the connector waits.
        """
        failures = 0
        while not self.stopping:
            summary = self.poll()
            if summary.failed:
                error = self.last_error
                if once and isinstance(error, LoginError) and error.permanent:
                    raise error  # a wrong password: say so now, not after the back-off
                failures += 1
                if once and failures >= self.config.pop3.once_attempts:
                    log.error("giving up after %d attempts: %s", failures, summary.failure)
                    return 1
                delay = self.backoff(failures)
                log.warning("reconnecting in %.1f s (attempt %d)", delay, failures + 1)
                self._sleep_for(delay)
                continue
            failures = 0
            if once or self.stopping:
                return 1 if summary.errors else 0
            self._sleep_for(self.config.pop3.poll_interval)
        return 0

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failed polls: doubling, capped,
        with jitter so that many connectors do not hammer a recovering server in step."""
        cfg = self.config.pop3
        delay = min(cfg.reconnect_max_delay, cfg.reconnect_delay * 2.0 ** (failures - 1))
        return delay * self._rng.uniform(0.5, 1.0)

    # -- one poll ----------------------------------------------------------------------------

    def poll(self) -> PollSummary:
        """Handle every message, in one session or several; logs and returns the summary."""
        tally: Counter[str] = Counter()
        progress = _Progress(started=self._clock())
        failure = ""
        try:
            while self._session(tally, progress):
                log.debug("reconnecting: the deletions so far are applied, the rest follows")
        except (SourceError, StoreError) as exc:
            self.last_error = exc
            failure = str(exc)
            tally["errors"] += 1
        self._flush_outbox()
        summary = PollSummary.from_tally(
            tally, seconds=self._clock() - progress.started, failure=failure
        )
        if summary.failed:
            log.warning("%s", summary.line())
        else:
            log.info("%s", summary.line())
        return summary

    def _session(self, tally: Counter[str], progress: _Progress) -> bool:
        """Connect, handle messages, DELE the finished ones in one batch, QUIT.

        POP3 applies deletions only at QUIT, so a DELE sent the moment a message is done
        is no safer than one sent just before QUIT; batching them saves a round trip per
        message. A session ends after ``messages_per_session`` fetched messages (True is
        returned, the caller reconnects), so that a long backlog frees the mailbox as it
        goes instead of all at the end.
        """
        with self._mailbox_factory() as box:
            uidls = box.uidls()
            if uidls:
                log.debug("%s: %d messages on the server", box.name, len(uidls))
            progress.begin_session(len(uidls))
            known = self.connector.state.processed_uidls(box.name, uidls)
            fresh = [u for u in uidls if u not in known]
            wanted = fresh[: self.messages_per_session]
            # RETRs are pipelined ahead of processing: the server sends the next messages
            # while this one is processed, and the kernel's socket buffer holds them.
            fetched = box.retrieve_many(wanted)
            finished: list[str] = []
            try:
                self._handle_all(box, uidls, known=known, wanted=set(wanted), fetched=fetched,
                                 finished=finished, tally=tally, progress=progress)
            except (SourceError, StoreError):
                fetched.close()
                # Whatever is done and recorded may still be deleted if the session is
                # usable (a -ERR); it is only an optimisation. With the store down, the
                # log cannot vouch for anything, so nothing is.
                if box.connected:
                    with contextlib.suppress(SourceError, StoreError):
                        self._delete(box, finished, tally)
                raise
            finally:
                fetched.close()  # reads the replies still in flight: DELE/QUIT come next
            self._delete(box, finished, tally)
            return len(fresh) > self.messages_per_session and not self.stopping

    def _handle_all(
        self,
        box: Pop3Mailbox,
        uidls: list[str],
        *,
        known: set[str],
        wanted: set[str],
        fetched: Iterator[tuple[str, bytes]],
        finished: list[str],
        tally: Counter[str],
        progress: _Progress,
    ) -> None:
        """Handle the session's messages in the server's order, up to the last fetched one;
        ``finished`` gets those to delete once the log vouches for them (see :meth:`_delete`)."""
        leave = self.config.pop3.leave_on_server
        for done, uidl in enumerate(uidls):
            if self.stopping:
                tally["remaining"] += len(uidls) - done
                return
            if uidl in known:
                # Processed by an earlier poll that did not get to delete it (crash,
                # dropped connection, leave_on_server): only the DELE is still owed.
                tally["known"] += 1
                if not leave:
                    finished.append(uidl)
            elif uidl in wanted:
                got, raw = next(fetched)
                if got != uidl:  # a bug, not a server fault: never process one as another
                    raise RuntimeError(f"fetched {got} while {uidl} was expected")
                if self._handle(box, uidl, raw, tally) and not leave:
                    finished.append(uidl)
            else:
                continue  # beyond this session's limit: the next session fetches it
            self._progress(progress)

    def _delete(self, box: Pop3Mailbox, finished: list[str], tally: Counter[str]) -> None:
        """DELE the finished messages the processed log has an outcome for, under this
        mailbox and UIDL (pipelined if the server allows); QUIT applies them.

        The log is asked once for the whole batch, right before the DELEs: what it cannot
        vouch for is never deleted, it stays for the next poll.
        """
        if not finished:
            return
        vouched = self.connector.state.processed_uidls(box.name, finished)
        doomed = [uidl for uidl in finished if uidl in vouched]
        for uidl in finished:
            if uidl not in vouched:
                log.error("%s: no outcome recorded under this UIDL; keeping the message", uidl)
                tally["errors"] += 1
        if not doomed:
            return
        refused = box.delete_many(doomed)
        tally["deleted"] += len(doomed) - len(refused)
        for uidl, reason in refused:
            log.error("%s: DELE refused (%s); the message stays for the next poll", uidl, reason)
        if refused:
            raise SourceError(
                f"POP3 {box.name}: DELE refused for {len(refused)} of {len(doomed)} messages"
            )

    def _flush_outbox(self) -> None:
        """Retry mail an earlier pass could not send (SMTP down), even when no new mail came:
        the connector otherwise flushes only after processing a message."""
        try:
            self.connector.flush_outbox()
        except StoreError as exc:  # the next pass tries again; the poll itself went fine
            log.warning("could not read the outbox: %s", exc)

    def _handle(self, box: Pop3Mailbox, uidl: str, raw: bytes, tally: Counter[str]) -> bool:
        """Process one fetched message; True when processing returned an outcome (the log
        is asked whether it is durable under this UIDL before the DELE)."""
        tally["fetched"] += 1
        source = SourceRef(kind="pop3", name=box.name, uidl=uidl)
        try:
            outcome = self.connector.process(raw, source)
        except StoreError:
            raise  # the store is down: stop this poll, nothing more is deleted
        except Exception:
            # process() quarantines bad mail itself; this is a failure of the quarantine or
            # a bug. The message stays on the server and is tried again next poll.
            log.exception("%s: processing failed; the message stays on the server", uidl)
            tally["errors"] += 1
            return False
        tally[_COLUMN[outcome.kind]] += 1
        if log.isEnabledFor(logging.INFO):
            log.info("%s", _message_line(uidl, outcome))
        return True

    def _progress(self, progress: _Progress) -> None:
        progress.done += 1
        now = self._clock()
        if now - progress.last < self.progress_interval or progress.done == progress.total:
            return
        rate = progress.done / (now - progress.started) if now > progress.started else 0.0
        log.info("progress: %d of %d messages (%.1f/s)", progress.done, progress.total, rate)
        progress.last = now

    # -- stopping ----------------------------------------------------------------------------

    def _interruptible_sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)


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
