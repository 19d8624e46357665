"""The embedded store: SQLite, implementing every Protocol in ``protocols``.

It is the default for new users (``sqlite:///./commit.db``), the in-memory store of tests
and harnesses (``memory:`` is SQLite's ``:memory:``), and the reference an integrator reads
before implementing the Protocols over a real Commit database.

Durability: WAL journal with ``synchronous=NORMAL``: a committed transaction survives the
process being killed at any instruction (the crash model of ``commit-email run``); after
an operating-system crash or power loss the last transactions may be lost, and POP3
re-delivery plus the processed log's digests then turn them into ``duplicate`` or redo
them. Set ``?synchronous=FULL`` on the URL to fsync every commit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, Union
from urllib.parse import parse_qs

import attrs

from .errors import ConfigError, StoreError
from .model import (
    Account,
    AccountKind,
    Document,
    HistoryEntry,
    Outcome,
    OutcomeKind,
    OutgoingMail,
    SourceRef,
    Ticket,
    TicketDraft,
    utcnow,
)
from .storage import (
    ACCOUNT_COLUMNS,
    BOOL_COLUMNS,
    COPY_TABLES,
    JSON_COLUMNS,
    LEGACY_GIVEN_UP_PREFIX,
    SEARCHABLE,
    TICKET_COLUMNS,
    TIME_COLUMNS,
    OutboxEntry,
    ProcessedEntry,
    account_keys,
    apply_changes,
    new_rec_id,
)

if TYPE_CHECKING:
    from .pgstore import PostgresStore

__all__ = [
    "OutboxEntry", "ProcessedEntry", "SQLiteStore", "Store", "account_keys", "new_rec_id",
    "open_store",
]

#: The schema this code writes. ``_SCHEMA`` creates it in an empty database; a database
#: of an older version is brought up to it by ``_MIGRATIONS``, one version at a time, when
#: it is opened. A schema change is a new version: the new table or column goes into
#: ``_SCHEMA`` (for new stores) and into a migration (for existing ones); tests check that
#: both give the same tables, columns and indexes.
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    rec_id TEXT PRIMARY KEY, file_as TEXT NOT NULL, email1 TEXT NOT NULL, email2 TEXT NOT NULL,
    account_number TEXT NOT NULL, account_id TEXT NOT NULL,
    field1 TEXT NOT NULL, field2 TEXT NOT NULL, field3 TEXT NOT NULL, field4 TEXT NOT NULL,
    kind TEXT NOT NULL, parent TEXT NOT NULL, active INTEGER NOT NULL, extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_file_as ON accounts (file_as COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS accounts_number ON accounts (account_number COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS accounts_id ON accounts (account_id COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS account_keys (
    type TEXT NOT NULL, key TEXT NOT NULL, rec_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS account_keys_lookup ON account_keys (type, key);
CREATE INDEX IF NOT EXISTS account_keys_rec ON account_keys (rec_id);
CREATE TABLE IF NOT EXISTS tickets (
    rec_id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
    contact TEXT NOT NULL, description TEXT NOT NULL, status TEXT NOT NULL,
    priority TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, manager TEXT NOT NULL,
    alert_key TEXT NOT NULL, closed INTEGER NOT NULL, created TEXT NOT NULL,
    updated TEXT NOT NULL, extra TEXT NOT NULL, source_key TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tickets_source_key ON tickets (source_key)
    WHERE source_key != '';
CREATE INDEX IF NOT EXISTS tickets_alert ON tickets (alert_key, closed) WHERE alert_key != '';
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, ticket TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    text TEXT NOT NULL, author TEXT NOT NULL, message_id TEXT NOT NULL, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_ticket ON history (ticket);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, ticket TEXT NOT NULL, filename TEXT NOT NULL,
    content_type TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_ticket ON documents (ticket);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, rec_id TEXT NOT NULL, fields TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (kind, rec_id)
);
CREATE TABLE IF NOT EXISTS processed (
    digest TEXT PRIMARY KEY, source_kind TEXT NOT NULL, source_name TEXT NOT NULL,
    uidl TEXT NOT NULL, message_id TEXT NOT NULL, outcome TEXT NOT NULL, ticket TEXT,
    account TEXT, detail TEXT NOT NULL, stage TEXT NOT NULL, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS processed_uidl ON processed (source_name, uidl) WHERE uidl != '';
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, sender TEXT NOT NULL, recipients TEXT NOT NULL,
    raw BLOB NOT NULL, message_id TEXT NOT NULL, ticket TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL, sent TEXT, last_attempt TEXT,
    -- a sender's claim: who is sending the row, and until when the claim holds
    claimed_by TEXT, claimed_until TEXT,
    -- when the mail was given up (refused for good, or out of attempts): NULL while it is
    -- not; it is then sent no more until `outbox retry` puts it back
    given_up TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE sent IS NULL;
-- what a flush may still send: given-up mail piles up (bad customer addresses) and must
-- not be read again after every message; the query repeats this WHERE word for word
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (id)
    WHERE sent IS NULL AND given_up IS NULL;
-- the renewal of a sender's claims (claim_mail) finds its rows without reading the queue
CREATE INDEX IF NOT EXISTS outbox_claimed ON outbox (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE TABLE IF NOT EXISTS sent_ids (
    message_id TEXT PRIMARY KEY, ticket TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS filed_ids (
    message_id TEXT PRIMARY KEY, ticket TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS auto_responses (sender TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS auto_responses_sender ON auto_responses (sender, at);
CREATE TABLE IF NOT EXISTS ticket_recipients (
    ticket TEXT NOT NULL, address TEXT NOT NULL, PRIMARY KEY (ticket, address)
);
CREATE TABLE IF NOT EXISTS failed_logins (sender TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS failed_logins_sender ON failed_logins (sender, at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recoveries (
    key TEXT PRIMARY KEY, event_time TEXT NOT NULL, remembered TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recoveries_age ON recoveries (remembered);
"""

def _from_unversioned(db: sqlite3.Connection) -> None:
    """Version 1 (or no version): the stores of 0.1 development builds, which were brought
    up to date by re-running their ``CREATE … IF NOT EXISTS`` schema on every open. Whatever
    such a file lacks is added here: the tables and indexes of the schema that are missing
    (``filed_ids``, ``recoveries``, ``outbox_due`` came late), ``outbox.last_attempt``, and
    ``filed_ids`` filled from the history, so replies to mail filed before it thread too."""
    had_filed_ids = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'filed_ids'"
    ).fetchone() is not None
    # the columns the schema's outbox indexes name, before the schema creates them
    _add_outbox_columns(db, ("last_attempt", "claimed_by", "claimed_until", "given_up"))
    for statement in _statements(_SCHEMA):
        db.execute(statement)  # every one is CREATE … IF NOT EXISTS
    if not had_filed_ids:
        db.execute(
            "INSERT OR IGNORE INTO filed_ids (message_id, ticket, created)"
            " SELECT message_id, ticket, created FROM history WHERE message_id != ''"
            " ORDER BY id"
        )


def _add_outbox_columns(db: sqlite3.Connection, columns: Sequence[str]) -> None:
    """Add those of these TEXT columns the outbox lacks (none when there is no outbox)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    for column in columns:
        if have and column not in have:
            db.execute(f"ALTER TABLE outbox ADD COLUMN {column} TEXT")


def _outbox_claims(db: sqlite3.Connection) -> None:
    """Version 3: the outbox claim (``claimed_by``, ``claimed_until`` and their index), so
    that senders beside each other never send one row twice."""
    _add_outbox_columns(db, ("claimed_by", "claimed_until"))
    db.execute("CREATE INDEX IF NOT EXISTS outbox_claimed ON outbox (claimed_by)"
               " WHERE claimed_by IS NOT NULL")


def _outbox_given_up(db: sqlite3.Connection) -> None:
    """Version 4: ``outbox.given_up``, when a mail was given up, instead of a
    ``"permanent: "`` at the start of its ``last_error``. Such rows get the time of their
    last attempt (else their creation) and lose the prefix; ``outbox_due`` is rebuilt on
    the column."""
    _add_outbox_columns(db, ("given_up",))
    db.execute(
        "UPDATE outbox SET"
        " given_up = CASE WHEN sent IS NULL THEN coalesce(last_attempt, created) END,"
        " last_error = substr(last_error, ?) WHERE substr(last_error, 1, ?) = ?",
        (len(LEGACY_GIVEN_UP_PREFIX) + 1, len(LEGACY_GIVEN_UP_PREFIX), LEGACY_GIVEN_UP_PREFIX),
    )
    db.execute("DROP INDEX IF EXISTS outbox_due")
    db.execute("CREATE INDEX outbox_due ON outbox (id) WHERE sent IS NULL AND given_up IS NULL")


#: version -> the step that brings a database of the version before up to it
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    2: _from_unversioned,
    3: _outbox_claims,
    4: _outbox_given_up,
}


def _statements(script: str) -> list[str]:
    """The statements of a schema script (no statement in it contains a ``;``)."""
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _schema_version(db: sqlite3.Connection) -> int:
    """The stored schema version; 0 for an empty database."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
        return 0 if not tables[0] else 1
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def migrate_sqlite(db: sqlite3.Connection, where: str = "") -> int:
    """Create the schema in an empty database, or bring an older one up to
    ``SCHEMA_VERSION``, in one transaction (a crash mid-way leaves the file as it was);
    returns the version the database had."""
    found = _schema_version(db)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the store {where} has schema version {found}, made by a newer commit-email; "
            f"this one knows versions up to {SCHEMA_VERSION}"
        )
    if found == SCHEMA_VERSION:
        return found
    db.execute("BEGIN IMMEDIATE")  # another process may be migrating too: one at a time
    try:
        current = _schema_version(db)
        if current == 0:
            for statement in _statements(_SCHEMA):
                db.execute(statement)
            current = SCHEMA_VERSION
        while current < SCHEMA_VERSION:
            current += 1
            _MIGRATIONS[current](db)
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return found


def _iso(value: datetime) -> str:
    return value.isoformat()


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


#: (file, what) -> the store of this process that holds it: mailboxes and the outbox sender
_PROCESS_LOCKS: dict[tuple[str, str], int] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the database file, None for an in-memory or vanished one. On
    Windows st_ino is the NTFS file index, which a replacement changes too."""
    if path == ":memory:" or path.startswith("file:"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)


#: bytes of the database file SQLite reads through a memory map (see SQLiteStore)
DEFAULT_MMAP_SIZE = 256 * 1024 * 1024


class SQLiteStore:
    """Accounts, tickets, records and the connector's state in one SQLite database."""

    def __init__(
        self, path: str | Path = ":memory:", *, synchronous: str = "NORMAL",
        mmap_size: int = DEFAULT_MMAP_SIZE,
    ) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # Checkpoint every ~40 MB of WAL instead of 4 MB: a backlog of mail with
            # attachments writes tens of MB, and each checkpoint costs two fsyncs.
            # Commit durability is the same (it is the WAL write, not the checkpoint).
            self._db.execute("PRAGMA wal_autocheckpoint=10000")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            migrate_sqlite(self._db, self.path)
            self._mmap_cap = max(int(mmap_size), 0)
            self._map_the_file()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._depth = 0
        #: mailbox names this store holds (see lock_mailbox)
        self._held: set[str] = set()
        identity = _file_identity(self.path)
        self._identity = None if identity == (-1, -1) else identity

    @classmethod
    def in_memory(cls) -> SQLiteStore:
        """A private, empty in-memory store (for tests and harnesses)."""
        return cls(":memory:")

    def close(self) -> None:
        for name in list(self._held):
            self.unlock_mailbox(name)
        self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Units of work ----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit everything inside at once. Nested calls are savepoints: an exception inside
        a nested block undoes only that block (this is how one XML transaction of several
        fails alone)."""
        depth = self._depth
        name = f"sp{depth}"
        if depth == 0 and not self._file_in_place():
            raise self._file_gone()
        try:
            self._db.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {name}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot start a transaction: {exc}") from exc
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth = depth
            if depth == 0:
                self._db.execute("ROLLBACK")
            else:
                self._db.execute(f"ROLLBACK TO {name}")
                self._db.execute(f"RELEASE {name}")
            raise
        self._depth = depth
        if depth == 0 and not self._file_in_place():
            self._db.execute("ROLLBACK")
            raise self._file_gone()
        try:
            self._db.execute("COMMIT" if depth == 0 else f"RELEASE {name}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot commit: {exc}") from exc

    def _file_in_place(self) -> bool:
        # The file deleted or replaced under us (a state directory removed, a restore copied
        # over it): SQLite would go on writing into the unlinked file, and every result
        # would be lost without a word. Checked at the start and the end of each unit.
        return self._identity is None or _file_identity(self.path) == self._identity

    def _file_gone(self) -> StoreError:
        return StoreError(f"the store file {self.path} was removed or replaced while in use: "
                          "nothing more is written to it; restart to open it again")

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """Run the block in a transaction that is always rolled back (``inspect``)."""

        class _Rollback(Exception):
            pass

        try:
            with self.transaction():
                yield
                raise _Rollback
        except _Rollback:
            pass

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"{exc} (in: {sql.split(maxsplit=1)[0]} …)") from exc

    # Accounts (AccountDirectory + writes) ----------------------------------------------

    def _account(self, row: Sequence[Any]) -> Account:
        values = dict(zip(ACCOUNT_COLUMNS, row, strict=True))
        values["active"] = bool(values["active"])
        values["extra"] = json.loads(values["extra"])
        values["kind"] = AccountKind(values["kind"])
        return Account(**values)

    def _accounts(self, sql: str, params: Sequence[Any]) -> list[Account]:
        return [self._account(row) for row in self._execute(sql, params)]

    _SELECT_ACCOUNT = "SELECT " + ", ".join(f"a.{c}" for c in ACCOUNT_COLUMNS) + " FROM accounts a"

    def find_by_email(self, address: str) -> list[Account]:
        return self._accounts(
            self._SELECT_ACCOUNT + " JOIN account_keys k ON k.rec_id = a.rec_id"
            " WHERE k.type = 'email' AND k.key = ? ORDER BY a.rowid",
            (address.lower(),),
        )

    def find_by_domain(self, domain: str) -> list[Account]:
        return self._accounts(
            self._SELECT_ACCOUNT + " JOIN account_keys k ON k.rec_id = a.rec_id"
            " WHERE k.type = 'domain' AND k.key = ? ORDER BY a.rowid",
            (domain.lower(),),
        )

    def find_by_field(self, name: str, value: str) -> list[Account]:
        if name not in SEARCHABLE:
            raise ValueError(f"cannot search accounts by {name!r}")
        return self._accounts(
            self._SELECT_ACCOUNT + f" WHERE a.{name} = ? COLLATE NOCASE ORDER BY a.rowid",
            (value.strip(),),
        )

    def get_account(self, rec_id: str) -> Account | None:
        found = self._accounts(self._SELECT_ACCOUNT + " WHERE a.rec_id = ?", (rec_id,))
        return found[0] if found else None

    def list_accounts(self) -> list[Account]:
        return self._accounts(self._SELECT_ACCOUNT + " ORDER BY a.rowid", ())

    @staticmethod
    def _account_row(account: Account) -> list[Any]:
        row = [getattr(account, c) for c in ACCOUNT_COLUMNS]
        row[ACCOUNT_COLUMNS.index("kind")] = account.kind.value
        row[ACCOUNT_COLUMNS.index("active")] = int(account.active)
        row[ACCOUNT_COLUMNS.index("extra")] = json.dumps(dict(account.extra), sort_keys=True)
        return row

    def _write_account(self, account: Account, *, replace: bool) -> Account:
        if not account.rec_id:
            account = attrs.evolve(account, rec_id=new_rec_id("ACCOUNT"))
        row = self._account_row(account)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        with self.transaction():
            try:
                self._db.execute(
                    f"{verb} INTO accounts ({', '.join(ACCOUNT_COLUMNS)})"
                    f" VALUES ({', '.join('?' * len(ACCOUNT_COLUMNS))})",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"account {account.rec_id} already exists") from exc
            self._db.execute("DELETE FROM account_keys WHERE rec_id = ?", (account.rec_id,))
            self._db.executemany(
                "INSERT INTO account_keys (type, key, rec_id) VALUES (?, ?, ?)",
                [(t, k, account.rec_id) for t, k in account_keys(account)],
            )
        return account

    def add_account(self, account: Account) -> Account:
        return self._write_account(account, replace=False)

    def upsert_account(self, account: Account) -> Account:
        """Insert or replace a Card by rec_id (used by ``accounts import``)."""
        return self._write_account(account, replace=True)

    def update_account(self, rec_id: str, changes: Mapping[str, object]) -> Account:
        current = self.get_account(rec_id)
        if current is None:
            raise KeyError(rec_id)
        values = apply_changes(current, changes, fixed={"rec_id", "extra"})
        return self._write_account(attrs.evolve(current, **values), replace=True)

    # Tickets (TicketSink) ---------------------------------------------------------------

    _SELECT_TICKET = "SELECT " + ", ".join(TICKET_COLUMNS) + " FROM tickets"

    def _ticket(self, row: Sequence[Any]) -> Ticket:
        values = dict(zip(TICKET_COLUMNS, row, strict=True))
        values["closed"] = bool(values["closed"])
        values["created"] = _dt(values["created"])
        values["updated"] = _dt(values["updated"])
        values["extra"] = json.loads(values["extra"])
        return Ticket(**values)

    def _next(self, counter: str) -> int:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)"
            " ON CONFLICT (name) DO UPDATE SET value = value + 1",
            (counter,),
        )
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
        return int(row[0])

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        with self.transaction():
            if draft.source_key:
                # "!= ''" repeats the partial index's condition: without it SQLite cannot
                # use the index for a bound parameter and scans every ticket (the index
                # conditions below are there for the same reason).
                row = self._execute(
                    self._SELECT_TICKET + " WHERE source_key = ? AND source_key != ''",
                    (draft.source_key,),
                ).fetchone()
                if row is not None:
                    return self._ticket(row)
            now = utcnow()
            ticket = Ticket(
                rec_id=new_rec_id("TICKET"),
                number=str(self._next("ticket_number")),
                account=draft.account,
                contact=draft.contact,
                description=draft.description,
                status=draft.status,
                priority=draft.priority,
                kind=draft.kind,
                source=draft.source,
                manager=draft.manager,
                alert_key=draft.alert_key,
                created=now,
                updated=now,
                extra=draft.extra,
            )
            self._insert_ticket(ticket, draft.source_key)
        return ticket

    def _insert_ticket(self, ticket: Ticket, source_key: str) -> None:
        row = self._ticket_row(ticket)
        self._execute(
            f"INSERT INTO tickets ({', '.join(TICKET_COLUMNS)}, source_key)"
            f" VALUES ({', '.join('?' * (len(TICKET_COLUMNS) + 1))})",
            [*row, source_key],
        )

    @staticmethod
    def _ticket_row(ticket: Ticket) -> list[Any]:
        row: list[Any] = [getattr(ticket, c) for c in TICKET_COLUMNS]
        row[TICKET_COLUMNS.index("closed")] = int(ticket.closed)
        row[TICKET_COLUMNS.index("created")] = _iso(ticket.created)
        row[TICKET_COLUMNS.index("updated")] = _iso(ticket.updated)
        row[TICKET_COLUMNS.index("extra")] = json.dumps(dict(ticket.extra), sort_keys=True)
        return row

    def get_ticket(self, *, number: str | None = None, rec_id: str | None = None) -> Ticket | None:
        if number is not None:
            row = self._execute(self._SELECT_TICKET + " WHERE number = ?", (number,)).fetchone()
        elif rec_id is not None:
            row = self._execute(self._SELECT_TICKET + " WHERE rec_id = ?", (rec_id,)).fetchone()
        else:
            raise TypeError("get_ticket() needs number= or rec_id=")
        return self._ticket(row) if row else None

    def update_ticket(self, rec_id: str, changes: Mapping[str, object]) -> Ticket:
        current = self.get_ticket(rec_id=rec_id)
        if current is None:
            raise KeyError(rec_id)
        values = apply_changes(current, changes,
                                fixed={"rec_id", "extra", "created", "updated"})
        ticket = attrs.evolve(current, **values, updated=utcnow())
        row = self._ticket_row(ticket)
        assignments = ", ".join(f"{c} = ?" for c in TICKET_COLUMNS[1:])
        self._execute(f"UPDATE tickets SET {assignments} WHERE rec_id = ?", [*row[1:], rec_id])
        return ticket

    def find_open_alert_ticket(self, alert_key: str) -> Ticket | None:
        indexed = " AND alert_key != ''" if alert_key else ""
        row = self._execute(
            self._SELECT_TICKET
            + f" WHERE alert_key = ?{indexed} AND closed = 0"
            " ORDER BY created DESC, rowid DESC LIMIT 1",
            (alert_key,),
        ).fetchone()
        return self._ticket(row) if row else None

    def list_tickets(self) -> list[Ticket]:
        return [self._ticket(r) for r in self._execute(self._SELECT_TICKET + " ORDER BY rowid")]

    def count_tickets(self) -> int:
        return int(self._execute("SELECT count(*) FROM tickets").fetchone()[0])

    def add_history(self, ticket_rec_id: str, entry: HistoryEntry) -> None:
        self._execute(
            "INSERT INTO history (ticket, kind, subject, text, author, message_id, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ticket_rec_id, entry.kind, entry.subject, entry.text, entry.author,
             entry.message_id, _iso(entry.created)),
        )

    def history(self, ticket_rec_id: str) -> list[HistoryEntry]:
        rows = self._execute(
            "SELECT kind, subject, text, author, message_id, created FROM history"
            " WHERE ticket = ? ORDER BY id",
            (ticket_rec_id,),
        )
        return [
            HistoryEntry(kind=k, subject=s, text=t, author=a, message_id=m, created=_dt(c))
            for k, s, t, a, m, c in rows
        ]

    def history_counts(self) -> dict[str, int]:
        """Number of history entries per ticket rec_id."""
        rows = self._execute("SELECT ticket, count(*) FROM history GROUP BY ticket")
        return {ticket: int(n) for ticket, n in rows}

    def add_document(self, ticket_rec_id: str, document: Document) -> None:
        self._execute(
            "INSERT INTO documents (ticket, filename, content_type, kind, data, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (ticket_rec_id, document.filename, document.content_type, document.kind,
             document.data, _iso(utcnow())),
        )

    def documents(self, ticket_rec_id: str) -> list[Document]:
        rows = self._execute(
            "SELECT filename, content_type, kind, data FROM documents WHERE ticket = ?"
            " ORDER BY id",
            (ticket_rec_id,),
        )
        return [Document(filename=f, content_type=c, kind=k, data=bytes(d)) for f, c, k, d in rows]

    # Other Commit records ------------------------------------------------------------------

    def add_record(self, kind: str, fields: Mapping[str, str]) -> str:
        rec_id = new_rec_id(kind)
        now = _iso(utcnow())
        self._execute(
            "INSERT INTO records (kind, rec_id, fields, created, updated) VALUES (?, ?, ?, ?, ?)",
            (kind.upper(), rec_id, json.dumps(dict(fields), sort_keys=True), now, now),
        )
        return rec_id

    def update_record(self, kind: str, rec_id: str, fields: Mapping[str, str]) -> None:
        current = self.get_record(kind, rec_id)
        if current is None:
            raise KeyError(rec_id)
        merged = {**current, **fields}
        self._execute(
            "UPDATE records SET fields = ?, updated = ? WHERE kind = ? AND rec_id = ?",
            (json.dumps(merged, sort_keys=True), _iso(utcnow()), kind.upper(), rec_id),
        )

    def get_record(self, kind: str, rec_id: str) -> dict[str, str] | None:
        row = self._execute(
            "SELECT fields FROM records WHERE kind = ? AND rec_id = ?", (kind.upper(), rec_id)
        ).fetchone()
        return dict(json.loads(row[0])) if row else None

    # Connector state (ConnectorState) ----------------------------------------------------

    _SELECT_PROCESSED = (
        "SELECT digest, source_kind, source_name, uidl, message_id, outcome, ticket, account,"
        " detail, stage, created FROM processed"
    )

    @staticmethod
    def _processed(row: Sequence[Any]) -> ProcessedEntry:
        digest, kind, name, uidl, message_id, outcome, ticket, account, detail, stage, created = row
        return ProcessedEntry(
            digest=digest,
            source=SourceRef(kind=kind, name=name, uidl=uidl),
            message_id=message_id,
            outcome=Outcome(
                kind=OutcomeKind(outcome), ticket=ticket, account=account, detail=detail,
                stage=stage,
            ),
            created=_dt(created),
        )

    def processed(self, digest: str) -> ProcessedEntry | None:
        row = self._execute(self._SELECT_PROCESSED + " WHERE digest = ?", (digest,)).fetchone()
        return self._processed(row) if row else None

    def processed_uidl(self, mailbox: str, uidl: str) -> ProcessedEntry | None:
        indexed = " AND uidl != ''" if uidl else ""
        row = self._execute(
            self._SELECT_PROCESSED + f" WHERE source_name = ? AND uidl = ?{indexed} LIMIT 1",
            (mailbox, uidl),
        ).fetchone()
        return self._processed(row) if row else None

    def processed_uidls(self, mailbox: str, uidls: Iterable[str]) -> set[str]:
        """Those of ``uidls`` that have an outcome under this mailbox: one indexed query per
        500 UIDLs instead of one per message (a POP3 session lists hundreds)."""
        wanted = [u for u in dict.fromkeys(uidls) if u]
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            batch = wanted[start:start + 500]
            rows = self._execute(
                "SELECT DISTINCT uidl FROM processed WHERE source_name = ? AND uidl != ''"
                f" AND uidl IN ({', '.join('?' * len(batch))})",
                (mailbox, *batch),
            )
            found.update(uidl for (uidl,) in rows)
        return found

    def record_processed(
        self, *, digest: str, source: SourceRef, message_id: str, outcome: Outcome
    ) -> None:
        self._execute(
            "INSERT INTO processed (digest, source_kind, source_name, uidl, message_id, outcome,"
            " ticket, account, detail, stage, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (digest, source.kind, source.name, source.uidl, message_id, outcome.kind.value,
             outcome.ticket, outcome.account, outcome.detail, outcome.stage, _iso(utcnow())),
        )

    def forget_processed(self, digest: str) -> None:
        """Drop a processed-log line (replaying a quarantined message replaces its outcome)."""
        self._execute("DELETE FROM processed WHERE digest = ?", (digest,))

    def record_uidl_alias(self, *, digest: str, mailbox: str, uidl: str) -> None:
        """Remember that a re-delivered copy (new UIDL) of a processed message was seen."""
        self._execute(
            "INSERT OR IGNORE INTO processed (digest, source_kind, source_name, uidl, message_id,"
            " outcome, ticket, account, detail, stage, created)"
            " SELECT ?, 'pop3', ?, ?, message_id, ?, ticket, account, ?, stage, ?"
            " FROM processed WHERE digest = ?",
            (f"{digest}:{mailbox}:{uidl}", mailbox, uidl, OutcomeKind.DUPLICATE.value,
             f"copy of {digest[:12]}", _iso(utcnow()), digest),
        )

    def iter_processed(self) -> Iterator[ProcessedEntry]:
        for row in self._execute(self._SELECT_PROCESSED + " ORDER BY rowid").fetchall():
            yield self._processed(row)

    def outcome_counts(self) -> dict[str, int]:
        rows = self._execute("SELECT outcome, count(*) FROM processed GROUP BY outcome")
        return {outcome: int(n) for outcome, n in rows}

    def enqueue_mail(self, mail: OutgoingMail) -> int:
        cur = self._execute(
            "INSERT INTO outbox (kind, sender, recipients, raw, message_id, ticket, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mail.kind, mail.sender, json.dumps(list(mail.recipients)), mail.raw,
             mail.message_id, mail.ticket, _iso(utcnow())),
        )
        return int(cur.lastrowid or 0)

    def _outbox(
        self, where: str, params: Sequence[Any] = (), *, limit: int = -1
    ) -> list[OutboxEntry]:
        rows = self._execute(
            "SELECT id, kind, sender, recipients, raw, message_id, ticket, attempts, last_error,"
            f" created, last_attempt, sent, given_up FROM outbox {where} ORDER BY id LIMIT ?",
            (*params, limit),
        )
        return [
            OutboxEntry(
                id=i,
                mail=OutgoingMail(kind=k, sender=s, recipients=json.loads(r), raw=bytes(raw),
                                  message_id=m, ticket=t),
                attempts=a,
                last_error=e,
                sent=sent is not None,
                created=_dt(created),
                last_attempt=_dt(tried) if tried else None,
                sent_at=_dt(sent) if sent else None,
                given_up_at=_dt(given_up) if given_up else None,
            )
            for i, k, s, r, raw, m, t, a, e, created, tried, sent, given_up in rows
        ]

    def pending_mail(self) -> list[OutboxEntry]:
        return self._outbox("WHERE sent IS NULL")

    #: what may be sent: the WHERE of the ``outbox_due`` index, word for word, and more
    _DUE = (
        "sent IS NULL AND given_up IS NULL"
        " AND recipients != '[]' AND (last_attempt IS NULL OR last_attempt <= ?)"
    )

    def due_mail(self, *, tried_before: datetime, limit: int) -> list[OutboxEntry]:
        return self._outbox("WHERE " + self._DUE, (_iso(_utc(tried_before)),), limit=limit)

    def claim_mail(
        self, *, owner: str, now: datetime, until: datetime, tried_before: datetime, limit: int
    ) -> list[OutboxEntry]:
        """Claim due mail for ``owner`` (see ``ConnectorState.claim_mail``).

        One ``BEGIN IMMEDIATE`` transaction: SQLite lets one writer in at a time, so two
        processes claiming at once get disjoint rows; the second waits for the first."""
        with self.transaction():
            self._execute(
                "UPDATE outbox SET claimed_until = ? WHERE claimed_by = ? AND sent IS NULL",
                (_iso(_utc(until)), owner),
            )
            if limit <= 0:
                return []
            ids = [int(i) for (i,) in self._execute(
                "SELECT id FROM outbox WHERE " + self._DUE
                + " AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY id LIMIT ?",
                (_iso(_utc(tried_before)), _iso(_utc(now)), limit),
            )]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            self._execute(
                f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN ({marks})",
                (owner, _iso(_utc(until)), *ids),
            )
            return self._outbox(f"WHERE id IN ({marks})", ids)

    def release_mail(self, owner: str, mail_ids: Iterable[int]) -> None:
        """Give up ``owner``'s claim on these mails (they were not tried)."""
        ids = list(mail_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            self._execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
                f" WHERE claimed_by = ? AND id IN ({','.join('?' * len(chunk))})",
                (owner, *chunk),
            )

    def all_mail(self) -> list[OutboxEntry]:
        return self._outbox("")

    def get_mail(self, mail_id: int) -> OutboxEntry | None:
        found = self._outbox("WHERE id = ?", (mail_id,))
        return found[0] if found else None

    def mark_mail_sent(self, mail_id: int) -> None:
        now = _iso(utcnow())
        self._execute(
            "UPDATE outbox SET sent = ?, last_attempt = ?, attempts = attempts + 1,"
            " claimed_by = NULL, claimed_until = NULL WHERE id = ?",
            (now, now, mail_id),
        )

    def mark_mail_failed(self, mail_id: int, error: str, *, give_up: bool = False) -> None:
        now = _iso(utcnow())
        self._execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, last_attempt = ?,"
            " given_up = coalesce(given_up, ?), claimed_by = NULL, claimed_until = NULL"
            " WHERE id = ?",
            (error, now, now if give_up else None, mail_id),
        )

    def requeue_mail(self, mail_id: int) -> bool:
        """Put an unsent mail back in the queue as if new (attempts, error and given-up
        mark cleared); False when there is no such unsent mail."""
        cur = self._execute(
            "UPDATE outbox SET attempts = 0, last_error = '', last_attempt = NULL,"
            " given_up = NULL WHERE id = ? AND sent IS NULL",
            (mail_id,),
        )
        return cur.rowcount > 0

    def delete_mail(self, mail_id: int) -> bool:
        """Remove one mail from the outbox, whatever its state; False when there is none."""
        return self._execute("DELETE FROM outbox WHERE id = ?", (mail_id,)).rowcount > 0

    def delete_sent_mail(self, before: datetime) -> list[int]:
        """Remove the mail sent before ``before``; returns their ids."""
        rows = self._execute(
            "DELETE FROM outbox WHERE sent IS NOT NULL AND sent < ? RETURNING id",
            (_iso(_utc(before)),),
        ).fetchall()
        return sorted(int(i) for (i,) in rows)

    def record_sent_message_id(self, message_id: str, ticket_rec_id: str) -> None:
        self._execute(
            "INSERT OR REPLACE INTO sent_ids (message_id, ticket, created) VALUES (?, ?, ?)",
            (message_id.strip("<>"), ticket_rec_id, _iso(utcnow())),
        )

    def ticket_for_sent_message_id(self, message_id: str) -> str | None:
        row = self._execute(
            "SELECT ticket FROM sent_ids WHERE message_id = ?", (message_id.strip("<>"),)
        ).fetchone()
        return (row[0] or None) if row else None

    def record_filed_message_id(self, message_id: str, ticket_rec_id: str) -> None:
        # The first ticket wins: a later mail that reuses a Message-ID (a tool that recycles
        # them, someone who copied one from a mailing list) must not take over the
        # conversation of the mail that first carried it.
        self._execute(
            "INSERT OR IGNORE INTO filed_ids (message_id, ticket, created) VALUES (?, ?, ?)",
            (message_id.strip("<>"), ticket_rec_id, _iso(utcnow())),
        )

    def ticket_for_filed_message_id(self, message_id: str) -> str | None:
        row = self._execute(
            "SELECT ticket FROM filed_ids WHERE message_id = ?", (message_id.strip("<>"),)
        ).fetchone()
        return (row[0] or None) if row else None

    def is_own_message_id(self, message_id: str) -> bool:
        row = self._execute(
            "SELECT 1 FROM sent_ids WHERE message_id = ?", (message_id.strip("<>"),)
        ).fetchone()
        return row is not None

    def count_auto_responses(self, sender: str, since: datetime) -> int:
        row = self._execute(
            "SELECT count(*) FROM auto_responses WHERE sender = ? AND at >= ?",
            (sender.lower(), _iso(since)),
        ).fetchone()
        return int(row[0])

    def record_auto_response(self, sender: str, at: datetime) -> None:
        self._execute(
            "INSERT INTO auto_responses (sender, at) VALUES (?, ?)", (sender.lower(), _iso(at))
        )

    def record_ticket_recipient(self, ticket_rec_id: str, address: str) -> None:
        self._execute(
            "INSERT OR IGNORE INTO ticket_recipients (ticket, address) VALUES (?, ?)",
            (ticket_rec_id, address.strip().lower()),
        )

    def ticket_mailed_to(self, ticket_rec_id: str, address: str) -> bool:
        row = self._execute(
            "SELECT 1 FROM ticket_recipients WHERE ticket = ? AND address = ?",
            (ticket_rec_id, address.strip().lower()),
        ).fetchone()
        return row is not None

    def count_failed_logins(self, sender: str, since: datetime) -> int:
        row = self._execute(
            "SELECT count(*) FROM failed_logins WHERE sender = ? AND at >= ?",
            (sender.lower(), _iso(_utc(since))),
        ).fetchone()
        return int(row[0])

    def record_failed_login(self, sender: str, at: datetime, *, expire_before: datetime) -> None:
        self._execute("DELETE FROM failed_logins WHERE at < ?", (_iso(_utc(expire_before)),))
        self._execute(
            "INSERT INTO failed_logins (sender, at) VALUES (?, ?)",
            (sender.lower(), _iso(_utc(at))),
        )

    def remember_recovery(
        self, key: str, event_time: datetime, at: datetime, *, expire_before: datetime
    ) -> None:
        # Times are stored in UTC so that the text comparison below is a time comparison.
        self._execute("DELETE FROM recoveries WHERE remembered < ?", (_iso(_utc(expire_before)),))
        self._execute(
            "INSERT INTO recoveries (key, event_time, remembered) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET event_time = max(event_time, excluded.event_time),"
            " remembered = excluded.remembered",
            (key, _iso(_utc(event_time)), _iso(_utc(at))),
        )

    def recovery_of(self, key: str) -> tuple[datetime, datetime] | None:
        row = self._execute(
            "SELECT event_time, remembered FROM recoveries WHERE key = ?", (key,)
        ).fetchone()
        return (_dt(row[0]), _dt(row[1])) if row else None

    def _map_the_file(self) -> None:
        """Read the file as it is now (at most ``mmap_size`` of it) through a memory map.

        A directory of 300,000 Cards does not fit SQLite's 2 MB page cache, and a read()
        system call per page made sender matching on it ~1.3x dearer than on 3,000 Cards;
        mapped, ~1.15x. Only what the file holds now is mapped (the directory, the older
        mail): with the whole file mapped, every page read while a long run appends mail
        stayed resident (RSS +33% over 20,000 messages, against +3% unmapped). The price,
        per SQLite's docs: an I/O error while reading the mapped part ends the process
        (SIGBUS) instead of raising; ``?mmap_size=0`` in the URL turns it off.
        """
        size = 0 if self.path == ":memory:" else Path(self.path).stat().st_size
        self._db.execute(f"PRAGMA mmap_size={min(self._mmap_cap, size)}")

    def import_accounts(self, accounts: Iterable[Account]) -> int:
        """Insert or replace many Cards in one transaction; returns how many."""
        # Set-based rather than one upsert (savepoint, three statements) per Card: loading
        # 300,000 Cards took minutes. The last row of a rec_id wins, as with upserts.
        latest: dict[str, Account] = {}
        n = 0
        for given in accounts:
            account = given if given.rec_id else attrs.evolve(given, rec_id=new_rec_id("ACCOUNT"))
            latest.pop(account.rec_id, None)  # keep the input order of the last version
            latest[account.rec_id] = account
            n += 1
        columns = ", ".join(ACCOUNT_COLUMNS)
        with self.transaction():
            try:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO accounts ({columns})"
                    f" VALUES ({', '.join('?' * len(ACCOUNT_COLUMNS))})",
                    (self._account_row(a) for a in latest.values()),
                )
                self._db.executemany(
                    "DELETE FROM account_keys WHERE rec_id = ?", ((r,) for r in latest)
                )
                self._db.executemany(
                    "INSERT INTO account_keys (type, key, rec_id) VALUES (?, ?, ?)",
                    ((t, k, a.rec_id) for a in latest.values() for t, k in account_keys(a)),
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot import accounts: {exc}") from exc
        if self._depth == 0:
            self._map_the_file()  # the directory just written is what lookups read
        return n


    # Coordination (within this process) ---------------------------------------------------

    def _lock_key(self, what: str) -> tuple[str, str]:
        where = self.path if self.path != ":memory:" else f":memory:{id(self)}"
        return (str(Path(where).resolve()) if self.path != ":memory:" else where, what)

    def lock_mailbox(self, name: str) -> bool:
        """Take mailbox ``name`` for this store if no other store of this process on the same
        file has it; True when this one holds it. (A SQLite file serves one machine: two
        ``run`` processes on it are not coordinated; PostgreSQL's store coordinates
        processes and machines.)"""
        if name in self._held:
            return True
        key = self._lock_key("mailbox " + name)
        with _PROCESS_LOCKS_GUARD:
            if key in _PROCESS_LOCKS:
                return False
            _PROCESS_LOCKS[key] = id(self)
        self._held.add(name)
        return True

    def unlock_mailbox(self, name: str) -> None:
        if name in self._held:
            self._held.discard(name)
            with _PROCESS_LOCKS_GUARD:
                _PROCESS_LOCKS.pop(self._lock_key("mailbox " + name), None)

    def holds_mailbox(self, name: str) -> bool:
        return name in self._held

    # Moving a whole store (``store copy``) -------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read inside as of one moment (a read transaction: WAL keeps writers going)."""
        if self._depth:
            yield
            return
        self._execute("BEGIN")
        self._depth += 1
        try:
            yield
        finally:
            self._depth = 0
            self._db.execute("COMMIT")

    def row_counts(self) -> dict[str, int]:
        """Rows per table of :data:`~commit_email.storage.COPY_TABLES`."""
        return {t: int(self._execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in COPY_TABLES}

    def export_rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``table`` in the order they were written, as ``COPY_TABLES`` says."""
        columns = COPY_TABLES[table]
        convert = [_from_sqlite(c) for c in columns]
        cursor = self._execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")
        for row in cursor:
            yield tuple(f(v) for f, v in zip(convert, row, strict=True))

    def import_rows(self, table: str, rows: Iterable[Sequence[Any]]) -> None:
        """Append exported rows to ``table`` (in the caller's transaction)."""
        columns = COPY_TABLES[table]
        convert = [_to_sqlite(c) for c in columns]
        try:
            self._db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})",
                (tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in rows),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {table}: {exc}") from exc

    def last_ticket_number(self) -> int:
        """The number the last ticket got (0: none yet); the next one gets one more."""
        row = self._execute("SELECT value FROM counters WHERE name = 'ticket_number'").fetchone()
        return int(row[0]) if row else 0

    def set_last_ticket_number(self, number: int) -> None:
        self._execute(
            "INSERT INTO counters (name, value) VALUES ('ticket_number', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (number,),
        )


def _from_sqlite(column: str) -> Callable[[Any], Any]:
    if column in TIME_COLUMNS:
        return lambda v: None if v is None else _utc(_dt(v))
    if column in JSON_COLUMNS:
        return lambda v: dict(json.loads(v))
    if column in BOOL_COLUMNS:
        return bool
    if column == "recipients":
        return lambda v: list(json.loads(v))
    if column in ("raw", "data"):
        return bytes
    return lambda v: v


def _to_sqlite(column: str) -> Callable[[Any], Any]:
    if column in TIME_COLUMNS:
        return lambda v: None if v is None else _iso(_utc(v))
    if column in JSON_COLUMNS:
        return lambda v: json.dumps(dict(v), sort_keys=True)
    if column in BOOL_COLUMNS:
        return int
    if column == "recipients":
        return lambda v: json.dumps(list(v))
    return lambda v: v


#: What ``open_store`` returns: the two built-in stores, which have the same methods.
Store: TypeAlias = Union[SQLiteStore, "PostgresStore"]  # a forward reference: no "|" here

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


_MEMORY_URLS = ("memory:", "sqlite://:memory:", "sqlite:///:memory:")


def is_memory_url(url: str) -> bool:
    """Whether ``url`` names a private in-memory store (each connection its own)."""
    return url in _MEMORY_URLS


def sqlite_url_options(url: str) -> tuple[str, str, int]:
    """The path, ``synchronous`` mode and ``mmap_size`` of a ``sqlite:///PATH?…`` URL
    (``memory:`` gives an empty path); an unknown option or a bad value names the key."""
    if is_memory_url(url):
        return "", "NORMAL", 0
    rest = url.removeprefix("sqlite:///")
    path, _, query = rest.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    synchronous = options.pop("synchronous", "NORMAL").upper()
    mmap_size = options.pop("mmap_size", str(DEFAULT_MMAP_SIZE))
    if options:
        raise ConfigError(f"unknown store URL option {sorted(options)[0]!r} "
                          "(options: synchronous, mmap_size)", key="store.url")
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ConfigError(f"synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
                          f"got {synchronous!r}", key="store.url")
    if not mmap_size.isdigit():
        raise ConfigError(f"mmap_size must be a number of bytes, got {mmap_size!r}",
                          key="store.url")
    return path, synchronous, int(mmap_size)


def check_store_url(url: str) -> None:
    """Check a store URL without opening it; a ConfigError names ``store.url``."""
    if url.startswith(("postgresql://", "postgres://")):
        from .pgstore import check_postgres_url  # noqa: PLC0415 (psycopg only when used)

        check_postgres_url(url)
    elif url == "memory:" or url.startswith(("sqlite:///", "sqlite://:memory:")):
        sqlite_url_options(url)
    else:
        raise ConfigError(
            f"unsupported store URL {url!r} (use sqlite:///PATH, postgresql://… or memory:)",
            key="store.url",
        )


def open_store(url: str, *, base_dir: Path | None = None, password: str = "") -> Store:
    """Open the store a ``[store] url`` names: ``sqlite:///PATH`` with optional
    ``?synchronous=FULL`` (or OFF, NORMAL, EXTRA) and ``&mmap_size=BYTES`` (0: no memory
    map; default 256 MB), ``memory:``, or ``postgresql://…`` (a libpq URL; needs the
    ``postgres`` extra, see :mod:`commit_email.pgstore`; ``password`` when the URL has
    none). A relative PATH is relative to ``base_dir`` (the config file's folder)."""
    if is_memory_url(url):
        return SQLiteStore.in_memory()
    if url.startswith(("postgresql://", "postgres://")):
        from .pgstore import PostgresStore  # noqa: PLC0415 (psycopg only when asked for)

        return PostgresStore(url, password=password)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"unsupported store URL {url!r}", key="store.url")
    path_part, synchronous, mmap_size = sqlite_url_options(url)
    path = Path(path_part)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return SQLiteStore(path, synchronous=synchronous, mmap_size=mmap_size)
