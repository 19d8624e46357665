"""The command line with OAuth 2.0, end to end: ``auth login`` (device code, and the loopback
browser flow), ``run --once`` reading a Dovecot mailbox and sending through an SMTP relay with
tokens, a revoked sign-in, ``auth status --test``, and no token in any output or file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from commit_email.store import open_store
from tests.dovecot_fixtures import DovecotServer
from tests.oauth_fixtures import Client, OAuthTestServer
from tests.shared import DIRECTORY
from tests.smtp_fixtures import SmtpTestServer
from tests.test_runner import customer_mail, stranger_mail

pytestmark = pytest.mark.server


def write_config(tmp_path: Path, oauth_server: OAuthTestServer, client: Client,
                 dovecot: DovecotServer, smtp: SmtpTestServer | None = None,
                 **oauth: str) -> Path:
    section = {"provider": "generic", "grant": "refresh_token", "client_id": client.client_id,
               "client_secret": client.client_secret, "token_url": oauth_server.token_url,
               "device_url": oauth_server.device_url,
               "authorize_url": oauth_server.authorize_url, **oauth}
    lines = "\n".join(f'{k} = "{v}"' for k, v in section.items())
    smtp_section = "" if smtp is None else f"""
[smtp]
host = "{smtp.host}"
port = {smtp.port}
security = "plain"
user = "{dovecot.user}"
auth = "oauthbearer"
oauth = "m365"
from_address = "support@helpdesk.example"
retries = 0
"""
    path = tmp_path / "commit-email.toml"
    path.write_text(f"""
[connector]
public_address = "support@helpdesk.example"
internal_address = "helpdesk@helpdesk.example"
state_dir = "{tmp_path / 'state'}"

[store]
url = "sqlite:///{tmp_path / 'commit.db'}"

[pop3]
host = "{dovecot.host}"
port = {dovecot.pop3_port}
security = "plain"
user = "{dovecot.user}"
auth = "xoauth2"
oauth = "m365"
timeout = 10
reconnect_delay = 0.05
once_attempts = 2
{smtp_section}
[oauth.m365]
{lines}
""")
    store = open_store(f"sqlite:///{tmp_path / 'commit.db'}")
    store.import_accounts(DIRECTORY)
    store.close()
    return path


def cli(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commit_email", *args, "--config",
                           str(config)], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def device_login(config: Path, oauth_server: OAuthTestServer, user: str,
                 env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``auth login`` with the device code flow; the test server's user approves the code."""
    proc = subprocess.Popen([sys.executable, "-m", "commit_email", "auth", "login", "m365",
                             "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "To sign in, open" in first, first + (proc.stderr.read() if proc.stderr else "")
    code = first.rsplit(" ", 1)[-1].strip()
    assert code in oauth_server.pending_user_codes()
    oauth_server.approve(code, user)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


def every_token(oauth_server: OAuthTestServer) -> list[str]:
    with oauth_server.lock:
        values = list(oauth_server.tokens)
        values += [t.refresh_token for t in oauth_server.tokens.values() if t.refresh_token]
    return values


def test_sign_in_then_run_with_oauth_in_and_out_and_a_revoked_sign_in(
        tmp_path: Path, oauth_server: OAuthTestServer, dovecot_oauth: DovecotServer,
        smtp_oauth_server: SmtpTestServer, cli_env: dict[str, str]) -> None:
    client = oauth_server.add_client(dovecot_oauth.user)
    config = write_config(tmp_path, oauth_server, client, dovecot_oauth, smtp_oauth_server)
    dovecot_oauth.deliver(customer_mail(1))  # opens a ticket, answered by an auto-response
    dovecot_oauth.deliver(stranger_mail(2))  # nobody's: forwarded to the help desk

    # before anyone signed in: one line saying what to do, exit 2, no mail touched
    before = cli(config, "run", "--once", env=cli_env)
    assert before.returncode == 2, before.stderr
    assert before.stderr.strip().splitlines()[-1] == (
        f"commit-email: error: POP3 {dovecot_oauth.user}@{dovecot_oauth.host}:"
        f"{dovecot_oauth.pop3_port}: oauth m365: no refresh token yet; "
        "run: commit-email auth login m365")
    assert "Traceback" not in before.stderr
    assert len(dovecot_oauth.message_files()) == 2

    login = device_login(config, oauth_server, dovecot_oauth.user, cli_env)
    assert login.returncode == 0, login.stderr
    assert "signed in; the refresh token is kept in" in login.stdout
    token_file = tmp_path / "state" / "oauth" / "m365.json"
    if os.name == "posix":
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    run = cli(config, "-vv", "run", "--once", env=cli_env)
    assert run.returncode == 0, run.stderr
    assert dovecot_oauth.message_files() == []
    sent = smtp_oauth_server.messages
    assert len(sent) == 2  # the auto-response and the forward
    assert all(m.auth_user == dovecot_oauth.user for m in sent)
    assert {m for m, _, ok in smtp_oauth_server.oauth_logins if ok} == {"OAUTHBEARER"}
    assert "method=XOAUTH2" in dovecot_oauth.log

    status = cli(config, "auth", "status", "--test", env=cli_env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "m365: provider generic, grant refresh_token, used by pop3 " in status.stdout
    assert "access token: OK, valid until" in status.stdout
    assert f"pop3 {dovecot_oauth.user}@" in status.stdout and "login OK" in status.stdout
    assert f"smtp {smtp_oauth_server.host}: login OK" in status.stdout
    assert len(smtp_oauth_server.messages) == 2  # the test sent nothing

    # consent withdrawn: one clear line, exit 2, nothing deleted; a new sign-in fixes it
    oauth_server.revoke_refresh_tokens()
    dovecot_oauth.deliver(customer_mail(3))
    revoked = cli(config, "run", "--once", env=cli_env)
    assert revoked.returncode == 2
    last = revoked.stderr.strip().splitlines()[-1]
    assert "invalid_grant" in last and last.endswith("run: commit-email auth login m365")
    assert len(dovecot_oauth.message_files()) == 1
    assert token_file.exists()
    assert device_login(config, oauth_server, dovecot_oauth.user, cli_env).returncode == 0
    again = cli(config, "run", "--once", env=cli_env)
    assert again.returncode == 0, again.stderr
    assert dovecot_oauth.message_files() == []

    # no access or refresh token in any output, the store, or the state folder (but the
    # one refresh token file, whose job it is)
    outputs = [r.stdout + r.stderr for r in (before, login, run, status, revoked, again)]
    stored = (tmp_path / "commit.db").read_bytes()
    others = [p.read_bytes() for p in (tmp_path / "state").rglob("*")
              if p.is_file() and p.parent.name != "oauth"]
    for token in every_token(oauth_server):
        assert not any(token in text for text in outputs)
        assert token.encode() not in stored
        assert not any(token.encode() in data for data in others)


def test_loopback_browser_sign_in(tmp_path: Path, oauth_server: OAuthTestServer,
                                  dovecot_oauth: DovecotServer,
                                  cli_env: dict[str, str]) -> None:
    client = oauth_server.add_client(dovecot_oauth.user)
    config = write_config(tmp_path, oauth_server, client, dovecot_oauth)
    oauth_server.auto_approve_user = dovecot_oauth.user
    proc = subprocess.Popen([sys.executable, "-m", "commit_email", "auth", "login", "m365",
                             "--flow", "browser", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env)
    assert proc.stdout is not None
    assert "open this address in a browser" in proc.stdout.readline()
    url = proc.stdout.readline().strip()
    assert "code_challenge_method=S256" in url and "redirect_uri=http%3A%2F%2F127.0.0.1" in url
    # the browser: the authorization server signs the user in and redirects to the loopback
    with urllib.request.urlopen(url, timeout=10) as page:
        assert b"Signed in" in page.read()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert oauth_server.grants["authorization_code"] == 1
    dovecot_oauth.deliver(customer_mail(1))
    run = cli(config, "run", "--once", env=cli_env)
    assert run.returncode == 0, run.stderr


def test_login_is_only_for_refresh_tokens(tmp_path: Path, oauth_server: OAuthTestServer,
                                          dovecot_oauth: DovecotServer,
                                          cli_env: dict[str, str]) -> None:
    client = oauth_server.add_client(dovecot_oauth.user)
    config = write_config(tmp_path, oauth_server, client, dovecot_oauth,
                          grant="client_credentials")
    result = cli(config, "auth", "login", "m365", env=cli_env)
    assert result.returncode == 2
    assert "needs no sign-in" in result.stderr
    missing = cli(config, "auth", "login", "nope", env=cli_env)
    assert "no section [oauth.nope] (sections: m365)" in missing.stderr


def test_auth_status_without_a_sign_in(tmp_path: Path, oauth_server: OAuthTestServer,
                                       dovecot_oauth: DovecotServer,
                                       cli_env: dict[str, str]) -> None:
    client = oauth_server.add_client(dovecot_oauth.user)
    config = write_config(tmp_path, oauth_server, client, dovecot_oauth)
    status = cli(config, "auth", "status", env=cli_env)
    assert status.returncode == 0
    assert "refresh token: none yet; run: commit-email auth login m365" in status.stdout
    tested = cli(config, "auth", "status", "--test", env=cli_env)
    assert tested.returncode == 1
    assert "access token: FAILED: oauth m365: no refresh token yet" in tested.stdout
    assert "login FAILED" in tested.stdout
