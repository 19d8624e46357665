"""The verdicts module: the Message holds facts, commit_email.verdicts says what kind of
mail they make (the message, filter, bounce and loop tests check the verdicts themselves
through the stages; these check the seam)."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from commit_email import filters, loops, verdicts
from commit_email.message import Address, Attachment, Message
from commit_email.testing import build_message, make_config


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("latin-1")


def report(report_type: str, *, outer: str = "multipart/report") -> bytes:
    return crlf(
        f"From: mx@mail.example\nSubject: Report\n"
        f'Content-Type: {outer}; report-type={report_type}; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nsomething happened\n--b\n"
        f"Content-Type: message/{report_type}\n\nAction: failed\n--b--\n")


def test_the_message_records_the_types_of_its_mime_leaves() -> None:
    raw = build_message(html="<p>hi</p>", attachments=[
        ("original.eml", "message/rfc822", build_message(subject="inner")),
        ("log.txt", "text/plain", b"x")])
    message = Message.from_bytes(raw)
    assert message.part_types == ("text/plain", "text/html", "message/rfc822", "text/plain")
    assert Message.from_bytes(build_message()).part_types == ("text/plain",)


def test_a_delivery_status_part_or_a_failed_recipients_header_is_a_bounce() -> None:
    """Not multipart/report, so only the part's type or Exim's header can tell."""
    inside_mixed = Message.from_bytes(report("delivery-status", outer="multipart/mixed"))
    assert not verdicts.is_report(inside_mixed)
    assert "message/delivery-status" in inside_mixed.part_types
    assert verdicts.is_bounce(inside_mixed) and inside_mixed.is_bounce
    exim = Message.from_bytes(build_message(headers={"X-Failed-Recipients": "a@b.example"}))
    assert verdicts.is_bounce(exim) and not verdicts.from_mail_daemon(exim)
    person = Message.from_bytes(build_message())
    assert not verdicts.is_bounce(person) and not person.is_bounce


def test_a_reports_kind_is_named_from_its_report_type() -> None:
    kinds = {t: verdicts.report_kind(Message.from_bytes(report(t))) for t in
             ("delivery-status", "disposition-notification", "feedback-report", "x-custom")}
    assert kinds == {"delivery-status": "delivery report",
                     "disposition-notification": "read receipt",
                     "feedback-report": "abuse report (ARF)",
                     "x-custom": "report (x-custom)"}
    daemon = Message.from_bytes(crlf("From: MAILER-DAEMON@mx.example\n"
                                     "Subject: Undeliverable: x\n\nsorry\n"))
    assert daemon.is_bounce and verdicts.report_kind(daemon) == "delivery report"


def test_each_stage_says_why_in_the_words_it_always_used() -> None:
    vacation = Message.from_bytes(build_message(subject="Automatic reply: Printer",
                                                headers={"Auto-Submitted": "auto-replied"}))
    outlook = Message.from_bytes(build_message(subject="Automatische Antwort: Drucker"))
    config = make_config()
    # the bounce stage names what gave it away, the core filter the Auto-Submitted keyword
    assert [verdicts.auto_reply_reason(m) for m in (vacation, outlook)] == [
        "auto-reply (Auto-Submitted: auto-replied)",
        "out-of-office reply (Automatische Antwort)"]
    assert [filters.ignore_reason(m, config) for m in (vacation, outlook)] == [
        "auto-reply (auto-replied)", "auto-reply (out-of-office)"]
    dsn = Message.from_bytes(report("delivery-status"))
    assert verdicts.bounce_or_auto_reply_reason(dsn) == (
        "bounce or delivery report (DSN, read receipt, complaint)")
    assert verdicts.bounce_or_auto_reply_reason(Message.from_bytes(build_message())) is None


def test_the_names_the_loop_guard_exported_still_work() -> None:
    assert loops.auto_reply_reason is verdicts.auto_reply_reason
    assert loops.is_report is verdicts.is_report
    assert {"auto_reply_reason", "is_report"} <= set(loops.__all__)


@frozen(kw_only=True)
class Facts:
    """Only the facts a verdict reads (the Mail protocol), without any parsing."""

    raw: bytes = b""
    subject: str = ""
    from_: Address | None = None
    return_path: str | None = None
    auto_submitted: str | None = None
    content_type: str = "text/plain"
    part_types: tuple[str, ...] = ("text/plain",)
    text: str = ""
    attachments: Sequence[Attachment] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def header_all(self, name: str) -> tuple[str, ...]:
        return tuple(v for k, v in self.headers if k.lower() == name.lower())


def test_verdicts_read_facts_not_a_parsed_tree() -> None:
    """Anything with a message's facts gets the same verdicts (a plugin's own record, a
    test double), because the verdicts no longer look inside the parser's tree."""
    daemon = Facts(subject="Delivery Status Notification (Failure)", return_path="",
                   from_=Address(name="Mail Delivery System", address="mx@mail.example"))
    assert verdicts.from_mail_daemon(daemon) and verdicts.is_bounce(daemon)
    robot_oof = Facts(subject="Out of office until Monday",
                      headers=(("Precedence", "bulk"),))
    assert verdicts.is_auto_reply(robot_oof)
    persons_oof = Facts(subject="Out of office until Monday")
    assert not verdicts.is_auto_reply(persons_oof)
    ses = Facts(from_=Address(address="no-reply@sns.amazonaws.com"),
                text='{"notificationType":"Bounce","bounce":{}}')
    assert verdicts.is_bounce(ses) and not verdicts.is_bounce(Facts(text=ses.text))
