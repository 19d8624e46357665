"""Integrator code: a custom directory and sink (integrator_sql.SqlCommit) passed to Connector.

Type-checked with ``mypy --strict`` as a user would (tests/test_typing.py) and run against
SQLite with the PostgreSQL-shaped schema.sql.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from integrator_sql import SqlCommit

from commit_email import (
    AccountDirectory,
    Connector,
    Message,
    Outcome,
    OutcomeKind,
    TicketSink,
    hookimpl,
    open_store,
    parse_config,
)


class OutcomeCounter:
    """Metrics: count outcomes by word (what a Prometheus counter would do)."""

    def __init__(self) -> None:
        self.counts: dict[OutcomeKind, int] = {}

    @hookimpl
    def commit_email_message_processed(self, message: Message | None, outcome: Outcome) -> None:
        self.counts[outcome.kind] = self.counts.get(outcome.kind, 0) + 1


def sqlite_schema() -> str:
    """schema.sql, with PostgreSQL's auto-increment spelled the SQLite way."""
    ddl = (Path(__file__).with_name("schema.sql")).read_text()
    return ddl.replace("bigserial PRIMARY KEY", "INTEGER PRIMARY KEY")


def build_connector(db: sqlite3.Connection, state_dir: Path, counter: OutcomeCounter) -> Connector:
    commit = SqlCommit(db, paramstyle=sqlite3.paramstyle, errors=sqlite3.Error)
    directory: AccountDirectory = commit  # structural: mypy checks every method's signature
    sink: TicketSink = commit
    config = parse_config({
        "connector": {"public_address": "support@msp.example",
                      "internal_address": "helpdesk@msp.example",
                      "state_dir": str(state_dir)},
    })
    state = open_store(f"sqlite:///{state_dir / 'connector-state.db'}")
    from commit_email.testing import make_host  # autoloading off: only our plugin

    return Connector(config, directory=directory, sink=sink, state=state,
                     host=make_host(counter))
