"""The example plugin distribution, installed for real next to commit-email in a fresh venv.

Both distributions are built and pip-installed (``--no-deps --no-build-isolation --no-index``:
offline; the runtime dependencies, pytest and hatchling come from the environment running
this test, which a ``.pth`` file puts after the venv's own site-packages), and the example's
own test suite runs there from outside the source tree, so ``commit_email`` and
``commit_email_acme_rmm`` are the installed copies and the plugin is found through its
``commit_email`` entry point, as a user's would be.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from commit_email.testing import build_message
from tests.venvs import clean_env, installed_venv

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin-example"

CONFIG = """\
[connector]
public_address = "support@msp.example"
internal_address = "helpdesk@msp.example"
state_dir = "state"

[store]
url = "sqlite:///commit.db"
"""

ACCOUNTS = """\
rec_id,file_as,email1,email2,account_number,account_id,field1,field2,field3,field4,kind,parent,active
CRDACME,Acme Corp,,,ACME-001,,,,,,account,,true
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("example-venv") / "venv"
    installed_venv(venv, ROOT, EXAMPLE)
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_venv_imports_the_installed_copies(venv: Path, tmp_path: Path) -> None:
    done = run(venv, "python", "-c", "import commit_email, commit_email_acme_rmm; "
               "print(commit_email.__file__); print(commit_email_acme_rmm.__file__)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        assert str(venv) in line, f"{line} is not the installed copy"


def test_the_example_plugins_own_tests_pass_in_the_venv(venv: Path, tmp_path: Path) -> None:
    # Run from a copy of the tests only: the source tree must not be importable.
    tests = tmp_path / "tests"
    tests.mkdir()
    for source in (EXAMPLE / "tests").glob("*.py"):
        (tests / source.name).write_text(source.read_text())
    done = run(venv, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
               cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_the_installed_cli_loads_the_plugin_and_uses_all_three_hooks(
    venv: Path, tmp_path: Path
) -> None:
    (tmp_path / "commit-email.toml").write_text(CONFIG)
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    checked = run(venv, "commit-email", "check-config", "--config", "commit-email.toml",
                  cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "acme-rmm" in checked.stdout
    assert run(venv, "commit-email", "accounts", "--config", "commit-email.toml", "import",
               "accounts.csv", cwd=tmp_path).returncode == 0
    alert = build_message(
        sender="alerts@rmm.acme.example", to="support+ACME-001@msp.example",
        subject="[Acme RMM] FAILED: Disk space on C is low on ACME-DC01",
        body="Status: FAILED\nDevice: ACME-DC01\nCheck: Disk space on C\nAlert ID: 7\n",
    )
    (tmp_path / "alert.eml").write_bytes(alert)
    done = run(venv, "commit-email", "process", "--config", "commit-email.toml", "--json",
               "alert.eml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["outcome"], result["account"]) == ("alert_ticket_created", "CRDACME")
