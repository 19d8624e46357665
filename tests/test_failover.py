"""Failover: two ``run`` processes on one PostgreSQL store and two real mailboxes; whichever
worker serves a mailbox is killed with SIGKILL at random points, and the standby takes over.

A few hundred messages in each Dovecot mailbox (some delivered to both, as a Cc to
support@ and alerts@ would be), auto-responses sent through a real SMTP server. After at
least ten kills (each killed process is started again, so there is always a standby):

- every (mailbox, UIDL) has exactly one line in the processed log, and every distinct
  message exactly one outcome of its own (the copies in the other mailbox are duplicates);
- tickets = ticket-worthy messages; both mailboxes are empty;
- every queued mail reached the SMTP server, and no mail twice unless a kill landed
  between the server's acceptance and the record of it (at most one per kill);
- the takeover times are measured (kill to the standby holding the lock) and printed.

Each ``run`` serves each mailbox in a worker process of its own; a kill hits either the
whole ``run`` (its workers see their parent gone and stop) or only the worker process
holding the mailbox.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path

import pytest

from commit_email.model import OutcomeKind
from commit_email.store import open_store
from commit_email.testing import build_message
from tests.dovecot_fixtures import DovecotServer
from tests.shared import DIRECTORY
from tests.smtp_fixtures import SmtpTestServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEED = 20261129
KILLS = 12
PER_MAILBOX = 200
SHARED = 20  # delivered to both mailboxes
POLL = 1.0


def corpus(rng: random.Random, box: str) -> list[bytes]:
    own = [build_message(sender=f"user{n}@acme.example", message_id=f"{box}.{n}@acme.example",
                         subject=f"{box} issue {n}", body="Details.\n" * rng.randint(1, 200))
           for n in range(PER_MAILBOX - 40)]
    strangers = [build_message(sender=f"x{n}@nowhere.example",
                               message_id=f"{box}.s{n}@nowhere.example", subject=f"News {n}")
                 for n in range(40 - SHARED)]
    return own + strangers


def shared_mail() -> list[bytes]:
    return [build_message(sender=f"cc{n}@acme.example", message_id=f"cc.{n}@acme.example",
                          subject=f"Both of you {n}", date="Sun, 29 Nov 2026 10:00:00 +0000")
            for n in range(SHARED)]


class Store:
    """The test's own view of the store: counts and who holds which mailbox's lock."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def processed(self) -> int:
        import psycopg

        try:
            row = self.conn.execute("SELECT count(*) FROM processed").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row[0]) if row else 0

    def holder(self, mailbox: str) -> int | None:
        """The OS pid of the process whose connection holds the mailbox's lock."""
        row = self.conn.execute(
            "WITH k AS (SELECT hashtextextended(coalesce(current_schema(), '') || %s, 0) AS v)"
            " SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
            " ON a.pid = l.pid, k WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.objsubid = 1 AND l.classid::bigint = ((k.v >> 32) & 4294967295)"
            " AND l.objid::bigint = (k.v & 4294967295)",
            (f" mailbox {mailbox}",),
        ).fetchone()
        return int(row[0].rsplit(" ", 1)[1]) if row else None


def parent_of(pid: int) -> int:
    """The parent's pid (Linux /proc): the ``run`` a mailbox's worker process belongs to."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_kill_the_active_worker_and_the_standby_takes_over(
    tmp_path: Path, dovecot_plain_server: DovecotServer, pg_url: str,
    smtp_server: SmtpTestServer, cli_env: dict[str, str],
) -> None:
    rng = random.Random(SEED)
    boxes = {name: dovecot_plain_server.new_user() for name in ("support", "alerts")}
    both = shared_mail()
    for name, server in boxes.items():
        messages = corpus(rng, name) + both
        rng.shuffle(messages)
        server.deliver_many(messages)
    expected_lines = sum(len(s.message_files()) for s in boxes.values())
    with open_store(pg_url) as store:
        store.import_accounts(DIRECTORY)
    config = tmp_path / "commit-email.toml"
    config.write_text(
        f'[connector]\npublic_address = "support@helpdesk.example"\n'
        f'internal_address = "helpdesk@helpdesk.example"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[store]\nurl = "{pg_url}"\n'
        f'[smtp]\nhost = "{smtp_server.host}"\nport = {smtp_server.port}\n'
        f'security = "plain"\nfrom_address = "support@helpdesk.example"\n'
        f"retry_interval = 0.5\n"
        # loop protection would hold back the auto-responses to the same senders
        f"[loop_protection]\nmax_auto_responses_per_sender = 1000\n"
        + "".join(f'[[pop3]]\nname = "{n}"\nhost = "{s.host}"\nport = {s.pop3_port}\n'
                  f'security = "plain"\nuser = "{s.user}"\npassword = "{s.password}"\n'
                  f"timeout = 10\npoll_interval = {POLL}\nreconnect_delay = 0.2\n"
                  f"messages_per_session = 50\n"
                  for n, s in boxes.items()))
    command = [sys.executable, "-m", "commit_email", "run", "--config", str(config)]
    logs = tmp_path / "logs"
    logs.mkdir()

    def start() -> subprocess.Popen[bytes]:
        log = open(logs / f"run-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(command, env=cli_env, stdout=log, stderr=log)

    view = Store(pg_url)
    workers = [start()]
    def run_of(mailbox: str) -> int | None:
        """The pid of the ``run`` serving the mailbox (its worker process holds the lock)."""
        holder = view.holder(mailbox)
        try:
            return None if holder is None else parent_of(holder)
        except (FileNotFoundError, ValueError, IndexError):
            return None  # the holder just ended

    wait_for(lambda: all(run_of(n) == workers[0].pid for n in boxes), 30,
             "the first run to take both mailboxes")
    workers.append(start())
    takeovers: list[float] = []
    kills = 0
    try:
        while kills < KILLS:
            mailbox = rng.choice(list(boxes))
            holder, serving = view.holder(mailbox), run_of(mailbox)
            if holder is None or serving is None:
                time.sleep(0.05)
                continue
            victim = next(w for w in workers if w.pid == serving)
            # the whole run (its workers notice and stop), or only the mailbox's worker
            # process (its run starts it again later; the standby is quicker)
            whole_run = rng.random() < 0.5
            before = view.processed()
            if before < expected_lines and rng.random() < 0.8:
                target = min(expected_lines, before + rng.randint(1, 40))
                wait_for(lambda t=target: view.processed() >= t, 60, "progress")  # type: ignore[misc]
                time.sleep(rng.uniform(0.0, 0.01))
            else:
                time.sleep(rng.uniform(0.0, POLL))  # idle, between polls, or in the outbox
            if whole_run:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
            else:
                os.kill(holder, signal.SIGKILL)
            killed_at = time.monotonic()
            kills += 1
            survivor = next(w for w in workers if w is not victim).pid
            wait_for(lambda s=survivor, m=mailbox: run_of(m) == s,  # type: ignore[misc]
                     POLL + 10, f"the standby to take {mailbox} over")
            takeovers.append(time.monotonic() - killed_at)
            if whole_run:
                workers.remove(victim)
                workers.append(start())  # the restarted one is the new standby
        wait_for(lambda: all(not s.message_files() for s in boxes.values()), 120,
                 "both mailboxes to be emptied")
        with open_store(pg_url) as store:
            wait_for(lambda: not [m for m in store.pending_mail() if not m.failed], 60,
                     "the outbox to be sent")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
    print(f"{kills} kills; takeover times (kill to the standby holding the lock), seconds: "
          + ", ".join(f"{t:.2f}" for t in takeovers)
          + f"; max {max(takeovers):.2f}, median {sorted(takeovers)[len(takeovers) // 2]:.2f}")

    with open_store(pg_url) as store:
        records = list(store.iter_processed())
        tickets = store.list_tickets()
        outbox = store.all_mail()
    per_uidl = Counter((r.source.name, r.source.uidl) for r in records)
    assert len(per_uidl) == expected_lines and set(per_uidl.values()) == {1}
    own = Counter(r.message_id for r in records if r.outcome.kind is not OutcomeKind.DUPLICATE)
    assert set(own.values()) == {1}
    assert len(own) == 2 * (PER_MAILBOX - SHARED) + SHARED
    assert Counter(r.outcome.kind for r in records)[OutcomeKind.QUARANTINED] == 0
    worthy = 2 * (PER_MAILBOX - 40) + SHARED
    assert len(tickets) == worthy
    assert len({t.number for t in tickets}) == worthy
    assert all(not s.message_files() for s in boxes.values())
    received = Counter(str(message_from_bytes(m.data)["Message-ID"]).strip("<>")
                       for m in smtp_server.messages)
    queued = [m.mail.message_id.strip("<>") for m in outbox]
    assert all(m.status == "sent" for m in outbox)
    assert set(queued) <= set(received)
    twice = sum(n - 1 for n in received.values())
    print(f"{len(queued)} mails queued and sent; {twice} sent twice (a kill between the "
          "SMTP server's acceptance and its record)")
    assert twice <= kills
    assert max(takeovers) < POLL + 5
