"""``run`` over IMAP against a real Dovecot: exactly once, faults, UIDVALIDITY, IDLE."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from commit_email import hookimpl
from commit_email.model import Outcome, OutcomeKind
from commit_email.pipeline import Connector
from commit_email.runner import Runner
from commit_email.testing import build_message
from tests.dovecot_fixtures import DovecotServer
from tests.faultproxy import Drop, Fault, FaultProxy, Reply, Stall

pytestmark = pytest.mark.server


def customer_mail(n: int, **kw: Any) -> bytes:
    kw.setdefault("date", "Sat, 28 Nov 2026 10:00:00 +0000")
    return build_message(sender=f"user{n}@acme.example", message_id=f"m{n}@acme.example",
                         subject=f"Printer {n} is out of toner", **kw)


def stranger_mail(n: int) -> bytes:
    return build_message(sender=f"x{n}@unknown.example", message_id=f"s{n}@unknown.example",
                         subject=f"Hello {n}", date="Sat, 28 Nov 2026 10:00:00 +0000")


def imap_section(server: DovecotServer, port: int | None = None,
                 **overrides: Any) -> dict[str, Any]:
    return {
        "host": server.host, "port": port or server.imap_port, "security": "plain",
        "user": server.user, "password": server.password, "timeout": 2.0,
        "reconnect_delay": 0.01, **overrides,
    }


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_runner(connector_factory: Callable[..., Connector], server: DovecotServer, *,
                port: int | None = None, **imap: Any) -> tuple[Runner, Connector, Sleeps]:
    conn = connector_factory(imap=imap_section(server, port, **imap))
    sleeps = Sleeps()
    return Runner(conn.config, conn, sleep=sleeps, rng=random.Random(4)), conn, sleeps


def outcomes_by_message_id(connector: Connector) -> Counter[str]:
    return Counter(r.message_id for r in connector.state.iter_processed())


def test_once_processes_everything_and_moves_each_message_to_processed_once(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    imap_dovecot.deliver_many([customer_mail(1), customer_mail(2), stranger_mail(3)])
    runner, connector, _ = make_runner(connector_factory, imap_dovecot)
    assert runner.run(once=True) == 0
    assert len(connector.sink.list_tickets()) == 2
    assert outcomes_by_message_id(connector) == {
        "m1@acme.example": 1, "m2@acme.example": 1, "s3@unknown.example": 1}
    records = list(connector.state.iter_processed())
    assert {r.source.kind for r in records} == {"imap"}
    assert {r.source.name for r in records} == {connector.config.imap.mailbox}
    assert imap_dovecot.message_files() == []
    assert len(imap_dovecot.folder_files("Processed")) == 3


def test_a_crash_between_the_commit_and_the_move_moves_it_later_without_a_second_ticket(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from commit_email.imap import ImapMailbox

    imap_dovecot.deliver_many([customer_mail(1), customer_mail(2)])
    runner, connector, _ = make_runner(connector_factory, imap_dovecot)

    def dies(self: ImapMailbox, done: object) -> None:
        self.close()  # the process died here: the outcomes are committed, nothing moved
        raise SystemExit("killed")

    with monkeypatch.context() as patch:
        patch.setattr(ImapMailbox, "acknowledge", dies)
        with pytest.raises(SystemExit):
            runner.poll()
    assert len(imap_dovecot.message_files()) == 2
    summary = Runner(connector.config, connector).poll()  # the restarted service
    assert (summary.fetched, summary.known, summary.deleted) == (0, 2, 2)
    assert len(connector.sink.list_tickets()) == 2
    assert len(imap_dovecot.folder_files("Processed")) == 2


def test_keep_processes_each_message_once_however_many_polls(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    imap_dovecot.deliver_many([customer_mail(1), customer_mail(2)])
    runner, _, _ = make_runner(connector_factory, imap_dovecot, after="keep")
    first, second = runner.poll(), runner.poll()
    assert (first.fetched, first.tickets, first.deleted) == (2, 2, 0)
    assert (second.fetched, second.known) == (0, 2)
    assert len(imap_dovecot.message_files()) == 2


def reset_uidvalidity(server: DovecotServer) -> None:
    """Rebuild the folder with the same mail: Dovecot forgets its UID list and indexes,
    and gives the folder a new UIDVALIDITY (the time) and the messages new UIDs."""
    time.sleep(1.1)  # UIDVALIDITY is a time in seconds: make sure it changes
    for path in server.maildir.iterdir():
        if path.is_file() and path.name.startswith("dovecot"):
            path.unlink()
    for path in (server.maildir / "cur").iterdir():
        path.rename(server.maildir / "new" / path.name.split(":")[0])


def test_a_uidvalidity_reset_opens_no_ticket_twice(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    imap_dovecot.deliver_many([customer_mail(n) for n in range(5)])
    runner, connector, _ = make_runner(connector_factory, imap_dovecot, after="keep")
    assert runner.run(once=True) == 0  # and logs out: the folder is rebuilt between runs
    assert len(connector.sink.list_tickets()) == 5
    before = {r.source.uidl for r in connector.state.iter_processed()}
    reset_uidvalidity(imap_dovecot)
    after = runner.poll()
    assert (after.fetched, after.tickets, after.duplicates) == (5, 0, 5)
    uidls = {r.source.uidl for r in connector.state.iter_processed()}
    assert len(uidls - before) == 5  # the new ids are recorded ...
    assert runner.poll().known == 5  # ... so the next poll skips them unread
    assert len(connector.sink.list_tickets()) == 5


# -- faults ----------------------------------------------------------------------------------

FAULTS: dict[str, tuple[Fault, str, int]] = {
    "drop mid-FETCH": (Drop(after_bytes=2000), "FETCH", 1),
    "stall mid-FETCH": (Stall(seconds=3, after_bytes=500), "FETCH", 1),
    "NO to FETCH": (Reply(line=b"NO [UNAVAILABLE] fault injected"), "FETCH", 1),
    "BAD to SEARCH": (Reply(line=b"BAD fault injected"), "SEARCH", 0),
    "drop between MOVE and its reply": (Drop(), "MOVE", 0),
    "NO to MOVE": (Reply(line=b"NO [SERVERBUG] fault injected"), "MOVE", 0),
    "drop at login": (Drop(), "LOGIN", 0),
    "NO [UNAVAILABLE] to LOGIN": (Reply(line=b"NO [UNAVAILABLE] try later"), "LOGIN", 0),
    "drop at SELECT": (Drop(), "SELECT", 0),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_the_runner_recovers_from_imap_faults_without_loss_or_duplicates(
    name: str, connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    fault, command, skip = FAULTS[name]
    sent = [customer_mail(n, body="line of text\n" * 200) for n in range(8)]
    sent += [stranger_mail(n) for n in range(8, 12)]
    imap_dovecot.deliver_many(sent)
    with FaultProxy(imap_dovecot.host, imap_dovecot.imap_port, protocol="imap") as proxy:
        proxy.inject(fault, command, skip=skip)
        proxy.inject(fault, command, skip=skip)
        # several passes, each with its own MOVE, and small batches, so that the faults
        # land between messages processed and not
        runner, connector, sleeps = make_runner(connector_factory, imap_dovecot,
                                                port=proxy.port, timeout=1.0,
                                                messages_per_session=5)
        import commit_email.imap as imap_module
        old = imap_module._FETCH_BATCH
        imap_module._FETCH_BATCH = 3
        try:
            assert runner.run(once=True) == 0
        finally:
            imap_module._FETCH_BATCH = old
        assert proxy.pending == 0, "both faults must have fired"
    assert len(sleeps) >= 1
    counts = outcomes_by_message_id(connector)
    assert set(counts.values()) == {1}
    assert len(counts) == len(sent)
    assert len(connector.sink.list_tickets()) == 8
    assert imap_dovecot.message_files() == []
    assert len(imap_dovecot.folder_files("Processed")) == len(sent)


def test_a_permanent_login_refusal_ends_run_once_at_once(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    from commit_email.errors import LoginError

    with FaultProxy(imap_dovecot.host, imap_dovecot.imap_port, protocol="imap") as proxy:
        proxy.inject(Reply(line=b"NO [AUTHENTICATIONFAILED] Authentication failed."), "LOGIN")
        runner, _, sleeps = make_runner(connector_factory, imap_dovecot, port=proxy.port)
        with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
            runner.run(once=True)
    assert sleeps == []


# -- IDLE ------------------------------------------------------------------------------------


class Outcomes:
    """Collects outcomes as the runner thread records them (the test thread never touches
    the connector's store, whose connection belongs to the runner thread)."""

    def __init__(self) -> None:
        self.kinds: list[OutcomeKind] = []

    @hookimpl
    def commit_email_message_processed(self, outcome: Outcome) -> None:
        self.kinds.append(outcome.kind)

    def tickets(self) -> int:
        return self.kinds.count(OutcomeKind.TICKET_CREATED)


def run_in_thread(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate: Callable[[], bool], seconds: float = 15) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_while_idling_new_mail_gets_its_ticket_within_seconds(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    seen = Outcomes()
    conn = connector_factory(imap=imap_section(imap_dovecot, poll_interval=300), plugins=[seen])
    runner = Runner(conn.config, conn)
    thread = run_in_thread(runner)
    try:
        time.sleep(0.5)  # it has listed the empty folder and is idling now
        for n in range(3):
            imap_dovecot.deliver(customer_mail(n))
            wait_for(lambda n=n: seen.tickets() == n + 1)  # type: ignore[misc]
    finally:
        runner.request_stop()
        thread.join(timeout=10)
    assert not thread.is_alive(), "a stop request must end the IDLE"
    assert len(imap_dovecot.folder_files("Processed")) == 3


def test_a_connection_dropped_during_idle_is_reopened_and_nothing_is_lost(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    with FaultProxy(imap_dovecot.host, imap_dovecot.imap_port, protocol="imap") as proxy:
        # "+ idling" passes; the next thing the server says (the new mail) drops the line
        proxy.inject(Drop(after_bytes=len(b"+ idling\r\n")), "IDLE")
        seen = Outcomes()
        conn = connector_factory(imap=imap_section(imap_dovecot, proxy.port, poll_interval=300),
                                 plugins=[seen])
        runner = Runner(conn.config, conn)
        thread = run_in_thread(runner)
        try:
            time.sleep(0.5)
            imap_dovecot.deliver(customer_mail(1))
            wait_for(lambda: seen.tickets() == 1)
            assert proxy.pending == 0 and proxy.connections == 2
            imap_dovecot.deliver(customer_mail(2))  # and IDLE works on the new session
            wait_for(lambda: seen.tickets() == 2)
        finally:
            runner.request_stop()
            thread.join(timeout=10)
    assert set(outcomes_by_message_id(conn).values()) == {1}
    assert imap_dovecot.message_files() == []


def test_idle_is_renewed_before_the_interval_runs_out(
    connector_factory: Callable[..., Connector], imap_dovecot: DovecotServer,
) -> None:
    """With poll_interval = 1 the IDLE ends after a second and the folder is listed again:
    the same path that re-issues IDLE within 25 minutes on a long interval."""
    with FaultProxy(imap_dovecot.host, imap_dovecot.imap_port, protocol="imap") as proxy:
        conn = connector_factory(imap=imap_section(imap_dovecot, proxy.port, poll_interval=1))
        runner = Runner(conn.config, conn)
        thread = run_in_thread(runner)
        time.sleep(3.5)
        runner.request_stop()
        thread.join(timeout=10)
        verbs = [proxy.verb(c.encode()).decode() for c in proxy.commands]
    assert verbs.count("IDLE") >= 3 and verbs.count("DONE") >= 3
    assert proxy.connections == 1  # one session all along


# -- the command line --------------------------------------------------------------------------


def test_run_once_from_the_command_line_over_imaps(
    tmp_path: Path, imap_dovecot_tls: DovecotServer, cli_env: dict[str, str],
) -> None:
    imap_dovecot_tls.deliver_many([customer_mail(1), stranger_mail(2)])
    shutil.copy(imap_dovecot_tls.ca.ca_cert, tmp_path / "ca.pem")  # type: ignore[union-attr]
    config = tmp_path / "commit-email.toml"
    config.write_text(f"""
[connector]
public_address = "support@helpdesk.example"
internal_address = "helpdesk@helpdesk.example"
state_dir = "state"

[store]
url = "sqlite:///commit.db"

[imap]
host = "{imap_dovecot_tls.host}"
port = {imap_dovecot_tls.imaps_port}
user = "{imap_dovecot_tls.user}"
password_env = "IMAP_PASSWORD"
ca_file = "ca.pem"
""")
    env = {**cli_env, "IMAP_PASSWORD": imap_dovecot_tls.password}
    check = subprocess.run([sys.executable, "-m", "commit_email", "check-config", "--config",
                            str(config)], env=env, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    result = subprocess.run([sys.executable, "-m", "commit_email", "run", "--once", "--config",
                             str(config)], env=env, capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "poll: fetched=2" in result.stderr
    assert imap_dovecot_tls.message_files() == []
    assert len(imap_dovecot_tls.folder_files("Processed")) == 2
    kinds = [r for r in result.stderr.splitlines() if OutcomeKind.FORWARDED.value in r]
    assert kinds
