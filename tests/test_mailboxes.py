"""Several mailboxes in one ``run``: ``[[pop3]]`` tables, served at once, each on its own.

Config parsing first; then real Dovecot mailboxes (users of one private server) served by
one :class:`Service`: one pass over each, the mailbox named in the log, the processed log
and ``--json``; a mailbox whose server is down fails alone and ``run --once`` says which;
with PostgreSQL, a second service is a standby that takes over."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from commit_email.cli import main
from commit_email.config import Config, check_secrets, parse_config
from commit_email.errors import ConfigError
from commit_email.pipeline import Connector
from commit_email.runner import Service
from commit_email.store import open_store
from commit_email.testing import build_message
from tests.dovecot_fixtures import DovecotServer, free_port
from tests.shared import DIRECTORY


def mail(n: int, box: str) -> bytes:
    return build_message(sender=f"user{n}@acme.example", message_id=f"{box}.{n}@acme.example",
                         subject=f"{box} request {n}")


def mailbox_toml(name: str, server: DovecotServer, *, port: int | None = None,
                 poll_interval: float = 0.2) -> str:
    return (f'[[pop3]]\nname = "{name}"\nhost = "{server.host}"\n'
            f"port = {port or server.pop3_port}\n"
            f'security = "plain"\nuser = "{server.user}"\npassword = "{server.password}"\n'
            f"timeout = 5\npoll_interval = {poll_interval}\nreconnect_delay = 0.2\n"
            f"reconnect_max_delay = 1\nonce_attempts = 2\n")


def write_config(tmp_path: Path, store_url: str, *boxes: str) -> Path:
    path = tmp_path / "commit-email.toml"
    path.write_text(f'[connector]\npublic_address = "support@helpdesk.example"\n'
                    f'internal_address = "helpdesk@helpdesk.example"\n'
                    f'state_dir = "{tmp_path / "state"}"\n[store]\nurl = "{store_url}"\n'
                    + "".join(boxes))
    return path


# -- configuration -----------------------------------------------------------------------


def pop3(**values: Any) -> dict[str, Any]:
    return {"host": "pop.example", "user": "support", "password": "x", **values}


def test_a_single_pop3_table_is_one_mailbox_named_as_before() -> None:
    config = parse_config({"pop3": pop3()})
    [box] = config.mailboxes
    assert box.mailbox == "support@pop.example:995" and config.pop3 == box
    assert parse_config({}).mailboxes == ()
    named = parse_config({"pop3": pop3(name="support")})
    assert named.pop3.mailbox == "support"


def test_an_array_of_pop3_tables_is_several_mailboxes() -> None:
    config = parse_config({"pop3": [pop3(name="support"),
                                    pop3(name="alerts", user="alerts", port=110,
                                         security="plain")]})
    assert [m.mailbox for m in config.mailboxes] == ["support", "alerts"]
    assert config.pop3.mailbox == "support"  # the first, for code that reads one
    one = config.for_mailbox(config.mailboxes[1])
    assert one.pop3.user == "alerts" and one.mailboxes == (one.pop3,)
    assert check_secrets(config)[:2] == ["pop3[0].password", "pop3[1].password"]


@pytest.mark.parametrize(("tables", "key", "message"), [
    ([pop3(name="a"), pop3()], r"pop3\[1\]\.name", "needs a name"),
    ([pop3(name="a"), pop3(name="a", user="b")], r"pop3\[1\]\.name", "also the name of pop3"),
    ([pop3(name="a"), pop3(name="b", host="")], r"pop3\[1\]\.host", "needs a host"),
    ([pop3(name="a"), pop3(name="b", port=70000)], r"pop3\[1\]\.port", "TCP port"),
    ([pop3(name="a"), pop3(name="b", colour="red")], r"pop3\[1\]", "unknown key 'colour'"),
    ([pop3(name=" a ")], r"pop3\[0\]\.name", "printable"),
    ([], "pop3", "empty array"),
])
def test_mistakes_in_several_mailboxes_name_the_table(
    tables: list[dict[str, Any]], key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{key}.*{message}"):
        parse_config({"pop3": tables})


def imap(**values: Any) -> dict[str, Any]:
    return {"host": "imap.example", "user": "support", "password": "x", **values}


def test_imap_tables_are_mailboxes_beside_the_pop3_ones() -> None:
    config = parse_config({"pop3": [pop3(name="support")],
                           "imap": [imap(name="alerts", folder="Alerts"),
                                    imap(name="forms", user="forms")]})
    assert [(type(m).__name__, m.mailbox, m.key) for m in config.mailboxes] == [
        ("Pop3Config", "support", "pop3[0]"), ("ImapConfig", "alerts", "imap[0]"),
        ("ImapConfig", "forms", "imap[1]")]
    one = config.for_mailbox(config.mailboxes[2])
    assert one.mailboxes == (one.imap,) and one.imap.user == "forms" and not one.pop3.host
    assert check_secrets(config) == ["pop3[0].password", "imap[0].password",
                                     "imap[1].password"]
    single = parse_config({"imap": imap()})
    assert [m.mailbox for m in single.mailboxes] == ["support@imap.example:993/INBOX"]


@pytest.mark.parametrize(("sections", "key", "message"), [
    ({"imap": [imap(name="a"), imap()]}, r"imap\[1\]\.name", "needs a name"),
    ({"pop3": [pop3(name="a")], "imap": [imap(name="a")]}, r"imap\[0\]\.name",
     "also the name of pop3"),
    ({"imap": [imap(name="a"), imap(name="b", processed_folder="INBOX")]},
     r"imap\[1\]\.processed_folder", "must not be the folder"),
    ({"imap": [imap(name="a", auth="xoauth2")]}, r"imap\[0\]\.oauth", "needs oauth"),
])
def test_mistakes_in_imap_tables_name_the_table(
    sections: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{key}.*{message}"):
        parse_config(sections)


def test_a_missing_password_names_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    config = parse_config({"pop3": [pop3(name="a"),
                                    pop3(name="b", password="", password_env="NO_SUCH_PASSWORD")]})
    with pytest.raises(ConfigError, match=r"pop3\[1\]\.password_env"):
        check_secrets(config)


def test_a_memory_store_cannot_serve_several_mailboxes() -> None:
    config = parse_config({"store": {"url": "memory:"},
                           "pop3": [pop3(name="a"), pop3(name="b")]})
    with pytest.raises(ConfigError, match=r"store\.url"):
        Service(config, Connector.from_config).run(once=True)


# -- real mailboxes ----------------------------------------------------------------------


def seeded(store_url: str) -> Callable[[Config], Connector]:
    with open_store(store_url) as store:
        store.import_accounts(DIRECTORY)
    return Connector.from_config


@pytest.mark.server
def test_run_once_serves_every_mailbox_and_names_it(
    tmp_path: Path, dovecot_plain_server: DovecotServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """``run`` serves each mailbox in a worker process of its own: their log lines go to
    the same stderr, their outcomes to the command's ``--json`` output."""
    boxes = {name: dovecot_plain_server.new_user() for name in ("support", "alerts", "forms")}
    for name, server in boxes.items():
        server.deliver_many([mail(n, name) for n in range(5)])
    url = f"sqlite:///{tmp_path / 'commit.db'}"
    seeded(url)
    config = write_config(tmp_path, url, *(mailbox_toml(n, s) for n, s in boxes.items()))
    out = io.StringIO()
    status = main(["run", "--once", "--json", "--config", str(config)], out=out)
    err = capfd.readouterr().err
    assert status == 0, err
    assert all(server.message_files() == [] for server in boxes.values())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted((line["mailbox"], line["message_id"]) for line in lines) == sorted(
        (name, f"{name}.{n}@acme.example") for name in boxes for n in range(5))
    assert {line["outcome"] for line in lines} == {"ticket_created"}
    for name in boxes:
        assert f"{name}: poll: fetched=5 " in err
        assert re.search(rf"INFO {name}: \S+ ticket_created <{name}\.0@acme\.example>", err)
    with open_store(url) as store:
        by_box: dict[str, int] = {}
        for record in store.iter_processed():
            by_box[record.source.name] = by_box.get(record.source.name, 0) + 1
        assert by_box == dict.fromkeys(boxes, 5)
        assert store.count_tickets() == 15
        numbers = sorted(int(t.number) for t in store.list_tickets())
        assert numbers == list(range(1, 16))  # one counter for all the mailboxes


@pytest.mark.server
def test_run_once_serves_pop3_and_imap_mailboxes_together(
    tmp_path: Path, dovecot_plain_server: DovecotServer, capfd: pytest.CaptureFixture[str]
) -> None:
    if not dovecot_plain_server.imap_port:
        pytest.fail("dovecot-imapd is not installed")
    pop3_box, imap_box = dovecot_plain_server.new_user(), dovecot_plain_server.new_user()
    pop3_box.deliver_many([mail(n, "support") for n in range(3)])
    imap_box.deliver_many([mail(n, "alerts") for n in range(4)])
    url = f"sqlite:///{tmp_path / 'commit.db'}"
    seeded(url)
    imap_toml = (f'[[imap]]\nname = "alerts"\nhost = "{imap_box.host}"\n'
                 f"port = {imap_box.imap_port}\nsecurity = \"plain\"\n"
                 f'user = "{imap_box.user}"\npassword = "{imap_box.password}"\ntimeout = 5\n'
                 f"idle = false\nreconnect_delay = 0.2\nonce_attempts = 2\n")
    config = write_config(tmp_path, url, mailbox_toml("support", pop3_box), imap_toml)
    out = io.StringIO()
    status = main(["run", "--once", "--json", "--config", str(config)], out=out)
    err = capfd.readouterr().err
    assert status == 0, err
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted((line["mailbox"], line["outcome"]) for line in lines) == sorted(
        [("support", "ticket_created")] * 3 + [("alerts", "ticket_created")] * 4)
    assert pop3_box.message_files() == [] and imap_box.message_files() == []
    assert len(imap_box.folder_files("Processed")) == 4
    with open_store(url) as store:
        assert store.count_tickets() == 7


@pytest.mark.server
def test_a_mailbox_that_is_down_fails_alone_and_run_once_says_which(
    tmp_path: Path, dovecot_plain_server: DovecotServer, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = dovecot_plain_server.new_user()
    good.deliver_many([mail(n, "support") for n in range(3)])
    url = f"sqlite:///{tmp_path / 'commit.db'}"
    seeded(url)
    config = write_config(tmp_path, url, mailbox_toml("support", good),
                          mailbox_toml("alerts", good, port=free_port()))
    started = time.monotonic()
    status = main(["run", "--once", "--config", str(config)], out=io.StringIO())
    err = capfd.readouterr().err
    assert status == 1
    assert time.monotonic() - started < 20
    assert good.message_files() == []
    # the service's own line (in this process) names the mailbox and why
    assert re.search(r"^1 of 2 mailboxes failed: alerts: .*Connection refused",
                     "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR"),
                     re.M), caplog.text
    assert "support: poll: fetched=3" in err  # the workers' lines
    assert "alerts: giving up after 2 attempts" in err


@pytest.mark.server
def test_one_mailbox_backs_off_while_the_others_go_on(
    tmp_path: Path, dovecot_plain_server: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = dovecot_plain_server.new_user()
    url = f"sqlite:///{tmp_path / 'commit.db'}"
    factory = seeded(url)
    config_path = write_config(tmp_path, url, mailbox_toml("support", good),
                               mailbox_toml("alerts", good, port=free_port()))
    from commit_email.config import load_config

    service = Service(load_config(config_path), factory)
    with caplog.at_level(logging.INFO, logger="commit_email"):
        worker = threading.Thread(target=service.run)
        worker.start()
        try:
            time.sleep(0.5)
            good.deliver_many([mail(n, "support") for n in range(3)])  # arrives while down
            deadline = time.monotonic() + 15
            while good.message_files() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            service.request_stop()
            worker.join(15)
    assert not worker.is_alive()
    assert good.message_files() == []
    assert "alerts: reconnecting in" in caplog.text
    assert "support: poll: fetched=3" in caplog.text


@pytest.mark.server
def test_a_second_service_on_postgres_stands_by_and_takes_over(
    tmp_path: Path, dovecot_plain_server: DovecotServer, pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two services (two workers) on one PostgreSQL store and two mailboxes: the first
    serves both, the second stands by; when the first stops, the second takes over within
    seconds and every message gets exactly one outcome."""
    boxes = {name: dovecot_plain_server.new_user() for name in ("support", "alerts")}
    factory = seeded(pg_url)
    from commit_email.config import load_config

    config = load_config(write_config(tmp_path, pg_url,
                                      *(mailbox_toml(n, s, poll_interval=0.5)
                                        for n, s in boxes.items())))
    first, second = Service(config, factory), Service(config, factory)
    threads = [threading.Thread(target=s.run) for s in (first, second)]
    with caplog.at_level(logging.INFO, logger="commit_email.runner"):
        threads[0].start()
        time.sleep(1.0)  # the first takes both mailboxes
        threads[1].start()
        try:
            for name, server in boxes.items():
                server.deliver_many([mail(n, name) for n in range(5)])
            wait_until(lambda: all(not s.message_files() for s in boxes.values()))
            first.request_stop()
            threads[0].join(15)
            stopped = time.monotonic()
            for name, server in boxes.items():
                server.deliver_many([mail(n, name) for n in range(5, 10)])
            wait_until(lambda: all(not s.message_files() for s in boxes.values()))
            took = time.monotonic() - stopped
        finally:
            first.request_stop()
            second.request_stop()
            for t in threads:
                t.join(15)
    assert took < 0.5 + 5 + 3  # poll_interval + a few seconds
    standing = [r for r in caplog.records if "standing by" in r.getMessage()]
    assert {r.getMessage().split(":")[0] for r in standing} == set(boxes)
    with open_store(pg_url) as store:
        records = list(store.iter_processed())
        assert sorted(r.message_id for r in records) == sorted(
            f"{name}.{n}@acme.example" for name in boxes for n in range(10))
        assert store.count_tickets() == 20


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
