"""Sending beside processing (``commit_email.sender``) against aiosmtpd on 127.0.0.1.

Processing does not wait for SMTP; many mails share one session; a session the server
drops (between mails, in the middle of DATA) costs no mail and no attempt; a 4xx to one RCPT
of a pipelined batch fails that mail alone; mail to one address goes out in queue order;
``process`` waits for the outbox (bounded) and says what is left; two senders, in threads
or in processes, never send one row twice; ``kill -9`` in the middle of sending loses
nothing and repeats at most the mails in flight."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from commit_email.config import Config
from commit_email.model import Account, OutgoingMail, utcnow
from commit_email.pipeline import Connector
from commit_email.sender import LEASE, BackgroundSender
from commit_email.smtp import SmtpMailer
from commit_email.store import Store, open_store
from commit_email.testing import build_message, make_config
from tests.smtp_fixtures import SmtpTestServer, _have_aiosmtpd, _require

pytestmark = pytest.mark.server

CUSTOMERS = Account(rec_id="CRD-CUST-1", file_as="Customer Ltd", email1="customer.example")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pipelining_server() -> Iterator[SmtpTestServer]:
    _require(_have_aiosmtpd, "aiosmtpd is not installed")
    server = SmtpTestServer(pipelining=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def slow_server(delay: float) -> SmtpTestServer:
    _require(_have_aiosmtpd, "aiosmtpd is not installed")
    server = SmtpTestServer(pipelining=True, data_delay=delay)
    server.start()
    return server


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.now


def smtp_section(server: SmtpTestServer, **overrides: object) -> dict[str, object]:
    return {"host": server.host, "port": server.port, "security": "plain",
            "from_address": "support@acme.example", "timeout": 5.0, "retries": 0,
            "retry_interval": 60, **overrides}


def config_for(server: SmtpTestServer, tmp_path: Path, **smtp: object) -> Config:
    return make_config(
        state_dir=tmp_path / "state",
        connector={"public_address": "support@acme.example",
                   "internal_address": "helpdesk@acme.example"},
        store={"url": f"sqlite:///{tmp_path / 'commit.db'}"},
        smtp=smtp_section(server, **smtp),
    )


def customer_mail(n: int) -> bytes:
    """A new request from a customer of its own: a ticket and one auto-response each."""
    return build_message(sender=f"user{n}@customer.example", subject=f"Printer {n} jammed",
                         message_id=f"q{n}@customer.example")


def queued(n: int, to: str) -> OutgoingMail:
    raw = (f"From: support@acme.example\r\nTo: {to}\r\nSubject: {n}\r\n"
           f"Message-ID: <out{n}@acme.example>\r\n\r\nbody {n}\r\n").encode()
    return OutgoingMail(kind="auto_response", sender="support@acme.example",
                        recipients=(to,), raw=raw, message_id=f"out{n}@acme.example")


def enqueue(store: Store, mails: list[OutgoingMail]) -> list[int]:
    with store.transaction():
        return [store.enqueue_mail(m) for m in mails]


def message_ids(server: SmtpTestServer) -> list[str]:
    out = []
    for got in server.messages:
        line = next(h for h in got.data.split(b"\r\n") if h.lower().startswith(b"message-id:"))
        out.append(line.split(b":", 1)[1].strip().strip(b"<>").decode())
    return out


def sender_for(config: Config, url: str, **kwargs: object) -> BackgroundSender:
    return BackgroundSender(config, open_store(url), lambda: SmtpMailer(config.smtp),
                            close_state=True, poll_interval=0.2, **kwargs)  # type: ignore[arg-type]


# Beside processing --------------------------------------------------------------------

def test_processing_does_not_wait_for_smtp_and_the_drain_sends_everything(
    tmp_path: Path,
) -> None:
    server = slow_server(0.25)  # every DATA takes a quarter of a second
    try:
        config = config_for(server, tmp_path, connections=2)
        connector = Connector.from_config(config, autoload=False)
        connector.state.import_accounts([CUSTOMERS])  # type: ignore[attr-defined]
        with connector.sending_in_background(drain=30) as sender:
            assert sender is not None
            started = time.monotonic()
            for n in range(12):
                connector.process(customer_mail(n))
            processing = time.monotonic() - started
            arrived_meanwhile = len(server.messages)
        # 12 mails over 2 sessions take at least 6 x 0.25 s; processing took far less, and
        # had not waited for them.
        assert arrived_meanwhile < 12
        assert processing < 1.5
        assert len(server.messages) == 12
        assert all(e.sent for e in connector.state.all_mail())  # type: ignore[attr-defined]
        assert server.connections <= 2
    finally:
        server.stop()


def test_many_mails_go_over_one_session(
    pipelining_server: SmtpTestServer, tmp_path: Path,
) -> None:
    config = config_for(pipelining_server, tmp_path, connections=1)
    connector = Connector.from_config(config, autoload=False)
    connector.state.import_accounts([CUSTOMERS])  # type: ignore[attr-defined]
    with connector.sending_in_background(drain=60) as sender:
        for n in range(150):
            connector.process(customer_mail(n))
    assert sender is not None and sender.connections == 1
    assert pipelining_server.connections == 1
    assert len(pipelining_server.messages) == 150
    assert all(pipelining_server.pipelined)  # each envelope went out in one piece
    assert sorted(message_ids(pipelining_server)) == sorted(
        e.mail.message_id for e in connector.state.all_mail())  # type: ignore[attr-defined]


def test_a_trickle_of_mail_keeps_to_one_session_of_several(
    pipelining_server: SmtpTestServer, tmp_path: Path,
) -> None:
    config = config_for(pipelining_server, tmp_path, connections=4)
    url = config.store.url
    store = open_store(url)
    sender = sender_for(config, url)
    sender.start()
    try:
        for n in range(10):
            enqueue(store, [queued(n, f"c{n}@customer.example")])
            sender.wake()
            assert sender.drain(10)
    finally:
        sender.stop()
    assert len(pipelining_server.messages) == 10
    assert pipelining_server.connections == 1


# The server drops the session ---------------------------------------------------------

def test_drops_between_mails_and_in_the_middle_of_data_cost_no_mail_and_no_attempt(
    pipelining_server: SmtpTestServer, tmp_path: Path,
) -> None:
    server = pipelining_server
    config = config_for(server, tmp_path, connections=1)
    url = config.store.url
    store = open_store(url)
    sender = sender_for(config, url)
    sender.start()
    try:
        ids = enqueue(store, [queued(n, f"c{n}@customer.example") for n in range(10)])
        assert sender.drain(10)
        server.drop_connections()  # the server's idle time-out, between two mails
        server.script("DATA", "250 2.0.0 queued", "drop")  # the second DATA is cut off
        ids += enqueue(store, [queued(n, f"c{n}@customer.example") for n in range(10, 20)])
        sender.wake()
        assert sender.drain(10)
    finally:
        sender.stop()
    entries = [store.get_mail(i) for i in ids]
    assert all(e is not None and e.sent and e.attempts == 1 for e in entries)
    got = collections.Counter(message_ids(server))
    # mail 10 was answered by the script (not kept); the cut-off one went again, whole
    assert set(got) == {f"out{n}@acme.example" for n in range(20) if n != 10}
    assert all(count == 1 for count in got.values())
    assert server.connections == 3


def test_a_4xx_to_one_rcpt_of_a_pipelined_batch_fails_that_mail_alone(
    pipelining_server: SmtpTestServer, tmp_path: Path,
) -> None:
    server = pipelining_server
    server.refuse("busy@customer.example", "451 4.2.1 mailbox busy, try later")
    config = config_for(server, tmp_path, connections=1, retry_interval=60)
    url = config.store.url
    store = open_store(url)
    clock = Clock()
    sender = sender_for(config, url, clock=clock)
    mails = [queued(n, f"c{n}@customer.example") for n in range(8)]
    mails[3] = queued(3, "busy@customer.example")
    ids = enqueue(store, mails)
    sender.start()
    try:
        assert sender.drain(10)
        busy = store.get_mail(ids[3])
        assert busy is not None and not busy.sent and busy.attempts == 1
        assert busy.last_error.startswith("all recipients refused (busy@customer.example: 451")
        assert all(e is not None and e.sent for e in (store.get_mail(i) for i in ids)
                   if e is not None and e.id != ids[3])
        assert all(server.pipelined) and server.connections == 1

        server.accept("busy@customer.example")
        clock.now += timedelta(seconds=120)  # retry_interval has passed
        sender.wake()
        assert sender.drain(10)
    finally:
        sender.stop()
    busy = store.get_mail(ids[3])
    assert busy is not None and busy.sent and busy.attempts == 2
    assert message_ids(server)[-1] == "out3@acme.example"


def test_an_unreachable_server_rests_the_outbox_and_the_drain_says_so(
    tmp_path: Path,
) -> None:
    server = slow_server(0)
    config = config_for(server, tmp_path, connections=1)
    server.stop()  # nobody listens on that port any more
    url = config.store.url
    store = open_store(url)
    ids = enqueue(store, [queued(n, f"c{n}@customer.example") for n in range(5)])
    sender = sender_for(config, url)
    sender.start()
    started = time.monotonic()
    try:
        assert not sender.drain(30)
    finally:
        sender.stop()
    assert time.monotonic() - started < 10
    entries = [store.get_mail(i) for i in ids]
    assert all(e is not None and not e.sent for e in entries)
    # One mail paid the attempt; the rest were released untried, not counted.
    assert sorted(e.attempts for e in entries if e is not None) == [0, 0, 0, 0, 1]


# Order --------------------------------------------------------------------------------

def test_mail_to_one_address_goes_out_in_queue_order_over_several_sessions(
    tmp_path: Path,
) -> None:
    server = slow_server(0.01)
    try:
        config = config_for(server, tmp_path, connections=4)
        url = config.store.url
        store = open_store(url)
        mails = [queued(n, f"c{n % 7}@customer.example") for n in range(70)]
        enqueue(store, mails)
        sender = sender_for(config, url)
        sender.start()
        try:
            assert sender.drain(60)
        finally:
            sender.stop()
        per_address: dict[str, list[int]] = collections.defaultdict(list)
        for got, mid in zip(server.messages, message_ids(server), strict=True):
            per_address[got.rcpt_tos[0]].append(int(mid.split("@")[0][3:]))
        assert len(server.messages) == 70
        for address, numbers in per_address.items():
            assert numbers == sorted(numbers), address
        assert server.connections > 1  # the order held across sessions
    finally:
        server.stop()


# process: bounded wait, and the summary -----------------------------------------------

def write_config(path: Path, server: SmtpTestServer, store_url: str, **smtp: object) -> Path:
    values = smtp_section(server, **smtp)
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text(
        "[connector]\npublic_address = \"support@acme.example\"\n"
        "internal_address = \"helpdesk@acme.example\"\n"
        f"state_dir = {json.dumps(str(path.parent / 'state'))}\n"
        f"[store]\nurl = {json.dumps(store_url)}\n[smtp]\n" + "\n".join(lines) + "\n")
    return path


def corpus(folder: Path, numbers: range) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        (folder / f"{n:05d}.eml").write_bytes(customer_mail(n))
    return folder


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commit_email", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def prepared(store_url: str) -> None:
    with open_store(store_url) as store:
        store.import_accounts([CUSTOMERS])


def test_process_waits_for_the_outbox_bounded_and_says_how_many_stay_queued(
    tmp_path: Path, cli_env: dict[str, str],
) -> None:
    server = slow_server(0.5)
    try:
        url = f"sqlite:///{tmp_path / 'commit.db'}"
        prepared(url)
        config = write_config(tmp_path / "c.toml", server, url, connections=1,
                              drain_timeout=1.0)
        started = time.monotonic()
        done = cli("--no-plugins", "process", "--config", str(config),
                   str(corpus(tmp_path / "mail", range(10))), env=cli_env)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        left = 10 - len(server.wait_for(10, timeout=0.1))
        assert 0 < left < 10  # some went in the second it waited, not all
        assert re.search(rf"\n{left} mails? still queued in the outbox \({left} auto_response\),"
                         r" not sent within smtp\.drain_timeout", done.stdout), done.stdout
        assert took < 30
    finally:
        server.stop()


# Several senders on one store ---------------------------------------------------------

def test_two_senders_beside_each_other_never_send_one_row_twice(
    pipelining_server: SmtpTestServer, tmp_path: Path, store_url: str,
) -> None:
    config = config_for(pipelining_server, tmp_path, connections=3)
    with open_store(store_url) as store:
        ids = enqueue(store, [queued(n, f"c{n % 40}@customer.example") for n in range(300)])
    senders = [sender_for(config, store_url) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        for sender in senders:
            assert sender.drain(60)
    finally:
        for sender in senders:
            sender.stop()
    got = collections.Counter(message_ids(pipelining_server))
    assert len(got) == 300 and set(got.values()) == {1}
    assert all(s.sent > 0 for s in senders)  # both took part
    with open_store(store_url) as store:
        assert all(e is not None and e.sent for e in (store.get_mail(i) for i in ids))


def test_two_processes_on_one_store_never_send_one_row_twice(
    pipelining_server: SmtpTestServer, tmp_path: Path, store_url: str,
    cli_env: dict[str, str],
) -> None:
    prepared(store_url)
    config = write_config(tmp_path / "c.toml", pipelining_server, store_url, connections=2)
    runs = [subprocess.Popen(
        [sys.executable, "-m", "commit_email", "--no-plugins", "process", "--config",
         str(config), str(corpus(tmp_path / f"mail{k}", range(k * 150, k * 150 + 150)))],
        env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for k in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    got = collections.Counter(message_ids(pipelining_server))
    assert len(got) == 300 and set(got.values()) == {1}
    with open_store(store_url) as store:
        assert all(e.sent for e in store.all_mail())


# kill -9 --------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_in_the_middle_of_sending_loses_nothing_and_repeats_only_mails_in_flight(
    tmp_path: Path, cli_env: dict[str, str],
) -> None:
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("SIGKILL")
    server = slow_server(0.05)
    try:
        url = f"sqlite:///{tmp_path / 'commit.db'}"
        prepared(url)
        connections = 2
        config = write_config(tmp_path / "c.toml", server, url, connections=connections)
        mail = corpus(tmp_path / "mail", range(200))
        victim = subprocess.Popen(
            [sys.executable, "-m", "commit_email", "--no-plugins", "process", "--config",
             str(config), str(mail)],
            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server.wait_for(40, timeout=120)  # in the middle of sending
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
        with open_store(url) as store:
            before = store.all_mail()
        marked = {e.mail.message_id for e in before if e.sent}
        arrived_before = collections.Counter(message_ids(server))
        assert len(before) > 0 and len(marked) < len(before)
        time.sleep(LEASE.total_seconds() + 1)  # the killed sender's claims run out

        again = cli("--no-plugins", "process", "--config", str(config), str(mail),
                    env=cli_env)
        assert again.returncode == 0, again.stderr
        with open_store(url) as store:
            after = store.all_mail()
        assert len(after) == len(before)  # the second pass queued nothing new (duplicates)
        assert all(e.sent for e in after)  # every queued mail went out
        got = collections.Counter(message_ids(server))
        assert set(got) == {e.mail.message_id for e in after}  # none lost
        twice = [m for m, count in got.items() if count > 1]
        # Only mails in flight at the kill: arrived, but not yet marked sent.
        assert set(twice) <= set(arrived_before) - marked
        assert len(twice) <= connections * 2
        assert all(count <= 2 for count in got.values())
    finally:
        server.stop()
