"""Crash test over IMAP: ``kill -9`` the runner at random points, check exactly-once.

As the POP3 one (``test_pop3_crash.py``, whose corpus and helpers this reuses): a few
hundred messages in a real Dovecot INBOX, ``python -m commit_email run --once`` killed with
SIGKILL after seeded random delays, over and over, then allowed to finish. Passes of 40
messages make the kills land before, during and after the MOVEs too. At the end:

- every ``UIDVALIDITY:UID`` that was in the INBOX has exactly one line in the processed log,
- every distinct message has exactly one outcome of its own (re-sent copies: ``duplicate``),
- the number of tickets equals the number of distinct ticket-worthy messages,
- the INBOX is empty and ``Processed`` holds every delivered message exactly once.
"""

from __future__ import annotations

import email
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from commit_email.config import load_config
from commit_email.imap import ImapMailbox
from commit_email.model import OutcomeKind
from commit_email.store import open_store
from tests.dovecot_fixtures import DovecotServer
from tests.shared import DIRECTORY
from tests.test_pop3_crash import (
    RESENT,
    SEED,
    STRANGERS,
    TICKET_WORTHY,
    corpus,
    processed_count,
    wait_for_progress,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]

KILLS = 16
FINAL_KILLS = 2  # the last kill points wait until every outcome is recorded


def write_config(tmp_path: Path, dovecot: DovecotServer) -> Path:
    config = tmp_path / "commit-email.toml"
    config.write_text(f"""
[connector]
public_address = "support@helpdesk.example"
internal_address = "helpdesk@helpdesk.example"
state_dir = "{tmp_path / 'state'}"

[store]
url = "sqlite:///{tmp_path / 'commit.db'}"

[imap]
host = "{dovecot.host}"
port = {dovecot.imap_port}
security = "plain"
user = "{dovecot.user}"
password = "{dovecot.password}"
timeout = 10
reconnect_delay = 0.05
messages_per_session = 40
""")
    return config


def message_ids_in(files: list[Path]) -> Counter[str]:
    return Counter(
        str(email.message_from_bytes(p.read_bytes())["Message-ID"]).strip("<>") for p in files
    )


def test_kill_minus_nine_at_random_points_loses_moves_twice_and_duplicates_nothing(
    tmp_path: Path, imap_dovecot: DovecotServer, cli_env: dict[str, str]
) -> None:
    dovecot = imap_dovecot
    messages, worthy_ids = corpus()
    dovecot.deliver_many(messages)
    delivered = message_ids_in(dovecot.message_files())
    config_path = write_config(tmp_path, dovecot)
    db = tmp_path / "commit.db"
    with open_store(f"sqlite:///{db}") as store:
        store.import_accounts(DIRECTORY)
    with ImapMailbox.from_config(load_config(config_path)) as box:
        ids = set(box.message_ids())
    assert len(ids) == len(messages)

    command = [sys.executable, "-m", "commit_email", "run", "--config", str(config_path),
               "--once"]
    rng = random.Random(SEED)
    mid_run = 0
    for kill in range(KILLS):
        before = processed_count(db)
        proc = subprocess.Popen(command, env=cli_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if kill >= KILLS - FINAL_KILLS:
            # Every outcome is recorded: the kill lands in the last MOVE or the logout.
            wait_for_progress(db, len(messages), proc)
            time.sleep(rng.uniform(0.0, 0.03))
        elif rng.random() < 0.2:
            time.sleep(rng.uniform(0.05, 0.5))  # during start-up, login, SELECT or SEARCH
        else:
            # A random point in the processing: a pass moves its 40 messages after the
            # last of them, so most kills fall between commits and their MOVE, some in it.
            wait_for_progress(db, before + rng.randint(1, 60), proc)
            time.sleep(rng.uniform(0.0, 0.005))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if processed_count(db) > before and dovecot.message_files():
            mid_run += 1
    final = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert final.returncode == 0, final.stderr
    print(f"{KILLS} kill points, {mid_run} of them in the middle of processing")
    assert mid_run >= KILLS // 2, "most kills must land while messages are being processed"

    assert dovecot.message_files() == []
    assert message_ids_in(dovecot.folder_files("Processed")) == delivered
    with open_store(f"sqlite:///{db}") as store:
        records = list(store.iter_processed())
        tickets = store.list_tickets()
    per_id = Counter(r.source.uidl for r in records)
    assert set(per_id) == ids
    assert set(per_id.values()) == {1}
    own = Counter(r.message_id for r in records if r.outcome.kind is not OutcomeKind.DUPLICATE)
    assert set(own.values()) == {1}
    assert len(own) == TICKET_WORTHY + STRANGERS
    assert Counter(r.outcome.kind for r in records)[OutcomeKind.DUPLICATE] == RESENT
    assert len(tickets) == len(worthy_ids)
    assert {r.message_id for r in records if r.outcome.ticket} >= worthy_ids
