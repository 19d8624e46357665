"""Shared fixtures. Feature fixtures live in their own modules, listed in pytest_plugins; the
shared test Accounts and constants in ``tests/shared.py``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from commit_email.model import Account
from commit_email.pipeline import Connector
from commit_email.store import SQLiteStore, Store, open_store
from commit_email.testing import RecordingMailer, make_config, make_connector
from tests.shared import DIRECTORY, ROOT

pytest_plugins = ["tests.dovecot_fixtures", "tests.smtp_fixtures", "tests.pg_fixtures",
                  "tests.oauth_fixtures"]


@pytest.fixture
def mailer() -> RecordingMailer:
    return RecordingMailer()


@pytest.fixture
def connector_factory(
    tmp_path: Path, mailer: RecordingMailer
) -> Callable[..., Connector]:
    """Build a connector on an in-memory store with the test directory loaded."""

    def build(
        *,
        accounts: Iterable[Account] = DIRECTORY,
        plugins: Iterable[object] = (),
        store: SQLiteStore | None = None,
        **sections: Any,
    ) -> Connector:
        config = make_config(state_dir=tmp_path / "state", **sections)
        return make_connector(config, plugins=list(plugins), accounts=accounts, mailer=mailer,
                              store=store)

    return build


@pytest.fixture
def connector(connector_factory: Callable[..., Connector]) -> Connector:
    return connector_factory()


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running ``python -m commit_email`` from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# The store-level tests run against both built-in stores: SQLite in a file of the test's
# temp dir, PostgreSQL in a schema of its own on the session's private server.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'commit.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def any_store(store_url: str) -> Iterator[Store]:
    """An empty store of each kind (the test runs once per kind)."""
    with open_store(store_url) as store:
        yield store
