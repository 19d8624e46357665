"""OAuth 2.0 credentials: grants against a real authorization server, the token cache, the
refresh-token file, the token command, and the SASL messages."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from commit_email.config import Config, parse_config
from commit_email.errors import ConfigError, TokenRefused, TokenUnavailable
from commit_email.oauth import (
    AccessToken,
    Credential,
    OAuthCredentials,
    RefreshTokenStore,
    SaslChallenge,
    TokenRejected,
    endpoints,
    failure_reply,
    log_in,
    login_error,
    parse_challenge,
    refresh_token_path,
    sasl_response,
)
from tests.oauth_fixtures import OAuthTestServer

pytestmark = pytest.mark.server


def oauth_config(tmp_path: Path, **section: Any) -> Config:
    values = {"provider": "generic", "grant": "client_credentials", **section}
    return parse_config({"connector": {"state_dir": str(tmp_path / "state")},
                         "store": {"url": "memory:"}, "oauth": {"test": values}})


def client_credentials(server: OAuthTestServer, tmp_path: Path, user: str = "support") -> Config:
    client = server.add_client(user)
    return oauth_config(tmp_path, client_id=client.client_id,
                        client_secret=client.client_secret, token_url=server.token_url)


def refresh_setup(server: OAuthTestServer, tmp_path: Path,
                  user: str = "support") -> tuple[Config, str]:
    client = server.add_client(user)
    config = oauth_config(tmp_path, grant="refresh_token", client_id=client.client_id,
                          client_secret=client.client_secret, token_url=server.token_url)
    refresh = server.issue_refresh_token(client, user)
    RefreshTokenStore(refresh_token_path(config, "test")).save(refresh)
    return config, refresh


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- grants against the server ---------------------------------------------------------------


def test_client_credentials_token_is_one_the_server_accepts(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    config = client_credentials(oauth_server, tmp_path)
    token = OAuthCredentials(config).get("test").access_token()
    assert oauth_server.access_token_valid(token.value)
    assert token.lifetime == 3600
    assert oauth_server.grants["client_credentials"] == 1


def test_a_token_is_cached_until_a_margin_before_it_expires(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    clock = Clock()
    config = client_credentials(oauth_server, tmp_path)
    credential = OAuthCredentials(config, clock=clock).get("test")
    first = credential.access_token()
    clock.now += 3600 - 301  # five minutes and a second before it expires: still used
    assert credential.access_token() is first
    clock.now += 2  # inside the margin: replaced
    second = credential.access_token()
    assert second is not first and second.value != first.value
    assert oauth_server.grants["client_credentials"] == 2


def test_a_session_that_would_outlive_the_token_gets_a_new_one(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    clock = Clock()
    credential = OAuthCredentials(client_credentials(oauth_server, tmp_path),
                                  clock=clock).get("test")
    first = credential.access_token()
    clock.now += 1800
    assert credential.access_token(valid_for=600) is first
    assert credential.access_token(valid_for=1700) is not first


def test_short_lived_tokens_keep_a_quarter_of_their_life_as_margin(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    oauth_server.expires_in = 4
    clock = Clock()
    credential = OAuthCredentials(client_credentials(oauth_server, tmp_path),
                                  clock=clock).get("test")
    first = credential.access_token()
    clock.now += 2.9
    assert credential.access_token() is first
    clock.now += 0.2  # 3.1 s of 4: within the last quarter
    assert credential.access_token() is not first


def test_a_rejected_token_is_not_handed_out_again(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    credential = OAuthCredentials(client_credentials(oauth_server, tmp_path)).get("test")
    first = credential.access_token()
    credential.reject(first)
    assert credential.access_token().value != first.value


def test_wrong_client_secret_is_refused_with_the_providers_code(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    client = oauth_server.add_client("support")
    config = oauth_config(tmp_path, client_id=client.client_id, client_secret="wrong",
                          token_url=oauth_server.token_url)
    with pytest.raises(TokenRefused) as caught:
        OAuthCredentials(config).get("test").access_token()
    assert caught.value.error == "invalid_client"
    assert "wrong" not in str(caught.value)
    assert "oauth test" in str(caught.value)


def test_unreachable_token_endpoint_is_transient(tmp_path: Path) -> None:
    from tests.dovecot_fixtures import free_port

    config = oauth_config(tmp_path, client_id="x", client_secret="s",
                          token_url=f"http://127.0.0.1:{free_port()}/token")
    with pytest.raises(TokenUnavailable, match=r"cannot reach 127\.0\.0\.1"):
        OAuthCredentials(config).get("test").access_token()


def test_endpoint_answering_503_is_transient(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    config = client_credentials(oauth_server, tmp_path)
    oauth_server.down = True
    with pytest.raises(TokenUnavailable, match="temporarily_unavailable"):
        OAuthCredentials(config).get("test").access_token()
    oauth_server.down = False
    assert OAuthCredentials(config).get("test").access_token().value


# -- refresh tokens -----------------------------------------------------------------------


def test_refresh_token_grant_saves_the_rotated_token(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    config, first = refresh_setup(oauth_server, tmp_path)
    store = RefreshTokenStore(refresh_token_path(config, "test"))
    token = OAuthCredentials(config).get("test").access_token()
    assert oauth_server.access_token_valid(token.value)
    rotated = store.load()
    assert rotated and rotated != first
    assert oauth_server.valid_refresh_token(rotated)
    # a restart reads the rotated token from the file and goes on from there
    oauth_server.grace = False  # the old one no longer works: only the saved one can
    again = OAuthCredentials(config).get("test").access_token()
    assert oauth_server.access_token_valid(again.value)
    assert store.load() not in (first, rotated)


def test_without_rotation_the_stored_token_stays(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    oauth_server.rotate = False
    config, _ = refresh_setup(oauth_server, tmp_path)
    path = refresh_token_path(config, "test")
    before = path.read_bytes()
    OAuthCredentials(config).get("test").access_token()
    assert path.read_bytes() == before


def test_refresh_token_file_is_private_and_whole(tmp_path: Path) -> None:
    store = RefreshTokenStore(tmp_path / "oauth" / "m365.json")
    store.save("first-token", client_id="app")
    store.save("second-token", client_id="app")
    assert store.load() == "second-token"
    if os.name == "posix":
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in store.path.parent.iterdir()] == ["m365.json"]  # no temp files left
    assert json.loads(store.path.read_text())["client_id"] == "app"


def test_revoked_refresh_token_says_what_to_do(
        oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    config, _ = refresh_setup(oauth_server, tmp_path)
    path = refresh_token_path(config, "test")
    oauth_server.revoke_refresh_tokens()
    with pytest.raises(TokenRefused) as caught:
        OAuthCredentials(config).get("test").access_token()
    assert caught.value.error == "invalid_grant"
    assert str(caught.value).endswith("run: commit-email auth login test")
    assert path.exists()  # nothing is deleted: the operator may want to look


def test_no_refresh_token_yet(tmp_path: Path, oauth_server: OAuthTestServer) -> None:
    client = oauth_server.add_client("support")
    config = oauth_config(tmp_path, grant="refresh_token", client_id=client.client_id,
                          token_url=oauth_server.token_url)
    with pytest.raises(TokenRefused, match="no refresh token yet; run: commit-email auth login"):
        OAuthCredentials(config).get("test").access_token()


def test_damaged_refresh_token_file(tmp_path: Path, oauth_server: OAuthTestServer) -> None:
    config, _ = refresh_setup(oauth_server, tmp_path)
    refresh_token_path(config, "test").write_text("{not json")
    with pytest.raises(TokenRefused, match="holds no refresh token"):
        OAuthCredentials(config).get("test").access_token()


# -- the command grant ------------------------------------------------------------------------


def helper(tmp_path: Path, body: str) -> str:
    script = tmp_path / "helper.py"
    script.write_text(body)
    return f"{sys.executable} {script}"


def test_command_prints_a_token(tmp_path: Path) -> None:
    command = helper(tmp_path, "print('tok-123')\n")
    config = oauth_config(tmp_path, grant="command", token_command=command)
    token = OAuthCredentials(config).get("test").access_token()
    assert token.value == "tok-123"
    assert token.lifetime == 300  # nothing said how long it lives


def test_command_prints_json_with_expiry(tmp_path: Path) -> None:
    command = helper(tmp_path, "import json; print(json.dumps({'access_token': 'j', "
                               "'expires_in': 60}))\n")
    config = oauth_config(tmp_path, grant="command", token_command=command)
    token = OAuthCredentials(config).get("test").access_token()
    assert (token.value, token.lifetime) == ("j", 60)


@pytest.mark.parametrize(("body", "message"), [
    ("import sys; print('no such account', file=sys.stderr); sys.exit(3)",
     "exited with status 3: no such account"),
    ("pass", "printed no token"),
    ("import time; time.sleep(30)", "no token within 1 s"),
    ("print('{broken')", "not JSON"),
])
def test_command_failures_are_clear(tmp_path: Path, body: str, message: str) -> None:
    config = oauth_config(tmp_path, grant="command", token_command=helper(tmp_path, body),
                          timeout=1.0)
    with pytest.raises(TokenUnavailable, match=message) as caught:
        OAuthCredentials(config).get("test").access_token()
    assert "oauth test: token_command" in str(caught.value)


def test_command_that_does_not_exist(tmp_path: Path) -> None:
    config = oauth_config(tmp_path, grant="command", token_command="/nonexistent/helper --x")
    with pytest.raises(TokenUnavailable, match="cannot run it"):
        OAuthCredentials(config).get("test").access_token()


# -- SASL -------------------------------------------------------------------------------------


def test_xoauth2_response() -> None:
    assert sasl_response("XOAUTH2", "support@acme.example", "ya29.x") == (
        b"user=support@acme.example\x01auth=Bearer ya29.x\x01\x01")


def test_oauthbearer_response_escapes_the_gs2_user() -> None:
    got = sasl_response("oauthbearer", "a,b=c@x", "t", host="mail.example", port=995)
    assert got == b"n,a=a=2Cb=3Dc@x,\x01host=mail.example\x01port=995\x01auth=Bearer t\x01\x01"


def test_sasl_refuses_control_characters() -> None:
    with pytest.raises(ValueError, match="user name"):
        sasl_response("XOAUTH2", "a\x01b", "t")
    with pytest.raises(ValueError, match="not an OAuth"):
        sasl_response("PLAIN", "a", "t")


def test_failure_replies() -> None:
    assert failure_reply("XOAUTH2") == b""
    assert failure_reply("OAUTHBEARER") == b"\x01"


def test_parse_challenge() -> None:
    raw = json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"}).encode()
    assert parse_challenge(raw) == SaslChallenge(status="401", schemes="bearer", scope="mail",
                                                 raw=raw.decode())
    assert parse_challenge(base64.b64encode(raw).decode()).status == "401"
    assert parse_challenge("not base64!").raw == "not base64!"
    assert parse_challenge(b"\xff\xfe").status == ""


class FakeProvider:
    name = "test"

    def __init__(self) -> None:
        self.handed: list[AccessToken] = []
        self.rejected: list[AccessToken] = []

    def access_token(self, *, valid_for: float = 0.0) -> AccessToken:
        token = AccessToken(value=f"t{len(self.handed)}", obtained_at=0, expires_at=3600)
        self.handed.append(token)
        return token

    def reject(self, token: AccessToken) -> None:
        self.rejected.append(token)


def test_log_in_retries_once_with_a_new_token() -> None:
    provider = FakeProvider()
    tried: list[str] = []

    def attempt(token: AccessToken) -> None:
        tried.append(token.value)
        if token.value == "t0":
            raise TokenRejected(SaslChallenge(status="401"), "-ERR [AUTH] failed")

    log_in(provider, attempt)
    assert tried == ["t0", "t1"]
    assert [t.value for t in provider.rejected] == ["t0"]


def test_log_in_gives_up_after_the_second_refusal() -> None:
    provider = FakeProvider()

    def attempt(token: AccessToken) -> None:
        raise TokenRejected(SaslChallenge(status="401", scope="mail"), "-ERR refused")

    with pytest.raises(TokenRejected) as caught:
        log_in(provider, attempt)
    error = login_error("POP3 support@mail:110", "XOAUTH2", provider, caught.value)
    assert error.permanent and error.status == "401" and error.mechanism == "XOAUTH2"
    assert str(error).startswith("POP3 support@mail:110: XOAUTH2 login refused (status 401, "
                                 "scope mail): -ERR refused")
    assert "t0" not in str(error) and "t1" not in str(error)


def test_reprs_hold_no_secret(oauth_server: OAuthTestServer, tmp_path: Path) -> None:
    config = client_credentials(oauth_server, tmp_path)
    credential = OAuthCredentials(config).get("test")
    token = credential.access_token()
    secret = config.oauth["test"].client_secret
    for thing in (token, credential, credential.grant, config, config.oauth["test"]):
        assert token.value not in repr(thing)
        assert secret not in repr(thing)


def test_credentials_are_shared_per_name(tmp_path: Path) -> None:
    config = oauth_config(tmp_path, grant="command", token_command="x")
    credentials = OAuthCredentials(config)
    assert credentials.get("test") is credentials.get("test")
    with pytest.raises(ConfigError, match="no section"):
        credentials.get("other")
    assert isinstance(credentials.get("test"), Credential)


# -- presets -------------------------------------------------------------------------------


def test_microsoft_presets(tmp_path: Path) -> None:
    cc = oauth_config(tmp_path, provider="microsoft", tenant="contoso.onmicrosoft.com",
                      client_id="id", client_secret="s").oauth["test"]
    ep = endpoints(cc)
    assert ep.token_url == ("https://login.microsoftonline.com/contoso.onmicrosoft.com/"
                            "oauth2/v2.0/token")
    assert ep.scope == "https://outlook.office365.com/.default"
    delegated = oauth_config(tmp_path, provider="microsoft", tenant="t", client_id="id",
                             grant="refresh_token").oauth["test"]
    assert "offline_access" in endpoints(delegated).scope
    assert "https://outlook.office.com/SMTP.Send" in endpoints(delegated).scope
    assert endpoints(delegated).device_url.endswith("/t/oauth2/v2.0/devicecode")


def test_google_presets(tmp_path: Path) -> None:
    google = oauth_config(tmp_path, provider="google", client_id="id",
                          grant="refresh_token").oauth["test"]
    assert endpoints(google).token_url == "https://oauth2.googleapis.com/token"
    assert endpoints(google).scope == "https://mail.google.com/"
    own = oauth_config(tmp_path, provider="google", client_id="id", grant="refresh_token",
                       scope="x y").oauth["test"]
    assert endpoints(own).scope == "x y"
