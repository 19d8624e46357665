"""The message model survives real mail: charsets, encoded words, broken headers, HTML."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commit_email import message as message_module
from commit_email.message import Message, decode_bytes
from commit_email.model import OutcomeKind
from commit_email.testing import build_message, make_connector


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("latin-1")


def test_plain_message_fields() -> None:
    raw = build_message(sender="Alice@Customer.example", sender_name="Alice Able",
                        subject="Hello", body="Body text\n", message_id="abc@customer.example",
                        date="Mon, 23 Nov 2026 09:12:44 +0100")
    m = Message.from_bytes(raw)
    assert m.sender == "alice@customer.example"
    assert m.from_ is not None and m.from_.name == "Alice Able"
    assert m.subject == "Hello"
    assert m.message_id == "abc@customer.example"
    assert m.date == datetime(2026, 11, 23, 8, 12, 44, tzinfo=UTC)
    assert m.text == "Body text\n"
    assert m.raw == raw


def test_iso_2022_jp_without_charset_parameter() -> None:
    body = "お世話になっております。プリンターが動きません。".encode("iso2022_jp")
    raw = (b"From: taro@example.jp\r\nSubject: =?ISO-2022-JP?B?"
           + base64.b64encode("故障".encode("iso2022_jp")) + b"?=\r\n"
           b"Content-Type: text/plain\r\n\r\n" + body + b"\r\n")
    m = Message.from_bytes(raw)
    assert m.subject == "故障"
    assert "プリンターが動きません" in m.text


def test_windows_1252_labelled_as_latin1() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nPrice \x80 5 \x96 \x93quoted\x94\r\n")
    m = Message.from_bytes(raw)
    assert m.text.strip() == "Price € 5 – “quoted”"


def test_mislabelled_utf8_is_read_as_utf8() -> None:
    raw = ("From: a@example.com\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
           "Grüße aus Köln\r\n").encode()
    assert Message.from_bytes(raw).text.strip() == "Grüße aus Köln"


def test_unknown_charset_is_a_defect_not_a_crash() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/plain; charset=x-made-up-42\r\n\r\n"
           b"caf\xc3\xa9\r\n")
    m = Message.from_bytes(raw)
    assert m.text.strip() == "café"
    assert any("unknown charset" in d for d in m.defects)


def test_other_charsets_python_knows() -> None:
    for charset, text in [("koi8-r", "Привет"), ("windows-1251", "Привет"),
                          ("iso-8859-15", "€uro"), ("gb2312", "打印机"), ("big5", "印表機"),
                          ("shift_jis", "プリンター"), ("euc-kr", "프린터"),
                          ("windows-1250", "Žluťoučký kůň")]:
        raw = (f"From: a@example.com\r\nContent-Type: text/plain; charset={charset}\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + text.encode(charset)
        assert Message.from_bytes(raw).text.strip() == text, charset


def test_rfc2047_names_and_subjects_with_broken_spacing() -> None:
    raw = crlf(
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\n"
        "To: \"Support\" <support@msp.example>, =?iso-8859-1?q?S=F8ren?= <s@example.dk>\n"
        "Subject: =?utf-8?B?RHJ1Y2tlcg==?= =?utf-8?B?IGthcHV0dA==?=\n\nx\n"
    )
    m = Message.from_bytes(raw)
    assert m.from_ is not None and m.from_.name == "Jürgen Müller"
    assert m.subject == "Drucker kaputt"
    assert [a.name for a in m.to] == ["Support", "Søren"]


def test_raw_8bit_utf8_headers() -> None:
    raw = "From: Jörg <j@example.de>\r\nSubject: Überweisung fehlt\r\n\r\nx\r\n".encode()
    m = Message.from_bytes(raw)
    assert m.subject == "Überweisung fehlt"
    assert m.from_ is not None and m.from_.name == "Jörg"


def test_rfc2231_and_rfc2047_filenames() -> None:
    raw = crlf(
        "From: a@example.com\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nsee attachments\n"
        "--b\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf\n"
        "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n"
        "--b\nContent-Type: application/octet-stream; name=\"=?utf-8?q?Pr=C3=BCfung.bin?=\"\n"
        "Content-Disposition: attachment\n\nabc\n"
        "--b--\n"
    )
    m = Message.from_bytes(raw)
    assert [a.filename for a in m.attachments] == ["Rechnung März.pdf", "Prüfung.bin"]
    assert m.attachments[0].data == b"%PDF-1.4\n"
    assert m.text.strip() == "see attachments"


def test_html_only_mail_gets_readable_text_with_tables() -> None:
    html = ("<html><head><style>td{x:y}</style><script>alert(1)</script></head><body>"
            "<p>Status report</p><table><tr><th>Host</th><th>State</th></tr>"
            "<tr><td>web1</td><td>DOWN</td></tr></table>"
            "<p>See <a href='https://status.example/web1'>details</a>&nbsp;&amp; more</p>"
            "</body></html>")
    m = Message.from_bytes(build_message(body="", html=html))
    assert m.html is not None
    assert "Host | State" in m.text
    assert "web1 | DOWN" in m.text
    assert "alert(1)" not in m.text and "x:y" not in m.text
    assert "details <https://status.example/web1>" in m.text
    assert "& more" in m.text


def test_alternative_prefers_plain_text() -> None:
    m = Message.from_bytes(build_message(body="plain version\n", html="<p>html version</p>"))
    assert m.text.strip() == "plain version"
    assert m.html is not None and "html version" in m.html


def test_inline_image_and_attached_message() -> None:
    inner = build_message(subject="Original question", body="inner body\n")
    raw = crlf(
        "From: a@example.com\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="outer"\n\n'
        "--outer\n"
        'Content-Type: multipart/related; boundary="rel"\n\n'
        "--rel\nContent-Type: text/html; charset=utf-8\n\n"
        '<p>Logo: <img src="cid:logo1" alt="logo"></p>\n'
        "--rel\nContent-Type: image/png\nContent-ID: <logo1>\n"
        "Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n"
        "--rel--\n"
        "--outer\nContent-Type: message/rfc822\n\n"
    ) + inner + crlf("\n--outer--\n")
    m = Message.from_bytes(raw)
    kinds = {a.content_type: a for a in m.attachments}
    assert kinds["image/png"].inline and kinds["image/png"].content_id == "logo1"
    assert kinds["image/png"].data == b"\x89PNG\r\n\x1a\n"
    attached = Message.from_bytes(kinds["message/rfc822"].data)
    assert attached.subject == "Original question"
    assert "Logo: [logo]" in m.text
    assert "inner body" not in m.text  # an attached message is not the body


def test_missing_and_broken_headers() -> None:
    m = Message.from_bytes(b"\r\njust a body without any header\r\n")
    assert m.from_ is None and m.sender == ""
    assert m.message_id == "" and m.subject == "" and m.date is None
    assert "missing From header" in m.defects
    assert "just a body" in m.text
    broken = Message.from_bytes(b"From: not an address\r\nDate: someday soon\r\n\r\nx\r\n")
    assert broken.sender == ""
    assert broken.date is None
    assert any("Date" in d for d in broken.defects)


def test_lenient_dates_are_timezone_aware() -> None:
    for header, expected in [
        ("23 Nov 2026 09:12:44 +0100", datetime(2026, 11, 23, 8, 12, 44, tzinfo=UTC)),
        ("Monday, November 23, 2026 9:12 AM", datetime(2026, 11, 23, 9, 12, tzinfo=UTC)),
        ("2026-11-23T09:12:44Z", datetime(2026, 11, 23, 9, 12, 44, tzinfo=UTC)),
    ]:
        m = Message.from_bytes(f"From: a@b.example\r\nDate: {header}\r\n\r\nx\r\n".encode())
        assert m.date is not None and m.date.tzinfo is not None, header
        assert m.date == expected, header


def test_auto_reply_and_bounce_flags() -> None:
    ooo = Message.from_bytes(build_message(subject="Out of Office: your mail",
                                           headers={"Auto-Submitted": "auto-replied"}))
    assert ooo.is_auto_reply and ooo.auto_submitted == "auto-replied" and not ooo.is_bounce
    generated = Message.from_bytes(build_message(headers={"Auto-Submitted": "auto-generated"}))
    assert generated.auto_submitted == "auto-generated" and not generated.is_auto_reply
    exchange_ooo = Message.from_bytes(build_message(
        subject="Automatic reply: Printer", headers={"X-Auto-Response-Suppress": "All"}))
    assert exchange_ooo.is_auto_reply
    ordinary = Message.from_bytes(build_message(headers={"X-Auto-Response-Suppress": "OOF"}))
    assert not ordinary.is_auto_reply
    dsn = Message.from_bytes(crlf(
        "From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nfailed\n--b\n"
        "Content-Type: message/delivery-status\n\nAction: failed\n--b--\n"))
    assert dsn.is_bounce
    plain_bounce = Message.from_bytes(crlf(
        "From: postmaster@mx.example\nSubject: Delivery Status Notification (Failure)\n\n"
        "could not deliver\n"))
    assert plain_bounce.is_bounce


def test_decode_bytes_fallbacks() -> None:
    assert decode_bytes(b"caf\xe9") == ("café", "8-bit text without charset")
    assert decode_bytes(b"caf\xc3\xa9")[0] == "café"
    text, defect = decode_bytes(b"\xff\xfe broken", "utf-8")
    assert "broken" in text and defect == "invalid UTF-8"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_from_bytes_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    m = Message.from_bytes(raw)
    assert m.raw == raw
    assert isinstance(m.text, str)


header_names = st.sampled_from(["From", "To", "Subject", "Date", "Content-Type",
                                "Content-Transfer-Encoding", "Message-ID", "Content-Disposition",
                                "References", "Auto-Submitted"])
header_values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
                        max_size=80)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=8), st.binary(max_size=500))
def test_from_bytes_never_raises_on_hostile_headers(
    headers: list[tuple[str, str]], body: bytes
) -> None:
    raw = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n" + body
    m = Message.from_bytes(raw)
    assert m.date is None or m.date.tzinfo is not None


def test_auto_submitted_keyword_ignores_comments_and_parameters() -> None:
    vacation = Message.from_bytes(build_message(headers={
        "Auto-Submitted": "auto-replied (vacation)"}))
    assert vacation.auto_submitted == "auto-replied" and vacation.is_auto_reply
    generated = Message.from_bytes(build_message(headers={
        "Auto-Submitted": "auto-generated; owner-email=ops@example.com"}))
    assert generated.auto_submitted == "auto-generated" and not generated.is_auto_reply


def test_localised_out_of_office_prefixes() -> None:
    for subject in ("Automatische Antwort: Drucker", "Réponse automatique : Imprimante",
                    "Autosvar: Skrivare"):
        assert Message.from_bytes(build_message(subject=subject)).is_auto_reply, subject
    assert not Message.from_bytes(build_message(subject="Out of office laptop broken")
                                  ).is_auto_reply


def test_non_standard_bounce_from_a_mail_daemon() -> None:
    returned = build_message(subject="Original", sender="support@msp.example")
    raw = crlf(
        "From: postmaster@mx.example\nSubject: Mail System Error - Returned Mail\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nI could not deliver it.\n"
        "--b\nContent-Type: message/rfc822\n\n") + returned + crlf("\n--b--\n")
    assert Message.from_bytes(raw).is_bounce
    person = build_message(sender="postmaster@customer.example", subject="Printer")
    assert not Message.from_bytes(person).is_bounce


class CountingBodies:
    """Wraps the body decoder to count how often a message's MIME parts are decoded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._decode = message_module._bodies
        monkeypatch.setattr(message_module, "_bodies", self)

    def __call__(self, std: Any) -> Any:
        self.calls += 1
        return self._decode(std)


def test_the_body_is_decoded_only_when_asked_for_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = CountingBodies(monkeypatch)
    raw = build_message(sender="Alice <alice@customer.example>", body="Grüße\n",
                        attachments=[("log.txt", "text/plain", b"x" * 5000)])
    message = Message.from_bytes(raw)
    # What deduplication, loop protection and routing by header read costs no decoding.
    assert (message.sender, message.subject, message.is_auto_reply, message.is_bounce) == (
        "alice@customer.example", "Printer is out of toner", False, False)
    assert message.header("date")
    assert bodies.calls == 0
    assert message.text == "Grüße\n"
    assert [a.filename for a in message.attachments] == ["log.txt"]
    assert message.defects == ()
    assert bodies.calls == 1


def test_a_duplicate_is_recognised_without_decoding_its_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector = make_connector()
    raw = build_message(html="<p>Hello <b>there</b></p>", body="")
    assert connector.process(raw).kind is OutcomeKind.FORWARDED
    bodies = CountingBodies(monkeypatch)
    assert connector.process(raw).kind is OutcomeKind.DUPLICATE
    assert bodies.calls == 0


def test_a_daemons_mail_is_a_bounce_by_its_returned_message() -> None:
    """The one is_bounce verdict that needs the body: a mail daemon returning a message."""
    returned = build_message(subject="Hello")
    raw = build_message(sender="MAILER-DAEMON@mx.example", subject="Re: your mail",
                        attachments=[("original.eml", "message/rfc822", returned)])
    plain = build_message(sender="MAILER-DAEMON@mx.example", subject="Re: your mail")
    assert Message.from_bytes(raw).is_bounce
    assert not Message.from_bytes(plain).is_bounce
