"""The XML API attacked as an attacker would: real RFC 822 bytes through ``process``, the
responses delivered to a real SMTP server (aiosmtpd on 127.0.0.1).

- one mail with 2,000 transactions, each with another password, tests one password;
- a sender with too many failed logins is refused unread, also after a restart;
- a forged mail with 500 failed transactions makes at most one mail to its victim;
- bulk, auto-submitted and robot senders get no answer about a failed login;
- the password is redacted in any letter case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from commit_email.model import OutcomeKind
from commit_email.pipeline import Connector
from commit_email.smtp import SmtpMailer
from commit_email.store import SQLiteStore, open_store
from commit_email.testing import build_message, make_config, make_connector
from commit_email.xml_api import Transaction, render_transaction
from tests.shared import DIRECTORY

PASSWORD = "s3cretpw-xyz"
VICTIM = "victim@elsewhere.example"
ATTACKER = "mallory@evil.example"

pytestmark = pytest.mark.server


def transaction(password: str, *, name: str = "Evil Corp", respond: str = ATTACKER,
                rid: str = "t") -> str:
    return render_transaction(Transaction(
        external_application_name="attack", send_response_to=respond, password=password,
        return_transaction_id=rid, data_kind="ACCOUNT",
        fields={"FLDCRDFULLNAME": name})).decode()


def attack_mail(transactions: list[str], *, sender: str = ATTACKER, **options: Any) -> bytes:
    # Several roots in one mail run in order (a <CommitCRMTransactions> wrapper would too).
    options.setdefault("subject", "batch")
    return build_message(sender=sender, body="\n".join(transactions), **options)


@pytest.fixture
def connector_at(smtp_server: Any, tmp_path: Path) -> Callable[..., Connector]:
    """Connectors on one SQLite file (a restart keeps the store), mailing through aiosmtpd."""

    def make(**xml_api: Any) -> Connector:
        settings = {"enabled": True, "password": PASSWORD, **xml_api}
        config = make_config(
            state_dir=tmp_path / "state",
            store={"url": f"sqlite:///{tmp_path / 'commit.db'}"},
            smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "plain",
                  "from_address": "support@helpdesk.example"},
            xml_api=settings,
        )
        store = open_store(config.store.url)
        return make_connector(config, accounts=DIRECTORY, store=store,
                              mailer=SmtpMailer(smtp_server.config()))

    return make


def delivered(connector: Connector, smtp_server: Any) -> list[Any]:
    connector.flush_outbox()
    return smtp_server.messages


def accounts_named(connector: Connector, name: str) -> list[Any]:
    store = connector.sink
    assert isinstance(store, SQLiteStore)
    return [a for a in store.list_accounts() if a.file_as == name]


def test_two_thousand_passwords_in_one_mail_are_one_guess(connector_at, smtp_server):
    connector = connector_at()
    guesses = [transaction(f"guess-{n:04d}", rid=f"g{n}") for n in range(1999)]
    guesses.insert(1000, transaction(PASSWORD, rid="right"))  # the right one, half-way
    outcome = connector.process(attack_mail(guesses))

    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "AUTH_FAILED" in outcome.detail and "NOT_TRIED" in outcome.detail
    assert accounts_named(connector, "Evil Corp") == []
    received = delivered(connector, smtp_server)
    assert len(received) <= 1
    assert all(b"<Status>OK" not in m.data for m in received)


def test_a_sender_with_too_many_failed_logins_is_refused_unread_even_after_a_restart(
        connector_at, smtp_server):
    connector = connector_at(max_failed_logins=3)
    for n in range(3):
        outcome = connector.process(attack_mail([transaction(f"wrong-{n}")], subject=f"try {n}"))
        assert "AUTH_FAILED" in outcome.detail
    restarted = connector_at(max_failed_logins=3)
    before = len(delivered(restarted, smtp_server))
    outcome = restarted.process(attack_mail([transaction(PASSWORD)], subject="now the right one"))

    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "TOO_MANY_FAILED_LOGINS" in outcome.detail
    assert accounts_named(restarted, "Evil Corp") == []
    assert len(delivered(restarted, smtp_server)) == before  # refused without an answer
    # Another sender is not locked out by the attacker.
    ok = restarted.process(attack_mail([transaction(PASSWORD, name="Forms Ltd",
                                                    respond="forms@acme.example")],
                                       sender="forms@acme.example"))
    assert ok.kind is OutcomeKind.XML_APPLIED


def test_the_lockout_ends_when_the_window_has_passed(connector_at):
    connector = connector_at(max_failed_logins=1, failed_login_window=600)
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    connector.clock = lambda: start
    connector.process(attack_mail([transaction("wrong")], subject="one"))
    connector.clock = lambda: start + timedelta(seconds=599)
    assert "TOO_MANY_FAILED_LOGINS" in connector.process(
        attack_mail([transaction(PASSWORD)], subject="two")).detail
    connector.clock = lambda: start + timedelta(seconds=601)
    assert connector.process(attack_mail([transaction(PASSWORD)], subject="three")).kind \
        is OutcomeKind.XML_APPLIED


def test_a_forged_mail_with_500_failed_transactions_mails_its_victim_at_most_once(
        connector_at, smtp_server):
    connector = connector_at()
    forged = attack_mail([transaction(f"wrong-{n}", respond=VICTIM, rid=f"r{n}")
                          for n in range(500)], sender=VICTIM)
    assert len(forged) < 300_000
    outcome = connector.process(forged)

    assert outcome.kind is OutcomeKind.XML_REJECTED
    received = delivered(connector, smtp_server)
    assert len(received) <= 1
    # broken envelopes (no password at all) are answered once per mail too
    broken = attack_mail([f"<CommitCRMTransaction><SendResponseToEmail>{VICTIM}"
                          f"</SendResponseToEmail><DataKind>ACCOUNT</DataKind>"
                          f"</CommitCRMTransaction>"] * 300, sender=VICTIM, subject="again")
    connector.process(broken)
    assert len(delivered(connector, smtp_server)) <= len(received) + 1


@pytest.mark.parametrize("headers, sender", [
    ({"Precedence": "bulk"}, ATTACKER),
    ({"Auto-Submitted": "auto-generated"}, ATTACKER),
    ({}, "mailer-daemon@relay.example"),
])
def test_robots_and_bulk_mail_get_no_answer_about_a_failed_login(
        connector_at, smtp_server, headers, sender):
    connector = connector_at()
    outcome = connector.process(attack_mail([transaction("wrong", respond=sender)],
                                            sender=sender, headers=headers))
    assert "AUTH_FAILED" in outcome.detail
    assert delivered(connector, smtp_server) == []


def test_failed_login_answers_count_against_the_auto_response_rate_limit(
        connector_at, smtp_server):
    connector = connector_at(max_failed_logins=100)
    for n in range(6):
        connector.process(attack_mail([transaction(f"wrong-{n}")], subject=f"try {n}"))
    # [loop_protection] max_auto_responses_per_sender defaults to 3 per hour
    assert len(delivered(connector, smtp_server)) == 3


def test_the_password_is_redacted_in_any_letter_case(connector_at, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    connector = connector_at()
    shouted = PASSWORD.upper()
    outcome = connector.process(attack_mail(
        [transaction(PASSWORD, name=f"x {shouted}", rid=f"id {shouted}"),
         render_transaction(Transaction(
             external_application_name=shouted, send_response_to=ATTACKER, password=PASSWORD,
             return_transaction_id="r2", data_kind="ACCOUNT",
             fields={"FLDCRDNOPE": shouted})).decode()]))
    texts = [outcome.detail, caplog.text]
    texts += [m.data.decode("utf-8", "replace") for m in delivered(connector, smtp_server)]
    store = connector.state
    assert isinstance(store, SQLiteStore)
    texts += [row.outcome.detail for row in store.iter_processed()]
    assert len(texts) > 3
    for text in texts:
        assert PASSWORD not in text.lower(), text
