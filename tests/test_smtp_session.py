"""One SMTP session for many mails (aiosmtpd on 127.0.0.1): kept across mails, pipelined
when offered, closed when idle, reopened when the server dropped it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from commit_email.errors import MailerError
from commit_email.model import OutgoingMail
from commit_email.smtp import SmtpMailer, SmtpPermanentError, SmtpTransientError
from tests.dovecot_fixtures import TestCA
from tests.smtp_fixtures import PASSWORD, USER, SmtpTestServer
from tests.test_smtp import RAW, Sleeps

pytestmark = pytest.mark.server


def mail(n: int, *recipients: str) -> OutgoingMail:
    raw = RAW.replace(b"ce.1@acme.example", f"ce.{n}@acme.example".encode())
    return OutgoingMail(kind="forward", sender="support@acme.example",
                        recipients=recipients or (f"user{n}@customer.example",), raw=raw,
                        message_id=f"ce.{n}@acme.example")


def ids(server: SmtpTestServer) -> list[str]:
    out = []
    for got in server.messages:
        line = next(h for h in got.data.split(b"\r\n") if h.startswith(b"Message-ID:"))
        out.append(line.split(b"<")[1].rstrip(b">").decode())
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pipelining_server() -> Iterator[SmtpTestServer]:
    from tests.smtp_fixtures import _have_aiosmtpd, _require
    _require(_have_aiosmtpd, "aiosmtpd is not installed")
    server = SmtpTestServer(pipelining=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pipelining_starttls_server(test_ca: TestCA) -> Iterator[SmtpTestServer]:
    server = SmtpTestServer(security="starttls", ca=test_ca, pipelining=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def results(mailer: SmtpMailer, mails: list[OutgoingMail]) -> list[tuple[str, str]]:
    return [(m.message_id, "" if e is None else str(e)) for m, e in mailer.send_many(mails)]


# One session --------------------------------------------------------------------------

def test_many_mails_go_over_one_tls_session_with_one_login(
    pipelining_starttls_server: SmtpTestServer,
) -> None:
    server = pipelining_starttls_server
    mailer = SmtpMailer(server.config(user=USER, password=PASSWORD))
    for n in range(5):
        mailer.send(mail(n))
    assert results(mailer, [mail(n) for n in range(5, 30)]) == [
        (f"ce.{n}@acme.example", "") for n in range(5, 30)]

    assert server.connections == 1 and mailer.connections == 1
    assert ids(server) == [f"ce.{n}@acme.example" for n in range(30)]
    assert all(got.tls and got.auth_user == USER for got in server.messages)
    # Every envelope went out in one piece, the next one behind the previous content.
    assert server.pipelined == [True] * 30


def test_without_pipelining_each_command_waits_for_its_reply(
    smtp_server: SmtpTestServer,
) -> None:
    mailer = SmtpMailer(smtp_server.config())
    assert [e for _, e in mailer.send_many([mail(n) for n in range(10)])] == [None] * 10

    assert smtp_server.connections == 1
    assert smtp_server.pipelined == [False] * 10
    assert ids(smtp_server) == [f"ce.{n}@acme.example" for n in range(10)]


def test_the_content_arrives_unchanged_when_pipelined(pipelining_server: SmtpTestServer) -> None:
    lf_only = RAW.replace(b"\r\n", b"\n") + b".\n..two dots\n."  # no final line end
    mailer = SmtpMailer(pipelining_server.config())
    sent = [OutgoingMail(kind="forward", sender="support@acme.example",
                         recipients=("a@customer.example",), raw=raw, message_id=f"m{n}")
            for n, raw in enumerate((RAW, lf_only, RAW))]
    assert [e for _, e in mailer.send_many(sent)] == [None, None, None]

    got = [m.data for m in pipelining_server.messages]
    assert got[0] == RAW == got[2]
    assert got[1] == RAW + b".\r\n..two dots\r\n.\r\n"


def test_an_idle_session_is_closed_and_the_next_mail_opens_a_new_one(
    pipelining_server: SmtpTestServer,
) -> None:
    clock = Clock()
    mailer = SmtpMailer(pipelining_server.config(idle_timeout=30), clock=clock)
    mailer.send(mail(1))
    clock.now += 29
    assert mailer.close_if_idle()  # still open: not idle long enough
    mailer.send(mail(2))
    clock.now += 31
    assert not mailer.close_if_idle()  # closed with QUIT
    mailer.send(mail(3))
    clock.now += 31
    mailer.send(mail(4))  # the idle session is noticed when the next mail comes

    assert pipelining_server.connections == 3
    assert ids(pipelining_server) == [f"ce.{n}@acme.example" for n in (1, 2, 3, 4)]


# The server drops the session ----------------------------------------------------------

@pytest.mark.parametrize("pipelining", [False, True])
def test_a_session_the_server_closed_between_mails_is_reopened_at_no_cost(
    pipelining: bool, pipelining_server: SmtpTestServer, smtp_server: SmtpTestServer,
) -> None:
    server = pipelining_server if pipelining else smtp_server
    mailer = SmtpMailer(server.config(retries=0), sleep=Sleeps())
    mailer.send(mail(1))
    server.drop_connections()  # the server's own idle time-out, or a restart
    mailer.send(mail(2))  # no error although retries = 0: a dropped session is no failure
    assert results(mailer, [mail(3), mail(4)]) == [("ce.3@acme.example", ""),
                                                   ("ce.4@acme.example", "")]
    server.drop_connections()
    assert results(mailer, [mail(5)]) == [("ce.5@acme.example", "")]

    assert ids(server) == [f"ce.{n}@acme.example" for n in range(1, 6)]
    assert server.connections == 3


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_drop_during_data_sends_the_mail_again_on_a_new_session(
    pipelining: bool, pipelining_server: SmtpTestServer, smtp_server: SmtpTestServer,
) -> None:
    server = pipelining_server if pipelining else smtp_server
    mailer = SmtpMailer(server.config(retries=0))
    server.script("DATA", "250 2.0.0 queued", "drop")  # the second mail's DATA is cut off

    assert results(mailer, [mail(n) for n in range(1, 5)]) == [
        (f"ce.{n}@acme.example", "") for n in range(1, 5)]

    assert ids(server) == [f"ce.{n}@acme.example" for n in (2, 3, 4)]  # 1: scripted 250
    assert server.connections == 2


def test_a_reply_lost_after_the_server_took_the_mail_repeats_it_with_its_message_id(
    pipelining_server: SmtpTestServer,
) -> None:
    """At least once: the server kept mail 2 but the connection closed before its reply,
    so the client cannot know; it sends it again, and the receiver sees one Message-ID
    twice (which it can de-duplicate)."""
    mailer = SmtpMailer(pipelining_server.config(retries=0))
    mailer.send(mail(1))
    pipelining_server.script("DATA", "accept-drop")
    assert results(mailer, [mail(2), mail(3)]) == [("ce.2@acme.example", ""),
                                                   ("ce.3@acme.example", "")]

    assert ids(pipelining_server) == ["ce.1@acme.example", "ce.2@acme.example",
                                      "ce.2@acme.example", "ce.3@acme.example"]


def test_a_new_session_that_breaks_at_once_is_a_transient_failure(
    pipelining_server: SmtpTestServer,
) -> None:
    """Only a session that worked is reopened for free: one that drops its very first
    mail counts against ``retries`` (a server that always drops must not loop us)."""
    pipelining_server.script("DATA", "drop", "drop", "drop")
    sleeps = Sleeps()
    mailer = SmtpMailer(pipelining_server.config(retries=2), sleep=sleeps)

    got = list(mailer.send_many([mail(1), mail(2)]))

    [(failed, error)] = got  # mail 2 is not tried: the server cannot take mail now
    assert failed.message_id == "ce.1@acme.example"
    assert isinstance(error, SmtpTransientError) and not error.permanent
    assert error.code is None and len(sleeps.delays) == 2
    assert pipelining_server.messages == [] and pipelining_server.connections == 3


# Refusals in a pipelined batch -----------------------------------------------------------

def test_a_4xx_to_one_rcpt_of_a_pipelined_batch_fails_only_that_recipient_or_mail(
    pipelining_server: SmtpTestServer, caplog: pytest.LogCaptureFixture,
) -> None:
    server = pipelining_server
    server.refuse("busy@customer.example", "451 4.2.1 mailbox busy, try later")
    server.refuse("gone@customer.example", "550 5.1.1 no such user")
    mailer = SmtpMailer(server.config(retries=0))
    batch = [mail(1), mail(2, "ok@customer.example", "busy@customer.example"),
             mail(3, "busy@customer.example"), mail(4, "gone@customer.example"), mail(5)]

    got = results(mailer, batch)

    assert got == [
        ("ce.1@acme.example", ""),
        ("ce.2@acme.example", ""),  # taken for ok@: failing it would send it to ok@ again
        ("ce.3@acme.example", "all recipients refused (busy@customer.example: "
                              "451 4.2.1 mailbox busy, try later)"),
        ("ce.4@acme.example", "all recipients refused (gone@customer.example: "
                              "550 5.1.1 no such user)"),
        ("ce.5@acme.example", ""),
    ]
    errors = {m.message_id: e for m, e in mailer.send_many([mail(3, "busy@customer.example"),
                                                             mail(4, "gone@customer.example")])}
    assert isinstance(errors["ce.3@acme.example"], SmtpTransientError)
    assert not errors["ce.3@acme.example"].permanent  # type: ignore[union-attr]
    assert isinstance(errors["ce.4@acme.example"], SmtpPermanentError)
    assert [m.rcpt_tos for m in server.messages] == [
        ("user1@customer.example",), ("ok@customer.example",), ("user5@customer.example",)]
    assert "busy@customer.example (451" in caplog.text
    assert server.connections == 1  # refusals never cost the session


def test_a_transient_refusal_is_retried_after_the_mails_behind_it(
    pipelining_server: SmtpTestServer,
) -> None:
    pipelining_server.script("RCPT", "451 4.7.1 greylisted")
    sleeps = Sleeps()
    mailer = SmtpMailer(pipelining_server.config(retries=1), sleep=sleeps)

    got = results(mailer, [mail(1), mail(2)])

    assert got == [("ce.2@acme.example", ""), ("ce.1@acme.example", "")]
    assert len(sleeps.delays) == 1


def test_an_address_that_cannot_be_written_is_refused_before_anything_is_sent(
    pipelining_server: SmtpTestServer,
) -> None:
    mailer = SmtpMailer(pipelining_server.config())
    evil = mail(2, "x@customer.example>\r\nRCPT TO:<victim@else.example")
    got = dict(results(mailer, [mail(1), evil, mail(3)]))

    assert got["ce.2@acme.example"].startswith("address")
    assert ids(pipelining_server) == ["ce.1@acme.example", "ce.3@acme.example"]
    assert all(m.rcpt_tos != ("victim@else.example",) for m in pipelining_server.messages)


def test_send_raises_what_send_many_yields(smtp_server: SmtpTestServer) -> None:
    smtp_server.refuse("gone@customer.example")
    with pytest.raises(MailerError, match="no such user"):
        SmtpMailer(smtp_server.config()).send(mail(1, "gone@customer.example"))
