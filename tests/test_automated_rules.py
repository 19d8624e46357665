"""Commit's detection, skip and account rules, compiled by AutomatedRules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commit_email._regex import required_literal
from commit_email.alerts import Alert, AlertState
from commit_email.automated import (
    AutomatedRules,
    LiteralFinder,
    _MailText,
)
from commit_email.config import AutomatedConfig, DetectionRule, compile_regex, parse_config
from commit_email.errors import ConfigError
from commit_email.message import Message
from tests.alert_fixtures import alert_message


def mail(sender: str = "alerts@rmm.example", subject: str = "", body: str = "") -> Message:
    return Message.from_bytes(
        f"From: RMM <{sender}>\r\nTo: support@msp.example\r\nSubject: {subject}\r\n"
        f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n".encode()
    )


def rules(**automated: object) -> AutomatedRules:
    return AutomatedRules(parse_config({"automated": automated}).automated)


# -- detection -------------------------------------------------------------------------

def test_senders_and_subject_must_both_match_when_both_are_set() -> None:
    r = rules(detection=[{"senders": ["alerts@rmm.example"], "subject_contains": "Alert"}])
    assert r.detect(mail(subject="Alert: disk full")) == 0
    assert r.detect(mail(subject="Weekly report")) is None
    assert r.detect(mail(sender="jane@customer.example", subject="Alert: disk full")) is None


def test_senders_alone_are_any_of_and_case_insensitive() -> None:
    r = rules(detection=[{"senders": ["a@x.example", "ALERTS@RMM.example"]}])
    assert r.detect(mail(sender="Alerts@Rmm.Example", subject="anything")) == 0
    assert r.detect(mail(sender="b@x.example")) is None


def test_sender_domains() -> None:
    r = rules(detection=[{"senders": ["*@rmm.example"]}, {"senders": ["@mon.example"]},
                         {"senders": ["psa.example"]}])
    assert r.detect(mail(sender="x@rmm.example")) == 0
    assert r.detect(mail(sender="y@mon.example")) == 1
    assert r.detect(mail(sender="z@psa.example")) == 2
    assert r.detect(mail(sender="x@sub.rmm.example")) is None


def test_subject_alone_is_a_case_insensitive_substring() -> None:
    r = rules(detection=[{"subject_contains": "alert:"}])
    assert r.detect(mail(sender="anyone@else.example", subject="ALERT: Disk")) == 0
    assert r.detect(mail(subject="Alert - Disk")) is None


def test_body_and_regex_extensions_are_anded() -> None:
    r = rules(detection=[
        {"senders": ["alerts@rmm.example"], "body_contains": "Alert ID:"},
        {"subject_regex": r"^\[(crit|warn)\]"},
        {"body_regex": r"^Severity:\s*(high|urgent)$"},
    ])
    assert r.detect(mail(body="Device x\nALERT id: 5")) == 0
    assert r.detect(mail(sender="n@other.example", subject="[CRIT] db down")) == 1
    assert r.detect(mail(sender="n@other.example", body="x\nseverity: Urgent\ny")) == 2
    assert r.detect(mail(sender="n@other.example", body="severity: low")) is None


def test_first_matching_rule_wins() -> None:
    r = rules(detection=[
        {"subject_contains": "backup"},
        {"senders": ["alerts@rmm.example"]},
        {"subject_contains": "alert"},
    ])
    assert r.detect(mail(subject="Alert: backup failed")) == 0
    assert r.detect(mail(subject="Alert: disk")) == 1
    assert r.detect(mail(sender="x@y.example", subject="Alert: disk")) == 2


def test_datto_like_corpus_is_detected_by_a_sender_rule() -> None:
    r = rules(detection=[{"senders": ["noreply@rmm-datto.example"],
                          "subject_contains": "Alert "}])
    assert r.detect(alert_message("rmm-datto/cpu-1-problem")) == 0
    assert r.detect(alert_message("nagios/service-1-problem")) is None


# -- skip ------------------------------------------------------------------------------

def test_skip_rules_by_subject_text_or_regex() -> None:
    r = rules(skip=[{"subject_contains": "Self Healed"}, {"subject_regex": r"\btest alert\b"}])
    assert r.skipped_by(alert_message("rmm-datto/service-self-healed")) == 0
    assert r.skipped_by(mail(subject="This is a TEST ALERT only")) == 1
    assert r.skipped_by(alert_message("rmm-datto/cpu-1-problem")) is None


# -- account ---------------------------------------------------------------------------

def test_account_value_between_delimiters() -> None:
    r = rules(account=[{"search_for": "account_number", "after": "Client: ", "before": ")"}])
    values = list(r.account_values(alert_message("rmm-nable/disk-1-problem")))
    assert [(v.index, v.search_for, v.value) for v in values] == [(0, "account_number",
                                                                   "ACME-001")]


def test_account_value_after_runs_to_end_of_line_and_is_case_insensitive() -> None:
    r = rules(account=[{"search_for": "file_as", "located_in": "body", "after": "site:"}])
    values = list(r.account_values(mail(body="Device: X\nSITE:  Head Office  \nOther: y")))
    assert [v.value for v in values] == ["Head Office"]


def test_account_value_before_only_takes_the_line_start() -> None:
    r = rules(account=[{"search_for": "account_id", "located_in": "body", "before": " | ticket"}])
    values = list(r.account_values(mail(body="intro\nACME-77 | ticket 5\n")))
    assert [v.value for v in values] == ["ACME-77"]


def test_account_value_by_regex_and_rule_order() -> None:
    r = rules(account=[
        {"search_for": "field1", "regex": r"customer=(\w+)"},
        {"search_for": "account_number", "regex": r"\[Site: ([^\]]+)\]"},
    ])
    values = list(r.account_values(alert_message("rmm-datto/cpu-1-problem")))
    assert [(v.index, v.value) for v in values] == [(1, "ACME-002")]


def test_account_value_from_the_alert_host() -> None:
    r = rules(account=[{"search_for": "account_id", "located_in": "host", "regex": r"^(\w+)-"}])
    alert = Alert(source="nagios", host="acme-web01", service="HTTP")
    assert [v.value for v in r.account_values(mail(), alert)] == ["acme"]
    assert list(r.account_values(mail())) == []  # no alert: the rule does not apply


def test_missing_delimiter_gives_no_value() -> None:
    r = rules(account=[{"search_for": "account_number", "after": "Client: ", "before": ")"}])
    assert list(r.account_values(mail(subject="no client here"))) == []


# -- rule-based correlation ------------------------------------------------------------

def test_key_regex_turns_a_detected_mail_into_an_alert() -> None:
    r = rules(detection=[{
        "senders": ["noreply@rmm-datto.example"],
        "subject_contains": "Alert ",
        "key_regex": r"Alert (?:raised|resolved): (.+?) \[",
        "recovery_contains": "Alert resolved",
    }])
    names = ["cpu-1-problem", "cpu-2-repeat", "cpu-3-recovery", "cpu-4-problem-again"]
    alerts = [r.rule_alert(0, alert_message(f"rmm-datto/{n}")) for n in names]
    assert all(a is not None for a in alerts)
    assert [a.state for a in alerts if a] == [AlertState.PROBLEM, AlertState.PROBLEM,
                                             AlertState.RECOVERY, AlertState.PROBLEM]
    assert {a.host for a in alerts if a} == {"CPU Monitor on ACME-WS17"}


def test_rule_without_key_regex_gives_no_alert() -> None:
    r = rules(detection=[{"subject_contains": "Alert"}])
    assert r.rule_alert(0, mail(subject="Alert")) is None


# -- config validation names the rule --------------------------------------------------

@pytest.mark.parametrize(
    ("automated", "key"),
    [
        ({"detection": [{"senders": ["a@b"]}, {"subject_regex": "("}]},
         "automated.detection[1].subject_regex"),
        ({"detection": [{"subject_contains": "x", "key_regex": "no group"}]},
         "automated.detection[0].key_regex"),
        ({"detection": [{"subject_contains": "x", "recovery_contains": "ok"}]},
         "automated.detection[0].recovery_contains"),
        ({"detection": [{}]}, "automated.detection[0]"),
        ({"skip": [{"body_regex": "[unclosed"}]}, "automated.skip[0].body_regex"),
        ({"account": [{"search_for": "phone", "after": "x"}]}, "automated.account[0].search_for"),
        ({"account": [{"after": "x"}, {"regex": "(a)(b)"}]}, "automated.account[1].regex"),
        ({"account": [{"located_in": "footer", "after": "x"}]},
         "automated.account[0].located_in"),
        ({"parsers": ["nagios", "zabbix"]}, "automated.parsers[1]"),
    ],
)
def test_invalid_rules_are_config_errors_naming_the_rule(automated: dict[str, object],
                                                         key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"automated": automated})
    assert info.value.key == key


# -- the index is exact: same answers as checking every rule in order -------------------

_words = st.sampled_from(["alert", "Alert:", "disk", "cpu", "client", "ok", "a", "al", "e",
                          "[crit]", "é", "ß", "dıſk", "DİSK", "[CRıT]", "ﬅ"])
_senders = st.sampled_from(["a@x.example", "b@x.example", "*@y.example", "z.example"])


# regexes that can join a gate, and ones that cannot: capturing groups, a back-reference,
# global flags
_subject_regexes = st.sampled_from(["", r"^\[", r"disk\b", r"al+", r"é|ß", r"(cpu|disk)",
                                    r"(a)l\1?", r"(?s)al.*ok", r"ALERT:?$", r"\[crit\]",
                                    r"disk cpu", r"(?i:ale)rt"])
_body_regexes = st.sampled_from(["", r"ok$", r"cpu", r"(?:e|ß)\b", r"(ok).*\1", r"(?x) c p u",
                                 r"ok cpu", r"client\b", r"^al"])


@st.composite
def _rule(draw: st.DrawFn) -> DetectionRule:
    if draw(st.integers(0, 2)) == 0:  # often regex-only, so that gates get several rules
        return DetectionRule(subject_regex=draw(_subject_regexes), body_regex=draw(_body_regexes))
    return DetectionRule(
        senders=tuple(draw(st.lists(_senders, max_size=2))),
        subject_contains=draw(st.one_of(st.just(""), _words)),
        body_contains=draw(st.one_of(st.just(""), _words)),
        subject_regex=draw(_subject_regexes),
        body_regex=draw(_body_regexes),
    )


@settings(max_examples=300, deadline=None)
@given(
    rule_list=st.lists(_rule(), min_size=1, max_size=25),
    sender=st.sampled_from(["a@x.example", "c@y.example", "q@z.example", "n@n.example"]),
    subject=st.lists(_words, max_size=5).map(" ".join),
    body=st.lists(_words, max_size=5).map(" ".join),
)
def test_indexed_first_match_equals_checking_rules_one_by_one(
    rule_list: list[DetectionRule], sender: str, subject: str, body: str
) -> None:
    detection = AutomatedRules(AutomatedConfig(detection=tuple(rule_list))).detection
    message = mail(sender=sender, subject=subject, body=body)
    assert detection.first_match(message) == detection.scan(message)


@settings(max_examples=300, deadline=None)
@given(literals=st.lists(st.text(alphabet="abcdefAB:é ", min_size=1, max_size=4), max_size=30),
       text=st.text(alphabet="abcdefAB:é x", max_size=40))
def test_literal_finder_finds_exactly_the_contained_literals(literals: list[str],
                                                             text: str) -> None:
    lowered = text.lower()
    assert LiteralFinder(literals).found_in(lowered) == {
        lit.lower() for lit in literals if lit.lower() in lowered
    }


def test_literal_finder_finds_literals_overlapping_a_longer_match() -> None:
    # "probe #12" matches at 0; "be #1" and "#12 rep" start inside it, "probe #1" is its
    # prefix: each search resumes one character after the previous match's start
    finder = LiteralFinder(["probe #12", "Probe #1", "be #1", "#12 rep", "reports", "zzz"])
    assert finder.found_in("probe #12 reports") == {
        "probe #12", "probe #1", "be #1", "#12 rep", "reports"}


def test_rules_of_one_sender_are_told_apart_by_their_literals() -> None:
    # 500 rules of one RMM sender differ by subject text: a mail from it is checked in full
    # only against the rule whose subject text it contains
    r = rules(detection=[
        *({"senders": ["alerts@rmm.example"], "subject_contains": f"[CUST-{i:03d}]"}
          for i in range(500)),
        {"senders": ["*@rmm.example"], "body_contains": "Device 7"},
        {"senders": ["alerts@rmm.example"]},
    ])
    hit = mail(subject="Alert [cust-417] disk full")
    assert r.detect(hit) == 417
    assert r.detection._candidates(_MailText(hit)) == [417, 501]
    other = mail(subject="Weekly report", body="Device 7 is fine")
    assert r.detect(other) == 500
    assert r.detection._candidates(_MailText(other)) == [500, 501]
    assert r.detect(mail(sender="jane@customer.example", subject="[CUST-417]")) is None


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"^Check probe-15: (?:CRITICAL|WARNING)\b", "check probe-15: "),
        (r"^\[(?:crit|warn)\] probe-50\b", "] probe-50"),
        (r"(?s)disk.*full", "full"),  # "i" and "s" break a run: they also match "ı", "ſ"
        (r"(?x) c p u \s+ load", "load"),  # verbose: its spaces are no characters
        (r"\bdisk\b", ""),  # no run of three
        (r"fan|psu", ""),  # nothing every match needs
    ],
)
def test_required_literal_of_a_rule_regex(pattern: str, literal: str) -> None:
    assert required_literal(compile_regex(pattern, "test")) == literal


def test_regex_only_rules_are_filed_under_the_literals_they_require() -> None:
    r = rules(detection=[
        {"subject_regex": r"^\[crit\] probe-\d+ (down|up)"},
        {"body_regex": r"^Check (\S+): CRITICAL"},
        {"subject_regex": r"Backup (?:failed|aborted)", "body_regex": r"Job: nightly"},
    ])
    assert r.detect(mail(subject="[CRIT] Probe-7 DOWN")) == 0
    assert r.detect(mail(subject="x", body="Check web01: critical\n")) == 1
    assert r.detect(mail(subject="BACKUP FAILED", body="Job: Nightly")) == 2
    assert r.detect(mail(subject="Backup failed", body="Job: weekly")) is None
    # a mail without any of the literals is checked against none of them
    assert r.detection._candidates(_MailText(mail(subject="printer jams"))) == []


def test_regex_only_rules_without_literals_pass_a_gate_in_rule_order() -> None:
    r = rules(detection=[
        {"subject_regex": r"^\[(?:crit|warn)\]"},
        {"subject_regex": r"\bdisk\b"},
        {"subject_regex": r"(fan|psu) \d+"},  # a group: checked on its own
        {"subject_regex": r"(?s)x.y"},  # global flags: checked on its own
        {"body_regex": r"^\w+: \d+$"},
        {"body_regex": r"exit \d"},
    ])
    assert r.detect(mail(subject="[WARN] disk")) == 0
    assert r.detect(mail(subject="DISK full")) == 1
    assert r.detect(mail(subject="PSU 2 failed")) == 2
    assert r.detect(mail(subject="x-y")) == 3
    assert r.detect(mail(subject="z", body="Output\nerrors: 3\n")) == 4
    assert r.detect(mail(subject="z", body="job ended, exit 3")) == 5
    assert r.detect(mail(subject="printer jams", body="please help")) is None
    # the mail about none of them: one joined search per text, then the two that can't join
    assert r.detection._candidates(_MailText(mail(subject="printer"))) == [2, 3]


def test_compiled_rules_from_default_config_detect_nothing() -> None:
    r = AutomatedRules(AutomatedConfig())
    assert r.detect(mail(subject="Alert")) is None
    assert r.skipped_by(mail(subject="Self Healed")) is None


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(\w+\s?)*x", r"(?:x*)*y", r"((ab)*)*c",
                                     r"(\s*\w+)*\s*$"])
def test_a_rule_regex_that_can_run_away_is_refused_when_the_config_loads(pattern: str) -> None:
    """No time limit can interrupt a search inside ``re``: a regex with nested unbounded
    repetition would stall every message (and ``inspect``), so check-config refuses it."""
    with pytest.raises(ConfigError, match=r"automated\.detection\[0\]\.body_regex.*exponential"):
        parse_config({"connector": {"public_address": "s@h.example"},
                      "automated": {"detection": [{"body_regex": pattern}]}})


@pytest.mark.parametrize("pattern", [r"(\d+\.)+\d+", r"Client: (\w+)", r"^(a|b)+$",
                                     r"(a++)+", r"\[Ticket#(\d+)\]", r"(?:\w+, )*\w+"])
def test_ordinary_regexes_with_repetition_are_accepted(pattern: str) -> None:
    parse_config({"connector": {"public_address": "s@h.example"},
                  "automated": {"detection": [{"body_regex": pattern}]}})
