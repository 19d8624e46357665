"""Headers as real clients and tools write them, against the standard: Q-words with raw
spaces, the unicode-1-1-utf-7 charset, a line of text before the headers, no usable From."""

from __future__ import annotations

from commit_email.message import Message, decode_header_value
from commit_email.model import OutcomeKind
from commit_email.testing import make_config, make_connector
from tests.shared import DIRECTORY


def test_a_q_word_with_spaces_inside_is_decoded():
    assert decode_header_value("=?us-ascii?Q?ABC / 123 / Wetterau West / ABC?=") == \
        "ABC / 123 / Wetterau West / ABC"
    assert decode_header_value("Re: =?iso-8859-1?Q?Gr=FC=DFe aus K=F6ln?=") == \
        "Re: Grüße aus Köln"


def test_spaces_between_words_are_not_taken_for_a_spaced_word():
    assert decode_header_value("=?utf-8?q?a?= =?utf-8?q?b?= plain =?x") == "ab plain =?x"
    assert decode_header_value("why?= not =?utf-8?q?=C3=A4?=") == "why?= not ä"


def test_the_utf_7_charset_is_decoded():
    assert decode_header_value("=?unicode-1-1-utf-7?Q?+AMQ-rger im B+APw-ro?=") == \
        "Ärger im Büro"
    raw = (b"From: a@b.example\r\nSubject: x\r\nContent-Type: text/plain; "
           b"charset=unicode-1-1-utf-7\r\n\r\n+AMQ-rger\r\n")
    assert Message.from_bytes(raw).text.strip() == "Ärger"


def test_a_line_of_junk_before_the_headers_keeps_the_headers():
    raw = (b"---- Original email message ----\r\nFrom: Jane <jane@acme.example>\r\n"
           b"To: support@helpdesk.example\r\nSubject: Printer\r\n\r\nIt is broken.\r\n")
    message = Message.from_bytes(raw)
    assert message.sender == "jane@acme.example"
    assert message.subject == "Printer"
    assert message.text.strip() == "It is broken."
    assert message.raw == raw  # the original is kept as it came
    assert any("before the headers" in d for d in message.defects)
    c = make_connector(make_config(), accounts=DIRECTORY)
    assert c.process(raw).kind is OutcomeKind.TICKET_CREATED


def test_text_without_headers_stays_text():
    message = Message.from_bytes(b"Hello there\r\nFrom: me\r\n")
    assert message.sender == ""
    message = Message.from_bytes(b"Dear support,\r\n\r\nFrom: jane@acme.example\r\n")
    assert message.sender == ""
