"""XML API responses delivered to a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import email
import email.policy

import pytest

from commit_email.model import OutcomeKind
from commit_email.smtp import SmtpMailer
from commit_email.testing import build_message, make_config, make_connector
from commit_email.xml_api import Transaction, render_transaction
from tests.shared import DIRECTORY

PASSWORD = "correct horse battery staple"
ACME = "CRDACME0000000000001"

pytestmark = pytest.mark.server


def transaction(rid: str, **fields: str) -> str:
    return render_transaction(Transaction(
        external_application_name="ERP", send_response_to="erp@acme.example", password=PASSWORD,
        return_transaction_id=rid, data_kind="TICKET", fields=fields)).decode()


def test_each_transaction_is_answered_by_mail_through_smtp(smtp_server, tmp_path):
    config = make_config(
        state_dir=tmp_path / "state",
        smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "plain",
              "from_address": "support@acme.example"},
        xml_api={"enabled": True, "password": PASSWORD, "response_bcc": "audit@acme.example"},
    )
    connector = make_connector(config, accounts=DIRECTORY,
                               mailer=SmtpMailer(smtp_server.config()))
    raw = build_message(sender="erp@acme.example", subject="batch", body="\n".join([
        transaction("erp-1", FLDTKTCARDID=ACME, FLDTKTPROBLEM="Disk full on SRV01"),
        transaction("erp-2", FLDTKTCARDID="CRDNOSUCHACCOUNT0001", FLDTKTPROBLEM="x"),
    ]))
    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.XML_REJECTED

    received = smtp_server.wait_for(2)
    assert [m.rcpt_tos for m in received] == [("erp@acme.example", "audit@acme.example")] * 2
    ok, error = (email.message_from_bytes(m.data, policy=email.policy.default) for m in received)
    assert ok.get_content_type() == "text/xml"
    ok_body, error_body = ok.get_content(), error.get_content()
    assert "<Status>OK</Status>" in ok_body and "<RecID>TKT" in ok_body
    assert "<ReturnTransactionID>erp-1</ReturnTransactionID>" in ok_body
    assert "<ErrorCode>401</ErrorCode>" in error_body
    assert "<ReturnTransactionID>erp-2</ReturnTransactionID>" in error_body
    for mail in received:
        assert PASSWORD.encode() not in mail.data
        assert b"Bcc" not in mail.data
    assert connector.state.pending_mail() == []
