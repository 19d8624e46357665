"""The harness: commit-email's opt-in pytest fixtures, shaped for this plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
from commit_email import Account, Config
from commit_email.testing import make_config

from commit_email_acme_rmm import plugin

pytest_plugins = ["commit_email.pytest_plugin"]

ACME = Account(rec_id="CRDACME", file_as="Acme Corp", account_number="ACME-001")


@pytest.fixture
def commit_email_plugins() -> list[object]:
    return [plugin]


@pytest.fixture
def commit_email_accounts() -> list[Account]:
    return [ACME]


@pytest.fixture
def commit_email_config(tmp_path: Path) -> Config:
    return make_config(tmp_path, xml_api={"enabled": True, "password": "s3cret"})
