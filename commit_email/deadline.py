"""The per-message time limit, without signals: a deadline that long loops check.

``Connector.process`` opens a deadline of ``connector.message_time_limit`` seconds around
each message; the loops that hostile mail can make long (decoding the MIME parts, rendering
HTML, running alert parsers and rules, XML transactions, one stage after the other) call
:func:`check`, which raises :class:`MessageTimeout` once the time is up. The message is then
rolled back and quarantined.

Nothing process-wide is touched: no ``SIGALRM``, no interval timer, no signal handler. It
works on Windows, in any thread, and in a host application whose own timers keep running.
The deadline lives in a :class:`contextvars.ContextVar`, so two threads (or two asyncio
tasks) processing messages at once each have their own.

The price of doing without signals: a stage is stopped at its next check, not in the middle
of a system call. A plugin stage with a loop of its own calls ``check()`` (or
``Context.check_time()``) in it; one blocked in a network call is stopped when the call
returns, so give such calls their own time-out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["MessageTimeout", "check", "remaining", "time_limit"]


class MessageTimeout(BaseException):
    """A message took longer than ``connector.message_time_limit``.

    A ``BaseException``, like ``KeyboardInterrupt`` and ``asyncio.CancelledError``: a stage
    or plugin that catches ``Exception`` around its own work cannot swallow the limit.
    ``Connector.process`` catches it and quarantines the message.
    """


class _Deadline:
    __slots__ = ("clock", "expires", "seconds")

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self.clock = clock
        self.expires = clock() + seconds


_current: ContextVar[_Deadline | None] = ContextVar("commit_email_deadline", default=None)


@contextmanager
def time_limit(seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Give the code inside ``seconds`` (0 or less: no limit). Nested limits keep the
    earlier expiry: an inner limit can shorten the time, never lengthen it."""
    outer = _current.get()
    if seconds <= 0:
        yield
        return
    deadline = _Deadline(seconds, clock)
    if outer is not None and outer.expires <= deadline.expires:
        deadline = outer
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


def check() -> None:
    """Raise :class:`MessageTimeout` if the current deadline has passed (cheap: one clock
    read; nothing at all outside a time limit)."""
    deadline = _current.get()
    if deadline is not None and deadline.clock() >= deadline.expires:
        raise MessageTimeout(f"processing took longer than {deadline.seconds:g} s")


def remaining() -> float | None:
    """Seconds left under the current deadline, or None when there is none; for a stage
    that wants to give a network call a time-out that ends with the message's."""
    deadline = _current.get()
    return None if deadline is None else max(0.0, deadline.expires - deadline.clock())
