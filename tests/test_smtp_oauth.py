"""SMTP out with OAuth 2.0: XOAUTH2 and OAUTHBEARER against aiosmtpd, each token checked with
the test authorization server's introspection endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from commit_email.config import Config, parse_config
from commit_email.model import OutgoingMail
from commit_email.oauth import OAuthCredentials
from commit_email.smtp import SmtpMailer, SmtpPermanentError, SmtpTransientError
from tests.oauth_fixtures import OAuthTestServer
from tests.smtp_fixtures import SmtpTestServer

pytestmark = pytest.mark.server

USER = "support@acme.example"


def config_for(smtp: SmtpTestServer, oauth_server: OAuthTestServer, tmp_path: Path, *,
               auth: str = "xoauth2", token_user: str = USER, **oauth: Any) -> Config:
    client = oauth_server.add_client(token_user)
    section = {"provider": "generic", "client_id": client.client_id,
               "client_secret": client.client_secret, "token_url": oauth_server.token_url,
               **oauth}
    return parse_config({
        "connector": {"state_dir": str(tmp_path / "state")}, "store": {"url": "memory:"},
        "smtp": {"host": smtp.host, "port": smtp.port, "security": "plain", "user": USER,
                 "auth": auth, "oauth": "test", "timeout": 5.0, "retries": 0},
        "oauth": {"test": section},
    })


def mailer_for(config: Config, credentials: OAuthCredentials | None = None) -> SmtpMailer:
    credentials = credentials or OAuthCredentials(config)
    return SmtpMailer(config.smtp, tokens=credentials.get("test"), sleep=lambda s: None)


def mail(n: int = 1) -> OutgoingMail:
    raw = (f"From: {USER}\r\nTo: bob@customer.example\r\nSubject: Re: ticket {n}\r\n"
           f"Message-ID: <out{n}@acme.example>\r\n\r\nWe are on it.\r\n").encode()
    return OutgoingMail(kind="auto_response", sender=USER, recipients=("bob@customer.example",),
                        raw=raw, message_id=f"<out{n}@acme.example>")


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_mail_goes_out_with_an_oauth_login(
        auth: str, smtp_oauth_server: SmtpTestServer, oauth_server: OAuthTestServer,
        tmp_path: Path) -> None:
    mailer = mailer_for(config_for(smtp_oauth_server, oauth_server, tmp_path, auth=auth))
    mailer.send(mail(1))
    mailer.send(mail(2))  # on the same session: one login for both
    assert smtp_oauth_server.oauth_logins == [(auth.upper(), USER, True)]
    smtp_oauth_server.drop_connections()  # the relay's idle time-out
    mailer.send(mail(3))  # a new session logs in again, with the cached token
    got = smtp_oauth_server.messages
    assert [m.auth_user for m in got] == [USER, USER, USER]
    assert smtp_oauth_server.oauth_logins == [(auth.upper(), USER, True)] * 2
    assert smtp_oauth_server.connections == mailer.connections == 2
    assert oauth_server.grants["client_credentials"] == 1  # the token was cached


def test_a_rejected_token_is_refreshed_and_the_login_retried(
        smtp_oauth_server: SmtpTestServer, oauth_server: OAuthTestServer,
        tmp_path: Path) -> None:
    mailer = mailer_for(config_for(smtp_oauth_server, oauth_server, tmp_path))
    mailer.send(mail(1))
    oauth_server.revoke_access_tokens()
    smtp_oauth_server.drop_connections()  # so that mail 2 needs a new login
    mailer.send(mail(2))
    assert len(smtp_oauth_server.messages) == 2
    assert smtp_oauth_server.oauth_logins == [("XOAUTH2", USER, True),
                                              ("XOAUTH2", USER, False),
                                              ("XOAUTH2", USER, True)]


def test_a_relay_refusing_a_new_token_too_is_permanent(
        smtp_oauth_server: SmtpTestServer, oauth_server: OAuthTestServer,
        tmp_path: Path) -> None:
    config = config_for(smtp_oauth_server, oauth_server, tmp_path, auth="oauthbearer",
                        token_user="someone-else@acme.example")
    with pytest.raises(SmtpPermanentError) as caught:
        mailer_for(config).send(mail())
    text = str(caught.value)
    assert text.startswith(f"SMTP {USER}@{smtp_oauth_server.host}:{smtp_oauth_server.port}: "
                           "OAUTHBEARER login refused (status 401, scope mail): 535 5.7.8")
    assert caught.value.code == 535
    assert len(smtp_oauth_server.oauth_logins) == 2
    for token in oauth_server.tokens:
        assert token not in text
    assert smtp_oauth_server.messages == []


def test_token_endpoint_down_leaves_the_mail_queued(
        smtp_oauth_server: SmtpTestServer, oauth_server: OAuthTestServer,
        tmp_path: Path) -> None:
    oauth_server.down = True
    with pytest.raises(SmtpTransientError) as caught:
        mailer_for(config_for(smtp_oauth_server, oauth_server, tmp_path)).send(mail())
    assert not caught.value.permanent
    assert "temporarily_unavailable" in str(caught.value)


def test_a_refused_grant_leaves_the_mail_queued(
        smtp_oauth_server: SmtpTestServer, oauth_server: OAuthTestServer,
        tmp_path: Path) -> None:
    config = config_for(smtp_oauth_server, oauth_server, tmp_path, client_secret="wrong")
    with pytest.raises(SmtpTransientError) as caught:
        mailer_for(config).send(mail())
    assert not caught.value.permanent  # fixing the secret sends it: it must not be given up
    assert "invalid_client" in str(caught.value)


@pytest.mark.parametrize("auth", ["plain", "login"])
def test_a_forced_password_mechanism(auth: str, smtp_server: SmtpTestServer) -> None:
    config = smtp_server.config(user="support", password="secret", auth=auth)
    SmtpMailer(config).send(mail())
    assert [m.auth_user for m in smtp_server.messages] == ["support"]
