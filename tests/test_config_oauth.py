"""``[oauth.NAME]`` sections, ``auth`` and ``oauth``: each mistake is one error naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from commit_email.config import check_secrets, parse_config
from commit_email.errors import ConfigError

M365 = {"provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
        "client_id": "00000000-0000-0000-0000-000000000000",
        "client_secret_env": "COMMIT_EMAIL_OAUTH_SECRET", "grant": "client_credentials",
        "scope": "", "token_url": "", "token_command": ""}


def config(oauth: dict[str, Any] | None = None, **sections: Any) -> Any:
    data: dict[str, Any] = {"store": {"url": "memory:"}, **sections}
    if oauth is not None:
        data["oauth"] = oauth
    return parse_config(data)


def error(oauth: dict[str, Any] | None = None, **sections: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config(oauth, **sections)
    return caught.value


def test_the_documented_section_loads() -> None:
    c = config({"m365": M365}, pop3={"host": "outlook.office365.com", "user": "support@acme",
                                     "auth": "xoauth2", "oauth": "m365"},
               smtp={"host": "smtp.office365.com", "user": "support@acme",
                     "auth": "oauthbearer", "oauth": "m365"})
    assert c.oauth["m365"].name == "m365"
    assert c.pop3.sasl_mechanism == "XOAUTH2"
    assert c.smtp.sasl_mechanism == "OAUTHBEARER"


def test_auto_with_oauth_means_xoauth2() -> None:
    c = config({"m365": M365}, pop3={"host": "h", "oauth": "m365"})
    assert c.pop3.sasl_mechanism == "XOAUTH2"
    assert config().pop3.sasl_mechanism == ""


@pytest.mark.parametrize(("changes", "key", "text"), [
    ({"provider": "yahoo"}, "oauth.m365.provider", "unknown provider 'yahoo'"),
    ({"provider": ""}, "oauth.m365.provider", "unknown provider"),
    ({"tenant": ""}, "oauth.m365.tenant", "needs the tenant"),
    ({"client_id": ""}, "oauth.m365.client_id", "client) id is required"),
    ({"client_secret_env": ""}, "oauth.m365.client_secret", "needs client_secret"),
    ({"token_url": "http://login.example/token"}, "oauth.m365.token_url", "https://"),
    ({"token_url": "ftp://x/"}, "oauth.m365.token_url", "https://"),
    ({"grant": "password"}, "oauth.m365.grant", "must be one of"),
    ({"grant": "command"}, "oauth.m365.token_command", "needs the command"),
    ({"token_command": "helper"}, "oauth.m365.token_command", "only used with grant"),
    ({"certificate_file": "c.pem"}, "oauth.m365.certificate_file", "not both"),
    ({"timeout": 0}, "oauth.m365.timeout", "more than 0"),
    ({"colour": "blue"}, "oauth.m365", "unknown key 'colour'"),
])
def test_section_mistakes_name_the_key(changes: dict[str, Any], key: str, text: str) -> None:
    exc = error({"m365": {**M365, **changes}})
    assert exc.key == key or str(exc).startswith(key)
    assert text in str(exc)


def test_loopback_token_url_may_be_http() -> None:
    for url in ("http://127.0.0.1:8080/token", "http://localhost/t", "http://[::1]:9/t"):
        assert config({"m365": {**M365, "token_url": url}}).oauth["m365"].token_url == url


def test_google_cannot_do_client_credentials() -> None:
    exc = error({"g": {"provider": "google", "client_id": "x", "client_secret": "s"}})
    assert exc.key == "oauth.g.grant"
    assert "google cannot do grant 'client_credentials'" in str(exc)


def test_generic_needs_a_token_url() -> None:
    exc = error({"x": {"provider": "generic", "client_id": "x", "client_secret": "s"}})
    assert exc.key == "oauth.x.token_url"


def test_tenant_is_microsoft_only() -> None:
    exc = error({"g": {"provider": "google", "client_id": "x", "grant": "refresh_token",
                       "tenant": "t"}})
    assert exc.key == "oauth.g.tenant"


def test_certificate_is_for_microsoft_client_credentials() -> None:
    ok = config({"m": {**M365, "client_secret_env": "", "certificate_file": "app.pem"}})
    assert ok.oauth["m"].certificate_file == "app.pem"
    exc = error({"g": {"provider": "google", "client_id": "x", "grant": "refresh_token",
                       "certificate_file": "a.pem"}})
    assert exc.key == "oauth.g.certificate_file"


def test_command_grant_needs_nothing_else() -> None:
    c = config({"h": {"provider": "generic", "grant": "command",
                      "token_command": "oauth2-helper --account support"}})
    assert c.oauth["h"].token_command.startswith("oauth2-helper")


def test_bad_section_name() -> None:
    assert "letters, digits" in str(error({"a b": M365}))


def test_oauth_must_be_tables() -> None:
    assert error({"m365": "x"}).key == "oauth.m365"


@pytest.mark.parametrize("section", ["pop3", "smtp"])
def test_oauth_mechanism_needs_a_section(section: str) -> None:
    exc = error(None, **{section: {"host": "h", "auth": "xoauth2"}})
    assert exc.key == f"{section}.oauth"
    assert "needs oauth" in str(exc)


@pytest.mark.parametrize("section", ["pop3", "smtp"])
def test_oauth_naming_a_missing_section(section: str) -> None:
    exc = error({"m365": M365}, **{section: {"host": "h", "auth": "oauthbearer",
                                             "oauth": "m356"}})
    assert exc.key == f"{section}.oauth"
    assert "no section [oauth.m356] (sections: m365)" in str(exc)


def test_oauth_with_a_password_mechanism() -> None:
    exc = error({"m365": M365}, pop3={"host": "h", "auth": "apop", "oauth": "m365"})
    assert exc.key == "pop3.auth"


def test_check_secrets_resolves_the_client_secret_not_the_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = config({"m365": M365}, pop3={"host": "h", "user": "u", "oauth": "m365"},
               smtp={"host": "s", "user": "u", "oauth": "m365"})
    monkeypatch.delenv("COMMIT_EMAIL_OAUTH_SECRET", raising=False)
    with pytest.raises(ConfigError) as caught:
        check_secrets(c)
    assert caught.value.key == "oauth.m365.client_secret_env"
    monkeypatch.setenv("COMMIT_EMAIL_OAUTH_SECRET", "s3cret")
    assert check_secrets(c) == ["oauth.m365.client_secret"]
