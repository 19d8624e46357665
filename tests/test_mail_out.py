"""Mail out through a real SMTP server (aiosmtpd): auto-responses, forwards, loops, retries."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from commit_email.config import Config
from commit_email.model import Account, OutcomeKind
from commit_email.pipeline import Connector
from commit_email.runner import Runner
from commit_email.smtp import SmtpMailer
from commit_email.store import SQLiteStore
from commit_email.testing import build_message, make_config, make_connector, memory_store
from tests.dovecot_fixtures import DovecotServer
from tests.shared import JANE
from tests.smtp_fixtures import CapturedMail, SmtpTestServer

pytestmark = pytest.mark.server



def config_for(server: SmtpTestServer, public: str, internal: str, **sections: object) -> Config:
    smtp = {"host": server.host, "port": server.port, "security": "plain",
            "from_address": public, "timeout": 5.0, "retries": 0,
            # Retry at the next flush; tests/test_outbox.py pins the interval and the cap.
            "retry_interval": 0}
    return make_config(
        connector={"public_address": public, "internal_address": internal},
        smtp=smtp,
        **sections,  # type: ignore[arg-type]
    )


def connector_for(server: SmtpTestServer, public: str = "support@acme.example",
                  internal: str = "helpdesk@acme.example", accounts: tuple[Account, ...] = (JANE,),
                  store: SQLiteStore | None = None, **sections: object) -> Connector:
    config = config_for(server, public, internal, **sections)
    mailer = SmtpMailer(config.smtp, sleep=lambda s: None)
    return make_connector(config, accounts=accounts, mailer=mailer, store=store)


def parsed(mail: CapturedMail) -> EmailMessage:
    msg = email.message_from_bytes(mail.normalized, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_auto_response_arrives_with_token_and_loop_headers(smtp_server: SmtpTestServer) -> None:
    c = connector_for(smtp_server)
    original = build_message(sender="jane@customer.example", sender_name="Jane Doe",
                             subject="Printer on 2nd floor is jammed",
                             message_id="q1@customer.example", references=["q0@customer.example"],
                             headers={"Return-Path": "<jane+bounces@customer.example>"})

    outcome = c.process(original)

    assert outcome.kind is OutcomeKind.TICKET_CREATED
    [got] = smtp_server.messages
    assert got.mail_from == "support@acme.example"
    assert got.rcpt_tos == ("jane+bounces@customer.example",)  # the envelope sender
    reply = parsed(got)
    assert reply["Subject"] == f"[Ticket#{outcome.ticket}] Printer on 2nd floor is jammed"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Auto-Response-Suppress"] == "All"
    assert reply["In-Reply-To"] == "<q1@customer.example>"
    assert reply["References"] == "<q0@customer.example> <q1@customer.example>"
    assert reply["X-Commit-Email-Loop"] == "acme.example"
    message_id = reply["Message-ID"].strip("<>")
    assert message_id.endswith("@commit-email.acme.example")
    assert c.state.is_own_message_id(message_id)
    body = reply.get_body(("plain",))
    assert body is not None and reply.get_body(("html",)) is None
    text = body.get_content()
    assert f"ticket {outcome.ticket}" in text and "Printer on 2nd floor is jammed" in text
    assert "<" not in text  # plain text, no markup or XML


def test_auto_response_template_and_subject_from_config(
    smtp_server: SmtpTestServer, tmp_path: object
) -> None:
    template = f"{tmp_path}/reply.txt"
    with open(template, "w", encoding="utf-8") as f:
        f.write("Dear $account,\nticket $number ($description) is open. Costs: $$0.\n")
    c = connector_for(smtp_server, email_to_ticket={
        "auto_response_template_file": template,
        "auto_response_subject": "Received: $description $token",
    })

    outcome = c.process(build_message(sender="jane@customer.example", subject="VPN down"))

    reply = parsed(smtp_server.messages[0])
    assert reply["Subject"] == f"Received: VPN down [Ticket#{outcome.ticket}]"
    body = reply.get_body(("plain",))
    assert body is not None
    assert body.get_content() == (
        f"Dear Customer Ltd,\nticket {outcome.ticket} (VPN down) is open. Costs: $0.\n"
    )


def test_unknown_template_placeholder_is_a_config_error(smtp_server: SmtpTestServer) -> None:
    from commit_email.errors import ConfigError

    with pytest.raises(ConfigError, match=r"auto_response_template.*\$tikcet"):
        connector_for(smtp_server, email_to_ticket={"auto_response_template": "No $tikcet"})


def test_no_auto_response_when_switched_off(smtp_server: SmtpTestServer) -> None:
    c = connector_for(smtp_server, email_to_ticket={"auto_response": False})

    outcome = c.process(build_message(sender="jane@customer.example"))

    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert smtp_server.messages == []


def test_auto_generated_mail_opens_a_ticket_but_gets_no_response(
    smtp_server: SmtpTestServer,
) -> None:
    c = connector_for(smtp_server)

    outcome = c.process(build_message(sender="jane@customer.example",
                                      headers={"Auto-Submitted": "auto-generated"}))

    assert outcome.kind is OutcomeKind.TICKET_CREATED
    assert smtp_server.messages == []
    assert "Auto-Submitted: auto-generated" in c.inspect(
        build_message(sender="jane@customer.example", subject="again",
                      headers={"Auto-Submitted": "auto-generated"})
    ).notes[-1][1]


def test_alert_tickets_never_get_an_auto_response(smtp_server: SmtpTestServer) -> None:
    # The monitoring tool's address is a customer Account, so the alert ticket is opened for
    # the sender's own address: only knowing who opened the ticket stops the answer.
    rmm = Account(rec_id="CRD-RMM", file_as="Customer Ltd", email1="alerts@rmm.example")
    c = connector_for(smtp_server, accounts=(rmm,),
                      automated={"detection": [{"senders": ["alerts@rmm.example"]}]})

    outcome = c.process(build_message(sender="alerts@rmm.example", subject="Disk C: 95% full"))

    assert outcome.kind is OutcomeKind.ALERT_TICKET_CREATED
    assert smtp_server.messages == []


def test_forward_carries_the_original_bytes(smtp_server: SmtpTestServer) -> None:
    c = connector_for(smtp_server)
    original = build_message(sender="stranger@elsewhere.example", subject="Grüße & a question",
                             body="Can you help?\n", attachments=[("a.bin", "application/pdf",
                                                                  b"%PDF-1.4 \x00\xff")])

    outcome = c.process(original)

    assert outcome.kind is OutcomeKind.FORWARDED
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("helpdesk@acme.example",)
    assert original in got.data  # byte for byte, as a message/rfc822 attachment
    forward = parsed(got)
    assert forward["X-Commit-Email-Loop"] == "acme.example"
    attached = [p for p in forward.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1


def test_customer_reply_is_forwarded_with_the_original(smtp_server: SmtpTestServer) -> None:
    c = connector_for(smtp_server)
    number = c.process(build_message(sender="jane@customer.example", subject="Printer")).ticket
    smtp_server.clear()
    reply = build_message(sender="jane@customer.example", subject=f"Re: [Ticket#{number}] Printer",
                          body="Still broken\n\nOn Mon, 5 Feb 2024 at 10:00, X <x@y.example> "
                               "wrote:\n> old\n")

    outcome = c.process(reply)

    assert outcome.kind is OutcomeKind.TICKET_UPDATED
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("helpdesk@acme.example",)
    assert reply in got.data


# Loops ------------------------------------------------------------------------------------

def deliver_all(server: SmtpTestServer, connectors: dict[str, Connector],
                limit: int = 50) -> list[CapturedMail]:
    """Play postman: hand every mail that arrives for a connector's address to it, until
    the conversation stops. Returns everything that was sent."""
    delivered: list[CapturedMail] = []
    seen = 0
    while seen < len(server.messages):
        mail = server.messages[seen]
        seen += 1
        delivered.append(mail)
        assert len(delivered) <= limit, "mail loop: the conversation did not stop"
        for rcpt in mail.rcpt_tos:
            if rcpt in connectors:
                connectors[rcpt].process(mail.data)
    return delivered


def test_two_connectors_answering_each_other_stop_after_one_mail(
    smtp_server: SmtpTestServer,
) -> None:
    # Each connector knows the other's support address as a customer Account.
    a = connector_for(smtp_server, "support@a.example", "helpdesk@a.example",
                      accounts=(Account(rec_id="CRD-B", file_as="B Ltd",
                                        email1="support@b.example"),))
    b = connector_for(smtp_server, "support@b.example", "helpdesk@b.example",
                      accounts=(Account(rec_id="CRD-A", file_as="A Ltd",
                                        email1="support@a.example"),))
    connectors = {"support@a.example": a, "support@b.example": b}

    # A mail from B's address without any robot headers (say, typed by an admin) reaches A.
    first = a.process(build_message(sender="support@b.example", to="support@a.example",
                                    subject="Hello from B"))
    mails = deliver_all(smtp_server, connectors)

    assert first.kind is OutcomeKind.TICKET_CREATED
    # Bound: one auto-response per human mail. B ignores it (Auto-Submitted: auto-replied
    # and A's loop header), opens nothing and answers nothing.
    assert [parsed(m)["Auto-Submitted"] for m in mails] == ["auto-replied"]
    assert b.sink.list_tickets() == []
    assert [r.outcome.kind for r in b.state.iter_processed()] == [OutcomeKind.IGNORED]


def test_two_connectors_forwarding_to_each_other_stop_after_one_mail(
    smtp_server: SmtpTestServer,
) -> None:
    # The worst wiring: each forwards what it cannot place to the other's support address.
    a = connector_for(smtp_server, "support@a.example", "support@b.example", accounts=())
    b = connector_for(smtp_server, "support@b.example", "support@a.example", accounts=())
    connectors = {"support@a.example": a, "support@b.example": b}

    a.process(build_message(sender="stranger@x.example", to="support@a.example"))
    mails = deliver_all(smtp_server, connectors)

    # Bound: one forward; B ignores it (A's loop header, Auto-Submitted: auto-forwarded).
    assert [parsed(m)["Auto-Submitted"] for m in mails] == ["auto-forwarded"]
    assert [r.outcome.kind for r in b.state.iter_processed()] == [OutcomeKind.IGNORED]


def test_header_stripping_auto_responder_is_stopped_by_the_rate_limit(
    smtp_server: SmtpTestServer,
) -> None:
    robot = "robot@dumb.example"
    c = connector_for(smtp_server, accounts=(Account(rec_id="CRD-R", file_as="Dumb Corp",
                                                     email1=robot),),
                      loop_protection={"max_auto_responses_per_sender": 3})
    answered = 0

    def robot_answers(mail: CapturedMail) -> bytes:
        # A robot that answers everything with a fresh mail: new subject, no token, no
        # In-Reply-To, no Auto-Submitted, no Precedence, nothing to recognise it by.
        nonlocal answered
        answered += 1
        return build_message(sender=robot, to="support@acme.example",
                             subject=f"Your mail number {answered}", body="Got it.\n")

    c.process(build_message(sender=robot, to="support@acme.example", subject="Hello"))
    seen = 0
    while seen < len(smtp_server.messages):
        mail = smtp_server.messages[seen]
        seen += 1
        assert seen <= 20, "mail loop"
        if robot in mail.rcpt_tos:
            c.process(robot_answers(mail))

    # Bound: max_auto_responses_per_sender (3) per window; the robot's 4th mail is unanswered.
    assert len(smtp_server.messages) == 3
    assert answered == 3
    notes = c.inspect(build_message(sender=robot, subject="Again")).notes
    assert any("rate limit: 3 auto-responses" in str(v) for _, v in notes)


def test_rate_limit_persists_across_a_restart(
    smtp_server: SmtpTestServer, tmp_path: object
) -> None:
    path = f"{tmp_path}/state.db"
    for i in range(3):
        with SQLiteStore(path) as store:
            c = connector_for(smtp_server, store=store,
                              loop_protection={"max_auto_responses_per_sender": 2})
            c.process(build_message(sender="jane@customer.example", subject=f"Issue {i}"))

    assert len(smtp_server.messages) == 2


# Retry ------------------------------------------------------------------------------------

def test_a_failed_send_stays_queued_and_goes_out_on_the_next_run(
    smtp_server: SmtpTestServer,
) -> None:
    store = memory_store()
    c = connector_for(smtp_server, store=store)
    smtp_server.script("RCPT", "451 4.3.0 try again later")

    first = c.process(build_message(sender="jane@customer.example", subject="First"))

    assert first.kind is OutcomeKind.TICKET_CREATED  # the ticket is not lost
    assert smtp_server.messages == []
    [queued] = store.pending_mail()
    assert queued.attempts == 1 and "451" in queued.last_error

    c.process(build_message(sender="jane@customer.example", subject="Second"))

    subjects = [parsed(m)["Subject"] for m in smtp_server.messages]
    assert subjects == [f"[Ticket#{first.ticket}] First", "[Ticket#2] Second"]
    assert store.pending_mail() == []


def test_a_permanently_refused_mail_does_not_block_the_others(
    smtp_server: SmtpTestServer,
) -> None:
    store = memory_store()
    c = connector_for(smtp_server, store=store,
                      accounts=(JANE, Account(rec_id="CRD-GONE", email1="gone@customer.example")))
    smtp_server.refuse("gone@customer.example")

    c.process(build_message(sender="gone@customer.example", subject="First"))
    c.process(build_message(sender="jane@customer.example", subject="Second"))
    c.process(build_message(sender="jane@customer.example", subject="Third"))

    assert [parsed(m)["Subject"] for m in smtp_server.messages] == [
        "[Ticket#2] Second", "[Ticket#3] Third"
    ]
    [refused] = store.pending_mail()
    assert "550" in refused.last_error


# The command line -------------------------------------------------------------------------

def test_process_command_sends_the_auto_response_through_smtp(
    smtp_server: SmtpTestServer, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    config = tmp_path / "commit-email.toml"
    config.write_text(
        '[connector]\npublic_address = "support@acme.example"\n'
        'internal_address = "helpdesk@acme.example"\nstate_dir = "state"\n'
        '[store]\nurl = "sqlite:///commit.db"\n'
        f'[smtp]\nhost = "{smtp_server.host}"\nport = {smtp_server.port}\n'
        'security = "plain"\n'
    )
    (tmp_path / "accounts.csv").write_text(
        "rec_id,file_as,email1,email2,account_number,account_id,field1,field2,field3,field4,"
        "kind,parent,active\n,Customer Ltd,jane@customer.example,,,,,,,,account,,true\n"
    )
    (tmp_path / "mail.eml").write_bytes(build_message(sender="jane@customer.example",
                                                      subject="Scanner broken"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "commit_email", *args], cwd=tmp_path,
                              env=cli_env, capture_output=True, text=True, timeout=60,
                              check=False)

    assert cli("accounts", "--config", str(config), "import", "accounts.csv").returncode == 0
    result = cli("process", "--config", str(config), "--json", "mail.eml")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["outcome"] == "ticket_created"
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("jane@customer.example",)
    assert parsed(got)["Subject"] == "[Ticket#1] Scanner broken"


def test_run_retries_queued_mail_on_the_next_pass_even_without_new_mail(
    smtp_server: SmtpTestServer, dovecot: DovecotServer
) -> None:
    config = config_for(smtp_server, "support@acme.example", "helpdesk@acme.example", pop3={
        "host": dovecot.host, "port": dovecot.pop3_port, "security": "plain",
        "user": dovecot.user, "password": dovecot.password, "timeout": 5.0,
    })
    store = memory_store()
    c = make_connector(config, accounts=(JANE,), store=store,
                       mailer=SmtpMailer(config.smtp, sleep=lambda s: None))
    dovecot.deliver(build_message(sender="jane@customer.example", subject="Printer"))
    # Refused after the message and again at the end of the pass: the server is down a while.
    smtp_server.script("RCPT", "451 4.3.0 try again later", "451 4.3.0 try again later")

    assert Runner(config, c, sleep=lambda s: None).run(once=True) == 0
    assert smtp_server.messages == []
    assert len(store.pending_mail()) == 1  # the ticket is there, the answer waits

    assert Runner(config, c, sleep=lambda s: None).run(once=True) == 0  # the mailbox is empty

    assert [parsed(m)["Subject"] for m in smtp_server.messages] == ["[Ticket#1] Printer"]
    assert store.pending_mail() == []
