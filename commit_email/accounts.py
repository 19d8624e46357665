"""Loading Accounts from CSV (``commit-email accounts import``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError
from .model import Account, AccountKind
from .store import new_rec_id

__all__ = ["CSV_COLUMNS", "read_accounts_csv"]

CSV_COLUMNS = (
    "rec_id", "file_as", "email1", "email2", "account_number", "account_id",
    "field1", "field2", "field3", "field4", "kind", "parent", "active",
)
_TRUE = {"", "1", "true", "yes", "y", "on", "active"}
_FALSE = {"0", "false", "no", "n", "off", "inactive"}


def _rows(text: str, path: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError("empty file: expected a header line", path=path, line=1)
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise InputError(
            f"unknown column {unknown[0]!r} (columns: {', '.join(CSV_COLUMNS)})", path=path,
            line=1,
        )
    reader.fieldnames = header
    for row in reader:
        if None in row:
            raise InputError("more fields than columns", path=path, line=reader.line_num)
        yield reader.line_num, {k: (v or "").strip() for k, v in row.items()}


def read_accounts_csv(path: str | Path) -> list[Account]:
    """Parse and validate an Accounts CSV; every error names its line."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("no such file", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path=str(p)) from None
    accounts: list[Account] = []
    lines: dict[str, int] = {}
    try:
        rows = list(_rows(text, str(p)))
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}", path=str(p)) from None
    for line, row in rows:
        kind_text = (row.get("kind") or "account").lower()
        try:
            kind = AccountKind(kind_text)
        except ValueError:
            raise InputError(
                f"kind must be account, contact or employee, not {kind_text!r}", path=str(p),
                line=line,
            ) from None
        active_text = row.get("active", "").lower()
        if active_text not in _TRUE | _FALSE:
            raise InputError(f"active must be true or false, not {active_text!r}",
                             path=str(p), line=line)
        if not (row.get("file_as") or row.get("email1") or row.get("email2")):
            raise InputError("a row needs file_as or an email", path=str(p), line=line)
        if kind is AccountKind.CONTACT and not row.get("parent"):
            raise InputError("a contact needs parent (its Account's rec_id)", path=str(p),
                             line=line)
        rec_id = row.get("rec_id") or new_rec_id("ACCOUNT")
        if rec_id in lines:
            raise InputError(f"rec_id {rec_id} already used on line {lines[rec_id]}",
                             path=str(p), line=line)
        lines[rec_id] = line
        accounts.append(
            Account(
                rec_id=rec_id,
                file_as=row.get("file_as", ""),
                email1=row.get("email1", ""),
                email2=row.get("email2", ""),
                account_number=row.get("account_number", ""),
                account_id=row.get("account_id", ""),
                field1=row.get("field1", ""),
                field2=row.get("field2", ""),
                field3=row.get("field3", ""),
                field4=row.get("field4", ""),
                kind=kind,
                parent=row.get("parent", ""),
                active=active_text in _TRUE,
            )
        )
    return accounts
