"""commit_email.testing is public API: its builders make real mail, its checks fail readably."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from commit_email import hookimpl
from commit_email.message import Message
from commit_email.model import Account, Match, OutcomeKind
from commit_email.protocols import AccountDirectory
from commit_email.testing import (
    HookRecorder,
    RecordingMailer,
    assert_valid_plugin,
    build_html_message,
    build_message,
    build_nagios_alert,
    build_reply,
    build_xml_message,
    hook_names,
    make_connector,
    make_host,
    record_hooks,
    xml_transaction,
)

ROOT = Path(__file__).resolve().parents[1]
VIP = Account(rec_id="CRDVIP", file_as="VIP Ltd")


# -- builders -------------------------------------------------------------------------------


def test_build_html_message_has_no_plain_part_and_readable_text() -> None:
    message = Message.from_bytes(build_html_message("<p>The <b>VPN</b> is down</p>"))
    assert message.html is not None and "<b>VPN</b>" in message.html
    assert "The VPN is down" in message.text
    assert b"text/plain" not in message.raw


def test_build_message_attachments_arrive_as_attachments() -> None:
    raw = build_message(attachments=[("scan.pdf", "application/pdf", b"%PDF-1.4 fake")])
    (attachment,) = Message.from_bytes(raw).attachments
    assert (attachment.filename, attachment.content_type, attachment.data) == (
        "scan.pdf", "application/pdf", b"%PDF-1.4 fake")


def test_build_reply_carries_the_token_quote_and_thread_headers() -> None:
    message = Message.from_bytes(build_reply(42, in_reply_to="abc@commit-email.helpdesk.example"))
    assert message.subject == "Re: [Ticket#42] Printer is out of toner"
    assert message.in_reply_to == ("abc@commit-email.helpdesk.example",)
    assert message.references == ("abc@commit-email.helpdesk.example",)
    assert "> Your ticket has been opened." in message.text


def test_build_reply_follows_a_custom_subject_format() -> None:
    message = Message.from_bytes(build_reply("7", subject_format="(Case {number})", prefix="AW:"))
    assert message.subject.startswith("AW: (Case 7) ")


def test_build_nagios_alert_service_and_host_layouts() -> None:
    service = Message.from_bytes(build_nagios_alert())
    assert service.subject == "** PROBLEM Service Alert: web01/HTTP is CRITICAL **"
    assert service.text.startswith("***** Nagios *****")
    assert "Service: HTTP\nHost: web01\n" in service.text
    host = Message.from_bytes(build_nagios_alert(service="", state="UP",
                                                 notification_type="RECOVERY", tool="Icinga"))
    assert host.subject == "** RECOVERY Host Alert: web01 is UP **"
    assert "***** Icinga *****" in host.text and "State: UP" in host.text
    assert "Service:" not in host.text


def test_xml_transaction_escapes_values_and_omits_empty_envelope_fields() -> None:
    xml = xml_transaction("TICKET", {"FLDTKTPROBLEM": "Tom & Jerry <3"}, password="pw")
    assert "<FLDTKTPROBLEM>Tom &amp; Jerry &lt;3</FLDTKTPROBLEM>" in xml
    assert "<Password>pw</Password>" in xml and "<DataKind>TICKET</DataKind>" in xml
    assert "SendResponseToEmail" not in xml


@pytest.mark.parametrize("carrier", ["plain", "html", "attachment"])
def test_build_xml_message_carriers_hold_the_transaction(carrier: Any) -> None:
    xml = xml_transaction("ACCOUNT", {"FLDCRDFULLNAME": "New Co"})
    message = Message.from_bytes(build_xml_message(xml, carrier=carrier))
    if carrier == "attachment":
        assert message.attachments[0].content_type == "text/xml"
        assert b"<FLDCRDFULLNAME>New Co</FLDCRDFULLNAME>" in message.attachments[0].data
    else:
        assert "<FLDCRDFULLNAME>New Co</FLDCRDFULLNAME>" in message.text


def test_build_xml_message_wraps_several_transactions() -> None:
    one, two = (xml_transaction("ACCOUNT", {"FLDCRDFULLNAME": n}) for n in ("A", "B"))
    text = Message.from_bytes(build_xml_message(one, two)).text
    assert text.count("<CommitCRMTransaction>") == 2
    assert text.count("<?xml") == 1 and "<CommitCRMTransactions>" in text


# -- the module docstring's example works as written ------------------------------------------


class VipMatcher:
    @hookimpl
    def commit_email_match_account(self, message: Message,
                                   directory: AccountDirectory) -> Match | None:
        if message.sender == "ceo@vip.example":
            account = directory.get_account("CRDVIP")
            return Match(account=account, how="plugin") if account else None
        return None


def test_the_ten_line_example_opens_a_ticket_for_the_plugin_match() -> None:
    assert assert_valid_plugin(VipMatcher()) == ["commit_email_match_account"]
    mailer = RecordingMailer()
    connector = make_connector(plugins=[VipMatcher()], accounts=[VIP], mailer=mailer)
    outcome = connector.process(build_message(sender="ceo@vip.example", subject="Help"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.account == "CRDVIP"


# -- hook recorder --------------------------------------------------------------------------


def test_record_hooks_sees_matcher_and_observer_calls_in_order() -> None:
    connector = make_connector(plugins=[VipMatcher()], accounts=[VIP])
    with record_hooks(connector) as calls:
        connector.process(build_message(sender="ceo@vip.example"))
    names = calls.names()
    assert names.index("commit_email_match_account") < names.index(
        "commit_email_message_processed")
    match_call = calls.last("commit_email_match_account")
    assert match_call.implementations[0] == "VipMatcher"  # plugins before the built-in
    assert match_call.result.account.rec_id == "CRDVIP"
    assert calls.last("commit_email_message_processed").kwargs["outcome"].ticket
    connector.process(build_message(sender="ceo@vip.example", subject="After close"))
    assert len(calls.named("commit_email_message_processed")) == 1  # closed: no more records


def test_record_hooks_keeps_the_exception_of_a_failing_hook() -> None:
    class Broken:
        @hookimpl
        def commit_email_match_account(self, message: Message) -> Match | None:
            raise RuntimeError("directory down")

    connector = make_connector(plugins=[Broken()])
    with record_hooks(connector.host) as calls:
        outcome = connector.process(build_message())
    assert outcome.kind is OutcomeKind.QUARANTINED
    call = calls.last("commit_email_match_account")
    assert isinstance(call.exception, RuntimeError) and call.result is None


def test_last_of_a_hook_never_called_says_what_was_called() -> None:
    recorder = HookRecorder(make_host())
    with pytest.raises(AssertionError, match="never called \\(called: no hook at all\\)"):
        recorder.last("commit_email_ticket_created")


# -- assert_valid_plugin ----------------------------------------------------------------------


def problems_of(plugin: object) -> str:
    with pytest.raises(AssertionError) as err:
        assert_valid_plugin(plugin)
    return str(err.value)


class Misspelled:
    @hookimpl
    def commit_email_match_acount(self, message: Message) -> None:
        return None


def test_a_misspelled_hook_is_named_with_a_suggestion() -> None:
    text = problems_of(Misspelled())
    assert text.startswith("Misspelled instance is not a valid commit-email plugin:")
    assert "commit_email_match_acount: no such hook; did you mean " \
           "'commit_email_match_account'?" in text


class ExtraArgument:
    @hookimpl
    def commit_email_match_account(self, message: Message, directroy: Any) -> None:
        return None


def test_an_argument_the_spec_does_not_have_is_named_with_the_spec() -> None:
    text = problems_of(ExtraArgument())
    assert "argument 'directroy' is not in the hook's spec; did you mean 'directory'?" in text
    assert "(the spec's arguments: message, directory, config)" in text


class DefaultedArgument:
    @hookimpl
    def commit_email_register_alert_parsers(self, config: Any = None) -> list[Any]:
        return []


def test_a_default_value_is_refused_with_the_reason() -> None:
    text = problems_of(DefaultedArgument())
    assert "argument 'config' has a default value (None)" in text
    assert "pluggy never passes an argument that has a default" in text


class Unmarked:
    def commit_email_message_processed(self, outcome: Any) -> None:
        return None


class KeywordsAndStars:
    @hookimpl
    def commit_email_message_processed(self, *, outcome: Any, **rest: Any) -> None:
        return None


def test_unmarked_keyword_only_and_star_arguments_are_refused() -> None:
    assert "not marked with @hookimpl" in problems_of(Unmarked())
    text = problems_of(KeywordsAndStars())
    assert "keyword-only argument 'outcome' is never passed" in text
    assert "**rest receives nothing" in text


def test_a_class_instead_of_an_instance_and_an_empty_plugin_are_refused() -> None:
    assert "VipMatcher is a class; register an instance of it: VipMatcher()" in problems_of(
        VipMatcher)
    assert "it implements no hook" in problems_of(object())


def test_every_problem_is_listed_at_once() -> None:
    class Many:
        @hookimpl
        def commit_email_match_acount(self) -> None: ...

        @hookimpl
        def commit_email_register_xml_actions(self, config: Any = None) -> dict[str, Any]:
            return {}

    text = problems_of(Many())
    assert text.count("\n  - ") == 2


def test_a_valid_module_plugin_passes_and_returns_its_hooks() -> None:
    import commit_email.ticketing as builtin_module

    hooks = assert_valid_plugin(builtin_module)
    assert hooks and set(hooks) <= set(hook_names())


# -- the opt-in pytest plugin ----------------------------------------------------------------

PLUGIN_TEST = '''
import pytest
from commit_email import hookimpl
from commit_email.model import Account, Match, OutcomeKind
from commit_email.testing import build_message

class Vip:
    @hookimpl
    def commit_email_match_account(self, message, directory):
        return Match(account=directory.get_account("CRDVIP"), how="plugin")

@pytest.fixture
def commit_email_plugins():
    return [Vip()]

@pytest.fixture
def commit_email_accounts():
    return [Account(rec_id="CRDVIP", file_as="VIP")]

def test_fixtures(commit_email_connector, commit_email_store, commit_email_mailer,
                  commit_email_hook_calls):
    outcome = commit_email_connector.process(build_message(sender="x@nowhere.example"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.account == "CRDVIP"
    assert len(commit_email_store.list_tickets()) == 1
    assert commit_email_mailer.sent == []   # no [smtp]: the auto-response is off
    assert commit_email_hook_calls.last("commit_email_message_processed")
'''


def run_pytest(tmp_path: Path, conftest: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_plugin.py").write_text(textwrap.dedent(PLUGIN_TEST))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_the_pytest_plugin_provides_prefixed_fixtures_when_opted_in(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, 'pytest_plugins = ["commit_email.pytest_plugin"]\n')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_pytest_plugin_is_not_loaded_without_opting_in(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "")
    assert done.returncode == 1
    assert "fixture 'commit_email_connector' not found" in done.stdout
