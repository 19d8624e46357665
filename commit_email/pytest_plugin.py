"""pytest fixtures for testing commit-email plugins and integrations. Opt in, per project::

    # conftest.py
    pytest_plugins = ["commit_email.pytest_plugin"]

It is deliberately not registered as an auto-loaded pytest plugin: installing commit-email
must not add fixtures to every project's tests. Every fixture is prefixed ``commit_email_``
(so none shadows yours) and none is autouse.

Override ``commit_email_plugins`` and ``commit_email_accounts`` to shape the connector::

    @pytest.fixture
    def commit_email_plugins():
        return [MyPlugin()]

    def test_it(commit_email_connector):
        outcome = commit_email_connector.process(build_message(...))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .config import Config
from .model import Account
from .pipeline import Connector
from .plugins import PluginHost
from .store import SQLiteStore
from .testing import (
    HookRecorder,
    RecordingMailer,
    make_config,
    make_connector,
    make_host,
    memory_store,
    record_hooks,
)

__all__ = [
    "commit_email_accounts",
    "commit_email_config",
    "commit_email_connector",
    "commit_email_hook_calls",
    "commit_email_host",
    "commit_email_mailer",
    "commit_email_plugins",
    "commit_email_store",
]


@pytest.fixture
def commit_email_plugins() -> Sequence[object]:
    """The plugin objects to register on the host: none. Override it in your conftest."""
    return []


@pytest.fixture
def commit_email_accounts() -> Sequence[Account]:
    """The Accounts loaded into the store: none. Override it in your conftest."""
    return []


@pytest.fixture
def commit_email_config(tmp_path: Path) -> Config:
    """A test configuration: in-memory store, example addresses, state in ``tmp_path``."""
    return make_config(state_dir=tmp_path / "commit-email-state")


@pytest.fixture
def commit_email_store(commit_email_accounts: Sequence[Account]) -> Iterator[SQLiteStore]:
    """A private in-memory store (directory, sink and state) holding the Accounts."""
    store = memory_store()
    store.import_accounts(commit_email_accounts)
    yield store
    store.close()


@pytest.fixture
def commit_email_mailer() -> RecordingMailer:
    """Keeps every mail the connector sends (``.sent``, ``.of_kind("forward")``)."""
    return RecordingMailer()


@pytest.fixture
def commit_email_host(commit_email_plugins: Sequence[object]) -> PluginHost:
    """A plugin host with the built-ins and your plugins; installed plugins are not loaded."""
    return make_host(*commit_email_plugins)


@pytest.fixture
def commit_email_connector(
    commit_email_config: Config,
    commit_email_store: SQLiteStore,
    commit_email_mailer: RecordingMailer,
    commit_email_host: PluginHost,
) -> Connector:
    """A connector wired to the fixtures above: ``process(raw)`` returns the outcome."""
    return make_connector(
        commit_email_config,
        store=commit_email_store,
        mailer=commit_email_mailer,
        host=commit_email_host,
    )


@pytest.fixture
def commit_email_hook_calls(commit_email_connector: Connector) -> Iterator[HookRecorder]:
    """Every hook call the connector makes during the test (after it was built)."""
    with record_hooks(commit_email_connector) as recorder:
        yield recorder
