"""Loop and bounce protection: may this message get an automatic answer?

An auto-responder that answers the wrong mail starts a loop with another robot, so
the checks are layered, cheapest and most certain first, and every layer returns a
*reason* (shown by ``inspect`` and logged) rather than a bare yes/no:

1. mail that is ignored outright (the core filter's bounces, auto-replies, our own
   loop header and address) and every delivery or feedback report
   (``multipart/report``: DSN, ARF, read receipts);
2. headers by which robots and lists mark their mail: ``Auto-Submitted`` other than
   ``no``, ``Precedence: bulk|junk|list|auto_reply``, ``X-Auto-Response-Suppress``,
   ``List-Id``/``List-Unsubscribe``, ``X-Loop``, another commit-email's loop header;
3. the envelope: an empty Return-Path (``<>``) is how bounces are sent;
4. senders that are robots by name (``mailer-daemon``, ``postmaster``, ``noreply`` …),
   the connector's own addresses and Message-IDs it generated itself;
5. the ``[loop_protection] ignore_senders`` list (addresses, ``*@domain``, regexes);
6. the per-sender rate limit, persisted in the store: at most
   ``max_auto_responses_per_sender`` per ``auto_response_window`` seconds. This is the
   last line: it stops even a robot that strips every header above.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

from .config import Config, compile_regex
from .filters import ignore_reason as core_ignore_reason
from .message import Message
from .outgoing import LOOP_HEADER
from .protocols import ConnectorState
from .verdicts import auto_reply_reason, is_report

__all__ = [
    "LOOP_HEADER",
    "LoopGuard",
    "auto_reply_reason",
    "is_report",
    "robot_sender_reason",
]

_ROBOT_LOCAL_PART = re.compile(
    r"^(?:(?:mailer-daemon|mail-daemon|postmaster|no-?reply|do-?not-?reply|donotreply"
    r"|bounces?|auto-?reply|autoresponder|listserv|majordomo)(?:[-+.].*)?"
    # mailing-list machinery: owner-list@, list-request@, list-owner@, list-bounces@
    r"|owner-.+|.+-(?:request|owner|bounces))$",
    re.IGNORECASE,
)
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
#: RFC 2369/2919 list headers, and what list servers from before them (Mailman 2.0,
#: ezmlm, old LISTSERV) put on their mail instead.
_LIST_HEADERS = (
    "List-Id", "List-Unsubscribe", "List-Post", "List-Help", "List-Subscribe",
    "Mailing-List", "X-Mailing-List", "X-Mailman-Version", "X-List",
)


def robot_sender_reason(address: str) -> str | None:
    """``mailer-daemon@``, ``postmaster@``, ``noreply@`` and kin (``noreply+x@`` too)."""
    local, _, _ = address.partition("@")
    if _ROBOT_LOCAL_PART.match(local):
        return f"sender {address} is a robot address"
    return None



def _header_reasons(message: Message) -> Iterator[str]:
    keyword = message.auto_submitted
    if keyword and keyword != "no":
        yield f"Auto-Submitted: {keyword}"
    precedence = (message.header("Precedence") or "").strip().lower()
    if precedence in _BULK_PRECEDENCE:
        yield f"Precedence: {precedence}"
    suppress = (message.header("X-Auto-Response-Suppress") or "").strip()
    if suppress and suppress.lower() != "none":
        yield f"X-Auto-Response-Suppress: {suppress}"
    for name in _LIST_HEADERS:
        if message.header(name) is not None:
            yield f"mailing list mail ({name})"
            break
    if message.header("X-Loop") is not None:
        yield f"X-Loop: {message.header('X-Loop')}"
    if message.header(LOOP_HEADER) is not None:
        yield f"sent by a commit-email connector ({LOOP_HEADER})"


_PLAIN_ADDRESS = re.compile(r"^(?:\*|[\w.+'-]+)@[\w.-]+$")


def _sender_matcher(entry: str, index: int) -> tuple[str, re.Pattern[str] | None]:
    """One ``ignore_senders`` entry: ``*@domain``, a full address, or else a regex
    (searched in the lower-case address, so ``^alert-.*@rmm\\.example$`` works)."""
    if _PLAIN_ADDRESS.match(entry):
        return entry.lower(), None
    return entry, compile_regex(entry, f"loop_protection.ignore_senders[{index}]")


class LoopGuard:
    """The layered checks above, for one connector's configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._ignore = tuple(
            _sender_matcher(e, i) for i, e in enumerate(config.loop_protection.ignore_senders)
        )

    @property
    def own_addresses(self) -> frozenset[str]:
        c = self.config
        return frozenset(
            a.lower()
            for a in (c.connector.public_address, c.connector.internal_address,
                      c.smtp.from_address)
            if a
        )

    def ignore_reason(self, message: Message, state: ConnectorState) -> str | None:
        """Why this message must not open a ticket (nor get an answer), or None.

        The core filter's reasons, plus reports of every kind (ARF spam complaints are
        ``multipart/report`` without a delivery status) and our own mail coming back.
        """
        reason = core_ignore_reason(message, self.config) or auto_reply_reason(message)
        if reason is not None:
            return reason
        if is_report(message):
            kind = message.header("Content-Type") or "multipart/report"
            return f"report ({' '.join(kind.split())})"
        if message.message_id and state.is_own_message_id(message.message_id):
            return f"our own message {message.message_id} came back"
        return None

    def responder_address(self, message: Message) -> str:
        """Where an auto-response goes: the envelope sender when known (RFC 3834), else From."""
        if message.return_path:
            return message.return_path.lower()
        return message.sender

    def ignored_sender_reason(self, address: str) -> str | None:
        address = address.lower()
        domain = address.rpartition("@")[2]
        for entry, pattern in self._ignore:
            if pattern is not None:
                if pattern.search(address):
                    return f"sender {address} matches ignore_senders {pattern.pattern!r}"
            elif entry == address or (entry.startswith("*@") and entry[2:] == domain):
                return f"sender {address} is in ignore_senders ({entry})"
        return None

    def rate_limit_reason(
        self, address: str, state: ConnectorState, now: datetime
    ) -> str | None:
        lp = self.config.loop_protection
        since = now - timedelta(seconds=lp.auto_response_window)
        sent = state.count_auto_responses(address.lower(), since)
        if sent >= lp.max_auto_responses_per_sender:
            return (
                f"rate limit: {sent} auto-responses to {address} in the last "
                f"{lp.auto_response_window:g} s (max {lp.max_auto_responses_per_sender})"
            )
        return None

    def no_response_reason(
        self, message: Message, state: ConnectorState, now: datetime
    ) -> str | None:
        """Why ``message`` must not get an auto-response, or None when it may."""
        reason = self.ignore_reason(message, state)
        if reason is not None:
            return reason
        for reason in _header_reasons(message):
            return reason
        if message.return_path == "":
            return "empty Return-Path (<>)"
        address = self.responder_address(message)
        if not address or "@" not in address:
            return "no address to answer"
        sender_header = message.header("Sender") or ""
        _, _, list_sender = sender_header.rpartition("<")
        list_sender = list_sender.strip(" >").lower()
        for candidate in dict.fromkeys((address, message.sender, list_sender)):
            if not candidate:
                continue
            if candidate in self.own_addresses:
                return f"sender {candidate} is the connector itself"
            reason = robot_sender_reason(candidate) or self.ignored_sender_reason(candidate)
            if reason is not None:
                return reason
        for candidate in self.rate_limited_addresses(message):
            reason = self.rate_limit_reason(candidate, state, now)
            if reason is not None:
                return reason
        return None

    def rate_limited_addresses(self, message: Message) -> tuple[str, ...]:
        """The addresses an auto-response counts against: the one it goes to and From.

        Both, because a VERP/SRS Return-Path (``bounce-7f3a-jane=x@mailer.example``) is new on
        every mail, and a limit on it alone would never be reached."""
        return tuple(a for a in dict.fromkeys((self.responder_address(message), message.sender))
                     if a)

    def record_response(self, message: Message, state: ConnectorState, now: datetime) -> None:
        """Count an auto-response to ``message`` against its addresses' rate limits."""
        for address in self.rate_limited_addresses(message):
            state.record_auto_response(address.lower(), now)
