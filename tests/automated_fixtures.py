"""Accounts, configuration and plugin loading for the automated-email stage tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from commit_email.model import Account
from commit_email.pipeline import Connector
from commit_email.store import SQLiteStore
from commit_email.testing import RecordingMailer, make_config, make_connector

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"

ACCOUNTS = [
    Account(rec_id="CRD-ACME", file_as="Acme Corp", account_number="ACME-001",
            account_id="acme", email1="it@acme.example"),
    Account(rec_id="CRD-ACME2", file_as="Acme Corp - Branch", account_number="ACME-002",
            account_id="acme-branch"),
    Account(rec_id="CRD-GLOBEX", file_as="Globex", account_number="GLX-1", account_id="globex"),
    Account(rec_id="CRD-INITECH", file_as="Initech", account_number="INI-1",
            account_id="initech"),
    Account(rec_id="CRD-MSP", file_as="Our MSP (internal)", account_number="MSP-0",
            account_id="msp"),
]

#: how an MSP maps its monitoring to customers: host names carry the customer
ACCOUNT_RULES: list[dict[str, str]] = [
    {"search_for": "account_id", "located_in": "host", "regex": r"^([a-z]+)-"},
    {"search_for": "account_id", "located_in": "host", "regex": r"\.([a-z]+)\.example$"},
    {"search_for": "account_number", "located_in": "subject", "after": "Client: ",
     "before": ")"},
    {"search_for": "account_number", "located_in": "subject", "after": "[Site: ",
     "before": "]"},
]

DATTO_RULE: dict[str, Any] = {
    "senders": ["noreply@rmm-datto.example"],
    "subject_contains": "Alert ",
    "key_regex": r"Alert (?:raised|resolved): (.+?) \[",
    "recovery_contains": "Alert resolved",
}


def load_rmm_plugin() -> ModuleType:
    """The test plugin package's module, imported from its file (no install needed here)."""
    spec = importlib.util.spec_from_file_location("rmm_alert_parser",
                                                  PLUGIN_PKG / "rmm_alert_parser.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def automated_connector(
    *, plugins: tuple[object, ...] = (), mailer: RecordingMailer | None = None,
    store: SQLiteStore | None = None, **automated: Any,
) -> Connector:
    settings: dict[str, Any] = {"account": ACCOUNT_RULES, "detection": [DATTO_RULE]}
    settings.update(automated)
    config = make_config(automated=settings,
                         email_to_ticket={"auto_response": False})
    return make_connector(config, accounts=ACCOUNTS, plugins=list(plugins), mailer=mailer,
                          store=store)
