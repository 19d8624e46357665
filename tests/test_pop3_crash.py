"""Crash tests: ``kill -9`` the runner at random points and check exactly-once delivery.

A few hundred messages sit in a real Dovecot. ``python -m commit_email run --once`` is
started as a subprocess and killed with SIGKILL after a random (seeded) delay, over and
over, then allowed to finish. Whatever the kill interrupted (a RETR, a store commit,
the time between a commit and the DELE batch, the batch itself, the gap before QUIT), at the end:

- every UIDL that was in the mailbox has exactly one line in the processed log,
- every distinct message has exactly one outcome of its own (re-sent copies are
  ``duplicate``),
- the number of tickets equals the number of distinct ticket-worthy messages,
- the mailbox is empty.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from commit_email.config import load_config
from commit_email.model import OutcomeKind
from commit_email.pop3 import Pop3Mailbox
from commit_email.store import open_store
from commit_email.testing import build_message
from tests.dovecot_fixtures import DovecotServer
from tests.oauth_fixtures import OAuthTestServer
from tests.shared import DIRECTORY

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEED = 20261128
KILLS = 15
FINAL_KILLS = 2  # the last kill points wait until every outcome is recorded
TICKET_WORTHY = 400
STRANGERS = 150
RESENT = 50  # copies of ticket-worthy mails delivered a second time under new UIDLs


def write_config(tmp_path: Path, dovecot: DovecotServer, store_url: str = "",
                 login: str = "") -> Path:
    """The run's config; ``login`` replaces the password line (and may add sections)."""
    store_url = store_url or f"sqlite:///{tmp_path / 'commit.db'}"
    login = login or f'password = "{dovecot.password}"'
    config = tmp_path / "commit-email.toml"
    config.write_text(f"""
[connector]
public_address = "support@helpdesk.example"
internal_address = "helpdesk@helpdesk.example"
state_dir = "{tmp_path / 'state'}"

[store]
url = "{store_url}"

[pop3]
host = "{dovecot.host}"
port = {dovecot.pop3_port}
security = "plain"
user = "{dovecot.user}"
timeout = 10
reconnect_delay = 0.05
{login}
""")
    return config


def processed_count(store: Path | str) -> int:
    """Lines in the processed log, read without creating or locking anything (a SQLite
    file, or a store URL)."""
    if isinstance(store, str) and store.startswith("postgresql://"):
        return _pg_count(store)
    db = Path(str(store).removeprefix("sqlite:///"))
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM processed").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet


_pg_readers: dict[str, Any] = {}


def _pg_count(url: str) -> int:
    import psycopg

    conn = _pg_readers.get(url)
    if conn is None or conn.closed:
        conn = _pg_readers[url] = psycopg.connect(url, autocommit=True)
    try:
        return int(conn.execute("SELECT count(*) FROM processed").fetchone()[0])
    except psycopg.errors.UndefinedTable:
        return 0  # not created yet


def wait_for_progress(db: Path | str, target: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the processed log has ``target`` lines (or the run ended)."""
    deadline = time.monotonic() + 20
    while processed_count(db) < target and proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("the runner made no progress in 20 s")
        time.sleep(0.005)


def corpus() -> tuple[list[bytes], set[str]]:
    """The mailbox content and the Message-IDs that must each open one ticket."""
    rng = random.Random(SEED)
    worthy = [
        build_message(sender=f"user{n}@acme.example", message_id=f"t{n}@acme.example",
                      subject=f"Issue {n}", body="Details.\n" * rng.randint(1, 400))
        for n in range(TICKET_WORTHY)
    ]
    strangers = [
        build_message(sender=f"x{n}@nowhere.example", message_id=f"s{n}@nowhere.example",
                      subject=f"Newsletter {n}")
        for n in range(STRANGERS)
    ]
    messages = worthy + strangers + rng.sample(worthy, RESENT)
    rng.shuffle(messages)
    return messages, {f"t{n}@acme.example" for n in range(TICKET_WORTHY)}


def test_kill_minus_nine_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, dovecot: DovecotServer, cli_env: dict[str, str], store_url: str
) -> None:
    """On each store: SQLite in a file, PostgreSQL on the private server."""
    kill_and_check(dovecot, write_config(tmp_path, dovecot, store_url), store_url, cli_env)


def test_kill_minus_nine_with_an_oauth_login(
    tmp_path: Path, dovecot_oauth: DovecotServer, oauth_server: OAuthTestServer,
    cli_env: dict[str, str]
) -> None:
    """The same with an XOAUTH2 login (Dovecot's oauth2 passdb asking the tests' OAuth
    server): every restarted run gets its token and logs in again, whatever the kill
    interrupted, the token request included."""
    client = oauth_server.add_client(dovecot_oauth.user)
    login = f'''auth = "xoauth2"
oauth = "support"

[oauth.support]
provider = "generic"
grant = "client_credentials"
client_id = "{client.client_id}"
client_secret = "{client.client_secret}"
token_url = "{oauth_server.token_url}"
'''
    store_url = f"sqlite:///{tmp_path / 'commit.db'}"
    config_path = write_config(tmp_path, dovecot_oauth, store_url, login=login)
    kill_and_check(dovecot_oauth, config_path, store_url, cli_env)
    assert oauth_server.grants["client_credentials"] >= KILLS // 2  # one per run that got far
    assert "method=XOAUTH2" in dovecot_oauth.log
    assert "auth failed" not in dovecot_oauth.log


def kill_and_check(dovecot: DovecotServer, config_path: Path, store_url: str,
                   cli_env: dict[str, str]) -> None:
    messages, worthy_ids = corpus()
    dovecot.deliver_many(messages)
    with open_store(store_url) as store:
        store.import_accounts(DIRECTORY)
    config = load_config(config_path)
    with Pop3Mailbox.from_config(config) as box:
        uidls = set(box.uidls())
    assert len(uidls) == len(messages)

    command = [sys.executable, "-m", "commit_email", "run", "--config", str(config_path),
               "--once"]
    rng = random.Random(SEED)
    db = store_url
    mid_run = 0
    for kill in range(KILLS):
        before = processed_count(db)
        proc = subprocess.Popen(command, env=cli_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if kill >= KILLS - FINAL_KILLS:
            # Every outcome is recorded: the kill lands in the DELE batch, around QUIT or
            # just after the run ended.
            wait_for_progress(db, len(messages), proc)
            time.sleep(rng.uniform(0.0, 0.03))
        elif rng.random() < 0.2:
            time.sleep(rng.uniform(0.05, 0.5))  # during start-up, login or UIDL listing
        else:
            # A random point in the processing: a random number of new outcomes (the
            # session's DELE batch comes only after 500 fetched messages, so a kill late
            # in a long run lands in or after that), then a few milliseconds more.
            wait_for_progress(db, before + rng.randint(1, 60), proc)
            time.sleep(rng.uniform(0.0, 0.005))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if processed_count(db) > before and dovecot.message_files():
            mid_run += 1  # it had recorded outcomes and not finished its pass
    final = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert final.returncode == 0, final.stderr
    print(f"{KILLS} kill points, {mid_run} of them in the middle of processing")
    assert mid_run >= KILLS // 2, "most kills must land while messages are being processed"

    assert dovecot.message_files() == []
    with open_store(store_url) as store:
        records = list(store.iter_processed())
        tickets = store.list_tickets()
    per_uidl = Counter(r.source.uidl for r in records)
    assert set(per_uidl) == uidls
    assert set(per_uidl.values()) == {1}
    own = Counter(r.message_id for r in records if r.outcome.kind is not OutcomeKind.DUPLICATE)
    assert set(own.values()) == {1}
    assert len(own) == TICKET_WORTHY + STRANGERS
    assert Counter(r.outcome.kind for r in records)[OutcomeKind.DUPLICATE] == RESENT
    assert len(tickets) == len(worthy_ids)
    assert {r.message_id for r in records if r.outcome.ticket} >= worthy_ids


def test_sigterm_stops_after_the_message_in_hand(
    tmp_path: Path, dovecot: DovecotServer, cli_env: dict[str, str]
) -> None:
    messages, _ = corpus()
    dovecot.deliver_many(messages[:150])
    config_path = write_config(tmp_path, dovecot)
    proc = subprocess.Popen(
        [sys.executable, "-m", "commit_email", "run", "--config", str(config_path)],
        env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while processed_count(tmp_path / "commit.db") < 20 and time.monotonic() < deadline:
        time.sleep(0.02)  # wait until it is in the middle of the mailbox
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping after the message in hand" in stderr
    with open_store(f"sqlite:///{tmp_path / 'commit.db'}") as store:
        processed = len(list(store.iter_processed()))
    # Everything processed was deleted at QUIT, everything else is still there.
    assert processed + len(dovecot.message_files()) == 150
    assert 20 <= processed < 150, "the stop must come mid-mailbox for this test to mean much"
    assert "left for the next poll" in stderr
