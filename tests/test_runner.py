"""The run loop against a real Dovecot: exactly-once processing, faults, back-off, stopping."""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from commit_email import hookimpl, pop3
from commit_email.message import Message
from commit_email.model import Outcome, OutcomeKind, SourceRef
from commit_email.pipeline import Connector, Context
from commit_email.pop3 import Pop3Mailbox
from commit_email.runner import PollSummary, Runner
from commit_email.testing import build_message
from tests.dovecot_fixtures import DovecotServer, as_served
from tests.faultproxy import Drop, Fault, FaultProxy, Reply, Stall
from tests.oauth_fixtures import OAuthTestServer

pytestmark = pytest.mark.server


def pop3_section(
    server: DovecotServer, port: int | None = None, **overrides: Any
) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": port or server.pop3_port,
        "security": "plain",
        "user": server.user,
        "password": server.password,
        "timeout": 2.0,
        "reconnect_delay": 0.01,
        **overrides,
    }


def customer_mail(n: int, **kw: Any) -> bytes:
    """A mail from a known Account's domain (acme.example): it opens a ticket."""
    kw.setdefault("subject", f"Printer {n} is out of toner")
    kw.setdefault("date", "Sat, 28 Nov 2026 10:00:00 +0000")  # same bytes on every call
    return build_message(sender=f"user{n}@acme.example", message_id=f"m{n}@acme.example", **kw)


def stranger_mail(n: int) -> bytes:
    """A mail nobody's Account matches: it is forwarded."""
    return build_message(sender=f"x{n}@unknown.example", message_id=f"s{n}@unknown.example",
                         subject=f"Hello {n}", date="Sat, 28 Nov 2026 10:00:00 +0000")


class Sleeps(list[float]):
    """Records the runner's back-off waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_runner(
    connector_factory: Callable[..., Connector],
    server: DovecotServer,
    *,
    port: int | None = None,
    plugins: tuple[object, ...] = (),
    connector: dict[str, Any] | None = None,
    oauth_sections: dict[str, Any] | None = None,
    **pop3: Any,
) -> tuple[Runner, Connector, Sleeps]:
    sections = {"oauth": oauth_sections} if oauth_sections else {}
    conn = connector_factory(pop3=pop3_section(server, port, **pop3), plugins=plugins,
                             connector=connector or {}, **sections)
    sleeps = Sleeps()
    return Runner(conn.config, conn, sleep=sleeps, rng=random.Random(4)), conn, sleeps


def outcomes_by_message_id(connector: Connector) -> Counter[str]:
    return Counter(r.message_id for r in connector.state.iter_processed())


# -- the happy path ----------------------------------------------------------------------


def test_once_processes_every_message_and_empties_the_mailbox(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dovecot.deliver_many([customer_mail(1), customer_mail(2), stranger_mail(3)])
    runner, connector, _ = make_runner(connector_factory, dovecot)
    with caplog.at_level(logging.INFO, logger="commit_email.runner"):
        assert runner.run(once=True) == 0
    assert len(connector.sink.list_tickets()) == 2
    assert outcomes_by_message_id(connector) == {
        "m1@acme.example": 1, "m2@acme.example": 1, "s3@unknown.example": 1
    }
    assert dovecot.message_files() == []
    assert "poll: fetched=3 tickets=2 filed=0 forwarded=1 ignored=0 quarantined=0 " \
        "duplicates=0 errors=0" in caplog.text
    assert "ticket_created <m1@acme.example>" in caplog.text  # one line per message
    assert "forwarded <s3@unknown.example>" in caplog.text


def test_uidls_are_recorded_with_the_outcome(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    dovecot.deliver(customer_mail(1))
    runner, connector, _ = make_runner(connector_factory, dovecot, leave_on_server=True)
    with Pop3Mailbox(connector.config.pop3) as box:
        (uidl,) = box.uidls()
    runner.run(once=True)
    record = connector.state.processed_uidl(connector.config.pop3.mailbox, uidl)
    assert record is not None
    assert record.outcome.kind is OutcomeKind.TICKET_CREATED


def test_leave_on_server_never_processes_a_uidl_twice(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    dovecot.deliver_many([customer_mail(1), customer_mail(2)])
    runner, connector, _ = make_runner(connector_factory, dovecot, leave_on_server=True)
    first = runner.poll()
    second = runner.poll()
    assert (first.fetched, first.tickets, first.deleted) == (2, 2, 0)
    assert (second.fetched, second.known, second.deleted) == (0, 2, 0)
    assert len(dovecot.message_files()) == 2
    assert len(connector.sink.list_tickets()) == 2
    # Switching leave_on_server off later deletes them without processing them again.
    config = connector.config
    later = Runner(attrs.evolve(config, pop3=attrs.evolve(config.pop3, leave_on_server=False)),
                   connector)
    assert later.poll().deleted == 2
    assert dovecot.message_files() == []
    assert len(connector.sink.list_tickets()) == 2


def test_a_redelivered_copy_is_a_duplicate_and_is_deleted(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    mail = customer_mail(1)  # built once: its Date header is part of the digest
    dovecot.deliver_many([mail, mail])  # the same mail under two UIDLs
    runner, connector, _ = make_runner(connector_factory, dovecot)
    summary = runner.poll()
    assert (summary.tickets, summary.duplicates, summary.deleted) == (1, 1, 2)
    assert len(connector.sink.list_tickets()) == 1
    assert dovecot.message_files() == []



def test_a_message_the_log_cannot_vouch_for_stays_on_the_server(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DELE needs the outcome under this mailbox and UIDL in the log. A state that
    loses the UIDL (a buggy integration store) must cost a retry, never the message."""
    dovecot.deliver_many([customer_mail(1), customer_mail(2)])
    runner, connector, _ = make_runner(connector_factory, dovecot)
    state = connector.state
    record = state.record_processed

    def without_uidl_for_m1(*, digest: str, source: SourceRef, message_id: str,
                            outcome: Outcome) -> None:
        if message_id == "m1@acme.example":
            source = attrs.evolve(source, uidl="")
        record(digest=digest, source=source, message_id=message_id, outcome=outcome)

    monkeypatch.setattr(state, "record_processed", without_uidl_for_m1)
    with caplog.at_level(logging.ERROR, logger="commit_email.runner"):
        first = runner.poll()
    assert (first.tickets, first.errors, first.deleted) == (2, 1, 1)
    assert "no outcome recorded under this UIDL; keeping the message" in caplog.text
    assert len(dovecot.message_files()) == 1
    # The next poll fetches it again: the digest makes it a duplicate (no second ticket),
    # its UIDL is recorded with that outcome, and now it is deleted.
    monkeypatch.setattr(state, "record_processed", record)
    second = runner.poll()
    assert (second.fetched, second.duplicates, second.errors, second.deleted) == (1, 1, 0, 1)
    assert len(connector.sink.list_tickets()) == 2
    assert dovecot.message_files() == []

# -- bad messages ------------------------------------------------------------------------


class Exploding:
    name = "exploding"
    order = 5

    def handle(self, message: Message, ctx: Context) -> None:
        if "EXPLODE" in message.subject:
            raise RuntimeError("stage blew up")
        if "SLOW" in message.subject:
            while True:  # runs away; its broad except cannot swallow the time limit
                with contextlib.suppress(Exception):
                    ctx.check_time()


class ExplodingPlugin:
    @hookimpl
    def commit_email_register_stages(self) -> list[object]:
        return [Exploding()]


def test_a_failing_message_is_quarantined_byte_exact_and_the_run_goes_on(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    bad = customer_mail(2, subject="EXPLODE please")
    dovecot.deliver_many([customer_mail(1), bad, customer_mail(3)])
    runner, connector, _ = make_runner(connector_factory, dovecot, plugins=(ExplodingPlugin(),))
    summary = runner.poll()
    assert (summary.tickets, summary.quarantined, summary.deleted) == (2, 1, 3)
    (entry,) = connector.quarantine.entries()
    assert "stage blew up" in entry.reason
    _, raw = connector.quarantine.get(entry.id)
    assert raw == as_served(bad)
    assert entry.source.uidl  # it remembers where it came from
    assert dovecot.message_files() == []


def test_a_message_over_the_time_limit_is_quarantined(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    dovecot.deliver_many([customer_mail(1, subject="SLOW one"), customer_mail(2)])
    runner, connector, _ = make_runner(
        connector_factory, dovecot, plugins=(ExplodingPlugin(),),
        connector={"message_time_limit": 0.3},
    )
    started = time.monotonic()
    summary = runner.poll()
    assert time.monotonic() - started < 4  # the endless stage was cut off
    assert (summary.quarantined, summary.tickets, summary.deleted) == (1, 1, 2)
    (entry,) = connector.quarantine.entries()
    assert "longer than 0.3 s" in entry.reason


# -- faults --------------------------------------------------------------------------------

FAULTS: dict[str, tuple[Fault, str, int]] = {
    "drop mid-RETR": (Drop(after_bytes=700), "RETR", 3),
    "stall mid-RETR": (Stall(seconds=3, after_bytes=300), "RETR", 5),
    "-ERR to RETR": (Reply(line=b"-ERR [SYS/TEMP] disk error"), "RETR", 2),
    "-ERR to one DELE of the batch": (Reply(line=b"-ERR cannot delete"), "DELE", 4),
    "drop during the DELE batch": (Drop(), "DELE", 5),
    "drop at QUIT": (Drop(), "QUIT", 0),
    "-ERR to QUIT": (Reply(line=b"-ERR some deleted messages not removed"), "QUIT", 0),
    "drop at login": (Drop(), "PASS", 0),
    "-ERR to UIDL": (Reply(line=b"-ERR [SYS/TEMP] try again"), "UIDL", 0),
}


@pytest.mark.parametrize("login", ["password", "oauth"])
@pytest.mark.parametrize("name", list(FAULTS))
def test_the_runner_recovers_from_faults_without_loss_or_duplicates(
    name: str, login: str, connector_factory: Callable[..., Connector],
    request: pytest.FixtureRequest
) -> None:
    """With a password, and with an XOAUTH2 login whose token is fetched once and reused
    by every reconnection (Dovecot's oauth2 passdb asking the tests' OAuth server)."""
    fault, command, skip = FAULTS[name]
    extra: dict[str, Any] = {}
    if login == "oauth":
        dovecot: DovecotServer = request.getfixturevalue("dovecot_oauth")
        oauth_server: OAuthTestServer = request.getfixturevalue("oauth_server")
        client = oauth_server.add_client(dovecot.user)
        extra = {"auth": "xoauth2", "oauth": "test",
                 "oauth_sections": {"test": {
                     "provider": "generic", "grant": "client_credentials",
                     "client_id": client.client_id, "client_secret": client.client_secret,
                     "token_url": oauth_server.token_url}}}
        command = "AUTH" if command == "PASS" else command
    else:
        dovecot = request.getfixturevalue("dovecot")
    sent = [customer_mail(n, body="line of text\n" * 200) for n in range(8)]
    sent += [stranger_mail(n) for n in range(8, 12)]
    dovecot.deliver_many(sent)
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        proxy.inject(fault, command, skip=skip)
        proxy.inject(fault, command, skip=skip)  # and again, counting on from the first
        runner, connector, sleeps = make_runner(
            connector_factory, dovecot, port=proxy.port, timeout=1.0, **extra
        )
        assert runner.run(once=True) == 0
        assert proxy.pending == 0, "both faults must have fired"
    if login == "oauth":
        assert "auth failed" not in dovecot.log
        assert oauth_server.grants["client_credentials"] == 1  # one token for every session
    assert len(sleeps) >= 1  # it backed off before reconnecting
    counts = outcomes_by_message_id(connector)
    assert set(counts.values()) == {1}
    assert len(counts) == len(sent)
    assert len(connector.sink.list_tickets()) == 8
    assert dovecot.message_files() == []


def test_once_gives_up_after_the_configured_attempts(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        for _ in range(3):
            proxy.inject(Reply(line=b"-ERR [SYS/TEMP] down for maintenance"), "USER")
        runner, _, sleeps = make_runner(
            connector_factory, dovecot, port=proxy.port, once_attempts=3,
            reconnect_delay=1.0, reconnect_max_delay=1.5,
        )
        assert runner.run(once=True) == 1
    assert len(sleeps) == 2  # no wait after the last attempt
    assert 0.5 <= sleeps[0] <= 1.0 and 0.75 <= sleeps[1] <= 1.5


def test_backoff_doubles_with_jitter_and_is_capped(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    runner, _, _ = make_runner(
        connector_factory, dovecot, reconnect_delay=2.0, reconnect_max_delay=60.0
    )
    delays = [runner.backoff(n) for n in range(1, 10)]
    ceilings = [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not in lockstep


# -- batching and fetching ahead -----------------------------------------------------------


def test_deletes_go_in_one_batch_before_quit_and_sessions_are_bounded(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    dovecot.deliver_many([customer_mail(n) for n in range(5)])
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        conn = connector_factory(pop3=pop3_section(dovecot, proxy.port))
        runner = Runner(conn.config, conn, messages_per_session=2)
        summary = runner.poll()
        verbs = [c.split()[0] for c in proxy.commands if c.split()[0] in ("RETR", "DELE", "QUIT")]
    assert (summary.fetched, summary.tickets, summary.deleted) == (5, 5, 5)
    assert proxy.connections == 3  # 2 + 2 + 1 fetched messages
    # Each session: its RETRs, then the DELEs of what it finished, then QUIT.
    assert verbs == ["RETR", "RETR", "DELE", "DELE", "QUIT"] * 2 + ["RETR", "DELE", "QUIT"]
    assert dovecot.message_files() == []


class Slow:
    """A stage that takes a while and notes how many RETRs the proxy had seen by then."""

    name = "slow"
    order = 5

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.retrs_seen: list[int] = []

    def handle(self, message: Message, ctx: object) -> None:
        self.retrs_seen.append(sum(c.startswith("RETR") for c in self.proxy.commands))
        time.sleep(0.02)


class SlowPlugin:
    def __init__(self, stage: Slow) -> None:
        self.stage = stage

    @hookimpl
    def commit_email_register_stages(self) -> list[object]:
        return [self.stage]


def test_messages_are_fetched_ahead_of_processing_within_a_bound(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    dovecot.deliver_many([stranger_mail(n) for n in range(40)])
    with FaultProxy(dovecot.host, dovecot.pop3_port) as proxy:
        slow = Slow(proxy)
        runner, _, _ = make_runner(
            connector_factory, dovecot, port=proxy.port, plugins=(SlowPlugin(slow),)
        )
        assert runner.poll().forwarded == 40
    ahead = [seen - n for n, seen in enumerate(slow.retrs_seen, start=1)]
    assert max(ahead) > 1  # later messages were already asked for while one was processed
    # but never more RETRs in flight than the pipelining window allows
    assert max(ahead) <= pop3._RETR_AHEAD
    assert dovecot.message_files() == []


# -- stopping and progress ------------------------------------------------------------------


class StopAfter:
    """Asks the runner to stop once ``n`` messages were processed (like a SIGTERM would)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.runner: Runner | None = None
        self.seen = 0

    @hookimpl
    def commit_email_message_processed(self) -> None:
        self.seen += 1
        if self.seen == self.n and self.runner is not None:
            self.runner.request_stop()


def test_a_stop_request_finishes_the_message_in_hand(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    dovecot.deliver_many([customer_mail(n) for n in range(6)])
    stopper = StopAfter(2)
    runner, connector, _ = make_runner(connector_factory, dovecot, plugins=(stopper,))
    stopper.runner = runner
    assert runner.run() == 0  # not --once: only the stop request ends it
    assert len(connector.sink.list_tickets()) == 2
    # The second one was deleted too; those fetched ahead stay for the next poll.
    assert len(dovecot.message_files()) == 4


def test_a_stop_event_set_from_another_thread_ends_the_run_and_no_handler_is_installed(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer
) -> None:
    """A host stops the Runner through the event it passed in; the library never touches the
    process's signal handlers (the CLI does that, not ``Runner.run``)."""
    dovecot.deliver_many([customer_mail(n) for n in range(2)])
    conn = connector_factory(pop3=pop3_section(dovecot, poll_interval=3600))
    stop = threading.Event()
    runner = Runner(conn.config, conn, stop=stop)  # the real, interruptible sleep
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def stop_soon() -> None:
        while len(conn.sink.list_tickets()) < 2 and not stop.is_set():
            time.sleep(0.05)
        stop.set()

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    started = time.monotonic()
    assert runner.run() == 0
    stopper.join()
    assert time.monotonic() - started < 30  # not the hour of poll_interval
    assert len(conn.sink.list_tickets()) == 2
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers


def test_progress_is_logged_on_long_polls(
    connector_factory: Callable[..., Connector], dovecot: DovecotServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dovecot.deliver_many([stranger_mail(n) for n in range(5)])
    conn = connector_factory(pop3=pop3_section(dovecot))
    runner = Runner(conn.config, conn, progress_interval=0.0)
    with caplog.at_level(logging.INFO, logger="commit_email.runner"):
        summary = runner.poll()
    assert summary == PollSummary(
        fetched=5, forwarded=5, deleted=5, seconds=summary.seconds
    )
    assert "progress: 1 of 5 messages" in caplog.text
    assert "progress: 4 of 5 messages" in caplog.text


# -- the command line --------------------------------------------------------------------


def test_run_once_with_a_wrong_password_fails_at_once_with_one_line(
    tmp_path: Path, dovecot_factory: Callable[..., DovecotServer], cli_env: dict[str, str]
) -> None:
    server = dovecot_factory()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[connector]\nstate_dir = "{tmp_path}/state"\n'
        f'[store]\nurl = "sqlite:///{tmp_path}/db.sqlite"\n'
        f'[pop3]\nhost = "{server.host}"\nport = {server.pop3_port}\nsecurity = "plain"\n'
        f'user = "{server.user}"\npassword = "wrong"\n'
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "commit_email", "run", "--config", str(config), "--once"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert time.monotonic() - started < 20  # no back-off rounds for a wrong password
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("commit-email: error: POP3 ")
    assert "Authentication failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_once_over_pop3s_with_a_ca_file_relative_to_the_config(
    tmp_path: Path, dovecot_tls: DovecotServer, cli_env: dict[str, str]
) -> None:
    assert dovecot_tls.ca is not None
    shutil.copy(dovecot_tls.ca.ca_cert, tmp_path / "our-ca.pem")
    dovecot_tls.deliver_many([customer_mail(1), stranger_mail(2)])
    config = tmp_path / "c.toml"
    config.write_text(
        f'[connector]\nstate_dir = "state"\n'
        f'[store]\nurl = "sqlite:///db.sqlite"\n'
        f'[pop3]\nhost = "{dovecot_tls.host}"\nport = {dovecot_tls.pop3s_port}\n'
        f'security = "ssl"\nca_file = "our-ca.pem"\n'
        f'user = "{dovecot_tls.user}"\npassword = "{dovecot_tls.password}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "commit_email", "run", "--config", str(config), "--once"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
        cwd="/",  # relative paths must resolve against the config file, not the cwd
    )
    assert result.returncode == 0, result.stderr
    assert "poll: fetched=2 " in result.stderr
    assert dovecot_tls.message_files() == []
    assert (tmp_path / "db.sqlite").exists()


def test_run_once_with_a_certificate_that_does_not_verify_fails_at_once(
    tmp_path: Path, dovecot_tls: DovecotServer, cli_env: dict[str, str]
) -> None:
    # No ca_file: the system trust store does not know the test CA. A configuration fault,
    # so no back-off rounds (they were 5 retries, 11 s, then exit 1).
    config = tmp_path / "c.toml"
    config.write_text(
        f'[connector]\nstate_dir = "{tmp_path}/state"\n'
        f'[store]\nurl = "sqlite:///{tmp_path}/db.sqlite"\n'
        f'[pop3]\nhost = "{dovecot_tls.host}"\nport = {dovecot_tls.pop3s_port}\n'
        f'security = "ssl"\nuser = "{dovecot_tls.user}"\npassword = "{dovecot_tls.password}"\n'
        "reconnect_delay = 2.0\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "commit_email", "run", "--config", str(config), "--once"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert time.monotonic() - started < 15
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("commit-email: error: POP3 ") and "does not verify" in last
    assert "Traceback" not in result.stderr
