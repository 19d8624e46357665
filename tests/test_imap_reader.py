"""The IMAP source's own reader of FETCH responses, fed server bytes directly.

The source reads ``UID FETCH`` responses itself instead of through imaplib (see
``commit_email.imap._uid_fetch``); real Dovecot sessions are in test_imap.py. Here: the shapes
other servers write, and what a hostile server cannot make it do.
"""

from __future__ import annotations

import io
from typing import Any

import imapclient
import pytest

from commit_email.imap import _read_bodies, _read_sizes


class FakeImap:
    """What the reader uses of imaplib's IMAP4: a tag, send, the socket file, the store of
    untagged responses."""

    def __init__(self, server_bytes: bytes) -> None:
        self.file = io.BufferedReader(io.BytesIO(server_bytes))  # type: ignore[arg-type]
        self.sent: list[bytes] = []
        self.tagged_commands: dict[bytes, Any] = {}
        self.untagged_responses: dict[str, list[Any]] = {}

    def _new_tag(self) -> bytes:
        self.tagged_commands[b"A7"] = None
        return b"A7"

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def _append_untagged(self, typ: str, dat: Any) -> None:
        self.untagged_responses.setdefault(typ, []).append(dat)


class FakeClient:
    def __init__(self, server_bytes: bytes) -> None:
        self._imap = FakeImap(server_bytes)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_bodies_in_any_item_order_with_news_between_them() -> None:
    one, two = b"Subject: a\r\n\r\nx\r\n", b"Subject: b\r\n\r\n{3}\r\n)\r\n"  # looks like syntax
    client = FakeClient(
        b"* 1 FETCH (UID 10 BODY[] " + literal(one) + b")\r\n"
        b"* 4 EXISTS\r\n"
        b"* 3 FETCH (FLAGS (\\Seen))\r\n"  # another message's flags: not ours
        b"* 2 FETCH (BODY[] " + literal(two) + b" UID 11)\r\n"
        b"A7 OK Fetch completed.\r\n")
    assert _read_bodies(imapclient, client, [10, 11], limit=1000) == {10: one, 11: two}
    assert client._imap.sent == [b"A7 UID FETCH 10,11 (BODY.PEEK[])\r\n"]
    assert client._imap.untagged_responses == {"EXISTS": [b"4"]}  # for the IDLE wait
    assert client._imap.tagged_commands == {}  # the tag is not left behind


def test_sizes() -> None:
    client = FakeClient(b"* 1 FETCH (UID 10 RFC822.SIZE 2345)\r\n"
                        b"* 2 FETCH (RFC822.SIZE 17 UID 11)\r\nA7 OK done\r\n")
    assert _read_sizes(imapclient, client, [10, 11]) == {10: 2345, 11: 17}


def test_a_no_reply_is_the_servers_refusal_and_leaves_the_session_in_step() -> None:
    client = FakeClient(b"A7 NO [SERVERBUG] Internal error\r\nrest")
    with pytest.raises(imapclient.exceptions.IMAPClientError, match="SERVERBUG") as caught:
        _read_bodies(imapclient, client, [1], limit=1000)
    assert not isinstance(caught.value, imapclient.exceptions.IMAPClientAbortError)
    assert client._imap.file.read() == b"rest"


@pytest.mark.parametrize("server_bytes, message", [
    (b"* 1 FETCH (UID 1 BODY[] {5000000000}\r\n", "a literal of 5000000000 bytes"),
    (b"* 1 FETCH (UID 1 BODY[] " + b"x" * 70_000 + b"\r\n", "a response line of more than"),
    (b"* BYE shutting down\r\n", "the server said BYE"),
    (b"+ go ahead\r\n", "unexpected response"),
])
def test_what_a_hostile_or_failing_server_sends_aborts_the_session(
        server_bytes: bytes, message: str) -> None:
    with pytest.raises(imapclient.exceptions.IMAPClientAbortError, match=message):
        _read_bodies(imapclient, FakeClient(server_bytes), [1], limit=1000)


@pytest.mark.parametrize("server_bytes", [
    b"* 1 FETCH (UID 1 BODY[] {10}\r\nshort",  # closed in the middle of the literal
    b"* 1 FETCH (UID 1 BODY[] {2}\r\nab",  # closed before the rest of the line
    b"",
])
def test_a_connection_closed_mid_response_is_an_eof(server_bytes: bytes) -> None:
    with pytest.raises(EOFError):
        _read_bodies(imapclient, FakeClient(server_bytes), [1], limit=1000)
