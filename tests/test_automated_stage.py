"""The automated stage end to end: real alert mails through a connector."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commit_email import hookimpl
from commit_email.alerts import Alert, AlertMail
from commit_email.errors import ConfigError
from commit_email.model import Account, AccountKind, OutcomeKind
from commit_email.testing import RecordingMailer, build_message, make_config, make_connector
from tests.alert_fixtures import alert_path, sequence
from tests.automated_fixtures import automated_connector, load_rmm_plugin

CREATED, APPENDED = OutcomeKind.ALERT_TICKET_CREATED, OutcomeKind.ALERT_APPENDED
RESOLVED, SKIPPED = OutcomeKind.ALERT_RESOLVED, OutcomeKind.ALERT_SKIPPED
ROOT = Path(__file__).resolve().parents[1]


def raw(name: str) -> bytes:
    return alert_path(name).read_bytes()


SEQUENCES = [
    ("nagios", "service", "CRD-ACME"),
    ("nagios", "host", "CRD-ACME"),
    ("icinga1", "service", "CRD-GLOBEX"),
    ("icinga2", "service", "CRD-INITECH"),
    ("icinga2", "host", "CRD-INITECH"),
    ("monit", "nginx", "CRD-ACME"),
    ("rmm-nable", "disk", "CRD-ACME"),
    ("rmm-datto", "cpu", "CRD-ACME2"),
]


@pytest.mark.parametrize(("folder", "prefix", "account"), SEQUENCES)
def test_problem_repeat_recovery_problem(folder: str, prefix: str, account: str) -> None:
    connector = automated_connector(plugins=(load_rmm_plugin().plugin,))
    names = sequence(folder, prefix)[:4]
    outcomes = [connector.process(raw(n)) for n in names]

    assert [o.kind for o in outcomes] == [CREATED, APPENDED, RESOLVED, CREATED]
    assert {o.account for o in outcomes} == {account}
    first, second = outcomes[0].ticket, outcomes[3].ticket
    assert outcomes[1].ticket == outcomes[2].ticket == first != second
    sink = connector.sink
    closed = sink.get_ticket(number=first)
    reopened = sink.get_ticket(number=second)
    assert closed is not None
    assert reopened is not None
    assert closed.closed
    assert not reopened.closed
    assert closed.account == reopened.account == account
    assert closed.alert_key == reopened.alert_key or folder == "rmm-nable"  # new RMM alert id
    assert [h.kind for h in sink.history(closed.rec_id)] == ["email", "alert", "alert-recovery"]
    assert len(sink.history(reopened.rec_id)) == 1


def test_monit_action_done_resolves_the_reopened_ticket() -> None:
    connector = automated_connector()
    kinds = [connector.process(raw(n)).kind for n in sequence("monit", "nginx")]
    assert kinds == [CREATED, APPENDED, RESOLVED, CREATED, RESOLVED]
    assert all(t.closed for t in connector.sink.list_tickets())


def test_ticket_description_names_the_check() -> None:
    connector = automated_connector()
    outcome = connector.process(raw("nagios/service-1-problem"))
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    assert ticket.description == ("acme-web01/HTTP is CRITICAL: CRITICAL - Socket timeout "
                                  "after 10 seconds")
    assert ticket.alert_key == "CRD-ACME|nagios/acme-web01/http"


def test_recovery_without_open_ticket_opens_nothing() -> None:
    connector = automated_connector()
    outcome = connector.process(raw("nagios/service-3-recovery"))
    assert outcome.kind is SKIPPED
    assert "without an open ticket" in outcome.detail
    assert connector.sink.list_tickets() == []


def test_a_recovery_delivered_before_its_problem_keeps_the_late_problem_closed() -> None:
    connector = automated_connector()
    # the 10:45 recovery is fetched first, then the 10:00 problem and its 10:30 repeat
    assert connector.process(raw("nagios/service-3-recovery")).kind is SKIPPED
    late = connector.process(raw("nagios/service-1-problem"))
    assert late.kind is SKIPPED
    assert "already recovered" in late.detail
    assert connector.process(raw("nagios/service-2-repeat")).kind is SKIPPED
    assert connector.sink.list_tickets() == []
    # the 11:30 problem is newer than the recovery: a real new problem
    assert connector.process(raw("nagios/service-4-problem-again")).kind is CREATED


def test_a_repeat_delivered_after_the_recovery_does_not_reopen() -> None:
    connector = automated_connector()
    names = sequence("icinga2", "service")
    assert connector.process(raw(names[0])).kind is CREATED
    assert connector.process(raw(names[2])).kind is RESOLVED
    assert connector.process(raw(names[1])).kind is SKIPPED  # 07:30 repeat, recovered 07:52
    assert len(connector.sink.list_tickets()) == 1


def test_recovery_memory_survives_a_restart(tmp_path: Path) -> None:
    from commit_email.store import SQLiteStore

    before = automated_connector(store=SQLiteStore(tmp_path / "commit.db"))
    assert before.process(raw("nagios/service-3-recovery")).kind is SKIPPED
    before.state.close()  # type: ignore[attr-defined]
    after = automated_connector(store=SQLiteStore(tmp_path / "commit.db"))
    outcome = after.process(raw("nagios/service-1-problem"))
    assert outcome.kind is SKIPPED and "already recovered" in outcome.detail
    assert after.sink.list_tickets() == []


def test_recovery_memory_expires() -> None:
    connector = automated_connector(recovery_memory=0.0)
    connector.process(raw("nagios/service-3-recovery"))
    assert connector.process(raw("nagios/service-1-problem")).kind is CREATED


def test_close_on_recovery_off_appends_but_keeps_the_ticket_open() -> None:
    connector = automated_connector(close_on_recovery=False)
    connector.process(raw("monit/nginx-1-problem"))
    outcome = connector.process(raw("monit/nginx-3-recovery"))
    assert outcome.kind is RESOLVED
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    assert not ticket.closed
    assert len(connector.sink.history(ticket.rec_id)) == 2


def test_closed_status_is_set_on_recovery() -> None:
    connector = automated_connector(closed_status="900")
    connector.process(raw("monit/nginx-1-problem"))
    outcome = connector.process(raw("monit/nginx-3-recovery"))
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    assert (ticket.closed, ticket.status) == (True, "900")


def test_acknowledgement_is_appended_to_the_open_ticket_and_skipped_without_one() -> None:
    ack = build_message(
        sender="nagios@mon.acme-msp.example",
        subject="** ACKNOWLEDGEMENT Service Alert: acme-web01/HTTP is CRITICAL **",
        body="***** Nagios *****\n\nNotification Type: ACKNOWLEDGEMENT\n\nService: HTTP\n"
             "Host: acme-web01\nState: CRITICAL\n\nAdditional Info:\n\nworking on it\n",
        date="Sat, 28 Nov 2026 10:10:00 +0000",
    )
    connector = automated_connector()
    assert connector.process(ack).kind is SKIPPED
    connector = automated_connector()
    connector.process(raw("nagios/service-1-problem"))
    assert connector.process(ack).kind is APPENDED


def test_same_check_for_two_customers_gives_two_tickets() -> None:
    connector = automated_connector(
        account=[{"search_for": "account_id", "located_in": "body", "after": "Customer: "}]
    )
    body = ("***** Nagios *****\n\nNotification Type: PROBLEM\n\nService: Backup\nHost: nas\n"
            "State: CRITICAL\nCustomer: {}\n\nAdditional Info:\n\nbackup failed\n")
    subject = "** PROBLEM Service Alert: nas/Backup is CRITICAL **"
    first = connector.process(build_message(sender="n@mon.example", subject=subject,
                                            body=body.format("acme")))
    second = connector.process(build_message(sender="n@mon.example", subject=subject,
                                             body=body.format("globex")))
    assert (first.kind, second.kind) == (CREATED, CREATED)
    assert (first.account, second.account) == ("CRD-ACME", "CRD-GLOBEX")


def test_skip_rule_forwards_and_opens_nothing() -> None:
    mailer = RecordingMailer()
    connector = automated_connector(mailer=mailer, skip=[{"subject_contains": "Self Healed"}])
    outcome = connector.process(raw("rmm-datto/service-self-healed"))
    assert outcome.kind is SKIPPED
    assert "skip rule 0" in outcome.detail
    assert connector.sink.list_tickets() == []
    assert len(mailer.of_kind("forward")) == 1


def test_detection_rule_without_key_opens_a_ticket_per_mail() -> None:
    connector = automated_connector(detection=[{"senders": ["noreply@rmm-datto.example"]}])
    outcomes = [connector.process(raw(n)) for n in sequence("rmm-datto", "cpu")[:2]]
    assert [o.kind for o in outcomes] == [CREATED, CREATED]
    assert outcomes[0].ticket != outcomes[1].ticket


def test_no_account_forwards_and_default_account_catches_it() -> None:
    mailer = RecordingMailer()
    unknown_host = raw("nagios/service-1-problem").replace(b"acme-web01", b"zeta-web01")
    outcome = automated_connector(mailer=mailer).process(unknown_host)
    assert outcome.kind is OutcomeKind.FORWARDED
    assert "no Account" in outcome.detail
    assert len(mailer.of_kind("forward")) == 1
    outcome = automated_connector(default_account="CRD-MSP").process(unknown_host)
    assert (outcome.kind, outcome.account) == (CREATED, "CRD-MSP")


def test_account_by_sender_after_the_account_rules() -> None:
    alert = build_message(sender="it@acme.example", subject="monit alert --  Does not exist sshd",
                          body="Does not exist Service sshd\n\n\tHost:        gw\n")
    outcome = automated_connector(account=[]).process(alert)
    assert (outcome.kind, outcome.account) == (CREATED, "CRD-ACME")
    outcome = automated_connector(account=[], account_by_sender=False).process(alert)
    assert outcome.kind is OutcomeKind.FORWARDED


def test_parsers_can_be_switched_off_by_config() -> None:
    connector = automated_connector(parsers=["monit"])
    outcome = connector.process(raw("nagios/service-1-problem"))
    assert outcome.stage != "automated"
    assert connector.process(raw("monit/nginx-1-problem")).kind is CREATED


def test_automated_disabled_registers_no_stage() -> None:
    connector = automated_connector(enabled=False)
    assert "automated" not in [s.name for s in connector.stages]


class _BrokenParser:
    name = "broken"

    def parse(self, message: AlertMail) -> Alert | None:
        raise RuntimeError("boom")


class _BrokenPlugin:
    @hookimpl
    def commit_email_register_alert_parsers(self) -> list[_BrokenParser]:
        return [_BrokenParser()]


class _SloppyParser:
    name = "sloppy"

    def parse(self, message: AlertMail) -> object:
        return {"host": "x"}


class _SloppyPlugin:
    @hookimpl
    def commit_email_register_alert_parsers(self) -> list[_SloppyParser]:
        return [_SloppyParser()]


def test_a_parser_returning_something_else_is_ignored_with_a_note() -> None:
    connector = automated_connector(plugins=(_SloppyPlugin(),))
    report = connector.inspect(raw("monit/nginx-1-problem"))
    assert ("automated.parser_error", "sloppy: returned dict") in report.notes
    assert dict(report.notes)["automated.parser"] == "monit"


def test_a_failing_parser_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    connector = automated_connector(plugins=(_BrokenPlugin(),))
    with caplog.at_level(logging.WARNING, logger="commit_email"):
        outcome = connector.process(raw("monit/nginx-1-problem"))
    assert outcome.kind is CREATED
    assert "alert parser 'broken' failed" in caplog.text
    report = connector.inspect(raw("monit/nginx-2-repeat"))
    assert ("automated.parser_error", "broken: RuntimeError: boom") in report.notes


def test_inspect_explains_rules_parser_fields_and_key_and_writes_nothing() -> None:
    connector = automated_connector(skip=[{"subject_contains": "Self Healed"}])
    report = connector.inspect(raw("rmm-datto/cpu-1-problem"))
    notes = dict(report.notes)
    assert report.outcome.kind is CREATED
    assert notes["automated.detection_rule"] == 0
    assert notes["automated.parser"] == "detection rule 0"
    assert notes["automated.account_rule"] == "3: account_number = 'ACME-002'"
    assert notes["automated.correlation_key"] == (
        "CRD-ACME2|rule:rmm-datto.example/cpu monitor on acme-ws17/")
    assert connector.sink.list_tickets() == []

    report = connector.inspect(raw("icinga2/service-1-problem"))
    notes = dict(report.notes)
    assert notes["automated.detection_rule"] == "none"
    assert notes["automated.parser"] == "icinga"
    assert notes["automated.alert"]["host"] == "initech-mail01"
    assert notes["automated.alert"]["field.ipv4"] == "203.0.113.25"
    assert notes["automated.account_rule"] == "0: account_id = 'initech'"

    report = connector.inspect(raw("rmm-datto/service-self-healed"))
    assert dict(report.notes)["automated.skip_rule"] == 0
    assert connector.sink.list_tickets() == []


def test_inspect_does_not_teach_the_recovery_memory() -> None:
    connector = automated_connector()
    connector.inspect(raw("nagios/service-3-recovery"))
    assert connector.process(raw("nagios/service-1-problem")).kind is CREATED


def test_customer_mail_is_not_automated() -> None:
    connector = automated_connector()
    outcome = connector.process(build_message(sender="it@acme.example", subject="Printer"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED


def test_inspect_says_when_a_mail_is_not_automated() -> None:
    report = automated_connector().inspect(build_message(sender="it@acme.example",
                                                         subject="Printer"))
    assert dict(report.notes)["automated"].startswith("not automated")


def test_check_config_names_the_bad_rule(tmp_path: Path) -> None:
    config = tmp_path / "commit-email.toml"
    config.write_text('[[automated.detection]]\nsenders = ["a@rmm.example"]\n\n'
                      '[[automated.detection]]\nsubject_regex = "Alert: ("\n')
    done = subprocess.run(
        [sys.executable, "-m", "commit_email", "check-config", "--config", str(config)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "automated.detection[1].subject_regex" in done.stderr


_FIELDS = {"file_as": "Acme Corp", "account_number": "ACME-001", "account_id": "acme",
           "field1": "F1-ACME", "field2": "F2-ACME", "field3": "F3-ACME", "field4": "F4-ACME",
           "rec_id": "CRD-ACME"}


@pytest.mark.parametrize("search_for", sorted(_FIELDS))
def test_every_search_for_field_finds_the_account(search_for: str) -> None:
    acme = Account(rec_id="CRD-ACME", file_as="Acme Corp", account_number="ACME-001",
                   account_id="acme", field1="F1-ACME", field2="F2-ACME", field3="F3-ACME",
                   field4="F4-ACME")
    config = make_config(automated={
        "detection": [{"senders": ["alerts@rmm.example"]}],
        "account": [{"search_for": search_for, "located_in": "body", "after": "Customer:"}],
    })
    connector = make_connector(config, accounts=[acme])
    mail = build_message(sender="alerts@rmm.example", subject="Backup failed",
                         body=f"Job: nightly\nCustomer: {_FIELDS[search_for].lower()}\n")
    outcome = connector.process(mail)
    assert (outcome.kind, outcome.account) == (CREATED, "CRD-ACME")


def test_account_rules_skip_ambiguous_inactive_and_employee_cards() -> None:
    cards = [
        Account(rec_id="CRD-A", file_as="A", field1="shared"),
        Account(rec_id="CRD-B", file_as="B", field1="shared"),
        Account(rec_id="CRD-OLD", file_as="Old", field2="gone", active=False),
        Account(rec_id="EMP-1", file_as="Tech", field3="tech", kind=AccountKind.EMPLOYEE),
        Account(rec_id="CRD-C", file_as="C", account_id="c-id"),
        Account(rec_id="CON-C", file_as="Carla at C", field4="carla",
                kind=AccountKind.CONTACT, parent="CRD-C"),
    ]
    config = make_config(automated={
        "detection": [{"senders": ["alerts@rmm.example"]}],
        "account_by_sender": False,
        "account": [
            {"search_for": "field1", "located_in": "body", "after": "f1:"},
            {"search_for": "field2", "located_in": "body", "after": "f2:"},
            {"search_for": "field3", "located_in": "body", "after": "f3:"},
            {"search_for": "field4", "located_in": "body", "after": "f4:"},
        ],
    })
    connector = make_connector(config, accounts=cards)
    mail = build_message(sender="alerts@rmm.example", subject="Disk",
                         body="f1: shared\nf2: gone\nf3: tech\nf4: carla\n")
    report = connector.inspect(mail)
    notes = [(k, v) for k, v in report.notes if k.startswith("automated.account")]
    assert [k for k, _ in notes] == ["automated.account_rule_miss"] * 3 + [
        "automated.account_rule", "automated.account"]
    assert report.outcome.account == "CRD-C"  # the contact's Account
    ticket = connector.process(mail)
    stored = connector.sink.get_ticket(number=ticket.ticket)
    assert stored is not None
    assert stored.contact == "CON-C"


@pytest.mark.parametrize(
    ("rule", "subject", "body", "skipped"),
    [
        ({"subject_contains": "maintenance"}, "Alert: MAINTENANCE window", "", True),
        ({"subject_regex": r"^\[info\]"}, "[INFO] Alert: patch report", "", True),
        ({"body_contains": "test notification"}, "Alert: x", "This is a Test Notification", True),
        ({"body_regex": r"^severity:\s*low$"}, "Alert: x", "Severity: LOW", True),
        ({"subject_contains": "maintenance", "body_contains": "planned"}, "Alert: maintenance",
         "sudden outage", False),
        ({"subject_contains": "maintenance"}, "Alert: disk full", "maintenance", False),
    ],
)
def test_skip_rule_kinds(rule: dict[str, str], subject: str, body: str, skipped: bool) -> None:
    connector = automated_connector(detection=[{"senders": ["alerts@rmm.example"]}],
                                    skip=[rule], default_account="CRD-MSP")
    outcome = connector.process(build_message(sender="alerts@rmm.example", subject=subject,
                                              body=body))
    assert (outcome.kind is SKIPPED) is skipped
    assert (outcome.kind is CREATED) is not skipped


_alert_lines = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["***** Nagios *****", "***** Icinga *****", "Notification Type: PROBLEM",
                     "Notification Type: RECOVERY", "Host: acme-web01", "Service: HTTP",
                     "State: CRITICAL", "Date/Time: Sat Nov 28 10:00:00 CET 2026",
                     "Date/Time: 31/31/31 99:99", "When: yesterday", "Client: ACME-001)",
                     "[Site: ACME-002]", "Your faithful employee,", "Monit",
                     "Does not exist Service nginx", "Host:        web02.acme.example"]),
)
_alert_subjects = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60),
    st.sampled_from(["** PROBLEM Service Alert: acme-web01/HTTP is CRITICAL **",
                     "** RECOVERY Host Alert: acme-fw01 is UP **",
                     "[PROBLEM] smtp on initech-mail01 is CRITICAL!",
                     "monit alert --  Exists nginx",
                     "Alert raised: CPU Monitor on ACME-WS17 [Site: ACME-002]",
                     "Alert resolved: CPU Monitor on ACME-WS17 [Site: ACME-002]"]),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mails=st.lists(st.tuples(_alert_subjects, st.lists(_alert_lines, max_size=8)),
                      min_size=1, max_size=4))
def test_alert_like_mail_never_quarantines(mails: list[tuple[str, list[str]]]) -> None:
    connector = automated_connector(default_account="CRD-MSP",
                                    skip=[{"subject_regex": r"self\s+healed"}])
    for subject, lines in mails:
        raw = build_message(sender="nagios@mon.acme-msp.example", subject=subject,
                            body="\n".join(lines) or "-")
        outcome = connector.process(raw)
        assert outcome.kind is not OutcomeKind.QUARANTINED, outcome.detail


def test_a_late_recovery_does_not_close_a_newer_problem() -> None:
    connector = automated_connector()
    names = sequence("nagios", "service")
    first = connector.process(raw(names[0]))  # 10:00 problem
    assert connector.process(raw(names[3])).kind is APPENDED  # 11:30 problem, still open
    late = connector.process(raw(names[2]))  # the 10:45 all-clear of the first episode
    assert late.kind is APPENDED
    assert "kept open" in late.detail
    ticket = connector.sink.get_ticket(number=first.ticket)
    assert ticket is not None
    assert not ticket.closed
    assert [h.kind for h in connector.sink.history(ticket.rec_id)] == [
        "email", "alert", "alert-recovery"]


def test_alert_tickets_take_their_own_defaults() -> None:
    connector = automated_connector(ticket_defaults={"priority": "1", "source": "Monitoring"})
    outcome = connector.process(raw("monit/nginx-1-problem"))
    ticket = connector.sink.get_ticket(number=outcome.ticket)
    assert ticket is not None
    assert (ticket.priority, ticket.source, ticket.kind) == ("1", "Monitoring", "General")


def test_unknown_ticket_default_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        make_config(automated={"ticket_defaults": {"colour": "red"}})
    assert info.value.key == "automated.ticket_defaults"
