"""SmtpMailer against a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import pytest

from commit_email.config import SmtpConfig
from commit_email.errors import MailerError
from commit_email.model import OutgoingMail
from commit_email.smtp import SmtpMailer, SmtpPermanentError, SmtpTransientError
from tests.smtp_fixtures import PASSWORD, USER, SmtpTestServer, free_port

pytestmark = pytest.mark.server

RAW = (
    b"From: Support <support@acme.example>\r\n"
    b"To: Jane <jane@customer.example>\r\n"
    b"Subject: =?utf-8?q?R=C3=BCckmeldung?= [Ticket#1042]\r\n"
    b"Message-ID: <ce.1@acme.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe,\r\n"
    b".a line that starts with a dot\r\n"
    b"From the start of a line\r\n"
)


def mail(**overrides: object) -> OutgoingMail:
    values: dict[str, object] = {
        "kind": "auto_response",
        "sender": "support@acme.example",
        "recipients": ("jane@customer.example",),
        "raw": RAW,
        "message_id": "ce.1@acme.example",
    }
    values.update(overrides)
    return OutgoingMail(**values)  # type: ignore[arg-type]


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def test_plain_delivers_raw_bytes_unchanged_with_the_envelope(
    smtp_server: SmtpTestServer,
) -> None:
    SmtpMailer(smtp_server.config()).send(
        mail(recipients=("jane@customer.example", "boss@customer.example"),
             sender="bounces@acme.example")
    )

    [got] = smtp_server.messages
    assert got.mail_from == "bounces@acme.example"
    assert got.rcpt_tos == ("jane@customer.example", "boss@customer.example")
    assert got.data == RAW  # dot-stuffing undone, 8-bit body and header untouched
    assert got.auth_user is None
    assert not got.tls


def test_logs_in_when_a_user_is_configured(smtp_server: SmtpTestServer) -> None:
    SmtpMailer(smtp_server.config(user=USER, password=PASSWORD)).send(mail())

    assert [m.auth_user for m in smtp_server.messages] == [USER]


def test_password_can_come_from_the_environment(
    smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SMTP_PW", PASSWORD)
    SmtpMailer(smtp_server.config(user=USER, password_env="TEST_SMTP_PW")).send(mail())

    assert [m.auth_user for m in smtp_server.messages] == [USER]


def test_wrong_password_is_permanent_and_not_retried(smtp_server: SmtpTestServer) -> None:
    sleeps = Sleeps()
    mailer = SmtpMailer(smtp_server.config(user=USER, password="wrong"), sleep=sleeps)

    with pytest.raises(SmtpPermanentError) as info:
        mailer.send(mail())

    assert info.value.code == 535
    assert sleeps.delays == []
    assert smtp_server.messages == []


def test_missing_password_variable_is_a_mailer_error(smtp_server: SmtpTestServer) -> None:
    mailer = SmtpMailer(smtp_server.config(user=USER, password_env="NO_SUCH_VARIABLE_X"))

    with pytest.raises(MailerError, match="NO_SUCH_VARIABLE_X"):
        mailer.send(mail())


def test_starttls_verifies_the_certificate_and_sends(
    smtp_starttls_server: SmtpTestServer,
) -> None:
    SmtpMailer(smtp_starttls_server.config(user=USER, password=PASSWORD)).send(mail())

    [got] = smtp_starttls_server.messages
    assert got.tls
    assert got.auth_user == USER
    assert got.data == RAW


def test_implicit_tls_sends(smtp_ssl_server: SmtpTestServer) -> None:
    SmtpMailer(smtp_ssl_server.config()).send(mail())

    [got] = smtp_ssl_server.messages
    assert got.tls
    assert got.data == RAW


def test_untrusted_certificate_is_refused_permanently(
    smtp_ssl_server: SmtpTestServer,
) -> None:
    sleeps = Sleeps()
    mailer = SmtpMailer(smtp_ssl_server.config(ca_file=""), sleep=sleeps)

    with pytest.raises(SmtpPermanentError, match="certificate"):
        mailer.send(mail())

    assert sleeps.delays == []
    assert smtp_ssl_server.messages == []


def test_verification_can_be_turned_off(smtp_ssl_server: SmtpTestServer) -> None:
    SmtpMailer(smtp_ssl_server.config(ca_file="", verify_certificate=False)).send(mail())

    assert len(smtp_ssl_server.messages) == 1


def test_starttls_configured_but_server_is_plain_never_falls_back(
    smtp_server: SmtpTestServer,
) -> None:
    mailer = SmtpMailer(smtp_server.config(security="starttls"), sleep=Sleeps())

    with pytest.raises(SmtpPermanentError, match=r"STARTTLS|extension"):
        mailer.send(mail())

    assert smtp_server.messages == []


def test_greylisting_is_retried_with_backoff_until_accepted(
    smtp_server: SmtpTestServer,
) -> None:
    smtp_server.script("RCPT", "451 4.7.1 greylisted, try again", "451 4.7.1 greylisted")
    sleeps = Sleeps()

    SmtpMailer(smtp_server.config(retries=3), backoff=1.0, sleep=sleeps).send(mail())

    assert len(smtp_server.messages) == 1
    assert len(sleeps.delays) == 2
    assert 1.0 <= sleeps.delays[0] <= 1.25
    assert 2.0 <= sleeps.delays[1] <= 2.5


def test_transient_failure_that_persists_raises_transient(smtp_server: SmtpTestServer) -> None:
    smtp_server.script("DATA", *["452 4.3.1 insufficient storage"] * 3)
    sleeps = Sleeps()

    with pytest.raises(SmtpTransientError) as info:
        SmtpMailer(smtp_server.config(retries=2), sleep=sleeps).send(mail())

    assert not info.value.permanent
    assert info.value.code == 452
    assert len(sleeps.delays) == 2
    assert smtp_server.messages == []


def test_permanent_rejection_is_not_retried(smtp_server: SmtpTestServer) -> None:
    smtp_server.script("DATA", "554 5.7.1 message rejected as spam")
    sleeps = Sleeps()

    with pytest.raises(SmtpPermanentError, match="rejected as spam") as info:
        SmtpMailer(smtp_server.config(retries=3), sleep=sleeps).send(mail())

    assert info.value.code == 554
    assert sleeps.delays == []


def test_one_refused_recipient_of_two_still_delivers_to_the_other(
    smtp_server: SmtpTestServer,
) -> None:
    smtp_server.script("RCPT", "550 5.1.1 no such user")

    SmtpMailer(smtp_server.config()).send(
        mail(recipients=("gone@customer.example", "jane@customer.example"))
    )

    [got] = smtp_server.messages
    assert got.rcpt_tos == ("jane@customer.example",)


def test_connection_refused_is_transient_and_retried() -> None:
    sleeps = Sleeps()
    config = SmtpConfig(host="127.0.0.1", port=free_port(), security="plain", timeout=2.0,
                        retries=2)

    with pytest.raises(SmtpTransientError, match="connection failed"):
        SmtpMailer(config, sleep=sleeps).send(mail())

    assert len(sleeps.delays) == 2


def test_errors_are_mailer_errors_and_oserrors() -> None:
    config = SmtpConfig(host="127.0.0.1", port=free_port(), security="plain", retries=0)

    with pytest.raises(MailerError) as info:
        SmtpMailer(config).send(mail())

    assert isinstance(info.value, OSError)
    assert info.value.__cause__ is not None


def test_a_mailer_needs_a_host() -> None:
    with pytest.raises(MailerError, match=r"smtp\.host"):
        SmtpMailer(SmtpConfig())


def test_bare_lf_line_ends_go_out_as_crlf(smtp_server: SmtpTestServer) -> None:
    lf_only = RAW.replace(b"\r\n", b"\n")

    SmtpMailer(smtp_server.config()).send(mail(raw=lf_only))

    assert smtp_server.messages[0].data == RAW
