"""``outgoing.text_mail`` (the auto-response's bytes, written by hand for speed) says what
``EmailMessage.set_content`` said: every mail client reads the same headers and text."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from commit_email.autoresponse import DEFAULT_TEMPLATE, build_auto_response
from commit_email.message import Message
from commit_email.outgoing import serialize, text_mail
from commit_email.testing import build_message

BODIES = {
    "short ASCII lines": "Hello Jane,\n\nticket 12 is open.\n",
    "long ASCII line": "Hello,\n" + "word " * 40 + "\nbye\n",
    "non-ASCII, short lines": "Grüße, Jörg!\nДобрый день\n",
    "non-ASCII, long line": "Grüße " * 30 + "\n",
    "Japanese, many long lines": ("お問い合わせありがとうございます。" * 6 + "\n") * 12,
    "trailing spaces and tabs": "line with space \nline with tab\t\n" + "x" * 90 + " \n",
    "dots and From at line starts": ".\n..\nFrom here\n" + "y" * 100 + "\n.\n",
    "CRLF and CR line ends": "one\r\ntwo\rthree\n",
    "no final line end": "just this",
    "empty": "",
    "the default template": DEFAULT_TEMPLATE,
}
HEADERS = [
    ("From", "support@acme.example"),
    ("To", "jane@customer.example"),
    ("Subject", "[Ticket#42] Drucker im 2. Stock läuft nicht " + " ".join(["und mehr"] * 12)),
    ("Message-ID", "<abc.123@commit-email.acme.example>"),
    ("References", " ".join(f"<ref{n}@customer.example>" for n in range(12))),
    ("Auto-Submitted", "auto-replied"),
]


def stdlib(headers: list[tuple[str, str]], body: str) -> bytes:
    """What the auto-response was built with before: EmailMessage and set_content."""
    out = EmailMessage()
    for name, value in headers:
        out[name] = value
    out.set_content(body, charset="utf-8")
    return serialize(out)


def parsed(raw: bytes) -> EmailMessage:
    """As a mail client reads it (line ends as the local system's, LF)."""
    msg = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects
    return msg


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_the_text_reads_as_set_content_wrote_it(body: str) -> None:
    ours, theirs = parsed(text_mail(HEADERS, body)), parsed(stdlib(HEADERS, body))
    # base64 text carries its line ends inside: ours are CRLF (RFC 2045's canonical form),
    # the stdlib's LF; a client shows both alike
    assert ours.get_content().replace("\r\n", "\n") == theirs.get_content()
    assert ours.get_content_type() == "text/plain"
    assert ours.get_content_charset() == "utf-8"
    for name, value in HEADERS:
        assert str(ours[name]) == str(theirs[name]) == value


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_the_bytes_are_fit_for_smtp(body: str) -> None:
    raw = text_mail(HEADERS, body)
    assert raw.count(b"\r") == raw.count(b"\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n")
    lines = raw.split(b"\r\n")
    assert max(map(len, lines)) <= 998
    head = raw[: raw.index(b"\r\n\r\n")]
    assert head.isascii()


def test_the_encoding_is_the_one_set_content_chose() -> None:
    for body in BODIES.values():
        ours, theirs = parsed(text_mail(HEADERS, body)), parsed(stdlib(HEADERS, body))
        assert ours["Content-Transfer-Encoding"] == theirs["Content-Transfer-Encoding"], body


def test_only_the_words_that_need_it_are_encoded() -> None:
    """The ticket token stays readable in the raw subject."""
    raw = text_mail([("Subject", "[Ticket#7] Grüße aus Köln")], "x\n")
    assert raw.startswith(b"Subject: [Ticket#7] =?utf-8?")


def test_a_line_break_in_a_value_cannot_add_a_header() -> None:
    raw = text_mail([("Subject", "hi\r\nBcc: eve@evil.example"),
                     ("To", "jörg@kunde.example\nBcc: eve@evil.example")], "x\n")
    msg = parsed(raw)
    assert msg["Bcc"] is None


def test_the_auto_response_is_a_text_mail() -> None:
    message = Message.from_bytes(build_message(sender="jane@customer.example",
                                               subject="Drucker kaputt", message_id="q@c.example",
                                               references=["p@c.example"]))
    raw = build_auto_response(message, sender="support@acme.example",
                              to="jane@customer.example", subject="[Ticket#3]  Drucker\tkaputt",
                              body="Hallo Jörg\n", message_id="m1@commit-email.acme.example",
                              loop_token="acme.example")
    msg = parsed(raw)
    assert msg["Subject"] == "[Ticket#3] Drucker kaputt"
    assert msg["In-Reply-To"] == "<q@c.example>"
    assert msg["References"] == "<p@c.example> <q@c.example>"
    assert msg["Message-ID"] == "<m1@commit-email.acme.example>"
    assert msg["X-Commit-Email-Loop"] == "acme.example"
    assert msg.get_content() == "Hallo Jörg\n"
