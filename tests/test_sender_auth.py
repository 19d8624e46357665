"""[sender_auth]: Authentication-Results from trusted hosts only, the topmost deciding; DKIM
verified here on request; what unauthenticated mail loses (require_for)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from commit_email.config import parse_config
from commit_email.errors import ConfigError
from commit_email.message import Message
from commit_email.model import OutcomeKind
from commit_email.pipeline import Connector
from commit_email.senderauth import aligned, parse_authentication_results, verdict
from commit_email.store import SQLiteStore
from commit_email.testing import RecordingMailer, build_message, make_config, make_connector
from commit_email.xml_api import Transaction, render_transaction
from tests.shared import DIRECTORY

MX = "mx.msp.example"
PASSWORD = "xml-secret"


def config(**sender_auth: Any) -> Any:
    sender_auth.setdefault("trusted_authserv_ids", [MX])
    return make_config(
        connector={"public_address": "support@msp.example",
                   "internal_address": "helpdesk@msp.example"},
        smtp={"host": "127.0.0.1"},
        xml_api={"enabled": True, "password": PASSWORD},
        sender_auth=sender_auth,
    )


def build_connector(mailer: RecordingMailer | None = None, **sender_auth: Any) -> Connector:
    return make_connector(config(**sender_auth), accounts=DIRECTORY,
                          mailer=mailer or RecordingMailer())



def mail_with(sender: str, auth_results: list[str], **options: Any) -> bytes:
    raw = build_message(sender=sender, **options)
    head = "".join(f"Authentication-Results: {v}\r\n" for v in auth_results).encode()
    return head + raw


# -- the header ---------------------------------------------------------------------------------

def test_the_header_is_read_with_comments_and_properties():
    authserv, found = parse_authentication_results(
        f"{MX} (Postfix) 1; spf=pass (sender SPF authorized) smtp.mailfrom=bounce@acme.example;"
        " dkim=pass (2048-bit key) header.d=acme.example header.s=sel; dmarc=fail "
        "(p=REJECT) header.from=acme.example")
    assert authserv == MX
    assert [(r.method, r.result) for r in found] == [("spf", "pass"), ("dkim", "pass"),
                                                     ("dmarc", "fail")]
    assert found[1].properties["header.d"] == "acme.example"


@pytest.mark.parametrize("domain, from_domain, expected", [
    ("acme.example", "acme.example", True), ("mail.acme.example", "acme.example", True),
    ("acme.example", "eu.acme.example", True), ("evilacme.example", "acme.example", False),
    ("example", "acme.example", False), ("", "acme.example", False),
])
def test_relaxed_alignment(domain, from_domain, expected):
    assert aligned(domain, from_domain) is expected


@pytest.mark.parametrize("header, authenticated", [
    (f"{MX}; dmarc=pass header.from=acme.example", True),
    (f"{MX}; dkim=pass header.d=acme.example", True),
    (f"{MX}; dkim=pass header.i=@mail.acme.example", True),
    (f"{MX}; spf=pass smtp.mailfrom=bounce@acme.example", True),
    (f"{MX}; dkim=pass header.d=mailer.example; spf=pass smtp.mailfrom=x@mailer.example", False),
    (f"{MX}; dmarc=fail header.from=acme.example", False),
    (f"{MX}; none", False),
    ("evil.example; dmarc=pass header.from=acme.example", False),  # not a trusted host
])
def test_the_verdict(header, authenticated):
    message = Message.from_bytes(mail_with("jane@acme.example", [header]))
    assert verdict(message, config()).authenticated is authenticated


def test_the_topmost_trusted_header_decides_and_a_forged_one_below_is_ignored():
    # The sender wrote the lower one; the receiving server added the upper one.
    message = Message.from_bytes(mail_with("jane@acme.example", [
        f"{MX}; dmarc=fail header.from=acme.example",
        f"{MX}; dmarc=pass header.from=acme.example",
    ]))
    found = verdict(message, config())
    assert not found.authenticated and "dmarc=fail" in found.reason


def test_off_by_default_takes_nothing_away():
    message = Message.from_bytes(build_message(sender="tina@msp.example"))
    assert not verdict(message, make_config()).checked


def test_require_for_is_checked_item_by_item():
    with pytest.raises(ConfigError, match=r"sender_auth\.require_for"):
        parse_config({"connector": {"public_address": "a@b.example"},
                      "sender_auth": {"require_for": ["employee", "everything"]}})


# -- what unauthenticated mail loses --------------------------------------------------------------

def open_ticket(c: Connector) -> str:
    outcome = c.process(mail_with("alice@acme.example",
                                  [f"{MX}; dmarc=pass header.from=acme.example"],
                                  subject="VPN down"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.ticket
    return outcome.ticket


def test_a_forged_employee_failing_dmarc_is_not_filed_silently():
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number = open_ticket(c)
    mailer.sent.clear()

    forged = mail_with("tina@msp.example", [f"{MX}; dmarc=fail header.from=msp.example"],
                       subject=f"Re: [Ticket#{number}]", body="Closing this.\n")
    outcome = c.process(forged)

    assert outcome.kind is OutcomeKind.FORWARDED
    assert outcome.detail == f"unverified reply to ticket {number}"
    assert [m.kind for m in mailer.sent] == ["forward"]  # somebody is told


def test_an_authenticated_employee_keeps_the_privilege():
    mailer = RecordingMailer()
    c = build_connector(mailer)
    number = open_ticket(c)
    mailer.sent.clear()

    real = mail_with("tina@msp.example", [f"{MX}; dkim=pass header.d=msp.example"],
                     subject=f"Re: [Ticket#{number}]", body="Done.\n")
    outcome = c.process(real)

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    assert mailer.sent == []


def test_the_xml_api_writes_nothing_for_an_unauthenticated_sender():
    c = build_connector()
    tx = render_transaction(Transaction(
        external_application_name="form", send_response_to="forms@acme.example",
        password=PASSWORD, return_transaction_id="1", data_kind="ACCOUNT",
        fields={"FLDCRDFULLNAME": "Forged Ltd"})).decode()
    outcome = c.process(mail_with("forms@acme.example", [], body=tx))
    assert outcome.kind is OutcomeKind.XML_REJECTED
    assert "SENDER_NOT_ALLOWED" in outcome.detail
    store = c.sink
    assert isinstance(store, SQLiteStore)
    assert not any(a.file_as == "Forged Ltd" for a in store.list_accounts())

    signed = mail_with("forms@acme.example", [f"{MX}; dmarc=pass header.from=acme.example"],
                       body=tx, subject="again")
    assert c.process(signed).kind is OutcomeKind.XML_APPLIED


def test_threading_in_require_for_files_no_unauthenticated_reply():
    c = build_connector(require_for=["threading"])
    number = open_ticket(c)
    outcome = c.process(mail_with("alice@acme.example", [], subject=f"Re: [Ticket#{number}]"))
    assert outcome.kind is OutcomeKind.FORWARDED


def test_inspect_shows_the_verdict():
    c = build_connector()
    report = c.inspect(mail_with("jane@acme.example", [f"{MX}; dmarc=fail"]))
    notes = dict(report.notes)
    assert notes["sender_auth"].startswith("NOT authenticated")
    assert "dmarc=fail" in notes["sender_auth"]


# -- DKIM verified here ---------------------------------------------------------------------------

def test_verify_dkim_checks_a_real_signature_against_the_published_key():
    dkim = pytest.importorskip("dkim")
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"sel._domainkey.acme.example." else None

    raw = build_message(sender="jane@acme.example", subject="signed")
    signed = dkim.sign(raw, b"sel", b"acme.example", private,
                       include_headers=[b"from", b"subject", b"to"]) + raw
    settings = config(trusted_authserv_ids=[], verify_dkim=True)
    good = verdict(Message.from_bytes(signed), settings, dnsfunc=dns)
    assert good.authenticated, good.reason
    tampered = signed.replace(b"Subject: signed", b"Subject: tampered")
    bad = verdict(Message.from_bytes(tampered), settings, dnsfunc=dns)
    assert not bad.authenticated and "does not verify" in bad.reason
    unsigned = verdict(Message.from_bytes(raw), settings, dnsfunc=dns)
    assert not unsigned.authenticated
