"""Crash tests for the refresh-token file: ``kill -9`` in the middle of refreshes.

A provider that rotates refresh tokens hands out a new one with every access token; the
old one stops working (at once, or after a grace period). The token on disk is the only
way back in without a person signing in again, so whatever moment a process dies at, the
file must hold a whole token the provider still accepts — and two processes refreshing the
same token must never race each other past a rotation.

The child processes refresh against the tests' real OAuth server (Authlib) on 127.0.0.1.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commit_email.config import parse_config
from commit_email.oauth import RefreshTokenStore, refresh_token_path
from tests.oauth_fixtures import Client, OAuthTestServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEED = 20261208
KILLS = 12

# A process that refreshes over and over, each time as a service starting afresh would (a
# new credential, so no cached access token): every round trip rotates the refresh token.
REFRESHER = """
import json, sys
from commit_email.config import parse_config
from commit_email.oauth import OAuthCredentials

config = parse_config(json.loads(sys.argv[1]))
rounds = int(sys.argv[2])
n = 0
while rounds == 0 or n < rounds:
    OAuthCredentials(config).get("test").access_token()
    n += 1
    print(n, flush=True)
"""


def config_values(tmp_path: Path, server: OAuthTestServer, client: Client) -> dict[str, object]:
    return {"connector": {"state_dir": str(tmp_path / "state")}, "store": {"url": "memory:"},
            "oauth": {"test": {"provider": "generic", "grant": "refresh_token",
                               "client_id": client.client_id,
                               "client_secret": client.client_secret,
                               "token_url": server.token_url}}}


def refresher(values: dict[str, object], env: dict[str, str], rounds: int = 0,
              ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", REFRESHER, json.dumps(values), str(rounds)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def issued(server: OAuthTestServer, client: Client) -> list[str]:
    """The refresh tokens the server issued to ``client``, oldest first."""
    with server.lock:
        tokens = [t for t in server.tokens.values() if t.client_id == client.client_id]
    return [t.refresh_token for t in sorted(tokens, key=lambda t: t.issued_at)
            if t.refresh_token]


def test_kill_minus_nine_during_refreshes_never_loses_the_refresh_token(
        tmp_path: Path, oauth_server: OAuthTestServer, cli_env: dict[str, str]) -> None:
    client = oauth_server.add_client("support")
    values = config_values(tmp_path, oauth_server, client)
    store = RefreshTokenStore(refresh_token_path(parse_config(values), "test"))
    store.save(oauth_server.issue_refresh_token(client, "support"), client_id=client.client_id)
    rng = random.Random(SEED)
    refreshed = 0
    for _ in range(KILLS):
        before = len(issued(oauth_server, client))
        proc = refresher(values, cli_env)
        # Wait for a few rotations, then kill at a random moment of the next ones: in the
        # token request, between the answer and the file's replacement, or in the write.
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 4)):
            assert proc.stdout.readline(), proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        tokens = issued(oauth_server, client)
        refreshed += len(tokens) - before
        on_disk = store.load()  # whole and readable: raises on a damaged file
        # The newest token the server issued, or the one before it when the kill came
        # after the server's answer and before the rename: never anything older.
        assert on_disk in tokens[-2:], "the file fell behind the provider's rotation"
        assert oauth_server.valid_refresh_token(on_disk)
    assert refreshed >= KILLS * 2, "the kills must land among rotations"

    # What a restart finds is enough to go on: a refresh from the file rotates again,
    # after which the provider may forget every older token and the file still works.
    proc = refresher(values, cli_env, rounds=1)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    oauth_server.grace = False
    assert store.load() == issued(oauth_server, client)[-1]
    assert oauth_server.valid_refresh_token(store.load() or "")
    leftovers = [p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "a write after the crashes clears the temp files they left"


def test_two_processes_refreshing_one_strictly_rotating_token_never_lock_each_other_out(
        tmp_path: Path, oauth_server: OAuthTestServer, cli_env: dict[str, str]) -> None:
    """Without a grace period a refresh token works once: two processes that both read
    it before either saved its successor would leave one of them refused. The lock beside
    the token makes every refresh read the token the previous one saved."""
    oauth_server.grace = False
    client = oauth_server.add_client("support")
    values = config_values(tmp_path, oauth_server, client)
    store = RefreshTokenStore(refresh_token_path(parse_config(values), "test"))
    store.save(oauth_server.issue_refresh_token(client, "support"), client_id=client.client_id)
    rounds = 15
    procs = [refresher(values, cli_env, rounds=rounds) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.split()[-1] == str(rounds)
    tokens = issued(oauth_server, client)
    assert len(tokens) == 1 + 2 * rounds  # every refresh rotated once, none was refused
    assert store.load() == tokens[-1]
    assert oauth_server.valid_refresh_token(tokens[-1])
