"""Shared fixtures. Feature fixtures live in their own modules, listed in pytest_plugins."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from commit_email.model import Account, AccountKind
from commit_email.pipeline import Connector
from commit_email.store import SQLiteStore, Store, open_store
from commit_email.testing import RecordingMailer, make_config, make_connector

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/corpus.py and friends

pytest_plugins = ["tests.dovecot_fixtures", "tests.smtp_fixtures", "tests.pg_fixtures",
                  "tests.oauth_fixtures"]

ACME = Account(rec_id="CRDACME0000000000001", file_as="Acme Corporation", email1="acme.example",
               account_number="ACME-001", account_id="1001")
ACME_BOB = Account(rec_id="CRDACMEBOB0000000002", file_as="Bob Builder",
                   email1="bob@acme-hq.example", kind=AccountKind.CONTACT,
                   parent=ACME.rec_id)
GLOBEX = Account(rec_id="CRDGLOBEX00000000003", file_as="Globex Ltd",
                 email1="it@globex.example", email2="Billing@Globex.example")
INITECH = Account(rec_id="CRDINITECH0000000004", file_as="Initech", email1="shared.example")
UMBRELLA = Account(rec_id="CRDUMBRELLA000000005", file_as="Umbrella", email1="shared.example")
TINA = Account(rec_id="CRDEMPTECH0000000006", file_as="Tina Technician",
               email1="tina@msp.example", kind=AccountKind.EMPLOYEE)
OLD = Account(rec_id="CRDOLD00000000000007", file_as="Gone Ltd", email1="boss@gone.example",
              active=False)
DIRECTORY = (ACME, ACME_BOB, GLOBEX, INITECH, UMBRELLA, TINA, OLD)


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
