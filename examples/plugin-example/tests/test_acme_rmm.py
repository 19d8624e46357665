"""The plugin's behaviour, through a real connector on commit-email's in-memory harness."""

from __future__ import annotations

import re

from commit_email import Connector, Message, OutcomeKind, SQLiteStore
from commit_email.alerts import AlertState
from commit_email.testing import (
    RecordingMailer,
    assert_valid_plugin,
    build_message,
    build_xml_message,
    make_host,
    xml_transaction,
)

from commit_email_acme_rmm import plugin
from commit_email_acme_rmm.alerts import AcmeRmmParser

ACME_INBOX = "support+ACME-001@helpdesk.example"  # make_config's public_address, tagged


def rmm_alert(status: str, alert_id: str = "48213") -> bytes:
    body = (f"Acme RMM alert\n\nStatus: {status}\nDevice: ACME-DC01\nCheck: Disk space on C\n"
            f"Alert ID: {alert_id}\nDetails: 4.8 GB free (5%)\n")
    return build_message(sender="alerts@rmm.acme.example", to=ACME_INBOX, body=body,
                         subject=f"[Acme RMM] {status}: Disk space on C is low on ACME-DC01")


def test_the_plugin_is_valid_and_found_through_its_entry_point() -> None:
    assert assert_valid_plugin(plugin) == ["commit_email_match_account",
                                           "commit_email_register_alert_parsers",
                                           "commit_email_register_xml_actions"]
    assert "acme-rmm" in make_host(autoload=True).plugin_names()  # needs `pip install`


def test_a_tagged_address_opens_a_ticket_for_its_account(
    commit_email_connector: Connector,
) -> None:
    outcome = commit_email_connector.process(build_message(sender="anyone@gmail.com",
                                                           to=ACME_INBOX))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.account == "CRDACME"


def test_an_unknown_tag_or_another_mailbox_is_not_guessed(
    commit_email_connector: Connector,
) -> None:
    for to in ("support+NOPE-9@helpdesk.example", "sales+ACME-001@helpdesk.example"):
        outcome = commit_email_connector.process(build_message(sender="anyone@gmail.com", to=to))
        assert outcome.kind is OutcomeKind.FORWARDED, to


def test_rmm_alerts_correlate_into_one_ticket_that_the_recovery_closes(
    commit_email_connector: Connector, commit_email_store: SQLiteStore,
) -> None:
    first = commit_email_connector.process(rmm_alert("FAILED"))
    again = commit_email_connector.process(rmm_alert("FAILED"))
    resolved = commit_email_connector.process(rmm_alert("RESOLVED"))
    assert [first.kind, again.kind, resolved.kind] == [
        OutcomeKind.ALERT_TICKET_CREATED, OutcomeKind.ALERT_APPENDED, OutcomeKind.ALERT_RESOLVED]
    assert first.ticket == again.ticket == resolved.ticket and first.account == "CRDACME"
    ticket = commit_email_store.get_ticket(number=first.ticket)
    assert ticket is not None and ticket.closed


def test_the_parser_reads_its_tool_and_nothing_else() -> None:
    alert = AcmeRmmParser().parse(Message.from_bytes(rmm_alert("RESOLVED")))
    assert alert is not None and alert.state is AlertState.RECOVERY
    assert (alert.host, alert.service, alert.external_id) == ("ACME-DC01", "Disk space on C",
                                                              "48213")
    newsletter = build_message(subject="[Acme RMM] What's new in March", body="Hello!\n")
    for raw in (newsletter, build_message()):
        assert AcmeRmmParser().parse(Message.from_bytes(raw)) is None


def device(number: str) -> bytes:
    xml = xml_transaction("RMM-DEVICE", {"AccountNumber": number, "DeviceName": "ACME-DC01",
                                         "SerialNumber": "SN-4711"},
                          password="s3cret", send_response_to="rmm@acme.example")
    return build_xml_message(xml, sender="rmm@acme.example")


def test_an_rmm_device_becomes_an_asset_of_its_account(
    commit_email_connector: Connector, commit_email_store: SQLiteStore,
    commit_email_mailer: RecordingMailer,
) -> None:
    outcome = commit_email_connector.process(device("ACME-001"))
    assert outcome.kind is OutcomeKind.XML_APPLIED
    (response,) = commit_email_mailer.of_kind("xml_response")
    found = re.search(rb"<RecID>([^<]+)</RecID>", response.raw)
    assert found is not None
    assert commit_email_store.get_record("ASSET", found.group(1).decode()) == {
        "FLDASTACCRECID": "CRDACME", "FLDASTNAME": "ACME-DC01", "FLDASTSERIALNO": "SN-4711"}


def test_a_device_of_an_unknown_account_is_refused_with_the_reason(
    commit_email_connector: Connector, commit_email_mailer: RecordingMailer,
) -> None:
    outcome = commit_email_connector.process(device("NOPE-9"))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    (response,) = commit_email_mailer.of_kind("xml_response")
    assert b"<ErrorCode>401</ErrorCode>" in response.raw
    assert b"no single Account numbered NOPE-9" in response.raw
