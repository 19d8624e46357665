"""One address parser: the address the connector acts on is the one the standard library's
``policy.default`` -- and so every mail client -- shows."""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from commit_email.message import Message
from commit_email.model import OutcomeKind
from commit_email.testing import RecordingMailer, make_config, make_connector
from tests.shared import DIRECTORY

FORGED_FROM = "=?utf-8?q?x:bob@acme-hq.example;?= <stranger@evil.example>"


def raw_with(headers: str, body: str = "Hello\r\n") -> bytes:
    return (headers + "Subject: test\r\nMessage-ID: <t@x.example>\r\n\r\n" + body).encode(
        "utf-8", "surrogateescape")


def stdlib_addresses(header: str) -> list[str]:
    """What policy.default shows (8-bit bytes read as UTF-8, as the connector reads them);
    nothing where the standard library itself fails on the header."""
    std = email.message_from_bytes(raw_with(f"To: {header}\r\n"), policy=email.policy.default)
    try:
        found = std["To"].addresses
    except (TypeError, IndexError, ValueError, AttributeError, email.errors.HeaderParseError):
        return []  # e.g. 3.11's get_name_addr on "0@0.example, .@0.example"
    return [a.addr_spec.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            for a in found if a.username and a.domain]


def test_an_encoded_word_cannot_smuggle_a_second_address_into_from():
    message = Message.from_bytes(raw_with(f"From: {FORGED_FROM}\r\n"))
    assert message.sender == "stranger@evil.example"


def test_the_forged_from_opens_nothing_on_acme_and_answers_the_stranger():
    mailer = RecordingMailer()
    config = make_config(smtp={"host": "127.0.0.1"})
    c = make_connector(config, accounts=DIRECTORY, mailer=mailer)
    outcome = c.process(raw_with(f"From: {FORGED_FROM}\r\nTo: support@helpdesk.example\r\n"))
    assert outcome.account != "CRDACME0000000000001"
    assert outcome.kind is not OutcomeKind.TICKET_CREATED
    for mail in mailer.sent:
        assert "bob@acme-hq.example" not in mail.recipients


def test_several_from_addresses_use_the_sender_header():
    message = Message.from_bytes(raw_with(
        "From: a@one.example, b@two.example\r\nSender: b@two.example\r\n"))
    assert message.sender == "b@two.example"
    alone = Message.from_bytes(raw_with("From: a@one.example, b@two.example\r\n"))
    assert alone.sender == "a@one.example"
    assert any("2 addresses" in d for d in alone.defects)


def test_a_from_without_an_address_falls_back_to_sender_reply_to_and_return_path():
    assert Message.from_bytes(raw_with(
        'From: "Help" <>\r\nReply-To: r@x.example\r\n')).sender == "r@x.example"
    assert Message.from_bytes(raw_with(
        "Return-Path: <rp@x.example>\r\n")).sender == "rp@x.example"
    assert Message.from_bytes(raw_with(
        "From: undisclosed:;\r\nSender: s@x.example\r\nReply-To: r@x.example\r\n"
    )).sender == "s@x.example"
    assert Message.from_bytes(raw_with("Subject: x\r\n")).sender == ""


def test_a_return_path_of_two_addresses_gives_no_answer_address():
    message = Message.from_bytes(raw_with(
        "From: a@x.example\r\nReturn-Path: <victim9@evil.example>, <victim10@evil.example>\r\n"))
    assert message.return_path is None
    assert "Return-Path is not one address" in message.defects
    assert Message.from_bytes(raw_with("Return-Path: <>\r\n")).return_path == ""


_ATOM = st.text(alphabet="abcxyz019.-_+", min_size=1, max_size=8)
_ADDRESS = st.builds(lambda u, d: f"{u}@{d}.example", _ATOM, _ATOM)
_NAME = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                max_size=12)
_SPECIALS = st.sampled_from(["", ",", ";", ":", '"', "<", ">", "(", ")", "\\", "=?", "?="])


@st.composite
def _headers(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        form = draw(st.sampled_from(["bare", "angle", "named", "quoted", "encoded", "junk"]))
        address = draw(_ADDRESS)
        name = draw(_NAME)
        if form == "bare":
            parts.append(address)
        elif form == "angle":
            parts.append(f"<{address}>")
        elif form == "named":
            parts.append(f"{name} <{address}>")
        elif form == "quoted":
            parts.append(f'"{name}" <{address}>')
        elif form == "encoded":
            words = email.header.Header(name + draw(_SPECIALS) + draw(_ADDRESS), "utf-8")
            parts.append(f"{words.encode()} <{address}>")
        else:
            parts.append(draw(_SPECIALS) + name + draw(_SPECIALS) + address + draw(_SPECIALS))
    return draw(st.sampled_from([", ", ",", " , "])).join(parts).replace("\r", "").replace(
        "\n", "")


@settings(max_examples=300, deadline=None)
@given(_headers())
@example(FORGED_FROM)
@example('"Doe, John" <j@x.example>, a@b.example')
@example("alice@example.org)<bob@example.org>")
def test_addresses_are_the_ones_the_standard_library_shows(header: str) -> None:
    ours = Message.from_bytes(raw_with(f"To: {header}\r\n")).to
    assert [a.address for a in ours] == stdlib_addresses(header)
