"""The outbox after the send: the retry cap, the delay between tries, and ``commit-email
outbox`` (list, retry, purge) against a real SMTP server (aiosmtpd) and a real SQLite file."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import attrs
import pytest

from commit_email.model import OutgoingMail, SourceRef, utcnow
from commit_email.pipeline import Connector
from commit_email.smtp import SmtpMailer
from commit_email.store import SQLiteStore
from commit_email.testing import build_message, make_config, make_connector, memory_store
from tests.shared import JANE
from tests.smtp_fixtures import SmtpTestServer, free_port

pytestmark = pytest.mark.server

GREYLISTED = "451 4.7.1 greylisted, try again later"
NO_SUCH_USER = "550 5.1.1 no such user"


def connector_for(server: SmtpTestServer, store: SQLiteStore, **smtp: object) -> Connector:
    config = make_config(
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        smtp={"host": server.host, "port": server.port, "security": "plain",
              "from_address": "support@acme.example", "timeout": 5.0, "retries": 0, **smtp},
    )
    mailer = SmtpMailer(config.smtp, sleep=lambda s: None)
    return make_connector(config, accounts=(JANE,), mailer=mailer, store=store)


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def subjects(server: SmtpTestServer) -> list[str]:
    return [str(email.message_from_bytes(m.data, policy=email.policy.default)["Subject"])
            for m in server.messages]


# The retry cap and the delay -----------------------------------------------------------

def test_a_mail_that_keeps_getting_4xx_is_given_up_after_max_attempts(
    smtp_server: SmtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = memory_store()
    c = connector_for(smtp_server, store, max_attempts=3, retry_interval=0)
    # Three refusals, then the server would accept: a fourth try would get the mail out.
    smtp_server.script("RCPT", GREYLISTED, GREYLISTED, GREYLISTED)

    with caplog.at_level(logging.WARNING, logger="commit_email"):
        outcome = c.process(build_message(sender="jane@customer.example", subject="VPN down"))
        assert c.flush_outbox() == 0
        assert c.flush_outbox() == 0  # the third attempt: given up
        assert c.flush_outbox() == 0
        assert c.flush_outbox() == 0

    assert smtp_server.messages == []
    [mail] = store.pending_mail()  # kept, not deleted
    assert mail.failed and mail.attempts == 3
    assert mail.error == "gave up after 3 attempts: all recipients refused " \
        f"(jane@customer.example: {GREYLISTED})"
    [given_up] = [r for r in caplog.records if r.levelno == logging.ERROR]
    text = given_up.getMessage()
    assert "auto_response" in text and "jane@customer.example" in text
    assert mail.mail.message_id in text and GREYLISTED in text
    assert outcome.ticket is not None and mail.mail.ticket  # the ticket is there all the same


def test_max_attempts_zero_never_gives_up(smtp_server: SmtpTestServer) -> None:
    store = memory_store()
    c = connector_for(smtp_server, store, max_attempts=0, retry_interval=0)
    smtp_server.script("RCPT", *[GREYLISTED] * 6)

    c.process(build_message(sender="jane@customer.example"))
    for _ in range(5):
        c.flush_outbox()
    [mail] = store.pending_mail()
    assert mail.attempts == 6 and not mail.failed

    assert c.flush_outbox() == 1
    assert len(smtp_server.messages) == 1


def test_a_transient_failure_is_retried_only_after_retry_interval(
    smtp_server: SmtpTestServer,
) -> None:
    store = memory_store()
    c = connector_for(smtp_server, store, max_attempts=2, retry_interval=300)
    smtp_server.script("RCPT", GREYLISTED)

    c.process(build_message(sender="jane@customer.example", subject="First"))
    [mail] = store.pending_mail()
    assert mail.last_attempt is not None
    # A burst of incoming mail flushes after every message: none of it may spend an attempt.
    c.process(build_message(sender="jane@customer.example", subject="Second"))
    c.clock = at(mail.last_attempt + timedelta(seconds=299))
    c.flush_outbox()

    assert subjects(smtp_server) == ["[Ticket#2] Second"]  # the first one still waits
    [waiting] = store.pending_mail()
    assert waiting.attempts == 1 and not waiting.failed

    c.clock = at(mail.last_attempt + timedelta(seconds=300))
    assert c.flush_outbox() == 1
    assert store.pending_mail() == []
    assert subjects(smtp_server) == ["[Ticket#2] Second", "[Ticket#1] First"]



class CountingMailer:
    def __init__(self, mailer: SmtpMailer) -> None:
        self.mailer = mailer
        self.tries = 0

    def send(self, mail: OutgoingMail) -> None:
        self.tries += 1
        self.mailer.send(mail)


def test_an_unreachable_server_is_not_tried_again_after_every_message(
    smtp_server: SmtpTestServer,
) -> None:
    """With the SMTP server down, a backlog must not pay a connection attempt (and the
    mailer's own retries) per processed message: the outbox rests for retry_interval,
    then sends everything in order."""
    store = memory_store()
    c = connector_for(smtp_server, store, max_attempts=5, retry_interval=300)
    reachable = c.mailer
    down = CountingMailer(  # nothing listens on that port
        SmtpMailer(attrs.evolve(c.config.smtp, port=free_port()), sleep=lambda s: None))
    c.mailer = down
    started = utcnow()
    for n in range(3):  # three: loop protection allows three auto-responses per sender
        c.process(build_message(sender="jane@customer.example", subject=f"Request {n}"))
    assert down.tries == 1  # one attempt, then the outbox rests
    [first, *waiting] = store.pending_mail()
    assert first.attempts == 1 and "connection failed" in first.last_error
    assert [m.attempts for m in waiting] == [0, 0]

    c.mailer = reachable  # the server is back
    c.clock = at(started + timedelta(seconds=299))
    assert c.flush_outbox() == 0 and subjects(smtp_server) == []
    c.clock = at(utcnow() + timedelta(seconds=300))
    assert c.flush_outbox() == 3
    assert subjects(smtp_server) == [f"[Ticket#{n + 1}] Request {n}" for n in range(3)]


def test_given_up_mail_is_not_read_again_by_every_flush(smtp_server: SmtpTestServer) -> None:
    """Refused mail piles up (customers with dead addresses); the flush after each message
    reads only what it may still send (tests/test_store_indexes.py checks its index)."""
    store = memory_store()
    c = connector_for(smtp_server, store, max_attempts=1, retry_interval=0)
    smtp_server.refuse("jane@customer.example", NO_SUCH_USER)
    for n in range(3):
        c.process(build_message(sender="jane@customer.example", subject=f"Dead {n}"))
    assert [m.failed for m in store.pending_mail()] == [True, True, True]
    assert store.due_mail(tried_before=utcnow() + timedelta(days=1), limit=10) == []


def test_a_mail_without_recipients_is_given_up_at_once_not_left_pending() -> None:
    store = memory_store()
    connector = make_connector(store=store)
    ctx = connector._context(SourceRef(kind="bytes"), "d")
    with store.transaction():
        ctx.send(OutgoingMail(kind="forward", sender="support@acme.example", recipients=(),
                              raw=b"Subject: x\r\n\r\nx\r\n", message_id="m@acme.example"))
    [mail] = store.pending_mail()
    assert mail.status == "failed" and mail.error == "no recipients"
    assert store.due_mail(tried_before=utcnow() + timedelta(days=1), limit=10) == []

# An existing database ------------------------------------------------------------------

OLD_OUTBOX = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, sender TEXT NOT NULL, recipients TEXT NOT NULL,
    raw BLOB NOT NULL, message_id TEXT NOT NULL, ticket TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL, sent TEXT
);
INSERT INTO outbox (kind, sender, recipients, raw, message_id, ticket, attempts, last_error,
                    created)
VALUES ('forward', 'support@acme.example', '["helpdesk@acme.example"]',
        X'5375626a6563743a206869', 'f1@acme.example', '', 1,
        'permanent: 550 5.1.1 no such user', '2026-01-05T10:00:00+00:00'),
       ('auto_response', 'support@acme.example', '["jane@customer.example"]',
        X'5375626a6563743a206869', 'a1@acme.example', '', 2, '451 later',
        '2026-01-05T10:01:00+00:00');
"""


def test_a_database_from_before_last_attempt_opens_and_keeps_its_mail(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_OUTBOX)

    with SQLiteStore(path) as store:
        failed, waiting = store.pending_mail()
        assert failed.status == "failed" and failed.error == "550 5.1.1 no such user"
        assert waiting.status == "pending" and waiting.attempts == 2
        assert waiting.last_attempt is None  # unknown: due at once
        store.mark_mail_failed(waiting.id, "451 later")
        assert store.get_mail(waiting.id).last_attempt is not None  # type: ignore[union-attr]

    with SQLiteStore(path) as store:  # and opens again once migrated
        assert [m.attempts for m in store.pending_mail()] == [1, 3]


# The command line ----------------------------------------------------------------------

class Cli:
    """``python -m commit_email`` on a config with a SQLite file and the test SMTP server."""

    def __init__(self, root: Path, env: dict[str, str], server: SmtpTestServer) -> None:
        self.root = root
        self.env = env
        self.config = root / "commit-email.toml"
        self.config.write_text(
            '[connector]\npublic_address = "support@acme.example"\n'
            'internal_address = "helpdesk@acme.example"\nstate_dir = "state"\n'
            '[store]\nurl = "sqlite:///commit.db"\n'
            f'[smtp]\nhost = "{server.host}"\nport = {server.port}\nsecurity = "plain"\n'
            "retries = 0\nretry_interval = 0\n"
        )
        with self.store() as store:
            store.add_account(JANE)

    def store(self) -> SQLiteStore:
        return SQLiteStore(self.root / "commit.db")

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "commit_email", *args[:1], "--config", str(self.config),
             *args[1:]],
            cwd=self.root, env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )

    def outbox(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self("outbox", *args)

    def listing(self, *args: str) -> list[dict[str, object]]:
        result = self.outbox("--json", "list", *args)
        assert result.returncode == 0, result.stderr
        docs: list[dict[str, object]] = json.loads(result.stdout)
        return docs

    def process(self, subject: str, sender: str = "jane@customer.example") -> None:
        eml = self.root / f"{subject}.eml"
        eml.write_bytes(build_message(sender=sender, subject=subject))
        result = self("process", "--json", str(eml))
        assert result.returncode == 0, result.stderr


@pytest.fixture
def cli(tmp_path: Path, cli_env: dict[str, str], smtp_server: SmtpTestServer) -> Cli:
    return Cli(tmp_path, cli_env, smtp_server)


def assert_user_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("commit-email: error: ")
    for word in words:
        assert word in line


def test_a_refused_mail_is_listed_as_failed_with_its_error(
    cli: Cli, smtp_server: SmtpTestServer
) -> None:
    smtp_server.script("RCPT", NO_SUCH_USER)
    cli.process("Scanner broken")

    [doc] = cli.listing()

    with cli.store() as store:
        [ticket] = store.list_tickets()
    assert doc == {
        "id": 1,
        "status": "failed",
        "kind": "auto_response",
        "sender": "support@acme.example",
        "recipients": ["jane@customer.example"],
        "subject": "[Ticket#1] Scanner broken",
        "message_id": doc["message_id"],
        "ticket": ticket.rec_id,
        "attempts": 1,
        "last_error": f"all recipients refused (jane@customer.example: {NO_SUCH_USER})",
        "created": doc["created"],
        "last_attempt": doc["last_attempt"],
        "sent": None,
    }
    assert str(doc["message_id"]).endswith("@commit-email.acme.example")
    assert datetime.fromisoformat(str(doc["created"])) <= datetime.fromisoformat(
        str(doc["last_attempt"]))
    text = cli.outbox("list")
    assert text.returncode == 0
    assert "failed" in text.stdout and "550 5.1.1 no such user" in text.stdout
    assert "[Ticket#1] Scanner broken" in text.stdout


def test_process_says_when_mail_was_given_up(cli: Cli, smtp_server: SmtpTestServer) -> None:
    smtp_server.script("RCPT", NO_SUCH_USER)
    eml = cli.root / "mail.eml"
    eml.write_bytes(build_message(sender="jane@customer.example"))

    result = cli("process", str(eml))

    assert result.returncode == 0
    assert "1 mail given up" in result.stdout and "commit-email outbox list" in result.stdout


def test_list_all_includes_sent_mail(cli: Cli, smtp_server: SmtpTestServer) -> None:
    cli.process("Sent fine")
    smtp_server.script("RCPT", NO_SUCH_USER)
    cli.process("Refused")

    assert [d["status"] for d in cli.listing()] == ["failed"]
    every = cli.listing("--all")
    assert [(d["id"], d["status"]) for d in every] == [(1, "sent"), (2, "failed")]
    assert every[0]["sent"] is not None and every[0]["last_error"] == ""


def test_retry_requeues_a_refused_mail_and_sends_it_once_the_server_accepts(
    cli: Cli, smtp_server: SmtpTestServer
) -> None:
    smtp_server.script("RCPT", NO_SUCH_USER, NO_SUCH_USER)
    cli.process("Scanner broken")

    still_refused = cli.outbox("--json", "retry", "1")

    assert still_refused.returncode == 1  # tried, refused again: not out yet
    [doc] = json.loads(still_refused.stdout)
    assert doc["status"] == "failed" and doc["attempts"] == 1  # attempts start over
    assert smtp_server.messages == []

    accepted = cli.outbox("retry", "1")

    assert accepted.returncode == 0, accepted.stderr
    assert "sent" in accepted.stdout
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("jane@customer.example",) and b"Scanner broken" in got.data
    assert cli.listing() == []


def test_retry_all_failed_leaves_pending_mail_alone(
    cli: Cli, smtp_server: SmtpTestServer
) -> None:
    smtp_server.script("RCPT", NO_SUCH_USER)
    cli.process("One")
    smtp_server.script("RCPT", NO_SUCH_USER)
    cli.process("Two")
    with cli.store() as store:  # a pending mail, waiting for its first try
        pending = store.enqueue_mail(OutgoingMail(
            kind="forward", sender="support@acme.example",
            recipients=("helpdesk@acme.example",), raw=b"Subject: later\r\n\r\nbody\r\n"))

    result = cli.outbox("--json", "retry", "--all-failed")

    assert result.returncode == 0, result.stderr
    assert [(d["id"], d["status"]) for d in json.loads(result.stdout)] == [(1, "sent"),
                                                                           (2, "sent")]
    # The pending mail went out too: retry flushes the whole queue, as ``run`` would.
    assert len(smtp_server.messages) == 3
    with cli.store() as store:
        assert store.get_mail(pending).sent  # type: ignore[union-attr]


def test_retry_without_smtp_only_requeues(cli: Cli, smtp_server: SmtpTestServer) -> None:
    smtp_server.script("RCPT", NO_SUCH_USER)
    cli.process("Scanner broken")
    text = cli.config.read_text()
    cli.config.write_text(text[:text.index("[smtp]")])

    result = cli.outbox("retry", "1")

    assert result.returncode == 0, result.stderr
    assert "configure [smtp]" in result.stdout
    [doc] = cli.listing()
    assert doc["status"] == "pending" and doc["attempts"] == 0 and doc["last_error"] == ""


def mail(subject: str) -> OutgoingMail:
    return OutgoingMail(kind="forward", sender="support@acme.example",
                        recipients=("helpdesk@acme.example",),
                        raw=f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def test_purge_removes_failed_mail_and_needs_force_for_pending_mail(cli: Cli) -> None:
    with cli.store() as store:
        failed = store.enqueue_mail(mail("refused"))
        store.mark_mail_failed(failed, "550 no such user", give_up=True)
        pending = store.enqueue_mail(mail("waiting"))

    refused = cli.outbox("purge", str(pending))

    assert_user_error(refused, f"outbox mail {pending}", "--force")
    assert [d["id"] for d in cli.listing()] == [failed, pending]

    assert cli.outbox("--json", "purge", str(failed)).stdout.strip() == (
        json.dumps({"purged": [failed]})
    )
    assert [d["id"] for d in cli.listing()] == [pending]
    assert cli.outbox("purge", "--force", str(pending)).returncode == 0
    assert cli.listing("--all") == []


def test_purge_sent_before_removes_only_old_sent_mail(cli: Cli) -> None:
    with cli.store() as store:
        old, recent, failed, pending = (store.enqueue_mail(mail(s)) for s in "abcd")
        store.mark_mail_sent(old)
        store.mark_mail_sent(recent)
        store.mark_mail_failed(failed, "550 no such user", give_up=True)
    with sqlite3.connect(cli.root / "commit.db") as db:  # sent last year
        db.execute("UPDATE outbox SET sent = ? WHERE id = ?",
                   ((utcnow() - timedelta(days=400)).isoformat(), old))
    cutoff = (utcnow() - timedelta(days=30)).date().isoformat()

    result = cli.outbox("--json", "purge", "--sent-before", cutoff)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"purged": [old]}
    assert [d["id"] for d in cli.listing("--all")] == [recent, failed, pending]


def test_outbox_user_errors_are_one_line(cli: Cli) -> None:
    with cli.store() as store:
        store.mark_mail_sent(store.enqueue_mail(mail("gone")))

    assert_user_error(cli.outbox("retry", "99"), "no outbox mail '99'")
    assert_user_error(cli.outbox("purge", "abc"), "no outbox mail 'abc'")
    assert_user_error(cli.outbox("purge", "9" * 30), "no outbox mail")
    assert_user_error(cli.outbox("retry", "1"), "already sent")
    assert_user_error(cli.outbox("purge", "--sent-before", "last week"), "--sent-before")
    assert cli.outbox("list").stdout.strip() == "no mail waiting or failed"
