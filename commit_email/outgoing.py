"""Building the mails the connector sends: forwards (and the pieces others reuse).

A forward carries the original message byte-for-byte as a ``message/rfc822``
attachment, so the human at the internal address sees exactly what arrived, and it
is marked with the connector's loop header and ``Auto-Submitted: auto-forwarded`` so
that no well-behaved system answers it.
"""

from __future__ import annotations

import email.policy
import email.utils
import secrets
import time
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import SMTP
from io import BytesIO

from .message import Message

__all__ = ["LOOP_HEADER", "build_forward", "make_message_id", "serialize"]

#: Header every mail the connector sends carries; mail that comes back with it is ignored.
LOOP_HEADER = "X-Commit-Email-Loop"


def make_message_id(domain: str) -> str:
    """A new globally unique Message-ID (without angle brackets) in ``domain``."""
    return f"{int(time.time() * 1000):x}.{secrets.token_hex(8)}@commit-email.{domain}"


def serialize(msg: EmailMessage) -> bytes:
    """RFC 5322 bytes with CRLF line ends."""
    out = BytesIO()
    BytesGenerator(out, policy=SMTP.clone(cte_type="8bit")).flatten(msg)
    return out.getvalue()


# Forward headers are folded the compat32 way (RFC 2047 encoded words for non-ASCII text):
# EmailMessage's header registry parses every value into a syntax tree first, and for a
# backlog where a quarter of the mail is forwarded that was a quarter of the run time.
_FOLDING = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)


def _header_line(name: str, value: str) -> bytes:
    """One folded header line, CRLF-terminated; a line break inside a value is a space."""
    if "\r" in value or "\n" in value:
        value = " ".join(value.split())
    if value.isascii() and len(name) + len(value) <= 76 and "=?" not in value:
        return f"{name}: {value}\r\n".encode("ascii")  # nothing to encode or fold
    return _FOLDING.fold_binary(name, value)


def build_forward(
    message: Message,
    *,
    sender: str,
    to: str,
    reason: str,
    message_id: str,
    loop_token: str,
) -> bytes:
    """A forward of ``message`` to ``to`` with the original attached byte-for-byte.

    The MIME body is written by hand: the stdlib generator would re-encode the attached
    message, and the point of a forward is that the human sees exactly what arrived.
    """
    subject = message.subject or "(no subject)"
    boundary = f"=_commit-email_{secrets.token_hex(12)}"
    while boundary.encode() in message.raw:  # pragma: no cover - 96 random bits
        boundary = f"=_commit-email_{secrets.token_hex(12)}"
    head = [
        ("Subject", f"Fwd: {subject}"),
        ("From", sender),
        ("To", to),
        ("Date", email.utils.formatdate(localtime=False)),
        ("Message-ID", f"<{message_id}>"),
    ]
    if message.from_ is not None:
        head.append(("Reply-To", email.utils.formataddr((message.from_.name,
                                                          message.from_.address))))
    head += [("Auto-Submitted", "auto-forwarded"), (LOOP_HEADER, loop_token)]
    if message.message_id:
        head.append(("References", f"<{message.message_id}>"))
    head += [("MIME-Version", "1.0"),
             ("Content-Type", f'multipart/mixed; boundary="{boundary}"')]
    summary = (
        "commit-email forwarded this message.\r\n"
        f"Reason: {reason}\r\n"
        f"From: {message.from_ or '(unknown)'}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message.message_id or '(none)'}\r\n"
    )
    raw = message.raw if message.raw.endswith(b"\n") else message.raw + b"\r\n"
    b = boundary.encode()
    return b"".join((
        b"".join(_header_line(name, value) for name, value in head),
        b"\r\n",
        b"This is a multipart message in MIME format.\r\n",
        b"--" + b + b"\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n\r\n",
        summary.encode("utf-8", "replace"),
        b"\r\n--" + b + b"\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Disposition: attachment; filename="original.eml"\r\n\r\n',
        raw,
        b"\r\n--" + b + b"--\r\n",
    ))
