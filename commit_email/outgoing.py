"""Building the mails the connector sends: forwards (and the pieces others reuse).

A forward carries the original message byte-for-byte as a ``message/rfc822``
attachment, so the human at the internal address sees exactly what arrived, and it
is marked with the connector's loop header and ``Auto-Submitted: auto-forwarded`` so
that no well-behaved system answers it.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import re
import secrets
import time
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import SMTP
from io import BytesIO

from .message import Message

__all__ = ["LOOP_HEADER", "build_forward", "make_message_id", "serialize", "text_mail"]

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


_SMTP = email.policy.SMTP

#: The longest body line :func:`text_mail` sends unencoded (what ``EmailMessage.set_content``
#: keeps to before it encodes).
_MAX_PLAIN_LINE = 78


def _text_body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body bytes with CRLF) of ``text`` in UTF-8, chosen as
    ``EmailMessage.set_content`` chooses: as it is when no line is longer than 78 bytes
    (``7bit``, or ``8bit`` with non-ASCII), else the shorter of quoted-printable and base64."""
    lines = text.encode("utf-8").splitlines()
    data = b"\r\n".join(lines) + b"\r\n"
    if max(map(len, lines), default=0) <= _MAX_PLAIN_LINE:
        return ("7bit" if data.isascii() else "8bit"), data
    quoted = binascii.b2a_qp(data, istext=True)  # keeps the CRLF line ends
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    if len(quoted) > len(encoded):
        return "base64", encoded
    return "quoted-printable", quoted


def _encoded_line(name: str, value: str) -> bytes:
    """A header with non-ASCII text, folded as ``EmailMessage`` folds it: only the words that
    need it become RFC 2047 encoded words, so a ``[Ticket#N]`` token stays readable."""
    value = " ".join(value.split())
    folded: str = _SMTP.header_factory(name, value).fold(policy=_SMTP)
    return folded.encode("ascii")


def text_mail(headers: list[tuple[str, str]], body: str) -> bytes:
    """A ``text/plain`` UTF-8 mail with these headers, in this order, as bytes for SMTP.

    Written by hand like a forward, for the same reason: building an ``EmailMessage`` parses
    every header value into a syntax tree and folds it back, which cost more than the rest
    of the auto-response (figures in ``benchmarks/README.md``, mail out). Only a header
    with non-ASCII text still goes through the header registry."""
    cte, data = _text_body(body)
    head = b"".join(_header_line(name, value) if value.isascii() else _encoded_line(name, value)
                    for name, value in headers)
    return b"".join((
        head,
        b'Content-Type: text/plain; charset="utf-8"\r\n',
        b"Content-Transfer-Encoding: " + cte.encode("ascii") + b"\r\n",
        b"MIME-Version: 1.0\r\n\r\n",
        data,
    ))


#: The longest subject a forward repeats (the original, attached, keeps the whole one).
_MAX_FORWARD_SUBJECT = 2000


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
    if len(subject) > _MAX_FORWARD_SUBJECT:  # a 5 MB Subject is not repeated in full
        subject = subject[: _MAX_FORWARD_SUBJECT - 1].rstrip() + "…"
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
    unsafe = _smtp_unsafe(message.raw)
    if unsafe is None:
        # The original byte for byte, as a message the reader's client opens in place.
        raw = message.raw if message.raw.endswith(b"\n") else message.raw + b"\r\n"
        original = (b"Content-Type: message/rfc822\r\n"
                    b'Content-Disposition: attachment; filename="original.eml"\r\n\r\n' + raw)
    else:
        # message/rfc822 admits no transfer encoding (RFC 2046 5.2.1), and a relay refuses
        # such bytes ("500 Line too long"): the original goes base64-encoded, still byte
        # for byte once decoded.
        summary += (f"\r\nThe original is attached base64-encoded as original.eml ({unsafe}); "
                    "it is unchanged once decoded.\r\n")
        encoded = base64.encodebytes(message.raw).replace(b"\n", b"\r\n")
        original = (b'Content-Type: application/octet-stream; name="original.eml"\r\n'
                    b"Content-Transfer-Encoding: base64\r\n"
                    b'Content-Disposition: attachment; filename="original.eml"\r\n\r\n'
                    + encoded)
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
        original,
        b"\r\n--" + b + b"--\r\n",
    ))


#: RFC 5321 4.5.3.1.6: at most 998 octets on a line, CRLF not counted.
_MAX_LINE = 998


def _smtp_unsafe(raw: bytes) -> str | None:
    """Why ``raw`` cannot go over SMTP unchanged, or None. Linear in its size."""
    if b"\0" in raw:
        return "it contains NUL bytes"
    if raw.count(b"\r") != raw.count(b"\r\n"):
        return "it contains bare CR characters"
    if len(raw) > _MAX_LINE and max(map(len, raw.split(b"\n"))) > _MAX_LINE + 1:
        return f"a line is longer than {_MAX_LINE} bytes"
    return None


def replied_to(raw: bytes) -> str:
    """The Message-ID a mail we built answers or forwards (its ``References``), or ""."""
    head = raw[: raw.find(b"\r\n\r\n") + 1 or 8192]
    found = re.search(rb"^References:[ \t]*<([^<>\s]+)>", head, re.M | re.I)
    return found.group(1).decode("ascii", "replace") if found else ""
