"""Loading Accounts from CSV (``commit-email accounts import``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from .errors import InputError
from .model import Account, AccountKind
from .storage import new_rec_id

__all__ = ["CSV_COLUMNS", "Reconciled", "read_accounts_csv", "reconcile", "write_accounts_csv"]

CSV_COLUMNS = (
    "rec_id", "file_as", "email1", "email2", "account_number", "account_id",
    "field1", "field2", "field3", "field4", "kind", "parent", "active",
)
_TRUE = {"", "1", "true", "yes", "y", "on", "active"}
_FALSE = {"0", "false", "no", "n", "off", "inactive"}


def _rows(text: str, path: str) -> Iterator[tuple[int, dict[str, str]]]:
    # strict: an unclosed quote at the end of the file is an error, not a field that
    # silently swallows every line after it.
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
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
    start = reader.line_num + 1
    for row in reader:
        if None in row:
            raise InputError("more fields than columns", path=path, line=start)
        for key, value in row.items():
            # No Account column holds a line break: one inside a field means a quote was
            # left open and the rows after it were swallowed into this one.
            if value and ("\n" in value or "\r" in value):
                raise InputError(
                    f"column {key} runs over several lines (an unclosed quote?)",
                    path=path, line=start,
                )
        yield start, {k: (v or "").strip() for k, v in row.items()}
        start = reader.line_num + 1


def _csv_error_line(text: str, exc: csv.Error) -> int | None:
    """The line of a CSV error the reader reports at the end of the data: the line where
    the quote that was never closed opened (the last line with an odd number of quotes)."""
    if "end of data" not in str(exc) and "EOF" not in str(exc):
        return None
    quotes = 0
    opened = None
    for number, line in enumerate(text.splitlines(), start=1):
        before = quotes
        quotes += line.count('"')
        if before % 2 == 0 and quotes % 2 == 1:
            opened = number
    return opened


def read_accounts_csv(path: str | Path, *, assign_ids: bool = True) -> list[Account]:
    """Parse and validate an Accounts CSV; every error names its line, and one bad row
    rejects the whole file. With ``assign_ids`` false a row without ``rec_id`` keeps an
    empty one, for ``reconcile`` to match it with a stored Account."""
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
        raise InputError(f"malformed CSV: {exc}", path=str(p), line=_csv_error_line(text, exc)
                         ) from None
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
        rec_id = row.get("rec_id") or (new_rec_id("ACCOUNT") if assign_ids else "")
        if rec_id and rec_id in lines:
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


@attrs.frozen(kw_only=True)
class Reconciled:
    """The rows of an import with their rec_ids settled, and how many are new."""

    accounts: list[Account]
    created: int
    updated: int


def reconcile(rows: Iterable[Account], existing: Iterable[Account]) -> Reconciled:
    """Give each row without a rec_id the rec_id of the stored Account it is, so importing
    the same file twice updates instead of duplicating (a duplicate would make the
    customer's domain ambiguous): matched by ``email1``, else by ``file_as``, both
    case-insensitive; an unmatched row gets a new rec_id."""
    stored = list(existing)
    known = {a.rec_id for a in stored}
    by_email = {a.email1.lower(): a.rec_id for a in stored if a.email1}
    by_name = {a.file_as.lower(): a.rec_id for a in stored if a.file_as}
    settled: list[Account] = []
    created = updated = 0
    for row in rows:
        rec_id = row.rec_id
        if not rec_id and row.email1:
            rec_id = by_email.get(row.email1.lower(), "")
        if not rec_id and row.file_as:
            rec_id = by_name.get(row.file_as.lower(), "")
        if rec_id in known:
            updated += 1
        else:
            created += 1
            rec_id = rec_id or new_rec_id("ACCOUNT")
            known.add(rec_id)
            if row.email1:
                by_email.setdefault(row.email1.lower(), rec_id)
            if row.file_as:
                by_name.setdefault(row.file_as.lower(), rec_id)
        settled.append(attrs.evolve(row, rec_id=rec_id))
    return Reconciled(accounts=settled, created=created, updated=updated)


def write_accounts_csv(accounts: Iterable[Account], stream: io.TextIOBase | object) -> int:
    """Write ``accounts`` as an Accounts CSV that ``read_accounts_csv`` reads back to the same
    Accounts (every column, rec_id included, so a re-import updates instead of duplicating).
    Returns how many rows were written."""
    writer = csv.writer(stream, lineterminator="\r\n")  # type: ignore[arg-type]
    writer.writerow(CSV_COLUMNS)
    n = 0
    for account in accounts:
        row = attrs.asdict(account, recurse=False)
        row["kind"] = account.kind.value
        row["active"] = "true" if account.active else "false"
        writer.writerow([row[c] for c in CSV_COLUMNS])
        n += 1
    return n
