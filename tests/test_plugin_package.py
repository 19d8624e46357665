"""An installed plugin distribution adds an alert parser with no code change.

``tests/plugin_pkg`` is a real distribution (its own pyproject.toml, entry point in group
``commit_email``). It is pip-installed into a throw-away virtualenv (``tests/venvs.py``:
offline, the running suite's dependencies visible after the venv's own), and
``python -m commit_email process`` run in that venv picks the parser up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.venvs import installed_venv

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PKG = ROOT / "tests" / "plugin_pkg"
ALERTS = ROOT / "tests" / "data" / "alerts" / "rmm-nable"

CONFIG = """\
[connector]
public_address = "support@msp.example"
internal_address = "helpdesk@msp.example"
state_dir = "state"

[store]
url = "sqlite:///commit.db"

[email_to_ticket]
auto_response = false

[[automated.account]]
search_for = "account_number"
after = "Client: "
before = ")"
"""

ACCOUNTS_CSV = """\
rec_id,file_as,email1,email2,account_number,account_id,field1,field2,field3,field4,kind,parent,active
CRD-ACME,Acme Corp,it@acme.example,,ACME-001,acme,,,,,account,,true
"""


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed_venv(tmp_path_factory.mktemp("plugin-venv") / "venv", PLUGIN_PKG)


def run_cli(python: Path | str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(python), "-m", "commit_email", *args], cwd=workdir, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )


def process_sequence(python: Path | str, workdir: Path) -> list[dict[str, str]]:
    workdir.mkdir()
    (workdir / "commit-email.toml").write_text(CONFIG)
    (workdir / "accounts.csv").write_text(ACCOUNTS_CSV)
    done = run_cli(python, workdir, "accounts", "--config", "commit-email.toml", "import",
                   "accounts.csv")
    assert done.returncode == 0, done.stderr
    mails = sorted(str(p) for p in ALERTS.glob("disk-*.eml"))
    done = run_cli(python, workdir, "process", "--config", "commit-email.toml", "--json", *mails)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_installed_plugin_parser_correlates_the_rmm_alerts(plugin_venv: Path,
                                                           tmp_path: Path) -> None:
    results = process_sequence(plugin_venv, tmp_path / "with-plugin")
    assert [r["outcome"] for r in results] == [
        "alert_ticket_created", "alert_appended", "alert_resolved", "alert_ticket_created"
    ]
    assert {r["account"] for r in results} == {"CRD-ACME"}
    assert results[0]["ticket"] == results[1]["ticket"] == results[2]["ticket"]
    assert results[3]["ticket"] != results[0]["ticket"]


def test_without_the_plugin_the_same_mails_are_not_alerts(tmp_path: Path) -> None:
    results = process_sequence(sys.executable, tmp_path / "without-plugin")
    assert {r["outcome"] for r in results} == {"forwarded"}
