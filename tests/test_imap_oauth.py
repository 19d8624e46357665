"""IMAP with OAuth 2.0: AUTHENTICATE XOAUTH2 and OAUTHBEARER against a real Dovecot whose
``oauth2`` passdb checks every token with the test authorization server (RFC 7662
introspection), and a whole run over IMAP that logs in that way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from commit_email.errors import LoginError, OAuthLoginError
from commit_email.imap import ImapMailbox
from commit_email.pipeline import Connector
from commit_email.runner import Runner
from tests.dovecot_fixtures import DovecotServer, as_served
from tests.oauth_fixtures import OAuthTestServer
from tests.test_runner import Sleeps, customer_mail

pytestmark = pytest.mark.server


def oauth_connector(connector_factory: Callable[..., Connector], oauth_server: OAuthTestServer,
                    dovecot: DovecotServer, *, auth: str = "xoauth2",
                    token_user: str | None = None, **imap: Any) -> Connector:
    """A connector whose ``[imap]`` mailbox logs in with the tokens of a new app."""
    if not dovecot.imap_port:
        pytest.fail("dovecot-imapd is not installed")
    client = oauth_server.add_client(token_user or dovecot.user)
    return connector_factory(
        imap={"host": dovecot.host, "port": dovecot.imap_port, "security": "plain",
              "user": dovecot.user, "auth": auth, "oauth": "test", "timeout": 10.0,
              "reconnect_delay": 0.01, **imap},
        oauth={"test": {"provider": "generic", "grant": "client_credentials",
                        "client_id": client.client_id, "client_secret": client.client_secret,
                        "token_url": oauth_server.token_url}},
    )


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_oauth_login_reads_the_folder(
        auth: str, oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    raw = customer_mail(1)
    dovecot_oauth.deliver(raw)
    conn = oauth_connector(connector_factory, oauth_server, dovecot_oauth, auth=auth,
                           after="keep")
    with ImapMailbox.from_config(conn.config, credentials=conn.credentials) as box:
        [message_id] = box.message_ids()
        assert list(box.fetch([message_id])) == [(message_id, as_served(raw))]
    assert f"method={auth.upper()}" in dovecot_oauth.log
    assert "imap-login: Info: Login: user=" in dovecot_oauth.log
    assert oauth_server.introspections == 1


def test_a_run_moves_mail_with_one_token_for_every_poll(
        oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    conn = oauth_connector(connector_factory, oauth_server, dovecot_oauth, idle=False)
    runner = Runner(conn.config, conn, sleep=Sleeps())
    for n in range(3):
        dovecot_oauth.deliver(customer_mail(n))
        summary = runner.poll()
        assert (summary.failed, summary.tickets) == (False, 1), summary.failure
    assert oauth_server.grants["client_credentials"] == 1  # one token, every login
    assert len(dovecot_oauth.folder_files("Processed")) == 3
    assert dovecot_oauth.message_files() == []


@pytest.fixture
def private_dovecot(dovecot_factory: Callable[..., DovecotServer],
                    oauth_server: OAuthTestServer) -> DovecotServer:
    """A Dovecot of this test alone (it slows down logins from an IP after a failure)."""
    return dovecot_factory(oauth2_introspection_url=oauth_server.introspection_url_with_credentials)


def test_a_rejected_token_is_refreshed_and_the_login_retried_once(
        oauth_server: OAuthTestServer, private_dovecot: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    conn = oauth_connector(connector_factory, oauth_server, private_dovecot, after="keep")
    with ImapMailbox.from_config(conn.config, credentials=conn.credentials) as box:
        assert box.message_ids() == []
    oauth_server.revoke_access_tokens()  # the cached token no longer works
    private_dovecot.deliver(customer_mail(1))
    with ImapMailbox.from_config(conn.config, credentials=conn.credentials) as box:
        assert len(box.message_ids()) == 1
    assert oauth_server.grants["client_credentials"] == 2


@pytest.mark.parametrize(("auth", "status"), [("xoauth2", "401"),
                                              ("oauthbearer", "invalid_token")])
def test_a_login_refused_with_a_new_token_names_mailbox_mechanism_and_status(
        auth: str, status: str, oauth_server: OAuthTestServer, private_dovecot: DovecotServer,
        connector_factory: Callable[..., Connector]) -> None:
    # the app's tokens are for another mailbox: every token is refused
    conn = oauth_connector(connector_factory, oauth_server, private_dovecot, auth=auth,
                           token_user="someone-else")
    with pytest.raises(OAuthLoginError) as caught:
        ImapMailbox.from_config(conn.config, credentials=conn.credentials).connect()
    error = caught.value
    assert error.permanent
    assert (error.mechanism, error.status) == (auth.upper(), status)
    assert str(error).startswith(f"IMAP {conn.config.imap.mailbox}: {auth.upper()} login "
                                 f"refused (status {status}")
    assert oauth_server.grants["client_credentials"] == 2  # refreshed once, not more
    for token in oauth_server.tokens:
        assert token not in str(error)


def test_a_server_without_the_mechanism_is_a_clear_login_error(
        oauth_server: OAuthTestServer, dovecot_factory: Callable[..., DovecotServer],
        connector_factory: Callable[..., Connector]) -> None:
    plain = dovecot_factory()
    conn = oauth_connector(connector_factory, oauth_server, plain)
    with pytest.raises(LoginError) as caught:
        ImapMailbox.from_config(conn.config, credentials=conn.credentials).connect()
    assert caught.value.permanent
    assert "XOAUTH2" in str(caught.value)
