"""The benchmarks' delay proxy adds the round trip it is told to, and nothing else: bytes
arrive intact and in order, and chunks in transit do not wait for each other."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from benchmarks.delay_proxy import DelayProxy

DELAY_MS = 50.0
RTT = 2 * DELAY_MS / 1000


def _echo(connection: socket.socket) -> None:
    with connection:
        while data := connection.recv(65536):
            connection.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 that closes its side when the client does."""
    server = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end of the test
            while True:
                connection, _ = server.accept()
                threading.Thread(target=_echo, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    with server:
        yield server.getsockname()[1]


def _receive(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            break
        data += piece
    return bytes(data)


def test_a_round_trip_takes_the_rtt_and_bytes_arrive_intact(echo_port: int) -> None:
    payload = random.Random(7).randbytes(3_000_000)
    with DelayProxy("127.0.0.1", echo_port, delay_ms=DELAY_MS) as proxy, \
            socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        for n in range(3):
            started = time.perf_counter()
            sock.sendall(b"ping %d\r\n" % n)
            assert _receive(sock, 8) == b"ping %d\r\n" % n
            assert time.perf_counter() - started >= RTT
        # Megabytes in both directions at once: the proxy reads while it delays, so the
        # echo comes back whole and in order (and the two sides' buffers never deadlock).
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert _receive(sock, len(payload)) == payload
        sender.join()
        # The client's end of stream reaches the server, whose close comes back (delayed).
        sock.shutdown(socket.SHUT_WR)
        started = time.perf_counter()
        assert sock.recv(1) == b""
        assert time.perf_counter() - started >= RTT


def test_chunks_in_transit_do_not_wait_for_each_other(echo_port: int) -> None:
    """Ten commands sent 20 ms apart without waiting (pipelined) come back about one round
    trip after the last was sent, not one round trip each: the proxy delays, it does not
    hold one chunk back until the previous one is answered."""
    with DelayProxy("127.0.0.1", echo_port, delay_ms=DELAY_MS) as proxy, \
            socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        started = time.perf_counter()
        for n in range(10):
            sock.sendall(b"RETR %d\r\n" % n)
            time.sleep(0.02)
        expected = b"".join(b"RETR %d\r\n" % n for n in range(10))
        assert _receive(sock, len(expected)) == expected
        elapsed = time.perf_counter() - started
    assert elapsed >= 9 * 0.02 + RTT
    assert elapsed < 10 * RTT  # one round trip per command would be at least this


def test_the_proxy_reports_an_unreachable_target_by_closing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        closed_port = placeholder.getsockname()[1]
    with DelayProxy("127.0.0.1", closed_port, delay_ms=1) as proxy, \
            socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        assert sock.recv(1) == b""
