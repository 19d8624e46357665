"""A forward's headers say exactly what the original's said: the subject (any language,
any length) and the sender survive the round trip through RFC 2047 and folding, and the
header block is plain ASCII within the line limits of RFC 5322."""

from __future__ import annotations

import pytest

from benchmarks import gen_corpus
from commit_email.message import Message
from commit_email.outgoing import _MAX_FORWARD_SUBJECT, build_forward
from tests.corpus import corpus_messages, require_corpus


def check_forward(original: Message) -> None:
    raw = build_forward(original, sender="support@msp.example", to="helpdesk@msp.example",
                        reason="no account matched", message_id="fwd.1@msp.example",
                        loop_token="msp.example")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    forward = Message.from_bytes(raw)
    subject = original.subject or "(no subject)"
    if len(subject) > _MAX_FORWARD_SUBJECT:  # a huge Subject is cut; the original keeps it
        subject = subject[: _MAX_FORWARD_SUBJECT - 1].rstrip() + "…"
    assert forward.subject == "Fwd: " + subject
    assert forward.message_id == "fwd.1@msp.example"
    assert forward.auto_submitted == "auto-forwarded"
    if original.from_ is not None:
        assert [a.address for a in forward.reply_to] == [original.from_.address]
    if original.message_id:
        assert forward.references == (original.message_id,)
    if b"Content-Type: message/rfc822" in raw:
        assert original.raw in raw
    else:  # bytes no relay takes unchanged go base64-encoded
        (attached,) = forward.attachments
        assert attached.data == original.raw


def test_forwards_of_the_shared_corpus_keep_subject_and_sender() -> None:
    for path in corpus_messages(require_corpus()):
        try:
            check_forward(Message.from_bytes(path.read_bytes()))
        except AssertionError as exc:
            pytest.fail(f"{path}: {exc}")


@pytest.mark.parametrize("subject", [
    "Быстрее вкладывайте в золото!",
    "RE: [Ticket#851] お世話になっております。 Before users meeting",
    "Die heiße Zypernsonne " * 12,
    "x" * 300,
    "=?utf-8?q?looks_encoded?= but is not",
])
def test_forward_subjects_round_trip(subject: str) -> None:
    raw = (f"From: Jörg Müller <j@acme.example>\r\nSubject: {subject}\r\n"
           "Message-ID: <a@acme.example>\r\n\r\nbody\r\n").encode()
    original = Message.from_bytes(raw)
    check_forward(original)


def test_forwards_of_the_benchmark_corpus_keep_subject_and_sender() -> None:
    for raw in gen_corpus.generate(200):
        check_forward(Message.from_bytes(raw))
