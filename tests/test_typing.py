"""The public API type-checks from a user's side, and the typed examples in tests/typing run.

tests/typing/ holds integrator code (a plain-SQL directory and sink over a PostgreSQL-shaped
schema, wired into a Connector) and plugin code, written as users write them. They must pass
``mypy --strict`` against the installed-looking package, and they must work: the integrator
adapter is driven here against SQLite with the same schema.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from commit_email import AccountDirectory, OutcomeKind, TicketSink
from commit_email.model import HistoryEntry, TicketDraft
from commit_email.testing import build_message
from tests.shared import ACME

ROOT = Path(__file__).resolve().parents[1]
TYPING = ROOT / "tests" / "typing"
EXAMPLE_PLUGIN = ROOT / "examples" / "plugin-example" / "src"
# The examples are a user's own project, not modules of this one: they import one another as
# top-level modules (``from integrator_sql import SqlCommit``) and mypy checks them so, with
# MYPYPATH=tests/typing. Running them here needs that folder on the path the same way.
sys.path.insert(0, str(TYPING))

import integrator_sql  # noqa: E402
import integrator_wiring  # noqa: E402
import plugin_code  # noqa: E402


def test_the_examples_and_the_example_plugin_pass_mypy_strict() -> None:
    files = sorted(str(p) for p in TYPING.glob("*.py"))
    plugin = sorted(str(p) for p in EXAMPLE_PLUGIN.glob("commit_email_acme_rmm/*.py"))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file",
         str(ROOT / "pyproject.toml"), *files, *plugin],
        cwd=ROOT, env={"MYPYPATH": f"{TYPING}:{EXAMPLE_PLUGIN}", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"no issues found in {len(files) + len(plugin)} source files" in done.stdout


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "commit.db", isolation_level=None)
    connection.executescript(integrator_wiring.sqlite_schema())
    yield connection
    connection.close()


@pytest.fixture
def commit(db: sqlite3.Connection) -> integrator_sql.SqlCommit:
    adapter = integrator_sql.SqlCommit(db, paramstyle=sqlite3.paramstyle, errors=sqlite3.Error)
    with adapter.transaction():
        adapter.add_account(ACME)
    return adapter


def test_the_sql_adapter_is_a_directory_and_a_sink(commit: integrator_sql.SqlCommit) -> None:
    assert isinstance(commit, AccountDirectory) and isinstance(commit, TicketSink)
    assert commit.find_by_domain("acme.example") == [ACME]
    assert commit.find_by_field("account_number", "acme-001") == [ACME]
    with pytest.raises(Exception, match="cannot look Accounts up by 'email1; DROP'"):
        commit.find_by_field("email1; DROP", "x")


def test_a_nested_transaction_that_fails_undoes_only_itself(
    commit: integrator_sql.SqlCommit,
) -> None:
    with commit.transaction():
        outer = commit.add_record("ASSET", {"FLDASTNAME": "kept"})
        with pytest.raises(KeyError), commit.transaction():
            commit.add_record("ASSET", {"FLDASTNAME": "undone"})
            commit.update_record("ASSET", "ASTNOPE", {})
    assert commit.get_record("ASSET", outer) == {"FLDASTNAME": "kept"}
    count = commit._run("SELECT count(*) FROM records").fetchone()[0]
    assert count == 1


def test_ticket_creation_is_idempotent_on_the_source_key(
    commit: integrator_sql.SqlCommit,
) -> None:
    draft = TicketDraft(account=ACME.rec_id, description="Printer", source_key="m:abc")
    with commit.transaction():
        first = commit.create_ticket(draft)
        again = commit.create_ticket(draft)
        other = commit.create_ticket(TicketDraft(account=ACME.rec_id, description="VPN"))
    assert again == first and (first.number, other.number) == ("1", "2")


def test_a_connector_over_the_sql_adapter_files_mail_in_the_integrators_tables(
    db: sqlite3.Connection, commit: integrator_sql.SqlCommit, tmp_path: Path,
) -> None:
    counter = integrator_wiring.OutcomeCounter()
    connector = integrator_wiring.build_connector(db, tmp_path / "state", counter)
    raw = build_message(sender="bob@acme.example", subject="VPN down",
                        attachments=[("log.txt", "text/plain", b"timeout")])
    inspected = connector.inspect(raw)
    assert inspected.outcome.kind is OutcomeKind.TICKET_CREATED
    assert commit.list_tickets() == []  # inspect rolled the sink back too

    outcome = connector.process(raw)
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.account == ACME.rec_id
    ticket = commit.get_ticket(number=outcome.ticket)
    assert ticket is not None and ticket.description == "VPN down"
    assert [d.filename for d in commit.documents(ticket.rec_id)][1:] == ["log.txt"]
    assert commit.history(ticket.rec_id)[0].author == "bob@acme.example"

    assert connector.process(raw).kind is OutcomeKind.DUPLICATE
    assert counter.counts == {OutcomeKind.TICKET_CREATED: 1, OutcomeKind.DUPLICATE: 1}


def test_a_store_failure_inside_the_adapter_quarantines_and_rolls_back(
    db: sqlite3.Connection, commit: integrator_sql.SqlCommit, tmp_path: Path,
) -> None:
    counter = integrator_wiring.OutcomeCounter()
    connector = integrator_wiring.build_connector(db, tmp_path / "state", counter)
    db.execute("DROP TABLE ticket_documents")  # the ticket row is written, then this fails
    outcome = connector.process(build_message(sender="bob@acme.example"))
    assert outcome.kind is OutcomeKind.QUARANTINED and "StoreError" in outcome.detail
    assert commit.list_tickets() == []


def test_history_round_trips_through_the_adapter(commit: integrator_sql.SqlCommit) -> None:
    with commit.transaction():
        ticket = commit.create_ticket(TicketDraft(account=ACME.rec_id, description="x"))
        entry = HistoryEntry(kind="note", text="called back", author="tina@msp.example")
        commit.add_history(ticket.rec_id, entry)
        commit.update_ticket(ticket.rec_id, {"status": "900", "FLDTKTCUSTOM": "y",
                                             "closed": True})
    assert commit.history(ticket.rec_id) == [entry]
    updated = commit.get_ticket(rec_id=ticket.rec_id)
    assert updated is not None and updated.closed and updated.status == "900"
    assert updated.extra == {"FLDTKTCUSTOM": "y"}


def test_the_typed_plugin_example_runs() -> None:
    calls = plugin_code.check()
    assert calls.last("commit_email_match_account").implementations[0] == "PlusAddressMatcher"
