"""Sending the outbox: every row is claimed before it is sent, inline or beside processing.

Two ways to send, one set of rules (:class:`Outbox`):

- :func:`flush` sends in the calling thread, one session: ``Connector.flush_outbox`` and,
  when nothing else is set up, after every processed message.
- :class:`BackgroundSender` sends from threads of its own while the pipeline processes:
  ``commit-email run`` and ``process`` use it, so a message is never kept waiting for SMTP.
  One dispatcher thread claims rows and records their results through a store connection of
  its own; ``smtp.connections`` lane threads each keep one SMTP session (pipelined when the
  server offers it) and send what the dispatcher hands them, in order.

The rules:

- A row is **claimed** (``ConnectorState.claim_mail``) before it is sent, for a lease that
  the sender renews while it works; two senders (threads, processes, machines on one
  store) never send the same row. A sender killed with ``kill -9`` leaves its claims to
  expire: after :data:`LEASE` the next sender takes them (and sends again the few that were
  in flight: at least once, with their Message-ID, so a receiver can de-duplicate).
- A mail is **marked sent only after the server replied to its DATA**; a failure is recorded
  at once (``mark_mail_failed``: ``smtp.max_attempts``, ``smtp.retry_interval`` and
  permanent failures as documented). Mails claimed but never tried are released, not
  counted as an attempt.
- When the server cannot be reached (no SMTP reply at all), nothing is tried for
  ``smtp.retry_interval``: a backlog processed during an outage does not pay a connection
  attempt per message.
- **Order**: mails to one customer address are handed to the server in the order they
  were queued: a mail goes to the lane already sending to any of its recipients. The
  connector's own addresses (``internal_address``, ``public_address``, ``response_bcc``)
  are left out of that rule: they get a stream of unrelated forwards and copies, which go
  out in parallel. No SMTP relay delivers in submission order anyway (it delivers its
  queue in parallel), so order at the relay is all a sender can keep, and it matters for
  what one person reads one after the other. A mail that failed and waits for
  ``retry_interval`` does not hold back the mail behind it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from .config import Config
from .errors import CommitEmailError, MailerError, StoreError
from .model import OutgoingMail, utcnow
from .outgoing import replied_to
from .protocols import BatchMailer, Closable, ConnectorState, Mailer, QueuedMail

__all__ = [
    "LEASE",
    "BackgroundSender",
    "Outbox",
    "flush",
    "inline_lease",
    "new_owner",
    "send_each",
]

log = logging.getLogger("commit_email.sender")

#: How long a claim of the sender beside processing holds without being renewed: what the
#: mail a killed sender had claimed waits for. Its dispatcher renews every few seconds,
#: whatever the SMTP sessions are doing.
LEASE = timedelta(seconds=30)


def inline_lease(config: Config) -> timedelta:
    """The lease of :func:`flush`, which renews only between two mails: longer than one
    mail can take (each SMTP wait is bounded by ``smtp.timeout``)."""
    return max(LEASE, timedelta(seconds=2 * config.smtp.timeout + 10))
#: Mails loaded from the outbox at a time by :func:`flush`.
_FLUSH_BATCH = 50
#: Mails a lane holds ahead of the one it sends (enough to keep a pipelined session busy).
_DEPTH = 4


def new_owner() -> str:
    """A name for one sender, unique across processes and machines."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _unreachable(error: MailerError) -> bool:
    """No SMTP reply at all (refused, timed out, dropped): the server, not the mail."""
    return error.code is None and not error.permanent


class Outbox:
    """One sender's dealings with the outbox in ``state``: claims, results, rests."""

    def __init__(self, config: Config, state: ConnectorState, *, owner: str | None = None,
                 lease: timedelta = LEASE) -> None:
        self.config = config
        self.state = state
        self.owner = owner or new_owner()
        self.lease = lease
        #: after the SMTP server could not be reached, nothing is tried until then
        self.resumes: datetime | None = None
        self._claims_end: datetime | None = None

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.config.smtp.retry_interval)

    def resting(self, now: datetime) -> bool:
        return self.resumes is not None and now < self.resumes

    def rest(self, now: datetime) -> None:
        self.resumes = now + self.interval
        log.info("the SMTP server cannot be reached: the outbox rests until %s",
                 self.resumes.isoformat(timespec="seconds"))

    def claim(self, limit: int, now: datetime) -> Sequence[QueuedMail]:
        """Due mail for this sender (at most ``limit``), oldest first; renews its claims."""
        until = now + self.lease
        claimed = self.state.claim_mail(owner=self.owner, now=now, until=until,
                                        tried_before=now - self.interval, limit=limit)
        self._claims_end = until
        return claimed

    def renew_if_due(self, now: datetime) -> None:
        """Renew the claims once a quarter of the lease has passed since the last time."""
        if self._claims_end is not None and self._claims_end - now < self.lease * 3 / 4:
            self.claim(0, now)

    def sent(self, mail_ids: Iterable[int]) -> None:
        with self.state.transaction():
            for mail_id in mail_ids:
                self.state.mark_mail_sent(mail_id)

    def release(self, mail_ids: Iterable[int]) -> None:
        ids = list(mail_ids)
        if ids:
            with self.state.transaction():
                self.state.release_mail(self.owner, ids)

    def failed(self, entry: QueuedMail, exc: MailerError) -> bool:
        """Record a failed send; True when the mail is given up (kept, never sent again)."""
        attempts = entry.attempts + 1
        cap = self.config.smtp.max_attempts
        permanent = exc.permanent
        error = str(exc)
        if not permanent and cap and attempts >= cap:
            permanent = True
            error = f"gave up after {attempts} attempts: {error}"
        with self.state.transaction():
            self.state.mark_mail_failed(entry.id, error, give_up=permanent)
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


def send_each(
    mailer: Mailer, mails: Iterable[OutgoingMail]
) -> Iterator[tuple[OutgoingMail, MailerError | None]]:
    """``mailer.send_many(mails)`` when it has it; else ``send`` one mail after the other,
    stopping after a failure without an SMTP reply (the server cannot be reached)."""
    if isinstance(mailer, BatchMailer):
        yield from mailer.send_many(mails)
        return
    for mail in mails:
        try:
            mailer.send(mail)
        except MailerError as exc:
            yield mail, exc
            if _unreachable(exc):
                return
            continue
        yield mail, None


def flush(outbox: Outbox, mailer: Mailer, now: datetime) -> int:
    """Send due mail in this thread, oldest first, over ``mailer``; returns how many went.

    Each mail is tried at most once per call. When the server cannot be reached, the call
    ends and the outbox rests for ``smtp.retry_interval``."""
    if outbox.resting(now):
        return 0
    sent = 0
    tried: set[int] = set()
    while batch := outbox.claim(_FLUSH_BATCH, now):
        again = [e.id for e in batch if e.id in tried]
        fresh = [e for e in batch if e.id not in tried]
        outbox.release(again)
        if not fresh:
            break
        entries = {id(e.mail): e for e in fresh}
        answered: set[int] = set()
        unreachable = False

        def feed(fresh: list[QueuedMail] = fresh) -> Iterator[OutgoingMail]:
            for entry in fresh:
                outbox.renew_if_due(utcnow())
                yield entry.mail

        try:
            for mail, error in send_each(mailer, feed()):
                entry = entries[id(mail)]
                answered.add(entry.id)
                tried.add(entry.id)
                if error is None:
                    outbox.sent([entry.id])
                    sent += 1
                    continue
                outbox.failed(entry, error)
                unreachable = unreachable or _unreachable(error)
        finally:
            outbox.release(e.id for e in fresh if e.id not in answered)
        if unreachable or len(answered) < len(fresh):
            outbox.rest(now)
            break
    return sent


# Sending beside processing ---------------------------------------------------------------


class _Lane:
    """One SMTP session in a thread of its own, sending what it is handed, in order."""

    def __init__(self, index: int, mailer: Mailer, report: Callable[[tuple[Any, ...]], None],
                 *, idle_timeout: float) -> None:
        self.index = index
        self.mailer = mailer
        self.load = 0  # handed over, no result yet (the dispatcher's count)
        self._report = report
        self._idle_timeout = idle_timeout
        self._queue: deque[QueuedMail] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name=f"commit-email-smtp-{index}",
                                       daemon=True)

    def put(self, entry: QueuedMail) -> None:
        with self._cond:
            self._queue.append(entry)
            self._cond.notify()

    def take_back(self) -> list[QueuedMail]:
        """The mails handed over but not started."""
        with self._cond:
            taken = list(self._queue)
            self._queue.clear()
            return taken

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._queue and not self._stopping:
                        self._cond.wait(self._idle_timeout + 0.05)
                    if self._stopping and not self._queue:
                        return
                    idle = not self._queue
                if idle:
                    close_if_idle = getattr(self.mailer, "close_if_idle", None)
                    if close_if_idle is not None:
                        close_if_idle()
                    continue
                self._send()
        finally:
            close = getattr(self.mailer, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def _next(self) -> QueuedMail | None:
        with self._cond:
            return self._queue.popleft() if self._queue else None

    def _send(self) -> None:
        pulled: dict[int, QueuedMail] = {}

        def feed() -> Iterator[OutgoingMail]:
            while (entry := self._next()) is not None:
                pulled[id(entry.mail)] = entry
                yield entry.mail

        unreachable = False
        try:
            for mail, error in send_each(self.mailer, feed()):
                self._report(("result", self, pulled.pop(id(mail)), error))
                unreachable = unreachable or (error is not None and _unreachable(error))
        except Exception as exc:  # a mailer's bug must not lose the mails it was given
            log.exception("SMTP lane %d failed", self.index)
            for entry in list(pulled.values()):
                pulled.pop(id(entry.mail))
                self._report(("result", self, entry, MailerError(f"mailer failed: {exc}")))
        finally:
            untried = list(pulled.values())
            if unreachable:
                # The server cannot be reached: what this lane still holds is not tried
                # (an attempt each would only say so again); the dispatcher rests.
                untried += self.take_back()
            if untried:
                self._report(("untried", self, untried))


class BackgroundSender:
    """Sends the outbox of ``state`` from threads beside the pipeline (see the module).

    ``state`` must be a connection of its own (the pipeline's connection is busy with its
    own transactions); ``mailers`` makes one mailer per lane. Use :meth:`start`, :meth:`wake`
    after mail was queued, :meth:`drain` to wait for the outbox to empty, :meth:`stop`.
    """

    def __init__(
        self,
        config: Config,
        state: ConnectorState,
        mailers: Callable[[], Mailer],
        *,
        connections: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        lease: timedelta = LEASE,
        poll_interval: float = 5.0,
        close_state: bool = False,
    ) -> None:
        self.config = config
        self.outbox = Outbox(config, state, owner=owner, lease=lease)
        self.clock = clock
        self.poll_interval = poll_interval
        self._close_state = close_state
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        count = connections if connections is not None else config.smtp.connections
        self._lanes = [_Lane(n, mailers(), self._events.put,
                             idle_timeout=config.smtp.idle_timeout) for n in range(count)]
        self._backlog: deque[QueuedMail] = deque()
        self._handed: dict[int, tuple[_Lane, tuple[str, ...]]] = {}
        self._lane_of: dict[str, tuple[_Lane, int]] = {}  # address -> lane sending to it, count
        self._own = {a.lower() for a in (config.connector.internal_address,
                                         config.connector.public_address,
                                         config.xml_api.response_bcc) if a}
        self._cond = threading.Condition()
        self._quiet = False
        self._woken = False
        self._more = True  # the outbox may hold more than the last claim took
        self._last_claim = 0.0
        self._stopping = False
        #: mails sent and failed (recorded) so far
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="commit-email-sender",
                                        daemon=True)

    # Control ------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """SMTP sessions the lanes opened so far (where the mailer counts them)."""
        return sum(int(getattr(lane.mailer, "connections", 0)) for lane in self._lanes)

    def start(self) -> None:
        for lane in self._lanes:
            lane.thread.start()
        self._thread.start()

    def wake(self) -> None:
        """Mail was queued: claim it soon (cheap; call it after every message)."""
        with self._cond:
            self._quiet = False
            if self._woken:
                return
            self._woken = True
        self._events.put(("wake",))

    def drain(self, timeout: float, *, stop: threading.Event | None = None) -> bool:
        """Wait until nothing due is left to send (or the server cannot be reached, or
        ``timeout`` seconds passed, or ``stop`` is set); True when the outbox was drained."""
        self.wake()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._quiet and self._thread.is_alive():
                if self.outbox.resting(self.clock()) or (stop is not None and stop.is_set()):
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return self._quiet

    def stop(self, timeout: float = 30.0) -> None:
        """Start nothing new, let the mails in flight finish (at most ``timeout`` seconds),
        release the claims of the rest and end the threads."""
        with self._cond:
            self._stopping = True
        self._events.put(("stop",))
        self._thread.join(timeout)
        deadline = time.monotonic() + 5.0
        for lane in self._lanes:
            lane.thread.join(max(0.0, deadline - time.monotonic()))

    # The dispatcher thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    if self._round():
                        return
                except StoreError as exc:  # the store is busy or gone: try again later
                    log.warning("the outbox could not be read or updated: %s", exc)
                    time.sleep(min(self.poll_interval, 1.0))
        finally:
            self._shut_down()

    def _round(self) -> bool:
        """Handle what happened, claim and hand out more; True when it is time to end."""
        events: list[tuple[Any, ...]] = []
        with contextlib.suppress(queue.Empty):
            if self._wait_needed():
                events.append(self._events.get(timeout=self.poll_interval))
            while True:
                events.append(self._events.get_nowait())
        self._handle(events)
        if self._stopping:
            self._release(self._backlog)
            self._backlog.clear()
            for lane in self._lanes:
                self._unhand(lane.take_back())
                lane.stop()
            return not self._handed
        now = self.clock()
        if self.outbox.resting(now):
            self.outbox.renew_if_due(now)
        else:
            self._fill(now)
        self._set_quiet()
        return False

    def _wait_needed(self) -> bool:
        if self._stopping:
            return bool(self._handed)
        can_claim = self._more and self._capacity() > 0
        return not can_claim or self.outbox.resting(self.clock())

    def _capacity(self) -> int:
        return len(self._lanes) * _DEPTH - len(self._backlog) - len(self._handed)

    def _handle(self, events: list[tuple[Any, ...]]) -> None:
        sent: list[int] = []
        now = self.clock()
        for event in events:
            kind = event[0]
            if kind == "wake":
                with self._cond:
                    self._woken = False
                self._more = True
            elif kind == "result":
                _, _lane, entry, error = event
                self._done(entry)
                if error is None:
                    sent.append(entry.id)
                    continue
                self.failed += 1
                if sent:  # in order: what went before is recorded first
                    self._sent(sent)
                    sent = []
                self.outbox.failed(entry, error)
                if _unreachable(error):
                    self._rest(now)
            elif kind == "untried":
                _, _lane, entries = event
                for entry in entries:
                    self._done(entry)
                self.outbox.release(e.id for e in entries)
                self._rest(now)
        if sent:
            self._sent(sent)

    def _sent(self, ids: list[int]) -> None:
        self.outbox.sent(ids)
        self.sent += len(ids)

    def _rest(self, now: datetime) -> None:
        if not self.outbox.resting(now):
            self.outbox.rest(now)
        self._release(self._backlog)
        self._backlog.clear()
        for lane in self._lanes:
            self._unhand(lane.take_back())

    def _fill(self, now: datetime) -> None:
        poll_due = time.monotonic() - self._last_claim >= self.poll_interval
        capacity = self._capacity()
        if capacity > 0 and (self._more or poll_due):
            self._last_claim = time.monotonic()
            claimed = self.outbox.claim(capacity, now)
            self._more = len(claimed) >= capacity
            self._backlog.extend(claimed)
        else:
            self.outbox.renew_if_due(now)
        self._dispatch()

    def _keys(self, mail: OutgoingMail) -> tuple[str, ...]:
        return tuple(sorted({r.lower() for r in mail.recipients} - self._own))

    def _dispatch(self) -> None:
        while self._backlog:
            entry = self._backlog[0]
            keys = self._keys(entry.mail)
            busy = {self._lane_of[k][0].index: self._lane_of[k][0] for k in keys
                    if k in self._lane_of}
            if len(busy) > 1:
                return  # its recipients are being sent to on two lanes: wait for one
            lane = next(iter(busy.values())) if busy else self._free_lane()
            self._backlog.popleft()
            for key in keys:
                _, count = self._lane_of.get(key, (lane, 0))
                self._lane_of[key] = (lane, count + 1)
            self._handed[entry.id] = (lane, keys)
            lane.load += 1
            lane.put(entry)

    def _free_lane(self) -> _Lane:
        """The first lane with room in its pipeline, else the least loaded: a trickle of
        mail keeps to one session, a second one is opened only for a backlog."""
        for lane in self._lanes:
            if lane.load < _DEPTH:
                return lane
        return min(self._lanes, key=lambda ln: ln.load)

    def _done(self, entry: QueuedMail) -> None:
        handed = self._handed.pop(entry.id, None)
        if handed is None:  # pragma: no cover - a lane reports only what it was handed
            return
        lane, keys = handed
        lane.load -= 1
        for key in keys:
            owner, count = self._lane_of[key]
            if count <= 1:
                del self._lane_of[key]
            else:
                self._lane_of[key] = (owner, count - 1)

    def _unhand(self, entries: list[QueuedMail]) -> None:
        for entry in entries:
            self._done(entry)
        self._release(entries)

    def _release(self, entries: Iterable[QueuedMail]) -> None:
        self.outbox.release(e.id for e in entries)

    def _set_quiet(self) -> None:
        quiet = not self._more and not self._backlog and not self._handed
        with self._cond:
            if quiet and not self._woken:
                self._quiet = True
                self._cond.notify_all()

    def _shut_down(self) -> None:
        for lane in self._lanes:
            lane.stop()
        with contextlib.suppress(CommitEmailError):
            self._release(self._backlog)
        with self._cond:
            self._quiet = True
            self._cond.notify_all()
        if self._close_state and isinstance(self.outbox.state, Closable):
            with contextlib.suppress(Exception):
                self.outbox.state.close()


def background_sender(
    config: Config,
    state_factory: Callable[[], ConnectorState] | None,
    mailers: Callable[[], Mailer] | None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> BackgroundSender | None:
    """A :class:`BackgroundSender` over a new state connection, or None when there is no
    way to open one (an in-memory store) or nothing to send with."""
    if state_factory is None or mailers is None:
        return None
    return BackgroundSender(config, state_factory(), mailers, clock=clock, close_state=True)

