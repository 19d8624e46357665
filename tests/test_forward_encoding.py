"""Forwards of mail that cannot cross SMTP unchanged (a line over 998 bytes, NUL, bare CR)
reach a real SMTP server (aiosmtpd, which refuses long lines as relays do), with the
original recoverable byte for byte; a forward that is given up is logged at ERROR naming
the message it was for."""

from __future__ import annotations

import email
import email.policy
import logging

import pytest

from commit_email.model import OutcomeKind
from commit_email.smtp import SmtpMailer
from commit_email.testing import make_config, make_connector
from tests.smtp_fixtures import SmtpTestServer

pytestmark = pytest.mark.server


def stranger_mail(body: bytes, message_id: str = "long@stranger.example") -> bytes:
    return (b"From: Stranger <nobody@stranger.example>\r\nTo: support@acme.example\r\n"
            b"Subject: report\r\nMessage-ID: <" + message_id.encode() + b">\r\n"
            b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\n" + body)


@pytest.mark.parametrize("body, why", [
    (b"x" * 5000 + b"\r\n", "longer than 998"),
    (b"nul \x00 inside\r\n", "NUL"),
    (b"bare \r cr\r\n", "bare CR"),
])
def test_an_unsendable_original_is_forwarded_base64_and_arrives_intact(
        smtp_server: SmtpTestServer, body: bytes, why: str):
    config = make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "plain"})
    c = make_connector(config, mailer=SmtpMailer(smtp_server.config()))
    original = stranger_mail(body)

    outcome = c.process(original)

    assert outcome.kind is OutcomeKind.FORWARDED
    (received,) = smtp_server.wait_for(1)
    assert received.rcpt_tos == ("helpdesk@acme.example",)
    forward = email.message_from_bytes(received.data, policy=email.policy.default)
    parts = list(forward.iter_attachments())
    (attached,) = [p for p in parts if p.get_filename() == "original.eml"]
    assert attached.get_content_type() == "application/octet-stream"
    assert attached.get_payload(decode=True) == original
    assert why in forward.get_body(("plain",)).get_content()


def test_a_sendable_original_stays_message_rfc822_byte_for_byte(smtp_server: SmtpTestServer):
    config = make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "plain"})
    c = make_connector(config, mailer=SmtpMailer(smtp_server.config()))
    original = stranger_mail(b"a normal line\r\n" * 3)
    c.process(original)
    (received,) = smtp_server.wait_for(1)
    assert original in received.data
    assert b"Content-Type: message/rfc822" in received.data


def test_a_forward_that_is_given_up_is_logged_at_error_with_its_message(
        smtp_server: SmtpTestServer, caplog: pytest.LogCaptureFixture):
    smtp_server.refuse("helpdesk@acme.example", "550 5.1.1 no such mailbox")
    config = make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "plain"})
    c = make_connector(config, mailer=SmtpMailer(smtp_server.config()))
    with caplog.at_level(logging.ERROR):
        c.process(stranger_mail(b"hello\r\n", message_id="lost@stranger.example"))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("forward" in e and "about <lost@stranger.example>" in e for e in errors), errors
