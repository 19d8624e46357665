"""The built-in alert parsers read each tool's stock notification mail, and nothing else."""

from __future__ import annotations

import time
import warnings
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commit_email.alerts import (
    Alert,
    AlertParser,
    AlertState,
    IcingaParser,
    MonitParser,
    NagiosParser,
    builtin_parsers,
    field_lines,
)
from commit_email.message import Message
from tests.alert_fixtures import ALERTS, alert_message, alert_path, sequence
from tests.corpus import corpus_messages, require_corpus

PARSERS = builtin_parsers(["nagios", "icinga", "monit"])

P, R, OTHER = AlertState.PROBLEM, AlertState.RECOVERY, AlertState.OTHER

# file -> (parser, host, service, state, severity)
EXPECTED = {
    "nagios/service-1-problem": ("nagios", "acme-web01", "HTTP", P, "CRITICAL"),
    "nagios/service-2-repeat": ("nagios", "acme-web01", "HTTP", P, "CRITICAL"),
    "nagios/service-3-recovery": ("nagios", "acme-web01", "HTTP", R, "OK"),
    "nagios/service-4-problem-again": ("nagios", "acme-web01", "HTTP", P, "WARNING"),
    "nagios/host-1-problem": ("nagios", "acme-fw01", "", P, "DOWN"),
    "nagios/host-2-repeat": ("nagios", "acme-fw01", "", P, "DOWN"),
    "nagios/host-3-recovery": ("nagios", "acme-fw01", "", R, "UP"),
    "nagios/host-4-problem-again": ("nagios", "acme-fw01", "", P, "DOWN"),
    "icinga1/service-1-problem": ("icinga", "globex-db01", "MySQL Replication", P, "CRITICAL"),
    "icinga1/service-2-repeat": ("icinga", "globex-db01", "MySQL Replication", P, "CRITICAL"),
    "icinga1/service-3-recovery": ("icinga", "globex-db01", "MySQL Replication", R, "OK"),
    "icinga1/service-4-problem-again": ("icinga", "globex-db01", "MySQL Replication", P,
                                        "UNKNOWN"),
    "icinga2/service-1-problem": ("icinga", "initech-mail01", "smtp", P, "CRITICAL"),
    "icinga2/service-2-repeat": ("icinga", "initech-mail01", "smtp", P, "CRITICAL"),
    "icinga2/service-3-recovery": ("icinga", "initech-mail01", "smtp", R, "OK"),
    "icinga2/service-4-problem-again": ("icinga", "initech-mail01", "smtp", P, "WARNING"),
    "icinga2/host-1-problem": ("icinga", "initech-nas01", "", P, "DOWN"),
    "icinga2/host-2-repeat": ("icinga", "initech-nas01", "", P, "DOWN"),
    "icinga2/host-3-recovery": ("icinga", "initech-nas01", "", R, "UP"),
    "icinga2/host-4-problem-again": ("icinga", "initech-nas01", "", P, "DOWN"),
    "monit/nginx-1-problem": ("monit", "web02.acme.example", "nginx", P, "Does not exist"),
    "monit/nginx-2-repeat": ("monit", "web02.acme.example", "nginx", P, "Does not exist"),
    "monit/nginx-3-recovery": ("monit", "web02.acme.example", "nginx", R, "Exists"),
    "monit/nginx-4-problem-again": ("monit", "web02.acme.example", "nginx", P,
                                    "Connection failed"),
    "monit/nginx-5-action-done": ("monit", "web02.acme.example", "nginx", R, "Action done"),
}


def recognised(message: Message) -> list[tuple[str, Alert]]:
    return [(p.name, a) for p in PARSERS if (a := p.parse(message)) is not None]


def test_every_alert_mail_in_the_corpus_has_an_expectation() -> None:
    on_disk = {
        f"{p.parent.name}/{p.stem}" for p in ALERTS.glob("*/*.eml") if "rmm-" not in p.parent.name
    }
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exactly_one_builtin_parser_recognises_each_tool_mail(name: str) -> None:
    parser, host, service, state, severity = EXPECTED[name]
    hits = recognised(alert_message(name))
    assert [n for n, _ in hits] == [parser]
    alert = hits[0][1]
    assert (alert.source, alert.host, alert.service, alert.state, alert.severity) == (
        parser, host, service, state, severity
    )
    assert alert.output
    assert alert.timestamp is not None
    assert alert.timestamp.tzinfo is not None


@pytest.mark.parametrize("name", ["rmm-nable/disk-1-problem", "rmm-datto/cpu-1-problem",
                                  "rmm-datto/service-self-healed"])
def test_rmm_mails_are_left_to_rules_and_plugins(name: str) -> None:
    assert recognised(alert_message(name)) == []


@pytest.mark.parametrize(
    ("folder", "prefix"),
    [("nagios", "service"), ("nagios", "host"), ("icinga1", "service"), ("icinga2", "service"),
     ("icinga2", "host"), ("monit", "nginx")],
)
def test_a_sequence_shares_one_correlation_key(folder: str, prefix: str) -> None:
    names = sequence(folder, prefix)
    assert len(names) >= 4
    alerts = [recognised(alert_message(n))[0][1] for n in names]
    assert len({a.correlation_key("CRD-ACME") for a in alerts}) == 1
    assert [a.state for a in alerts[:4]] == [P, P, R, P]


def test_nagios_service_fields_output_and_time() -> None:
    alert = NagiosParser().parse(alert_message("nagios/service-1-problem"))
    assert alert is not None
    assert alert.output == "CRITICAL - Socket timeout after 10 seconds"
    assert alert.timestamp == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert alert.fields["address"] == "192.0.2.10"
    assert alert.fields["notification_type"] == "PROBLEM"
    assert alert.title == "acme-web01/HTTP is CRITICAL"


def test_quoted_printable_output_is_decoded() -> None:
    alert = NagiosParser().parse(alert_message("nagios/service-2-repeat"))
    assert alert is not None
    assert alert.output.endswith("\u2265 warn threshold")


def test_html_nagios_template_is_read_from_its_table() -> None:
    alert = NagiosParser().parse(alert_message("nagios/service-4-problem-again"))
    assert alert is not None
    assert alert.host == "acme-web01"
    assert alert.output.startswith("HTTP WARNING")


def test_icinga1_date_keeps_the_mail_zone() -> None:
    alert = IcingaParser().parse(alert_message("icinga1/service-1-problem"))
    assert alert is not None
    # "2026-11-28 08:15:00" has no zone; the mail's Date (+0100) supplies it
    assert alert.timestamp == datetime(2026, 11, 28, 7, 15, tzinfo=UTC)


def test_icinga2_uses_object_names_and_keeps_display_details() -> None:
    alert = IcingaParser().parse(alert_message("icinga2/service-2-repeat"))
    assert alert is not None
    assert (alert.host, alert.service) == ("initech-mail01", "smtp")
    assert alert.fields["ipv4"] == "203.0.113.25"
    assert alert.fields["monitoring_server"] == "icinga-master"
    assert alert.output.startswith("connect to address 203.0.113.25")


def test_icinga2_host_subject_in_base64_encoded_word() -> None:
    message = alert_message("icinga2/host-3-recovery")
    assert message.subject.startswith("[RECOVERY] Host initech-nas01 is UP!")
    alert = IcingaParser().parse(message)
    assert alert is not None
    assert (alert.state, alert.service) == (R, "")


def test_monit_reads_crlf_tab_layout() -> None:
    alert = MonitParser().parse(alert_message("monit/nginx-4-problem-again"))
    assert alert is not None
    assert alert.fields["action"] == "restart"
    assert alert.output.startswith("failed protocol test [HTTP]")
    assert alert.timestamp == datetime(2026, 11, 28, 15, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "state"),
    [("Does not exist", P), ("Exists", R), ("Connection failed", P),
     ("Connection succeeded", R), ("Resource limit matched", P),
     ("Resource limit succeeded", R), ("Timeout", P), ("Timeout recovery", R),
     ("Link down", P), ("Link up", R), ("Saturation exceeded", P), ("Saturation ok", R),
     ("Checksum changed", OTHER), ("Monit instance changed", OTHER), ("PID changed", OTHER),
     ("Content match", P), ("Action done", R)],
)
def test_monit_event_names(event: str, state: AlertState) -> None:
    raw = (
        f"From: monit@db1.example\r\nSubject: monit alert --  {event} mysqld\r\n"
        f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n{event} Service mysqld \r\n\r\n"
        "\tDate:        Sat, 28 Nov 2026 10:00:00\r\n\tAction:      alert\r\n"
        "\tHost:        db1\r\n\tDescription: something\r\n\r\n"
        "Your faithful employee,\r\nMonit\r\n"
    ).encode()
    alert = MonitParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert (alert.service, alert.host, alert.state) == ("mysqld", "db1", state)


def test_monit_subject_alone_is_enough_and_host_falls_back_to_sender_domain() -> None:
    raw = (b"From: monit@cache3.acme.example\nSubject: monit alert --  Does not exist redis\n\n"
           b"(body stripped by a relay)\n")
    alert = MonitParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert (alert.host, alert.service, alert.state) == ("cache3.acme.example", "redis", P)


def test_nagios_subject_alone_with_mailx_indentation() -> None:
    raw = (b"From: nagios@mon.example\nSubject: ** RECOVERY Service Alert: db2/Disk /var is OK **"
           b"\n\n    Notification Type: RECOVERY\n    Additional Info:\n\n    DISK OK\n")
    alert = NagiosParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert (alert.host, alert.service, alert.state, alert.output) == ("db2", "Disk /var", R,
                                                                      "DISK OK")


@pytest.mark.parametrize(
    "kind", ["ACKNOWLEDGEMENT", "FLAPPINGSTART", "DOWNTIMESTART", "CUSTOM"]
)
def test_nagios_notification_types_other_than_problem_and_recovery(kind: str) -> None:
    raw = (f"From: nagios@mon.example\nSubject: ** {kind} Host Alert: fw is DOWN **\n\n"
           f"***** Nagios *****\n\nNotification Type: {kind}\nHost: fw\nState: DOWN\n").encode()
    alert = NagiosParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert alert.state is OTHER


def test_icinga2_pre_2_8_dash_subject() -> None:
    raw = (b"From: icinga@old.example\nSubject: PROBLEM - web7 - Load is WARNING\n\n"
           b"***** Icinga  *****\n\nNotification Type: PROBLEM\n\nService: Load\nHost: web7\n"
           b"State: WARNING\n\nAdditional Info: WARNING - load average: 9.1\n")
    alert = IcingaParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert (alert.host, alert.service, alert.state) == ("web7", "Load", P)
    assert NagiosParser().parse(Message.from_bytes(raw)) is None


def test_ordinary_customer_mail_is_not_an_alert() -> None:
    raw = (b"From: Jane <jane@customer.example>\nSubject: Printer broken again\n\n"
           b"Hi,\nHost: the printer on floor 2\nState: jammed\nThanks, Jane\n")
    assert recognised(Message.from_bytes(raw)) == []


def test_correlation_key_normalises_case_and_space_and_prefers_external_id() -> None:
    a = Alert(source="nagios", host="ACME-web01 ", service="HTTP  Check")
    b = Alert(source="Nagios", host="acme-web01", service="http check")
    assert a.correlation_key("CRD1") == b.correlation_key("CRD1")
    assert a.correlation_key("CRD1") != a.correlation_key("CRD2")
    c = Alert(source="rmm", host="x", service="y", external_id="88412")
    d = Alert(source="rmm", host="renamed", service="y", external_id="88412")
    assert c.correlation_key("CRD1") == d.correlation_key("CRD1")


def test_builtin_parsers_satisfy_the_protocol_and_skip_unknown_names() -> None:
    parsers = builtin_parsers(["monit", "nope", "nagios"])
    assert [p.name for p in parsers] == ["monit", "nagios"]
    assert all(isinstance(p, AlertParser) for p in parsers)


def test_field_lines_takes_multi_line_values_and_first_occurrence() -> None:
    fields = field_lines("Host: a\nHost: b\nAdditional Info:\n\nline 1\nline 2\n\nNext: x\n")
    assert fields == {"host": "a", "additional info": "line 1\nline 2", "next": "x"}


# -- never raise -------------------------------------------------------------------------

_field_keys = st.sampled_from(
    ["Notification Type", "Host", "Service", "State", "Date/Time", "Info", "When", "Date",
     "Action", "Description", "Additional Info", "IPv4"]
)
_line = st.one_of(
    st.text(max_size=60),
    st.builds(lambda k, v: f"{k}: {v}", _field_keys, st.text(max_size=40)),
    st.sampled_from(["***** Nagios *****", "***** Icinga *****", "Your faithful employee,",
                     "Monit", "***** Service Monitoring on x *****", "x is DOWN!",
                     "Does not exist Service nginx"]),
)
_subject = st.one_of(
    st.text(max_size=80),
    st.builds(lambda t, w, s: f"** {t} Service Alert: {w} is {s} **",
              st.text(max_size=10), st.text(max_size=20), st.text(max_size=10)),
    st.builds(lambda t, w: f"[{t}] {w} is CRITICAL!", st.text(max_size=10), st.text(max_size=30)),
    st.builds(lambda w: f"monit alert --  {w}", st.text(max_size=30)),
)


class _Mail:
    def __init__(self, subject: str, text: str, sender: str) -> None:
        self.subject, self.text, self.sender = subject, text, sender
        self.html: str | None = None
        self.date: datetime | None = None


@settings(max_examples=300, deadline=None)
@given(subject=_subject, lines=st.lists(_line, max_size=12), sender=st.text(max_size=30))
def test_parsers_never_raise_on_arbitrary_text(subject: str, lines: list[str], sender: str) -> None:
    mail = _Mail(subject, "\n".join(lines), sender)
    for parser in PARSERS:
        result = parser.parse(mail)
        assert result is None or isinstance(result, Alert)
        if result is not None:
            assert result.host  # a recognised alert always names what it is about
            result.correlation_key("A")


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=400))
def test_parsers_never_raise_on_arbitrary_bytes(raw: bytes) -> None:
    message = Message.from_bytes(b"From: nagios@x\nSubject: ** PROBLEM Host Alert: h is DOWN **"
                                 b"\n\n" + raw)
    for parser in PARSERS:
        parser.parse(message)


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("** PROBLEM Service Alert: " + "a is B " * 3000, ""),
        ("PROBLEM - " + "x - " * 3000, ""),
        ("[PROBLEM] " + "a on b " * 3000, ""),
        ("monit alert -- " + "a " * 5000, "Your faithful employee,\nMonit\n" + "a Service " * 9000),
        ("** PROBLEM Host Alert: h is DOWN **", "***** Nagios *****\nHost:" + " x" * 50000),
        ("", "***** Service Monitoring on x *****\n" + "a is B " * 20000),
    ],
)
def test_hostile_sizes_cost_milliseconds_not_seconds(subject: str, text: str) -> None:
    mail = _Mail(subject, text, "monit@x.example")
    start = time.perf_counter()
    for parser in PARSERS:
        parser.parse(mail)
    assert time.perf_counter() - start < 0.5


def test_unknown_zone_names_take_the_mail_zone_without_warnings() -> None:
    raw = (b"From: nagios@mon.example\nDate: Sat, 28 Nov 2026 10:00:05 +0100\n"
           b"Subject: ** PROBLEM Host Alert: fw is DOWN **\n\n***** Nagios *****\n\n"
           b"Notification Type: PROBLEM\nHost: fw\nState: DOWN\n\n"
           b"Date/Time: Sat Nov 28 10:00:00 CET 2026\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alert = NagiosParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert alert.timestamp == datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_a_tool_date_far_from_the_mail_date_is_not_trusted() -> None:
    raw = (b"From: icinga@mon.example\nDate: Sat, 28 Nov 2026 10:00:05 +0000\n"
           b"Subject: [PROBLEM] Load on web7 is WARNING!\n\n"
           b"***** Service Monitoring on mon *****\n\nLoad on web7 is WARNING!\n\n"
           b"Info:    load 9\n\nWhen:    3 March 1999\nService: load\nHost:    web7\n")
    alert = IcingaParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert alert.timestamp == datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize("prefix", ["Re: ", "RE: ", "Fwd: ", "FW: ", "AW: ", "WG: ", "TR: ",
                                    "SV: ", "Re[2]: "])
@pytest.mark.parametrize("name", ["nagios/service-1-problem", "icinga2/service-1-problem",
                                  "monit/nginx-1-problem"])
def test_a_person_replying_to_or_forwarding_an_alert_is_not_the_tool(prefix: str,
                                                                     name: str) -> None:
    raw = alert_path(name).read_bytes().replace(b"Subject: ", f"Subject: {prefix}".encode(), 1)
    assert recognised(Message.from_bytes(raw)) == []


def test_a_quoted_alert_in_a_reply_body_is_not_recognised() -> None:
    quoted = "\n".join("> " + line for line in
                       alert_message("nagios/service-1-problem").text.splitlines())
    raw = f"From: jane@acme.example\nSubject: about last night\n\nSee below\n\n{quoted}\n"
    assert recognised(Message.from_bytes(raw.encode())) == []


@pytest.mark.parametrize(
    ("description", "state"),
    [("restart action done", R), ("start action done", R), ("monitor action done", R),
     ("stop action done", OTHER), ("unmonitor action done", OTHER)],
)
def test_monit_action_done_is_a_recovery_only_for_a_start(description: str,
                                                           state: AlertState) -> None:
    raw = alert_path("monit/nginx-5-action-done").read_bytes().replace(
        b"restart action done", description.encode())
    alert = MonitParser().parse(Message.from_bytes(raw))
    assert alert is not None
    assert alert.state is state


def test_no_message_of_the_third_party_corpus_is_taken_for_an_alert() -> None:
    paths = corpus_messages(require_corpus())
    assert len(paths) > 100
    for path in paths:
        message = Message.from_bytes(path.read_bytes())
        assert recognised(message) == [], path
