"""The POP3 source against a real Dovecot: security modes, auth, UIDLs, byte-exact RETR."""

from __future__ import annotations

import io
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commit_email import pop3
from commit_email.config import Pop3Config
from commit_email.errors import ConfigError, SourceError
from commit_email.pop3 import (
    _RETR_AHEAD,
    _RETR_AHEAD_BYTES,
    LoginError,
    Pop3Mailbox,
    _Window,
    read_multiline,
)
from tests.dovecot_fixtures import (
    DovecotServer,
    TestCA,
    as_served,
    corpus_messages,
    make_test_ca,
)
from tests.faultproxy import Drop, FaultProxy, Reply, Stall

pytestmark = pytest.mark.server


def message(n: int, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Customer {n} <customer{n}@example.com>\r\n"
        f"To: support@acme.example\r\n"
        f"Subject: Printer {n} is broken\r\n"
        f"Message-ID: <msg{n}@example.com>\r\n"
        f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
        f"\r\n{body}"
    ).encode()


def fetch_all(box: Pop3Mailbox) -> list[bytes]:
    return [box.retrieve(u) for u in box.uidls()]


# -- plain POP3 --------------------------------------------------------------------------


def test_lists_uidls_and_retrieves_each_message(dovecot: DovecotServer) -> None:
    sent = [message(n) for n in range(3)]
    dovecot.deliver_many(sent)
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        uidls = box.uidls()
        assert len(set(uidls)) == 3
        assert all(not u.isdigit() or len(u) > 3 for u in uidls)  # UIDLs, not "1", "2", "3"
        assert fetch_all(box) == sent
        assert [box.size(u) for u in uidls] == [len(raw) for raw in sent]


def test_uidls_are_stable_across_sessions(dovecot: DovecotServer) -> None:
    dovecot.deliver_many([message(n) for n in range(3)])
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        first = box.uidls()
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        assert box.uidls() == first


def test_deletions_apply_at_quit_only(dovecot: DovecotServer) -> None:
    dovecot.deliver_many([message(n) for n in range(3)])
    box = Pop3Mailbox(dovecot.pop3_config())
    box.connect()
    doomed = box.uidls()[0]
    box.delete(doomed)
    assert doomed not in box.uidls()
    box.close()  # dropped without QUIT: the server must keep the message
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        assert doomed in box.uidls()
        box.delete(doomed)
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        assert doomed not in box.uidls()
        assert len(box.uidls()) == 2
    assert len(dovecot.message_files()) == 2


def test_dot_stuffing_and_line_ends_come_back_exactly(dovecot: DovecotServer) -> None:
    tricky = (
        b"Subject: dots\n\n"
        b".\n"
        b"..two dots\n"
        b". a dot and a space\n"
        b"bare\rCR inside a line\r\n"
        b"mixed LF line\n"
        b"\n"
        b"last line without newline"
    )
    dovecot.deliver(tricky)
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        (raw,) = fetch_all(box)
    assert raw == as_served(tricky)
    assert b"\r\n.\r\n..two dots\r\n. a dot" in raw


def test_a_ten_megabyte_message_with_long_lines(dovecot: DovecotServer) -> None:
    # Lines of 5000 bytes are over poplib's own 2048-byte line limit.
    line = b"x" * 4998 + b"\r\n"
    big = message(1, body="") + line * 2100
    assert len(big) > 10_000_000
    dovecot.deliver(big)
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        (uidl,) = box.uidls()
        assert box.retrieve(uidl) == big


def test_real_corpus_messages_are_retrieved_byte_exact(dovecot: DovecotServer) -> None:
    corpus = corpus_messages() or [(f"own-{n}", message(n)) for n in range(5)]
    for _, raw in corpus:
        dovecot.deliver(raw)
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        got = fetch_all(box)
    mismatched = [name for (name, raw), g in zip(corpus, got, strict=True) if g != as_served(raw)]
    assert mismatched == []


def test_unknown_uidl_is_a_source_error(dovecot: DovecotServer) -> None:
    dovecot.deliver(message(1))
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        with pytest.raises(SourceError, match="no message with UIDL nope"):
            box.retrieve("nope")
        assert len(fetch_all(box)) == 1  # the session is still fine


def test_wrong_password_is_a_source_error(dovecot_factory: Callable[..., DovecotServer]) -> None:
    box = Pop3Mailbox(dovecot_factory().pop3_config(password="wrong"))
    with pytest.raises(LoginError, match="log in") as info:
        box.connect()
    assert "Authentication failed" in str(info.value)
    assert info.value.permanent
    with pytest.raises(SourceError, match="not connected"):
        box.uidls()


def test_password_from_the_environment(
    dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_POP3_PASSWORD", dovecot.password)
    dovecot.deliver(message(1))
    config = dovecot.pop3_config(password="", password_env="TEST_POP3_PASSWORD")
    with Pop3Mailbox(config) as box:
        assert len(box.uidls()) == 1


def test_connection_refused_is_a_source_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        box = Pop3Mailbox(Pop3Config(host="127.0.0.1", port=port, security="plain", user="u"))
        with pytest.raises(SourceError, match="connect") as info:
            box.connect()
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


# -- authentication mechanisms -------------------------------------------------------------


def test_apop_is_used_when_offered(dovecot_apop: DovecotServer) -> None:
    dovecot_apop.deliver(message(1))
    with Pop3Mailbox(dovecot_apop.pop3_config(auth="auto")) as box:
        assert len(box.uidls()) == 1
    assert "method=APOP" in dovecot_apop.log


def test_user_pass_when_apop_is_not_wanted(dovecot_apop: DovecotServer) -> None:
    with Pop3Mailbox(dovecot_apop.pop3_config(auth="user")) as box:
        assert box.uidls() == []
    assert "method=PLAIN" in dovecot_apop.log
    assert "method=APOP" not in dovecot_apop.log


def test_apop_required_but_not_offered(dovecot: DovecotServer) -> None:
    with pytest.raises(SourceError, match="does not offer APOP"):
        Pop3Mailbox(dovecot.pop3_config(auth="apop")).connect()


def test_wrong_apop_password_is_a_source_error(
    dovecot_factory: Callable[..., DovecotServer],
) -> None:
    server = dovecot_factory(apop=True)
    with pytest.raises(SourceError, match="log in"):
        Pop3Mailbox(server.pop3_config(auth="apop", password="wrong")).connect()


# -- TLS -----------------------------------------------------------------------------------


def test_pop3s_verifies_against_the_configured_ca(dovecot_tls: DovecotServer) -> None:
    dovecot_tls.deliver(message(1))
    with Pop3Mailbox(dovecot_tls.pop3_config("ssl")) as box:
        assert fetch_all(box) == [message(1)]
    assert "TLS" in dovecot_tls.log


def test_starttls_upgrades_before_logging_in(dovecot_tls: DovecotServer) -> None:
    dovecot_tls.deliver(message(1))
    with Pop3Mailbox(dovecot_tls.pop3_config("starttls")) as box:
        assert fetch_all(box) == [message(1)]


def test_a_certificate_from_another_ca_is_rejected(
    dovecot_tls: DovecotServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other: TestCA = make_test_ca(tmp_path_factory.mktemp("other-ca"), name="someone else")
    for security in ("ssl", "starttls"):
        box = Pop3Mailbox(dovecot_tls.pop3_config(security, ca_file=str(other.ca_cert)))
        with pytest.raises(SourceError) as info:
            box.connect()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError), security
        assert info.value.permanent, security  # run --once stops at once: waiting cannot help


def test_the_system_trust_store_does_not_know_the_test_ca(dovecot_tls: DovecotServer) -> None:
    with pytest.raises(SourceError, match="certificate verify failed"):
        Pop3Mailbox(dovecot_tls.pop3_config("ssl", ca_file="")).connect()


def test_verification_can_be_switched_off_with_a_warning(
    dovecot_tls: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = dovecot_tls.pop3_config("ssl", ca_file="", verify_certificate=False)
    with caplog.at_level(logging.WARNING), Pop3Mailbox(config) as box:
        assert box.uidls() == []
    assert "verification is off" in caplog.text


def test_starttls_refuses_to_continue_in_plaintext(dovecot: DovecotServer) -> None:
    # This server has no TLS at all, so it does not offer STLS.
    with pytest.raises(SourceError, match="refusing to continue without TLS"):
        Pop3Mailbox(dovecot.pop3_config("starttls")).connect()
    assert "Login: user=<support>" not in dovecot.log


def test_a_missing_ca_file_names_the_config_key(dovecot_tls: DovecotServer) -> None:
    config = dovecot_tls.pop3_config("ssl", ca_file="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match=r"pop3\.ca_file"):
        Pop3Mailbox(config).connect()


# -- faults --------------------------------------------------------------------------------


def proxied(dovecot: DovecotServer, proxy: FaultProxy, **overrides: object) -> Pop3Mailbox:
    return Pop3Mailbox(dovecot.pop3_config(port=proxy.port, **overrides))


def test_a_connection_dropped_mid_retr_loses_nothing(dovecot: DovecotServer) -> None:
    dovecot.deliver_many([message(n, body="line\r\n" * 2000) for n in range(3)])
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        box = proxied(dovecot, proxy)
        box.connect()
        first, second, _ = box.uidls()
        box.retrieve(first)
        box.delete(first)
        proxy.inject(Drop(after_bytes=3000))
        with pytest.raises(SourceError, match=f"RETR {second}"):
            box.retrieve(second)
        with pytest.raises(SourceError, match="not connected"):
            box.uidls()
    # The DELE was never applied: all three are still there.
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        assert len(box.uidls()) == 3


def test_deletes_are_pipelined_and_a_refused_one_leaves_the_others_applied(
    dovecot: DovecotServer,
) -> None:
    dovecot.deliver_many([message(n) for n in range(5)])
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        box = proxied(dovecot, proxy)
        box.connect()
        assert box.pipelining  # Dovecot says so in CAPA
        uidls = box.uidls()
        proxy.inject(Reply(line=b"-ERR cannot delete"), "DELE", skip=2)
        refused = box.delete_many(uidls)
        assert refused == [(uidls[2], "-ERR cannot delete")]
        assert box.uidls() == [uidls[2]]
        dele_bursts = [b for b in proxy.bursts if b[0].startswith("DELE")]
        assert [len(b) for b in dele_bursts] == [5]  # written together, replies read after
        box.quit()
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        assert box.uidls() == [uidls[2]]
        assert box.retrieve(uidls[2]) == message(2)



def test_the_next_dele_windows_go_out_before_the_last_ones_replies_are_read(
    dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a link with latency a window costs a round trip; writing the next windows
    first hides it. Never more than 1 + ``_DELE_WINDOWS_AHEAD`` windows of replies wait."""
    monkeypatch.setattr(pop3, "_PIPELINE_WINDOW", 2)
    monkeypatch.setattr(pop3, "_DELE_WINDOWS_AHEAD", 1)
    dovecot.deliver_many([message(n) for n in range(5)])
    events: list[str] = []
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        pop = box._pop
        assert pop is not None
        sock, file = pop.sock, pop.file

        class Writes:
            def sendall(self, data: bytes) -> None:
                events.append(f"write {data.count(b'DELE')}")
                sock.sendall(data)

        class Reads:
            def readline(self, size: int = -1) -> bytes:
                events.append("read")
                return file.readline(size)

        pop.sock, pop.file = Writes(), Reads()  # type: ignore[assignment]
        assert box.delete_many(box.uidls()) == []
        pop.sock, pop.file = sock, file
    assert events == ["write 2", "write 2", "read", "read", "write 1", "read", "read", "read"]
    assert dovecot.message_files() == []

def test_without_pipelining_deletes_go_one_at_a_time(dovecot: DovecotServer) -> None:
    dovecot.deliver_many([message(n) for n in range(3)])
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        proxy.inject(Reply(line=b"-ERR CAPA not implemented"), "CAPA")  # an RFC 1939 server
        with proxied(dovecot, proxy) as box:
            assert not box.pipelining
            assert box.delete_many(box.uidls()) == []
        dele_bursts = [b for b in proxy.bursts if b[0].startswith("DELE")]
        assert [len(b) for b in dele_bursts] == [1, 1, 1]
    assert dovecot.message_files() == []


def test_a_connection_dropped_during_the_delete_batch_deletes_nothing(
    dovecot: DovecotServer,
) -> None:
    dovecot.deliver_many([message(n) for n in range(4)])
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        box = proxied(dovecot, proxy)
        box.connect()
        proxy.inject(Drop(), "DELE", skip=2)
        with pytest.raises(SourceError, match="DELE"):
            box.delete_many(box.uidls())
        assert not box.connected
    assert len(dovecot.message_files()) == 4  # no QUIT, so no DELE was applied


def test_retrs_are_pipelined_and_byte_exact(dovecot: DovecotServer) -> None:
    sent = [message(n, body=".dotted\r\n" + "line\r\n" * 50 * n) for n in range(20)]
    dovecot.deliver_many(sent)
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy, proxied(dovecot, proxy) as box:
        uidls = box.uidls()
        got = list(box.retrieve_many(uidls))
    assert [u for u, _ in got] == uidls
    assert [raw for _, raw in got] == sent
    retr_bursts = [b for b in proxy.bursts if b[0].startswith("RETR")]
    assert max(len(b) for b in retr_bursts) > 1  # several RETRs written before reading
    assert sum(len(b) for b in retr_bursts) == 20


def test_an_err_to_one_pipelined_retr_keeps_the_session_in_step(dovecot: DovecotServer) -> None:
    sent = [message(n) for n in range(6)]
    dovecot.deliver_many(sent)
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy, proxied(dovecot, proxy) as box:
        uidls = box.uidls()
        proxy.inject(Reply(line=b"-ERR [SYS/TEMP] disk error"), "RETR", skip=2)
        fetched = box.retrieve_many(uidls)
        assert [next(fetched)[1], next(fetched)[1]] == sent[:2]
        with pytest.raises(SourceError, match=rf"RETR {uidls[2]}: -ERR \[SYS/TEMP\]"):
            next(fetched)
        # The replies to the RETRs sent after it were read and dropped: still in step.
        assert box.connected
        assert box.retrieve(uidls[5]) == sent[5]
        assert box.retrieve(uidls[2]) == sent[2]


def test_closing_a_pipelined_fetch_early_reads_the_replies_in_flight(
    dovecot: DovecotServer,
) -> None:
    sent = [message(n) for n in range(6)]
    dovecot.deliver_many(sent)
    with Pop3Mailbox(dovecot.pop3_config()) as box:
        uidls = box.uidls()
        fetched = box.retrieve_many(uidls)
        assert next(fetched) == (uidls[0], sent[0])
        fetched.close()  # several more RETRs were in flight
        assert box.retrieve(uidls[4]) == sent[4]
        box.delete_many(uidls[:1])
    assert len(dovecot.message_files()) == 5


def test_a_stalled_server_times_out(dovecot: DovecotServer) -> None:
    dovecot.deliver(message(1))
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        box = proxied(dovecot, proxy, timeout=0.5)
        box.connect()
        proxy.inject(Stall(seconds=5, after_bytes=10))
        with pytest.raises(SourceError, match="timed out") as info:
            box.retrieve(box.uidls()[0])
        assert isinstance(info.value.__cause__, TimeoutError)


def test_an_err_reply_keeps_the_session_usable(dovecot: DovecotServer) -> None:
    dovecot.deliver_many([message(1), message(2)])
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy, proxied(dovecot, proxy) as box:
        first, second = box.uidls()
        proxy.inject(Reply(line=b"-ERR [SYS/TEMP] try later"))
        with pytest.raises(SourceError, match=r"\[SYS/TEMP\] try later"):
            box.retrieve(first)
        assert box.retrieve(second) == message(2)
        assert box.retrieve(first) == message(1)


def test_an_err_reply_to_quit_is_reported(dovecot: DovecotServer) -> None:
    dovecot.deliver(message(1))
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        box = proxied(dovecot, proxy)
        box.connect()
        box.delete(box.uidls()[0])
        proxy.inject(Reply(line=b"-ERR some deleted messages not removed"), command="QUIT")
        with pytest.raises(SourceError, match="QUIT"):
            box.quit()



def test_the_retr_window_is_bounded_by_count_and_by_listed_size() -> None:
    """Which RETRs go out ahead: one at a time without PIPELINING; with it, groups up to
    the count bound, refilled at half, and never more than the byte bound in flight by
    LIST size - except one message larger than that, which goes alone."""
    small = {f"s{n}": 1000 for n in range(3 * _RETR_AHEAD)}
    plain = _Window(small, pipelined=False)
    queued, in_flight = deque(small), deque[str]()
    assert plain.next_batch(in_flight, queued) == ["s0"]
    assert plain.next_batch(deque(["s0"]), queued) == []

    window = _Window(small, pipelined=True)
    queued = deque(small)
    in_flight.extend(window.next_batch(in_flight, queued))
    assert len(in_flight) == _RETR_AHEAD
    for _ in range(_RETR_AHEAD // 2 - 1):
        in_flight.popleft()
    assert window.next_batch(in_flight, queued) == []  # more than half still in flight
    in_flight.popleft()
    refill = window.next_batch(in_flight, queued)
    assert len(in_flight) + len(refill) == _RETR_AHEAD

    third = _RETR_AHEAD_BYTES // 3
    big = {"a": third, "b": third, "c": third, "d": third, "huge": 3 * _RETR_AHEAD_BYTES}
    window, queued = _Window(big, pipelined=True), deque(big)
    assert window.next_batch(deque(), queued) == ["a", "b", "c"]
    assert window.next_batch(deque(["c"]), queued) == ["d"]
    assert window.next_batch(deque(["d"]), queued) == []  # huge waits for an empty pipe
    assert window.next_batch(deque(), queued) == ["huge"]

# -- the multi-line reader on its own --------------------------------------------------------


def stuffed(lines: list[bytes]) -> bytes:
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(lines=st.lists(line_text, max_size=20), chunk=st.integers(min_value=1, max_value=50))
def test_multiline_reader_undoes_dot_stuffing(lines: list[bytes], chunk: int) -> None:
    stream = io.BufferedReader(io.BytesIO(stuffed(lines) + b"+OK next reply"))
    assert read_multiline(stream, chunk) == b"".join(ln + b"\r\n" for ln in lines)
    assert stream.read() == b"+OK next reply"  # stops exactly at the terminator


@given(lines=st.lists(line_text, min_size=1, max_size=10), cut=st.integers(min_value=0))
def test_multiline_reader_reports_a_cut_connection(lines: list[bytes], cut: int) -> None:
    wire = stuffed(lines)
    truncated = wire[: cut % (len(wire) - 2)]  # never the complete terminator
    with pytest.raises(EOFError):
        read_multiline(io.BufferedReader(io.BytesIO(truncated)))


@given(
    lines=st.lists(st.tuples(line_text, st.sampled_from([b"\r\n", b"\n"])), max_size=20),
    last=st.sampled_from([b".\r\n", b".\n"]),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_multiline_reader_matches_a_line_by_line_reading(
    lines: list[tuple[bytes, bytes]], last: bytes, chunk: int
) -> None:
    """Mixed CRLF / bare LF line ends, stuffed lines anywhere, any piece size: the same
    result as reading line by line (RFC 1939 §3), and the next reply left unread."""
    wire = b"".join((b"." if ln.startswith(b".") else b"") + ln + end for ln, end in lines)
    stream = io.BufferedReader(io.BytesIO(wire + last + b"+OK next"), buffer_size=max(chunk, 1))
    assert read_multiline(stream, chunk) == b"".join(ln + b"\r\n" for ln, _ in lines)
    assert stream.read() == b"+OK next"


def test_multiline_reader_accepts_bare_lf_from_lax_servers() -> None:
    wire = io.BufferedReader(io.BytesIO(b"a\nb\r\n.\n.a\n\n.\n"))
    assert read_multiline(wire) == b"a\r\nb\r\n"
    assert read_multiline(wire) == b"a\r\n\r\n"
