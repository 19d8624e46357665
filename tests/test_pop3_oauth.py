"""POP3 with OAuth 2.0: SASL XOAUTH2 and OAUTHBEARER against a real Dovecot whose ``oauth2``
passdb checks every token with the test authorization server (RFC 7662 introspection)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from commit_email.errors import LoginError, OAuthLoginError, SourceError
from commit_email.oauth import RefreshTokenStore, refresh_token_path
from commit_email.pipeline import Connector
from commit_email.pop3 import Pop3Mailbox
from commit_email.runner import Runner
from tests.dovecot_fixtures import DovecotServer, as_served
from tests.oauth_fixtures import OAuthTestServer
from tests.test_runner import Sleeps, customer_mail

pytestmark = pytest.mark.server


def sections(oauth_server: OAuthTestServer, dovecot: DovecotServer, *,
             auth: str = "xoauth2", grant: str = "client_credentials",
             token_user: str | None = None, **pop3: Any) -> dict[str, Any]:
    """``pop3`` and ``oauth`` sections: the mailbox logs in with tokens of a new app."""
    client = oauth_server.add_client(token_user or dovecot.user)
    oauth: dict[str, Any] = {"provider": "generic", "grant": grant,
                             "client_id": client.client_id,
                             "client_secret": client.client_secret,
                             "token_url": oauth_server.token_url}
    return {
        "pop3": {"host": dovecot.host, "port": dovecot.pop3_port, "security": "plain",
                 "user": dovecot.user, "auth": auth, "oauth": "test", "timeout": 10.0,
                 "reconnect_delay": 0.01, **pop3},
        "oauth": {"test": oauth},
        "_client": client,
    }


def connector_for(connector_factory: Callable[..., Connector],
                  parts: dict[str, Any]) -> Connector:
    return connector_factory(pop3=parts["pop3"], oauth=parts["oauth"])


def failed_logins(dovecot: DovecotServer) -> int:
    return dovecot.log.count("auth failed")


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_oauth_login_reads_the_mailbox(
        auth: str, oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    raw = customer_mail(1)
    dovecot_oauth.deliver(raw)
    conn = connector_for(connector_factory, sections(oauth_server, dovecot_oauth, auth=auth))
    with Pop3Mailbox.from_config(conn.config, credentials=conn.credentials) as box:
        [uidl] = box.uidls()
        assert box.retrieve(uidl) == as_served(raw)
    assert f"method={auth.upper()}" in dovecot_oauth.log
    assert oauth_server.introspections == 1


def test_auto_with_oauth_logs_in_with_xoauth2(
        oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    conn = connector_for(connector_factory, sections(oauth_server, dovecot_oauth, auth="auto"))
    with Pop3Mailbox.from_config(conn.config, credentials=conn.credentials) as box:
        assert box.uidls() == []
    assert "method=XOAUTH2" in dovecot_oauth.log


def test_a_run_processes_mail_with_the_token_cached_across_polls(
        oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    conn = connector_for(connector_factory, sections(oauth_server, dovecot_oauth))
    runner = Runner(conn.config, conn, sleep=Sleeps())
    for n in range(3):
        dovecot_oauth.deliver(customer_mail(n))
        summary = runner.poll()
        assert (summary.failed, summary.tickets, summary.deleted) == (False, 1, 1)
    assert oauth_server.grants["client_credentials"] == 1  # one token, three logins
    assert dovecot_oauth.log.count("method=XOAUTH2") == 3


def test_short_lived_tokens_are_refreshed_with_no_failed_login(
        oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    oauth_server.expires_in = 2
    conn = connector_for(connector_factory, sections(oauth_server, dovecot_oauth))
    runner = Runner(conn.config, conn, sleep=Sleeps())
    for n in range(4):
        dovecot_oauth.deliver(customer_mail(n))
        summary = runner.poll()
        assert not summary.failed, summary.failure
        assert summary.tickets == 1
        time.sleep(0.8)
    assert oauth_server.grants["client_credentials"] >= 2  # refreshed before expiring
    assert failed_logins(dovecot_oauth) == 0


def test_a_refresh_token_mailbox_rotates_and_survives_a_restart(
        oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    parts = sections(oauth_server, dovecot_oauth, grant="refresh_token")
    conn = connector_for(connector_factory, parts)
    store = RefreshTokenStore(refresh_token_path(conn.config, "test"))
    first = oauth_server.issue_refresh_token(parts["_client"], dovecot_oauth.user)
    store.save(first)
    dovecot_oauth.deliver(customer_mail(1))
    assert not Runner(conn.config, conn, sleep=Sleeps()).poll().failed
    rotated = store.load()
    assert rotated not in (None, first)
    oauth_server.grace = False  # from now on only the newest refresh token works
    oauth_server.revoke_access_tokens(dovecot_oauth.user)  # and the cached access token not
    restarted = connector_for(connector_factory, parts)  # a new process: nothing cached
    dovecot_oauth.deliver(customer_mail(2))
    summary = Runner(restarted.config, restarted, sleep=Sleeps()).poll()
    assert (summary.failed, summary.tickets) == (False, 1)
    assert store.load() not in (first, rotated)


# -- failures (private servers: Dovecot slows down logins from an IP after a failure) ------


@pytest.fixture
def private_dovecot(dovecot_factory: Callable[..., DovecotServer],
                    oauth_server: OAuthTestServer) -> DovecotServer:
    return dovecot_factory(oauth2_introspection_url=oauth_server.introspection_url_with_credentials)


def test_a_rejected_token_is_refreshed_and_the_login_retried_once(
        oauth_server: OAuthTestServer, private_dovecot: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    conn = connector_for(connector_factory, sections(oauth_server, private_dovecot))
    with Pop3Mailbox.from_config(conn.config, credentials=conn.credentials) as box:
        box.uidls()
    oauth_server.revoke_access_tokens()  # revoked early: the cached token no longer works
    private_dovecot.deliver(customer_mail(1))
    with Pop3Mailbox.from_config(conn.config, credentials=conn.credentials) as box:
        assert len(box.uidls()) == 1
    assert oauth_server.grants["client_credentials"] == 2
    assert private_dovecot.log.count("Login: user=") == 2


@pytest.mark.parametrize(("auth", "status"), [("xoauth2", "401"),
                                              ("oauthbearer", "invalid_token")])
def test_a_login_refused_with_a_new_token_names_mailbox_mechanism_and_status(
        auth: str, status: str, oauth_server: OAuthTestServer, private_dovecot: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    # the app's tokens are for another mailbox: every token is refused
    parts = sections(oauth_server, private_dovecot, auth=auth, token_user="someone-else")
    conn = connector_for(connector_factory, parts)
    with pytest.raises(OAuthLoginError) as caught:
        Pop3Mailbox.from_config(conn.config, credentials=conn.credentials).connect()
    error = caught.value
    assert error.permanent
    assert (error.mechanism, error.status) == (auth.upper(), status)
    assert str(error).startswith(f"POP3 {conn.config.pop3.mailbox}: {auth.upper()} login "
                                 f"refused (status {status}")
    assert "-ERR [AUTH] Authentication failed." in str(error)
    assert oauth_server.grants["client_credentials"] == 2  # refreshed once, not more
    for token in oauth_server.tokens:
        assert token not in str(error)


def test_a_server_without_the_mechanism_is_a_clear_login_error(
        oauth_server: OAuthTestServer, dovecot_factory: Callable[..., DovecotServer],
        connector_factory: Callable[..., Connector]) -> None:
    plain = dovecot_factory()
    conn = connector_for(connector_factory, sections(oauth_server, plain))
    with pytest.raises(LoginError) as caught:
        Pop3Mailbox.from_config(conn.config, credentials=conn.credentials).connect()
    assert caught.value.permanent
    assert "Unsupported authentication mechanism" in str(caught.value)


def test_token_endpoint_down_backs_off_then_recovers(
        oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    conn = connector_for(connector_factory, sections(oauth_server, dovecot_oauth))
    dovecot_oauth.deliver(customer_mail(1))
    oauth_server.down = True
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            oauth_server.down = False  # the provider is back after two back-offs

    runner = Runner(conn.config, conn, sleep=sleep, rng=random.Random(1))
    assert runner.run(once=True) == 0
    assert len(waits) == 2
    assert isinstance(runner.last_error, SourceError)
    assert "temporarily_unavailable" in str(runner.last_error)
    assert dovecot_oauth.message_files() == []  # processed and deleted after recovery
    assert failed_logins(dovecot_oauth) == 0


def test_revoked_refresh_token_fails_the_poll_and_touches_no_mail(
        oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector], tmp_path: Path) -> None:
    parts = sections(oauth_server, dovecot_oauth, grant="refresh_token")
    conn = connector_for(connector_factory, parts)
    path = refresh_token_path(conn.config, "test")
    RefreshTokenStore(path).save(oauth_server.issue_refresh_token(parts["_client"],
                                                                  dovecot_oauth.user))
    oauth_server.revoke_refresh_tokens()
    dovecot_oauth.deliver(customer_mail(1))
    runner = Runner(conn.config, conn, sleep=Sleeps())
    summary = runner.poll()
    assert summary.failed
    assert summary.failure.endswith("run: commit-email auth login test")
    assert "invalid_grant" in summary.failure
    assert isinstance(runner.last_error, LoginError) and runner.last_error.permanent
    with pytest.raises(LoginError):
        runner.run(once=True)  # --once stops at once (the CLI exits 2)
    assert len(dovecot_oauth.message_files()) == 1
    assert path.exists()
    assert failed_logins(dovecot_oauth) == 0  # no token was ever sent to the server
