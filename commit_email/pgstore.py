"""The PostgreSQL store: every Protocol the SQLite store implements, shared by several workers.

``[store] url = "postgresql://user@host/db"`` keeps Cards, tickets, history, documents, the
processed log, the outbox, rate limits and alert memory in PostgreSQL, with the SQLite
store's behaviour (the same methods, the same answers; ``tests/test_store.py`` runs against
both). It needs psycopg 3: ``pip install 'commit-email[postgres]'``.

What PostgreSQL adds, for several ``run`` processes sharing one store:

- **one worker per mailbox**: :meth:`PostgresStore.lock_mailbox` takes a session advisory
  lock keyed by the mailbox name; the server releases it when the worker's connection ends
  (a crash, a kill -9, a host that vanished: TCP keepalives are set so a silent peer is
  noticed in about half a minute). A worker that loses its connection loses its locks and
  must take them again (``holds_mailbox`` says so) before it touches that mailbox.
- **one message at a time per digest**: :meth:`processed`, inside a transaction, waits for
  any other worker holding the same message (a mail delivered to two mailboxes), so the
  second one sees the first one's outcome and records a ``duplicate``.
- **ticket numbers from a sequence**: unique and increasing across workers; a transaction
  that rolls back (``inspect``) uses a number up, so numbers may have gaps.
- **no mail sent twice by two workers**: a mail is claimed (:meth:`claim_mail`, a lease
  under ``FOR UPDATE SKIP LOCKED``) before it is sent, so several workers share the outbox
  and each mail goes out from one of them.

Everything is in the connection's ``search_path`` schema (``?options=-csearch_path%3Dhelp``
in the URL for a schema of its own). The schema is created on first open and migrated,
under an advisory lock, when a newer version opens an older store.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
    COPY_TABLES,
    JSON_COLUMNS,
    LEGACY_GIVEN_UP_PREFIX,
    SEARCHABLE,
    TICKET_COLUMNS,
    OutboxEntry,
    ProcessedEntry,
    account_keys,
    apply_changes,
    new_rec_id,
    redact_url,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["PG_SCHEMA_VERSION", "PostgresStore", "is_postgres_url", "load_psycopg"]

EXTRA_HINT = "pip install 'commit-email[postgres]'"

#: The schema this code writes; see ``_PG_MIGRATIONS`` for how older stores are brought up.
PG_SCHEMA_VERSION = 3

# Version 3. A schema change is a new version: the change goes here (new stores) and into
# ``_PG_MIGRATIONS`` (existing ones); the tests compare the two.
_PG_SCHEMA = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE account_order;
CREATE TABLE accounts (
    rec_id text PRIMARY KEY, file_as text NOT NULL, email1 text NOT NULL, email2 text NOT NULL,
    account_number text NOT NULL, account_id text NOT NULL,
    field1 text NOT NULL, field2 text NOT NULL, field3 text NOT NULL, field4 text NOT NULL,
    kind text NOT NULL, parent text NOT NULL, active boolean NOT NULL, extra jsonb NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('account_order')
);
CREATE INDEX accounts_seq ON accounts (seq);
CREATE INDEX accounts_file_as ON accounts (lower(file_as));
CREATE INDEX accounts_number ON accounts (lower(account_number));
CREATE INDEX accounts_id ON accounts (lower(account_id));
CREATE TABLE account_keys (type text NOT NULL, key text NOT NULL, rec_id text NOT NULL);
CREATE INDEX account_keys_lookup ON account_keys (type, key);
CREATE INDEX account_keys_rec ON account_keys (rec_id);
CREATE SEQUENCE ticket_number;
CREATE TABLE tickets (
    id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    rec_id text PRIMARY KEY, number text NOT NULL UNIQUE, account text NOT NULL,
    contact text NOT NULL, description text NOT NULL, status text NOT NULL,
    priority text NOT NULL, kind text NOT NULL, source text NOT NULL, manager text NOT NULL,
    alert_key text NOT NULL, closed boolean NOT NULL, created timestamptz NOT NULL,
    updated timestamptz NOT NULL, extra jsonb NOT NULL, source_key text NOT NULL
);
CREATE UNIQUE INDEX tickets_source_key ON tickets (source_key) WHERE source_key <> '';
CREATE INDEX tickets_alert ON tickets (alert_key, closed) WHERE alert_key <> '';
CREATE TABLE history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ticket text NOT NULL,
    kind text NOT NULL, subject text NOT NULL, text text NOT NULL, author text NOT NULL,
    message_id text NOT NULL, created timestamptz NOT NULL
);
CREATE INDEX history_ticket ON history (ticket);
CREATE TABLE documents (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ticket text NOT NULL,
    filename text NOT NULL, content_type text NOT NULL, kind text NOT NULL,
    data bytea NOT NULL, created timestamptz NOT NULL
);
CREATE INDEX documents_ticket ON documents (ticket);
CREATE TABLE records (
    kind text NOT NULL, rec_id text NOT NULL, fields jsonb NOT NULL,
    created timestamptz NOT NULL, updated timestamptz NOT NULL, PRIMARY KEY (kind, rec_id)
);
CREATE TABLE processed (
    id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    digest text PRIMARY KEY, source_kind text NOT NULL, source_name text NOT NULL,
    uidl text NOT NULL, message_id text NOT NULL, outcome text NOT NULL, ticket text,
    account text, detail text NOT NULL, stage text NOT NULL, created timestamptz NOT NULL
);
CREATE INDEX processed_uidl ON processed (source_name, uidl) WHERE uidl <> '';
CREATE TABLE outbox (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind text NOT NULL,
    sender text NOT NULL, recipients text[] NOT NULL, raw bytea NOT NULL,
    message_id text NOT NULL, ticket text NOT NULL,
    attempts integer NOT NULL DEFAULT 0, last_error text NOT NULL DEFAULT '',
    created timestamptz NOT NULL, sent timestamptz, last_attempt timestamptz,
    -- a sender's claim: who is sending the row, and until when the claim holds
    claimed_by text, claimed_until timestamptz,
    -- when the mail was given up (refused for good, or out of attempts): NULL while it is
    -- not; it is then sent no more until `outbox retry` puts it back
    given_up timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent IS NULL;
-- what a flush may still send (given-up mail piles up and must not be read after every
-- message); due_mail repeats this WHERE word for word, so the planner can use it
CREATE INDEX outbox_due ON outbox (id) WHERE sent IS NULL AND given_up IS NULL;
-- the renewal of a sender's claims (claim_mail) finds its rows without reading the queue
CREATE INDEX outbox_claimed ON outbox (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE TABLE sent_ids (
    message_id text PRIMARY KEY, ticket text NOT NULL, created timestamptz NOT NULL
);
CREATE TABLE filed_ids (
    message_id text PRIMARY KEY, ticket text NOT NULL, created timestamptz NOT NULL
);
CREATE TABLE auto_responses (sender text NOT NULL, at timestamptz NOT NULL);
CREATE INDEX auto_responses_sender ON auto_responses (sender, at);
CREATE TABLE ticket_recipients (
    ticket text NOT NULL, address text NOT NULL, PRIMARY KEY (ticket, address)
);
CREATE TABLE failed_logins (sender text NOT NULL, at timestamptz NOT NULL);
CREATE INDEX failed_logins_sender ON failed_logins (sender, at);
CREATE TABLE recoveries (
    key text PRIMARY KEY, event_time timestamptz NOT NULL, remembered timestamptz NOT NULL
);
CREATE INDEX recoveries_age ON recoveries (remembered)
"""

#: version -> the statements that bring a store of the version before up to it
_PG_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # the outbox claim, so that senders beside each other never send one row twice
    2: (
        "ALTER TABLE outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz",
        "CREATE INDEX outbox_claimed ON outbox (claimed_by) WHERE claimed_by IS NOT NULL",
    ),
    # when a mail was given up, in a column instead of a "permanent: " at the start of
    # last_error (versions 1 and 2): such rows get the time of their last attempt (else
    # their creation) and lose the prefix
    3: (
        "ALTER TABLE outbox ADD COLUMN given_up timestamptz",
        "UPDATE outbox SET"
        " given_up = CASE WHEN sent IS NULL THEN coalesce(last_attempt, created) END,"
        f" last_error = substr(last_error, {len(LEGACY_GIVEN_UP_PREFIX) + 1})"
        f" WHERE left(last_error, {len(LEGACY_GIVEN_UP_PREFIX)}) = '{LEGACY_GIVEN_UP_PREFIX}'",
        "DROP INDEX outbox_due",
        "CREATE INDEX outbox_due ON outbox (id) WHERE sent IS NULL AND given_up IS NULL",
    ),
}

#: how ``export_rows`` orders each table: the order rows were written in, where it matters
_WRITE_ORDER = {"accounts": "seq", "tickets": "id", "history": "id", "documents": "id",
                "processed": "id", "outbox": "id"}


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def load_psycopg() -> Any:
    """The psycopg module, or a ConfigError saying which extra to install."""
    try:
        import psycopg  # noqa: PLC0415 (an optional dependency, imported when needed)
    except ImportError:
        raise ConfigError(
            f"a postgresql:// store needs psycopg 3, which is not installed: {EXTRA_HINT}",
            key="store.url",
        ) from None
    return psycopg


def check_postgres_url(url: str) -> None:
    """Parse (without connecting) a ``postgresql://`` URL; a ConfigError names the problem."""
    psycopg = load_psycopg()
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"not a valid PostgreSQL URL: {exc}", key="store.url") from None


def _statements(script: str) -> list[str]:
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class PostgresStore:
    """Accounts, tickets, records and the connector's state in a PostgreSQL database.

    One store is one connection, for one thread at a time (as the SQLite store); a
    ``run`` with several mailboxes opens one per mailbox.
    """

    def __init__(self, url: str, *, password: str = "", connect_timeout: int = 10) -> None:
        self.url = url
        self.path = redact_url(url)
        self._password = password
        self._psycopg = load_psycopg()
        self._connect_timeout = connect_timeout
        self._depth = 0
        #: mailbox names whose advisory lock this connection holds
        self._held: set[str] = set()
        self._closed = False
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # Connection --------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        pg = self._psycopg
        try:
            given = pg.conninfo.conninfo_to_dict(self.url)
        except pg.ProgrammingError as exc:
            raise ConfigError(f"not a valid PostgreSQL URL: {exc}", key="store.url") from None
        # libpq waits forever by default; keepalives notice a server that vanished.
        # Who is who in pg_stat_activity (and so who holds which lock in pg_locks).
        name = f"commit-email {socket.gethostname()} pid {os.getpid()}"[:63]
        defaults = {"connect_timeout": self._connect_timeout, "application_name": name,
                    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                    "keepalives_count": 3}
        extra = {k: v for k, v in defaults.items() if k not in given}
        if self._password:
            extra["password"] = self._password
        try:
            conn: psycopg.Connection[Any] = pg.connect(self.url, autocommit=True, **extra)
        except pg.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}".strip()) from exc
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            # The server side of the keepalives: a worker whose host vanished (no FIN ever
            # comes) has its connection, and so its mailbox locks, dropped in ~25 s.
            for setting, value in (("tcp_keepalives_idle", 10), ("tcp_keepalives_interval", 5),
                                   ("tcp_keepalives_count", 3)):
                conn.execute(f"SET {setting} = {value}")
        except pg.Error as exc:
            conn.close()
            raise StoreError(f"cannot set up the connection to {self.path}: {exc}") from exc
        return conn

    def _usable(self) -> psycopg.Connection[Any]:
        """The connection, reconnected first when it broke between transactions. A broken
        connection that held mailbox locks is not silently replaced: the locks went with
        it, and the worker must learn that (``holds_mailbox``) before anything else."""
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")
        conn = self._conn
        if conn.broken or conn.closed:
            if self._depth:
                raise StoreError(f"the connection to {self.path} was lost mid-transaction")
            if self._held:
                lost = ", ".join(sorted(self._held))
                self._held.clear()
                raise StoreError(f"the connection to {self.path} was lost, and with it the "
                                 f"lock of mailbox {lost}")
            self._conn = self._connect()
        return self._conn

    def _migrate(self) -> None:
        with self.transaction():
            self._execute("SELECT pg_advisory_xact_lock(hashtextextended("
                          "'commit-email schema ' || coalesce(current_schema(), ''), 0))")
            found = self._schema_version()
            if found > PG_SCHEMA_VERSION:
                raise StoreError(
                    f"the store {self.path} has schema version {found}, made by a newer "
                    f"commit-email; this one knows versions up to {PG_SCHEMA_VERSION}"
                )
            if found == PG_SCHEMA_VERSION:
                return
            if found == 0:
                for statement in _statements(_PG_SCHEMA):
                    self._execute(statement)
            else:
                for version in range(found + 1, PG_SCHEMA_VERSION + 1):
                    for statement in _PG_MIGRATIONS[version]:
                        self._execute(statement)
            self._execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(PG_SCHEMA_VERSION),),
            )

    def _schema_version(self) -> int:
        row = self._execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return 0
        row = self._execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    @property
    def schema_version(self) -> int:
        return self._schema_version()

    def close(self) -> None:
        self._closed = True
        self._held.clear()
        self._conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.path!r})"

    # Units of work ----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit everything inside at once. Nested calls are savepoints: an exception inside
        a nested block undoes only that block."""
        depth = self._depth
        name = f"sp{depth}"
        try:
            conn = self._usable() if depth == 0 else self._conn
            conn.execute("BEGIN" if depth == 0 else f"SAVEPOINT {name}")
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot start a transaction: {exc}") from exc
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth = depth
            try:
                if depth == 0:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
            except self._psycopg.Error:
                pass  # the connection is gone: the server rolled back for us
            raise
        self._depth = depth
        try:
            conn.execute("COMMIT" if depth == 0 else f"RELEASE {name}")
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot commit: {exc}") from exc

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

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        conn = self._usable() if self._depth == 0 else self._conn
        try:
            return conn.execute(sql, params)
        except self._psycopg.Error as exc:
            raise StoreError(f"{exc} (in: {sql.split(maxsplit=1)[0]} …)".strip()) from exc

    def _json(self, value: Mapping[str, Any]) -> Any:
        from psycopg.types.json import Jsonb  # noqa: PLC0415 (psycopg is optional)

        return Jsonb(dict(value))

    # Coordination ------------------------------------------------------------------------

    _LOCK_KEY = "hashtextextended(coalesce(current_schema(), '') || %s, 0)"

    def lock_mailbox(self, name: str) -> bool:
        """Take the lock of mailbox ``name`` for this connection if nobody holds it; True
        when this store holds it (now or already). The server drops it with the
        connection."""
        if name in self._held:
            return True
        row = self._execute(f"SELECT pg_try_advisory_lock({self._LOCK_KEY})",
                            (f" mailbox {name}",)).fetchone()
        if row and row[0]:
            self._held.add(name)
            return True
        return False

    def unlock_mailbox(self, name: str) -> None:
        """Let another worker have the mailbox (a stopping worker hands over at once)."""
        if name not in self._held:
            return
        self._held.discard(name)
        conn = self._conn
        if not (conn.broken or conn.closed):
            self._execute(f"SELECT pg_advisory_unlock({self._LOCK_KEY})", (f" mailbox {name}",))

    def holds_mailbox(self, name: str) -> bool:
        """Whether this store still holds the lock of ``name`` (False once the connection
        that held it was lost, even if a new one was opened since)."""
        conn = self._conn
        if conn.broken or conn.closed:
            self._held.clear()
        return name in self._held

    # Accounts (AccountDirectory + writes) ----------------------------------------------

    _SELECT_ACCOUNT = "SELECT " + ", ".join(f"a.{c}" for c in ACCOUNT_COLUMNS) + " FROM accounts a"

    @staticmethod
    def _account(row: Sequence[Any]) -> Account:
        values = dict(zip(ACCOUNT_COLUMNS, row, strict=True))
        values["kind"] = AccountKind(values["kind"])
        values["extra"] = dict(values["extra"])
        return Account(**values)

    def _accounts(self, sql: str, params: Sequence[Any]) -> list[Account]:
        return [self._account(row) for row in self._execute(sql, params)]

    def find_by_email(self, address: str) -> list[Account]:
        return self._accounts(
            self._SELECT_ACCOUNT + " JOIN account_keys k ON k.rec_id = a.rec_id"
            " WHERE k.type = 'email' AND k.key = %s ORDER BY a.seq",
            (address.lower(),),
        )

    def find_by_domain(self, domain: str) -> list[Account]:
        return self._accounts(
            self._SELECT_ACCOUNT + " JOIN account_keys k ON k.rec_id = a.rec_id"
            " WHERE k.type = 'domain' AND k.key = %s ORDER BY a.seq",
            (domain.lower(),),
        )

    def find_by_field(self, name: str, value: str) -> list[Account]:
        if name not in SEARCHABLE:
            raise ValueError(f"cannot search accounts by {name!r}")
        return self._accounts(
            self._SELECT_ACCOUNT + f" WHERE lower(a.{name}) = lower(%s) ORDER BY a.seq",
            (value.strip(),),
        )

    def get_account(self, rec_id: str) -> Account | None:
        found = self._accounts(self._SELECT_ACCOUNT + " WHERE a.rec_id = %s", (rec_id,))
        return found[0] if found else None

    def list_accounts(self) -> list[Account]:
        return self._accounts(self._SELECT_ACCOUNT + " ORDER BY a.seq", ())

    def _account_row(self, account: Account) -> list[Any]:
        row = [getattr(account, c) for c in ACCOUNT_COLUMNS]
        row[ACCOUNT_COLUMNS.index("kind")] = account.kind.value
        row[ACCOUNT_COLUMNS.index("active")] = bool(account.active)
        row[ACCOUNT_COLUMNS.index("extra")] = self._json(account.extra)
        return row

    _UPSERT_ACCOUNT = (
        f"INSERT INTO accounts ({', '.join(ACCOUNT_COLUMNS)})"
        f" VALUES ({', '.join(['%s'] * len(ACCOUNT_COLUMNS))})"
    )
    # A replaced Card moves to the end, as SQLite's INSERT OR REPLACE gives it a new rowid.
    _ON_CONFLICT_REPLACE = (
        " ON CONFLICT (rec_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in ACCOUNT_COLUMNS[1:])
        + ", seq = nextval('account_order')"
    )

    def _write_account(self, account: Account, *, replace: bool) -> Account:
        if not account.rec_id:
            account = attrs.evolve(account, rec_id=new_rec_id("ACCOUNT"))
        row = self._account_row(account)
        with self.transaction():
            try:
                self._conn.execute(
                    self._UPSERT_ACCOUNT + (self._ON_CONFLICT_REPLACE if replace else ""), row
                )
            except self._psycopg.errors.UniqueViolation as exc:
                raise StoreError(f"account {account.rec_id} already exists") from exc
            except self._psycopg.Error as exc:
                raise StoreError(f"cannot write account {account.rec_id}: {exc}") from exc
            self._execute("DELETE FROM account_keys WHERE rec_id = %s", (account.rec_id,))
            keys = [(t, k, account.rec_id) for t, k in account_keys(account)]
            if keys:
                with self._conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO account_keys (type, key, rec_id) VALUES (%s, %s, %s)", keys
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

    def import_accounts(self, accounts: Iterable[Account]) -> int:
        """Insert or replace many Cards in one transaction; returns how many.

        The rows go in with COPY (into a temporary table, then one upsert), and their
        lookup keys with a second COPY: 300,000 Cards load in seconds, where a statement
        per Card took minutes. The last row of a rec_id wins, as with upserts."""
        latest: dict[str, Account] = {}
        n = 0
        for given in accounts:
            account = given if given.rec_id else attrs.evolve(given, rec_id=new_rec_id("ACCOUNT"))
            latest.pop(account.rec_id, None)
            latest[account.rec_id] = account
            n += 1
        if not latest:
            return n
        columns = ", ".join(ACCOUNT_COLUMNS)
        with self.transaction():
            try:
                conn = self._conn
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS incoming_accounts (ord bigint,"
                    + ", ".join(f" {c} {'boolean' if c == 'active' else 'text'}"
                                for c in ACCOUNT_COLUMNS)
                    + ") ON COMMIT DROP"
                )
                conn.execute("TRUNCATE incoming_accounts")
                with conn.cursor() as cur:
                    with cur.copy(f"COPY incoming_accounts (ord, {columns}) FROM STDIN") as copy:
                        for ord_, account in enumerate(latest.values()):
                            row = [getattr(account, c) for c in ACCOUNT_COLUMNS]
                            row[ACCOUNT_COLUMNS.index("kind")] = account.kind.value
                            row[ACCOUNT_COLUMNS.index("active")] = bool(account.active)
                            row[ACCOUNT_COLUMNS.index("extra")] = json.dumps(
                                dict(account.extra), sort_keys=True)
                            copy.write_row([ord_, *row])
                    cur.execute("DELETE FROM account_keys k USING incoming_accounts i"
                                " WHERE k.rec_id = i.rec_id")
                    selected = ", ".join("extra::jsonb" if c == "extra" else c
                                         for c in ACCOUNT_COLUMNS)
                    cur.execute(
                        f"INSERT INTO accounts ({columns}, seq) SELECT {selected},"
                        " nextval('account_order') FROM incoming_accounts ORDER BY ord"
                        + self._ON_CONFLICT_REPLACE.replace(
                            "nextval('account_order')", "excluded.seq")
                    )
                    with cur.copy("COPY account_keys (type, key, rec_id) FROM STDIN") as copy:
                        for account in latest.values():
                            for t, k in account_keys(account):
                                copy.write_row((t, k, account.rec_id))
                    conn.execute("TRUNCATE incoming_accounts")
            except self._psycopg.Error as exc:
                raise StoreError(f"cannot import accounts: {exc}") from exc
        if self._depth == 0 and len(latest) >= 1000:
            # Fresh statistics, or the planner may pick a scan for the first look-ups.
            self._execute("ANALYZE accounts")
            self._execute("ANALYZE account_keys")
        return n

    # Tickets (TicketSink) ---------------------------------------------------------------

    _SELECT_TICKET = "SELECT " + ", ".join(TICKET_COLUMNS) + " FROM tickets"

    @staticmethod
    def _ticket(row: Sequence[Any]) -> Ticket:
        values = dict(zip(TICKET_COLUMNS, row, strict=True))
        values["extra"] = dict(values["extra"])
        return Ticket(**values)

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        with self.transaction():
            if draft.source_key:
                row = self._execute(
                    self._SELECT_TICKET + " WHERE source_key = %s AND source_key <> ''",
                    (draft.source_key,),
                ).fetchone()
                if row is not None:
                    return self._ticket(row)
            now = utcnow()
            values = [
                new_rec_id("TICKET"), draft.account, draft.contact, draft.description,
                draft.status, draft.priority, draft.kind, draft.source, draft.manager,
                draft.alert_key, False, now, now, self._json(draft.extra), draft.source_key,
            ]
            columns = [c for c in TICKET_COLUMNS if c != "number"]
            # Another worker may be opening the ticket of the same source right now: the
            # insert then waits for it and does nothing, and the select finds its ticket.
            row = self._execute(
                f"INSERT INTO tickets (number, {', '.join(columns)}, source_key)"
                f" VALUES (nextval('ticket_number')::text, {', '.join(['%s'] * len(values))})"
                " ON CONFLICT (source_key) WHERE source_key <> '' DO NOTHING"
                f" RETURNING {', '.join(TICKET_COLUMNS)}",
                values,
            ).fetchone()
            if row is None:
                row = self._execute(
                    self._SELECT_TICKET + " WHERE source_key = %s AND source_key <> ''",
                    (draft.source_key,),
                ).fetchone()
            assert row is not None
            return self._ticket(row)

    def get_ticket(self, *, number: str | None = None, rec_id: str | None = None) -> Ticket | None:
        if number is not None:
            row = self._execute(self._SELECT_TICKET + " WHERE number = %s", (number,)).fetchone()
        elif rec_id is not None:
            row = self._execute(self._SELECT_TICKET + " WHERE rec_id = %s", (rec_id,)).fetchone()
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
        row: list[Any] = [getattr(ticket, c) for c in TICKET_COLUMNS]
        row[TICKET_COLUMNS.index("closed")] = bool(ticket.closed)
        row[TICKET_COLUMNS.index("extra")] = self._json(ticket.extra)
        assignments = ", ".join(f"{c} = %s" for c in TICKET_COLUMNS[1:])
        self._execute(f"UPDATE tickets SET {assignments} WHERE rec_id = %s", [*row[1:], rec_id])
        return ticket

    def find_open_alert_ticket(self, alert_key: str) -> Ticket | None:
        indexed = " AND alert_key <> ''" if alert_key else ""
        row = self._execute(
            self._SELECT_TICKET
            + f" WHERE alert_key = %s{indexed} AND NOT closed ORDER BY created DESC, id DESC"
            " LIMIT 1",
            (alert_key,),
        ).fetchone()
        return self._ticket(row) if row else None

    def list_tickets(self) -> list[Ticket]:
        return [self._ticket(r) for r in self._execute(self._SELECT_TICKET + " ORDER BY id")]

    def _scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self._execute(sql, params).fetchone()
        if row is None:  # pragma: no cover - every caller's query returns one row
            raise StoreError(f"no row from: {sql.split(maxsplit=1)[0]} …")
        return row[0]

    def count_tickets(self) -> int:
        return int(self._scalar("SELECT count(*) FROM tickets"))

    def add_history(self, ticket_rec_id: str, entry: HistoryEntry) -> None:
        self._execute(
            "INSERT INTO history (ticket, kind, subject, text, author, message_id, created)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (ticket_rec_id, entry.kind, entry.subject, entry.text, entry.author,
             entry.message_id, _utc(entry.created)),
        )

    def history(self, ticket_rec_id: str) -> list[HistoryEntry]:
        rows = self._execute(
            "SELECT kind, subject, text, author, message_id, created FROM history"
            " WHERE ticket = %s ORDER BY id",
            (ticket_rec_id,),
        )
        return [
            HistoryEntry(kind=k, subject=s, text=t, author=a, message_id=m, created=c)
            for k, s, t, a, m, c in rows
        ]

    def history_counts(self) -> dict[str, int]:
        """Number of history entries per ticket rec_id."""
        rows = self._execute("SELECT ticket, count(*) FROM history GROUP BY ticket")
        return {ticket: int(n) for ticket, n in rows}

    def add_document(self, ticket_rec_id: str, document: Document) -> None:
        self._execute(
            "INSERT INTO documents (ticket, filename, content_type, kind, data, created)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (ticket_rec_id, document.filename, document.content_type, document.kind,
             document.data, utcnow()),
        )

    def documents(self, ticket_rec_id: str) -> list[Document]:
        rows = self._execute(
            "SELECT filename, content_type, kind, data FROM documents WHERE ticket = %s"
            " ORDER BY id",
            (ticket_rec_id,),
        )
        return [Document(filename=f, content_type=c, kind=k, data=bytes(d)) for f, c, k, d in rows]

    # Other Commit records ------------------------------------------------------------------

    def add_record(self, kind: str, fields: Mapping[str, str]) -> str:
        rec_id = new_rec_id(kind)
        now = utcnow()
        self._execute(
            "INSERT INTO records (kind, rec_id, fields, created, updated)"
            " VALUES (%s, %s, %s, %s, %s)",
            (kind.upper(), rec_id, self._json(fields), now, now),
        )
        return rec_id

    def update_record(self, kind: str, rec_id: str, fields: Mapping[str, str]) -> None:
        current = self.get_record(kind, rec_id)
        if current is None:
            raise KeyError(rec_id)
        self._execute(
            "UPDATE records SET fields = %s, updated = %s WHERE kind = %s AND rec_id = %s",
            (self._json({**current, **fields}), utcnow(), kind.upper(), rec_id),
        )

    def get_record(self, kind: str, rec_id: str) -> dict[str, str] | None:
        row = self._execute(
            "SELECT fields FROM records WHERE kind = %s AND rec_id = %s", (kind.upper(), rec_id)
        ).fetchone()
        return dict(row[0]) if row else None

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
            created=created,
        )

    def processed(self, digest: str) -> ProcessedEntry | None:
        if self._depth:
            # Inside the message's transaction: wait for a worker that holds the same
            # message (till its commit), so its outcome is seen and this one is a duplicate
            # rather than a second ticket. Released when this transaction ends.
            self._execute(f"SELECT pg_advisory_xact_lock({self._LOCK_KEY})",
                          (" message " + digest,))
        row = self._execute(self._SELECT_PROCESSED + " WHERE digest = %s", (digest,)).fetchone()
        return self._processed(row) if row else None

    def processed_uidl(self, mailbox: str, uidl: str) -> ProcessedEntry | None:
        indexed = " AND uidl <> ''" if uidl else ""
        row = self._execute(
            self._SELECT_PROCESSED + f" WHERE source_name = %s AND uidl = %s{indexed} LIMIT 1",
            (mailbox, uidl),
        ).fetchone()
        return self._processed(row) if row else None

    def processed_uidls(self, mailbox: str, uidls: Iterable[str]) -> set[str]:
        """Those of ``uidls`` that have an outcome under this mailbox (one query)."""
        wanted = [u for u in dict.fromkeys(uidls) if u]
        if not wanted:
            return set()
        rows = self._execute(
            "SELECT DISTINCT uidl FROM processed WHERE source_name = %s AND uidl <> ''"
            " AND uidl = ANY(%s)",
            (mailbox, wanted),
        )
        return {uidl for (uidl,) in rows}

    def record_processed(
        self, *, digest: str, source: SourceRef, message_id: str, outcome: Outcome
    ) -> None:
        self._execute(
            "INSERT INTO processed (digest, source_kind, source_name, uidl, message_id, outcome,"
            " ticket, account, detail, stage, created)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (digest, source.kind, source.name, source.uidl, message_id, outcome.kind.value,
             outcome.ticket, outcome.account, outcome.detail, outcome.stage, utcnow()),
        )

    def forget_processed(self, digest: str) -> None:
        """Drop a processed-log line (replaying a quarantined message replaces its outcome)."""
        self._execute("DELETE FROM processed WHERE digest = %s", (digest,))

    def record_uidl_alias(self, *, digest: str, mailbox: str, uidl: str) -> None:
        """Remember that a re-delivered copy (new UIDL) of a processed message was seen."""
        self._execute(
            "INSERT INTO processed (digest, source_kind, source_name, uidl, message_id,"
            " outcome, ticket, account, detail, stage, created)"
            " SELECT %s, 'pop3', %s, %s, message_id, %s, ticket, account, %s, stage, %s"
            " FROM processed WHERE digest = %s ON CONFLICT (digest) DO NOTHING",
            (f"{digest}:{mailbox}:{uidl}", mailbox, uidl, OutcomeKind.DUPLICATE.value,
             f"copy of {digest[:12]}", utcnow(), digest),
        )

    def iter_processed(self) -> Iterator[ProcessedEntry]:
        for row in self._execute(self._SELECT_PROCESSED + " ORDER BY id").fetchall():
            yield self._processed(row)

    def outcome_counts(self) -> dict[str, int]:
        rows = self._execute("SELECT outcome, count(*) FROM processed GROUP BY outcome")
        return {outcome: int(n) for outcome, n in rows}

    def enqueue_mail(self, mail: OutgoingMail) -> int:
        return int(self._scalar(
            "INSERT INTO outbox (kind, sender, recipients, raw, message_id, ticket, created)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (mail.kind, mail.sender, list(mail.recipients), mail.raw, mail.message_id,
             mail.ticket, utcnow()),
        ))

    def _outbox(
        self, where: str, params: Sequence[Any] = (), *, limit: int | None = None
    ) -> list[OutboxEntry]:
        rows = self._execute(
            "SELECT id, kind, sender, recipients, raw, message_id, ticket, attempts, last_error,"
            f" created, last_attempt, sent, given_up FROM outbox {where} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [
            OutboxEntry(
                id=i,
                mail=OutgoingMail(kind=k, sender=s, recipients=tuple(r), raw=bytes(raw),
                                  message_id=m, ticket=t),
                attempts=a,
                last_error=e,
                sent=sent is not None,
                created=created,
                last_attempt=tried,
                sent_at=sent,
                given_up_at=given_up,
            )
            for i, k, s, r, raw, m, t, a, e, created, tried, sent, given_up in rows
        ]

    def pending_mail(self) -> list[OutboxEntry]:
        return self._outbox("WHERE sent IS NULL")

    #: what may be sent: the WHERE of the ``outbox_due`` index, word for word, and more
    _DUE = (
        "sent IS NULL AND given_up IS NULL"
        " AND cardinality(recipients) > 0 AND (last_attempt IS NULL OR last_attempt <= %s)"
    )

    def due_mail(self, *, tried_before: datetime, limit: int) -> list[OutboxEntry]:
        return self._outbox("WHERE " + self._DUE, (_utc(tried_before),), limit=limit)

    def claim_mail(
        self, *, owner: str, now: datetime, until: datetime, tried_before: datetime, limit: int
    ) -> list[OutboxEntry]:
        """Claim due mail for ``owner`` (see ``ConnectorState.claim_mail``).

        The rows are picked ``FOR UPDATE SKIP LOCKED``: a row another worker is claiming
        at this moment is passed over, not waited for, and one it claimed a moment ago no
        longer matches once its lock is released (READ COMMITTED reads the row again), so
        two workers claiming at once get disjoint rows without blocking each other."""
        with self.transaction():
            self._execute(
                "UPDATE outbox SET claimed_until = %s WHERE claimed_by = %s AND sent IS NULL",
                (_utc(until), owner),
            )
            if limit <= 0:
                return []
            ids = [int(i) for (i,) in self._execute(
                "UPDATE outbox SET claimed_by = %s, claimed_until = %s WHERE id IN ("
                " SELECT id FROM outbox WHERE " + self._DUE
                + " AND (claimed_until IS NULL OR claimed_until <= %s)"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
                (owner, _utc(until), _utc(tried_before), _utc(now), limit),
            ).fetchall()]
            if not ids:
                return []
            return self._outbox("WHERE id = ANY(%s)", (ids,))

    def release_mail(self, owner: str, mail_ids: Iterable[int]) -> None:
        """Give up ``owner``'s claim on these mails (they were not tried)."""
        ids = list(mail_ids)
        if ids:
            self._execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
                " WHERE claimed_by = %s AND id = ANY(%s)",
                (owner, ids),
            )

    def all_mail(self) -> list[OutboxEntry]:
        return self._outbox("")

    def get_mail(self, mail_id: int) -> OutboxEntry | None:
        found = self._outbox("WHERE id = %s", (mail_id,))
        return found[0] if found else None

    def mark_mail_sent(self, mail_id: int) -> None:
        now = utcnow()
        self._execute(
            "UPDATE outbox SET sent = %s, last_attempt = %s, attempts = attempts + 1,"
            " claimed_by = NULL, claimed_until = NULL WHERE id = %s",
            (now, now, mail_id),
        )

    def mark_mail_failed(self, mail_id: int, error: str, *, give_up: bool = False) -> None:
        now = utcnow()
        self._execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = %s, last_attempt = %s,"
            " given_up = coalesce(given_up, %s), claimed_by = NULL, claimed_until = NULL"
            " WHERE id = %s",
            (error, now, now if give_up else None, mail_id),
        )

    def requeue_mail(self, mail_id: int) -> bool:
        """Put an unsent mail back in the queue as if new; False when there is none."""
        cur = self._execute(
            "UPDATE outbox SET attempts = 0, last_error = '', last_attempt = NULL,"
            " given_up = NULL WHERE id = %s AND sent IS NULL",
            (mail_id,),
        )
        return cur.rowcount > 0

    def delete_mail(self, mail_id: int) -> bool:
        """Remove one mail from the outbox, whatever its state; False when there is none."""
        return self._execute("DELETE FROM outbox WHERE id = %s", (mail_id,)).rowcount > 0

    def delete_sent_mail(self, before: datetime) -> list[int]:
        """Remove the mail sent before ``before``; returns their ids."""
        rows = self._execute(
            "DELETE FROM outbox WHERE sent IS NOT NULL AND sent < %s RETURNING id",
            (_utc(before),),
        ).fetchall()
        return sorted(int(i) for (i,) in rows)

    def record_sent_message_id(self, message_id: str, ticket_rec_id: str) -> None:
        self._execute(
            "INSERT INTO sent_ids (message_id, ticket, created) VALUES (%s, %s, %s)"
            " ON CONFLICT (message_id) DO UPDATE SET ticket = excluded.ticket,"
            " created = excluded.created",
            (message_id.strip("<>"), ticket_rec_id, utcnow()),
        )

    def ticket_for_sent_message_id(self, message_id: str) -> str | None:
        row = self._execute(
            "SELECT ticket FROM sent_ids WHERE message_id = %s", (message_id.strip("<>"),)
        ).fetchone()
        return (row[0] or None) if row else None

    def record_filed_message_id(self, message_id: str, ticket_rec_id: str) -> None:
        # The first ticket wins (see the SQLite store).
        self._execute(
            "INSERT INTO filed_ids (message_id, ticket, created) VALUES (%s, %s, %s)"
            " ON CONFLICT (message_id) DO NOTHING",
            (message_id.strip("<>"), ticket_rec_id, utcnow()),
        )

    def ticket_for_filed_message_id(self, message_id: str) -> str | None:
        row = self._execute(
            "SELECT ticket FROM filed_ids WHERE message_id = %s", (message_id.strip("<>"),)
        ).fetchone()
        return (row[0] or None) if row else None

    def is_own_message_id(self, message_id: str) -> bool:
        row = self._execute(
            "SELECT 1 FROM sent_ids WHERE message_id = %s", (message_id.strip("<>"),)
        ).fetchone()
        return row is not None

    def count_auto_responses(self, sender: str, since: datetime) -> int:
        return int(self._scalar(
            "SELECT count(*) FROM auto_responses WHERE sender = %s AND at >= %s",
            (sender.lower(), _utc(since)),
        ))

    def record_auto_response(self, sender: str, at: datetime) -> None:
        self._execute(
            "INSERT INTO auto_responses (sender, at) VALUES (%s, %s)", (sender.lower(), _utc(at))
        )

    def record_ticket_recipient(self, ticket_rec_id: str, address: str) -> None:
        self._execute(
            "INSERT INTO ticket_recipients (ticket, address) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            (ticket_rec_id, address.strip().lower()),
        )

    def ticket_mailed_to(self, ticket_rec_id: str, address: str) -> bool:
        row = self._execute(
            "SELECT 1 FROM ticket_recipients WHERE ticket = %s AND address = %s",
            (ticket_rec_id, address.strip().lower()),
        ).fetchone()
        return row is not None

    def count_failed_logins(self, sender: str, since: datetime) -> int:
        return int(self._scalar(
            "SELECT count(*) FROM failed_logins WHERE sender = %s AND at >= %s",
            (sender.lower(), _utc(since)),
        ))

    def record_failed_login(self, sender: str, at: datetime, *, expire_before: datetime) -> None:
        self._execute("DELETE FROM failed_logins WHERE at < %s", (_utc(expire_before),))
        self._execute(
            "INSERT INTO failed_logins (sender, at) VALUES (%s, %s)", (sender.lower(), _utc(at))
        )

    def remember_recovery(
        self, key: str, event_time: datetime, at: datetime, *, expire_before: datetime
    ) -> None:
        self._execute("DELETE FROM recoveries WHERE remembered < %s", (_utc(expire_before),))
        self._execute(
            "INSERT INTO recoveries (key, event_time, remembered) VALUES (%s, %s, %s)"
            " ON CONFLICT (key) DO UPDATE SET"
            " event_time = greatest(recoveries.event_time, excluded.event_time),"
            " remembered = excluded.remembered",
            (key, _utc(event_time), _utc(at)),
        )

    def recovery_of(self, key: str) -> tuple[datetime, datetime] | None:
        row = self._execute(
            "SELECT event_time, remembered FROM recoveries WHERE key = %s", (key,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    # Moving a whole store (``store copy``) -------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read inside as of one moment (a read-only repeatable-read transaction)."""
        if self._depth:
            yield
            return
        self._execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._depth += 1
        try:
            yield
        finally:
            self._depth = 0
            try:
                self._conn.execute("COMMIT")
            except self._psycopg.Error as exc:
                raise StoreError(f"cannot end the snapshot: {exc}") from exc

    def row_counts(self) -> dict[str, int]:
        """Rows per table of :data:`~commit_email.storage.COPY_TABLES`."""
        return {t: int(self._scalar(f"SELECT count(*) FROM {t}")) for t in COPY_TABLES}

    def export_rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``table`` in the order they were written, as ``COPY_TABLES`` says;
        read through a server-side cursor (inside :meth:`snapshot`), so a table of big
        documents is never all in memory."""
        columns = COPY_TABLES[table]
        order = f" ORDER BY {_WRITE_ORDER[table]}" if table in _WRITE_ORDER else ""
        if not self._depth:
            raise StoreError("export_rows needs a snapshot() or a transaction")
        try:
            with self._conn.cursor(name=f"export_{table}") as cur:
                cur.itersize = 500
                cur.execute(f"SELECT {', '.join(columns)} FROM {table}{order}")
                for row in cur:
                    yield tuple(list(v) if c == "recipients" else v
                                for c, v in zip(columns, row, strict=True))
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot read {table}: {exc}") from exc

    def import_rows(self, table: str, rows: Iterable[Sequence[Any]]) -> None:
        """Append exported rows to ``table`` with COPY (in the caller's transaction)."""
        columns = COPY_TABLES[table]
        try:
            with self._conn.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([
                            json.dumps(dict(v), sort_keys=True) if c in JSON_COLUMNS else v
                            for c, v in zip(columns, row, strict=True)
                        ])
                if table == "outbox":  # ids were copied: new mail must get higher ones
                    cur.execute("SELECT setval(pg_get_serial_sequence('outbox', 'id'),"
                                " coalesce(max(id), 0) + 1, false) FROM outbox")
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot write {table}: {exc}") from exc

    def last_ticket_number(self) -> int:
        """The number the last ticket got (0: none yet); the next one gets one more."""
        row = self._execute("SELECT last_value, is_called FROM ticket_number").fetchone()
        return int(row[0]) if row and row[1] else 0

    def set_last_ticket_number(self, number: int) -> None:
        if number > 0:
            self._execute("SELECT setval('ticket_number', %s, true)", (number,))
        else:
            self._execute("SELECT setval('ticket_number', 1, false)")
