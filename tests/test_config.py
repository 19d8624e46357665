"""Configuration: unknown keys, wrong types and bad regexes are errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from commit_email.config import check_secrets, load_config, parse_config
from commit_email.errors import ConfigError

SPEC_EXAMPLE = '''
[connector]
public_address = "support@acme.example"
internal_address = "helpdesk@acme.example"
state_dir = "./state"
max_message_bytes = 26214400

[store]
url = "sqlite:///./commit.db"

[pop3]
host = "mail.acme.example"
port = 995
security = "ssl"
user = "support"
password_env = "COMMIT_EMAIL_POP3_PASSWORD"
leave_on_server = false
poll_interval = 60

[smtp]
host = "smtp.acme.example"
port = 587
security = "starttls"
user = "support"
password_env = "COMMIT_EMAIL_SMTP_PASSWORD"
from_address = "support@acme.example"

[email_to_ticket]
enabled = true
match_domains = true
public_domains = []
auto_response = true
ticket_defaults = { status = "100", priority = "10", kind = "General", source = "Email" }

[threading]
subject_format = "[Ticket#{number}]"

[loop_protection]
max_auto_responses_per_sender = 3
auto_response_window = 3600
ignore_senders = []

[xml_api]
enabled = false
password_env = "COMMIT_EMAIL_XML_PASSWORD"
allowed_senders = []
send_response = true
response_bcc = ""

[automated]
enabled = true
account_by_sender = true
default_account = ""
close_on_recovery = true
parsers = ["nagios", "icinga", "monit"]

[[automated.detection]]
senders = ["alerts@rmm.example"]
subject_contains = "Alert"

[[automated.skip]]
subject_contains = "Self Healed"

[[automated.account]]
search_for = "account_number"
located_in = "subject"
after = "Client: "
before = " -"
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "commit-email.toml"
    path.write_text(text)
    return path


def test_the_spec_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert config.pop3.effective_port == 995 and config.pop3.poll_interval == 60.0
    assert config.automated.detection[0].senders == ("alerts@rmm.example",)
    assert config.automated.account[0].after == "Client: "
    assert config.state_dir == tmp_path / "state"
    monkeypatch.setenv("COMMIT_EMAIL_POP3_PASSWORD", "secret")
    monkeypatch.setenv("COMMIT_EMAIL_SMTP_PASSWORD", "secret2")
    assert check_secrets(config) == ["pop3.password", "smtp.password"]
    assert "secret" not in repr(config)


@pytest.mark.parametrize("text,key", [
    ("[pop3]\nhots = 'x'\n", "pop3: unknown key 'hots'"),
    ("[pop]\n", "unknown key 'pop'"),
    ("[pop3]\nport = '995'\n", "pop3.port: expected an integer"),
    ("[pop3]\nsecurity = 'tls'\n", "pop3.security: must be one of ssl, starttls, plain"),
    ("[email_to_ticket]\nmatch_domains = 'yes'\n", "email_to_ticket.match_domains"),
    ("[email_to_ticket]\nticket_defaults = { colour = 'red' }\n",
     "email_to_ticket.ticket_defaults: unknown key 'colour'"),
    ("[threading]\nsubject_format = '[Ticket]'\n", "threading.subject_format"),
    ("[[automated.detection]]\nsubject_regex = '(unclosed'\n",
     "automated.detection[0].subject_regex: invalid regular expression"),
    ("[[automated.detection]]\n", "automated.detection[0]: a detection rule needs"),
    ("[[automated.account]]\nsearch_for = 'phone'\nafter = 'x'\n",
     "automated.account[0].search_for"),
    ("[[automated.account]]\nregex = 'Client: (\\\\w+) (\\\\d+)'\n",
     "automated.account[0].regex: needs exactly one capture group"),
    ("[store]\nurl = 'mysql://x'\n", "store.url"),
    ("[connector]\ninternal_address = 'helpdesk'\n", "connector.internal_address"),
])
def test_mistakes_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert key in str(err.value)
    assert str(tmp_path) in str(err.value)  # and the file


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[pop3\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_missing_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_PW", raising=False)
    config = parse_config({"pop3": {"host": "h", "password_env": "NOPE_PW"}})
    with pytest.raises(ConfigError, match=r"pop3\.password_env: environment variable NOPE_PW"):
        check_secrets(config)


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse_config({"nope": {}})


# -- values that parse but cannot work -------------------------------------------------------

@pytest.mark.parametrize(("toml", "key"), [
    ("[connector]\nmessage_time_limit = nan\n", "connector.message_time_limit"),
    ("[connector]\nmessage_time_limit = inf\n", "connector.message_time_limit"),
    ("[pop3]\nhost = 'h'\nport = 70000\n", "pop3.port"),
    ("[smtp]\nhost = 'h'\nport = 65536\n", "smtp.port"),
    ("[smtp]\nhost = 'h'\nretries = 1000000000\n", "smtp.retries"),
    ("[pop3]\nhost = 'h'\ntimeout = 0\n", "pop3.timeout"),
    ("[smtp]\nhost = 'h'\ntimeout = 0\n", "smtp.timeout"),
    ("[pop3]\nhost = 'h'\nca_file = 'no-such-ca.pem'\n", "pop3.ca_file"),
    ("[xml_api]\nallowed_senders = ['forms at acme']\n", "xml_api.allowed_senders[0]"),
    ("[xml_api]\nallowed_senders = ['*@']\n", "xml_api.allowed_senders[0]"),
    ("[xml_api]\nresponse_bcc = 'audit@'\n", "xml_api.response_bcc"),
    ("[store]\nurl = 'sqlite:///x.db?synchronous=BOGUS'\n", "store.url"),
    ("[store]\nurl = 'sqlite:///x.db?mmap_size=abc'\n", "store.url"),
    ("[store]\nurl = 'sqlite:///x.db?colour=red'\n", "store.url"),
])
def test_values_that_cannot_work_are_refused_naming_the_key(
    tmp_path: Path, toml: str, key: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key or f"{key}:" in str(err.value)
    assert "\n" not in str(err.value)


def test_check_config_refuses_a_config_that_can_forward_to_nobody(tmp_path: Path) -> None:
    import io

    from commit_email.cli import main

    path = tmp_path / "c.toml"
    path.write_text(f"[connector]\nstate_dir = '{tmp_path}/state'\n"
                    f"[store]\nurl = 'sqlite:///{tmp_path}/c.db'\n")
    assert main(["check-config", "--config", str(path)], out=io.StringIO()) == 2
    path.write_text(f"[connector]\nstate_dir = '{tmp_path}/state'\n"
                    "internal_address = 'helpdesk@msp.example'\n"
                    f"[store]\nurl = 'sqlite:///{tmp_path}/c.db'\n")
    assert main(["check-config", "--config", str(path)], out=io.StringIO()) == 0


# -- [imap] ------------------------------------------------------------------------------------


def test_an_imap_section_has_its_defaults_and_its_own_mailbox_name() -> None:
    imap = parse_config({"imap": {"host": "mail.acme.example", "user": "support"}}).imap
    assert (imap.effective_port, imap.folder, imap.after, imap.processed_folder) == (
        993, "INBOX", "move", "Processed")
    assert imap.idle and imap.quarantine_folder == ""
    assert imap.mailbox == "support@mail.acme.example:993/INBOX"
    assert parse_config({"imap": {"host": "h", "security": "starttls"}}).imap.effective_port == 143


@pytest.mark.parametrize(("section", "key", "message"), [
    ({"after": "move", "processed_folder": ""}, "imap.processed_folder", "needs a folder"),
    ({"processed_folder": "inbox"}, "imap.processed_folder", "must not be the folder"),
    ({"quarantine_folder": "INBOX"}, "imap.quarantine_folder", "must not be the folder"),
    ({"after": "archive"}, "imap.after", "must be one of move, delete, keep"),
    ({"auth": "xoauth2"}, "imap.oauth", "needs oauth"),
    ({"oauth": "m365"}, "imap.oauth", r"no section \[oauth.m365\]"),
    ({"port": 70000}, "imap.port", "must be a TCP port"),
    ({"idle_renew": 5}, "imap", "unknown key 'idle_renew'"),
])
def test_imap_settings_that_cannot_work_are_refused_by_key(
    section: dict[str, object], key: str, message: str,
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config({"imap": {"host": "mail.acme.example", **section}})
    assert key in str(info.value)


def test_check_secrets_asks_for_the_imap_password() -> None:
    config = parse_config({"imap": {"host": "h", "password_env": "NOPE_IMAP_PW"}})
    with pytest.raises(ConfigError, match=r"imap\.password_env: environment variable NOPE_IMAP_PW"):
        check_secrets(config)
