"""A plain-SQL AccountDirectory and TicketSink over your own Commit-shaped database.

DB-API 2 only: it runs on psycopg (PostgreSQL) and on sqlite3 alike. Give it a connection in
autocommit mode (psycopg: ``autocommit=True``; sqlite3: ``isolation_level=None``): the
adapter issues BEGIN, SAVEPOINT and COMMIT itself, because the pipeline nests transactions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from commit_email import Account, Document, HistoryEntry, StoreError, Ticket, TicketDraft

ACCOUNT_COLUMNS = ("rec_id", "file_as", "email1", "email2", "account_number", "account_id",
                   "field1", "field2", "field3", "field4", "kind", "parent", "active")
TICKET_COLUMNS = ("rec_id", "number", "account", "contact", "description", "status",
                  "priority", "kind", "source", "manager", "alert_key", "closed", "created",
                  "updated")
LOOKUP_FIELDS = {"file_as", "account_number", "account_id", "field1", "field2", "field3",
                 "field4", "rec_id"}


class DBCursor(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> object: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class DBConnection(Protocol):
    def cursor(self) -> Any: ...


def _when(value: object) -> datetime:
    # PostgreSQL hands back datetimes; SQLite keeps the ISO text we wrote.
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


class SqlCommit:
    """Directory and sink in one object over one connection (``paramstyle``: the driver's)."""

    def __init__(self, connection: DBConnection, *, paramstyle: str = "format",
                 errors: type[Exception] = Exception) -> None:
        self._db = connection
        self._mark = "%s" if paramstyle in ("format", "pyformat") else "?"
        self._errors = errors
        self._depth = 0

    # -- plumbing --------------------------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any] = ()) -> DBCursor:
        cursor: DBCursor = self._db.cursor()
        try:
            cursor.execute(sql.replace("?", self._mark), list(params))
        except self._errors as exc:  # the driver's own exception never leaks
            raise StoreError(f"database error: {exc}") from exc
        return cursor

    @contextmanager
    def transaction(self) -> Iterator[None]:
        depth, self._depth = self._depth, self._depth + 1
        name = f"commit_email_{depth}"
        self._run("BEGIN" if depth == 0 else f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._run("ROLLBACK" if depth == 0 else f"ROLLBACK TO SAVEPOINT {name}")
            raise
        else:
            self._run("COMMIT" if depth == 0 else f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth = depth

    # -- AccountDirectory -----------------------------------------------------------------

    def _accounts(self, where: str, params: Sequence[Any]) -> list[Account]:
        rows = self._run(f"SELECT {', '.join(ACCOUNT_COLUMNS)}, extra FROM cards WHERE {where} "
                         "ORDER BY rec_id", params).fetchall()
        accounts = []
        for row in rows:
            values = dict(zip(ACCOUNT_COLUMNS, row[:-1], strict=True))
            values["active"] = bool(values["active"])  # SQLite has no boolean type
            accounts.append(Account(**values, extra=json.loads(row[-1])))
        return accounts

    def find_by_email(self, address: str) -> list[Account]:
        return self._accounts("lower(email1) = ? OR lower(email2) = ?", [address, address])

    def find_by_domain(self, domain: str) -> list[Account]:
        return self.find_by_email(domain)  # a bare domain is typed into email1/email2

    def find_by_field(self, name: str, value: str) -> list[Account]:
        if name not in LOOKUP_FIELDS:  # a column name is never taken from mail
            raise StoreError(f"cannot look Accounts up by {name!r}")
        return self._accounts(f"lower({name}) = lower(?)", [value])

    def get_account(self, rec_id: str) -> Account | None:
        found = self._accounts("rec_id = ?", [rec_id])
        return found[0] if found else None

    # -- TicketSink: Accounts and other records -------------------------------------------

    def add_account(self, account: Account) -> Account:
        rec_id = account.rec_id or "CRD" + uuid.uuid4().hex[:17].upper()
        values = [getattr(account, c) for c in ACCOUNT_COLUMNS[1:]]
        self._run(f"INSERT INTO cards ({', '.join(ACCOUNT_COLUMNS)}, extra) VALUES "
                  f"({', '.join('?' * (len(ACCOUNT_COLUMNS) + 1))})",
                  [rec_id, *values, json.dumps(dict(account.extra))])
        stored = self.get_account(rec_id)
        assert stored is not None
        return stored

    def update_account(self, rec_id: str, changes: Mapping[str, object]) -> Account:
        account = self.get_account(rec_id)
        if account is None:
            raise KeyError(rec_id)
        columns = {k: v for k, v in changes.items() if k in ACCOUNT_COLUMNS[1:]}
        extra = {**account.extra, **{k: str(v) for k, v in changes.items() if k not in columns}}
        sets = "".join(f"{c} = ?, " for c in columns)
        self._run(f"UPDATE cards SET {sets}extra = ? WHERE rec_id = ?",
                  [*columns.values(), json.dumps(extra), rec_id])
        return self.get_account(rec_id) or account

    def add_record(self, kind: str, fields: Mapping[str, str]) -> str:
        rec_id = kind[:3].upper() + uuid.uuid4().hex[:17].upper()
        self._run("INSERT INTO records (rec_id, kind, fields) VALUES (?, ?, ?)",
                  [rec_id, kind, json.dumps(dict(fields))])
        return rec_id

    def update_record(self, kind: str, rec_id: str, fields: Mapping[str, str]) -> None:
        current = self.get_record(kind, rec_id)
        if current is None:
            raise KeyError(rec_id)
        self._run("UPDATE records SET fields = ? WHERE rec_id = ?",
                  [json.dumps({**current, **fields}), rec_id])

    def get_record(self, kind: str, rec_id: str) -> dict[str, str] | None:
        row = self._run("SELECT fields FROM records WHERE kind = ? AND rec_id = ?",
                        [kind, rec_id]).fetchone()
        return dict(json.loads(row[0])) if row else None

    # -- TicketSink: tickets --------------------------------------------------------------

    def _tickets(self, where: str, params: Sequence[Any], tail: str = "") -> list[Ticket]:
        rows = self._run(f"SELECT {', '.join(TICKET_COLUMNS)}, extra FROM tickets "
                         f"WHERE {where} {tail}", params).fetchall()
        tickets = []
        for row in rows:
            values = dict(zip(TICKET_COLUMNS, row[:-1], strict=True))
            values.update(closed=bool(values["closed"]), created=_when(values["created"]),
                          updated=_when(values["updated"]))
            tickets.append(Ticket(**values, extra=json.loads(row[-1])))
        return tickets

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        if draft.source_key:  # idempotent: a crash between two commits opens no second ticket
            again = self._tickets("source_key = ?", [draft.source_key])
            if again:
                return again[0]
        row = self._run("SELECT coalesce(max(CAST(number AS integer)), 0) + 1 FROM tickets")
        now = datetime.now(UTC).isoformat()
        rec_id = "TKT" + uuid.uuid4().hex[:17].upper()
        self._run(
            f"INSERT INTO tickets ({', '.join(TICKET_COLUMNS)}, source_key, extra) VALUES "
            f"({', '.join('?' * (len(TICKET_COLUMNS) + 2))})",
            [rec_id, str(row.fetchone()[0]), draft.account, draft.contact, draft.description,
             draft.status, draft.priority, draft.kind, draft.source, draft.manager,
             draft.alert_key, False, now, now, draft.source_key or None,
             json.dumps(dict(draft.extra))],
        )
        return self._tickets("rec_id = ?", [rec_id])[0]

    def get_ticket(self, *, number: str | None = None, rec_id: str | None = None) -> Ticket | None:
        found = (self._tickets("number = ?", [number]) if number is not None
                 else self._tickets("rec_id = ?", [rec_id]))
        return found[0] if found else None

    def update_ticket(self, rec_id: str, changes: Mapping[str, object]) -> Ticket:
        ticket = self.get_ticket(rec_id=rec_id)
        if ticket is None:
            raise KeyError(rec_id)
        columns = {k: v for k, v in changes.items() if k in TICKET_COLUMNS[2:-2]}
        extra = {**ticket.extra, **{k: str(v) for k, v in changes.items() if k not in columns}}
        sets = "".join(f"{c} = ?, " for c in columns)
        self._run(f"UPDATE tickets SET {sets}extra = ?, updated = ? WHERE rec_id = ?",
                  [*columns.values(), json.dumps(extra), datetime.now(UTC).isoformat(), rec_id])
        return self.get_ticket(rec_id=rec_id) or ticket

    def find_open_alert_ticket(self, alert_key: str) -> Ticket | None:
        found = self._tickets("alert_key = ? AND NOT closed", [alert_key],
                              "ORDER BY created DESC LIMIT 1")
        return found[0] if found else None

    def list_tickets(self) -> list[Ticket]:
        return self._tickets("1 = 1", [], "ORDER BY created, number")

    def add_history(self, ticket_rec_id: str, entry: HistoryEntry) -> None:
        self._run("INSERT INTO ticket_history (ticket, kind, text, subject, author, message_id,"
                  " created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  [ticket_rec_id, entry.kind, entry.text, entry.subject, entry.author,
                   entry.message_id, entry.created.isoformat()])

    def history(self, ticket_rec_id: str) -> list[HistoryEntry]:
        rows = self._run("SELECT kind, text, subject, author, message_id, created FROM "
                         "ticket_history WHERE ticket = ? ORDER BY id", [ticket_rec_id])
        return [HistoryEntry(kind=r[0], text=r[1], subject=r[2], author=r[3], message_id=r[4],
                             created=_when(r[5])) for r in rows.fetchall()]

    def add_document(self, ticket_rec_id: str, document: Document) -> None:
        self._run("INSERT INTO ticket_documents (ticket, filename, content_type, data, kind) "
                  "VALUES (?, ?, ?, ?, ?)", [ticket_rec_id, document.filename,
                                             document.content_type, document.data, document.kind])

    def documents(self, ticket_rec_id: str) -> list[Document]:
        rows = self._run("SELECT filename, content_type, data, kind FROM ticket_documents "
                         "WHERE ticket = ? ORDER BY id", [ticket_rec_id])
        return [Document(filename=r[0], content_type=r[1], data=bytes(r[2]), kind=r[3])
                for r in rows.fetchall()]
