"""Quarantine: messages that could not be processed, kept byte-for-byte with their reason.

Each entry is two files in ``<state_dir>/quarantine/``: ``<id>.eml`` (the raw bytes,
unchanged) and ``<id>.json`` (reason, source, time, traceback). Both are written to a
temporary name, fsynced and renamed, so a crash never leaves half an entry that
``list`` would show. ``replay`` re-runs an entry through the connector after a fix.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from attrs import frozen

from .errors import StoreError
from .model import SourceRef, utcnow

__all__ = ["Quarantine", "QuarantineEntry", "private_directory"]


@frozen(kw_only=True)
class QuarantineEntry:
    id: str
    reason: str
    source: SourceRef
    message_id: str
    created: datetime
    size: int
    resolved: str = ""  # the outcome of a successful replay


#: What ``add`` names entries: a time stamp and random hex. Anything else (a path, ``..``)
#: is refused by ``get`` before it touches the file system.
_ENTRY_ID = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{8}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync and rename into place, readable by the owner only: a quarantined mail
    may hold a password (an XML transaction, a reply quoting one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                 0o600)
    with open(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def private_directory(path: Path) -> Path:
    """Create ``path`` and every missing parent readable by the owner only (0700); a
    directory that exists already is left as its owner set it."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable. Windows cannot open a directory (and its
    NTFS journals the rename itself), so there is nothing to do there."""
    if os.name == "nt":
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Quarantine:
    """The quarantine folder of one connector."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def add(
        self, raw: bytes, *, reason: str, source: SourceRef, message_id: str = "",
        details: str = "",
    ) -> QuarantineEntry:
        """Keep ``raw`` with its reason. A quarantine that cannot be written (a file where
        the folder should be, a full disk) is a :class:`StoreError`: the message is then not
        acknowledged to its source, so it is not lost, and the run stops with that error."""
        try:
            return self._add(raw, reason=reason, source=source, message_id=message_id,
                             details=details)
        except OSError as exc:
            raise StoreError(f"cannot write to the quarantine at {self.directory}: "
                             f"{exc.strerror or exc}") from exc

    def _add(
        self, raw: bytes, *, reason: str, source: SourceRef, message_id: str,
        details: str,
    ) -> QuarantineEntry:
        private_directory(self.directory)
        now = utcnow()
        entry_id = f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
        entry = QuarantineEntry(
            id=entry_id, reason=reason, source=source, message_id=message_id, created=now,
            size=len(raw),
        )
        _write_atomic(self.directory / f"{entry_id}.eml", raw)
        meta = {
            "reason": reason,
            "source": {"kind": source.kind, "name": source.name, "uidl": source.uidl},
            "message_id": message_id,
            "created": now.isoformat(),
            "size": len(raw),
            "details": details,
            "resolved": "",
        }
        _write_atomic(self.directory / f"{entry_id}.json", json.dumps(meta, indent=2).encode())
        _fsync_directory(self.directory)  # the renames themselves must survive a crash
        return entry

    def _entry(self, meta_path: Path) -> QuarantineEntry:
        meta = json.loads(meta_path.read_text())
        src = meta.get("source", {})
        return QuarantineEntry(
            id=meta_path.stem,
            reason=meta.get("reason", ""),
            source=SourceRef(kind=src.get("kind", ""), name=src.get("name", ""),
                             uidl=src.get("uidl", "")),
            message_id=meta.get("message_id", ""),
            created=datetime.fromisoformat(meta["created"]),
            size=int(meta.get("size", 0)),
            resolved=meta.get("resolved", ""),
        )

    def entries(self) -> Iterator[QuarantineEntry]:
        if not self.directory.is_dir():
            return
        for meta_path in sorted(self.directory.glob("*.json")):
            if (self.directory / f"{meta_path.stem}.eml").exists():
                yield self._entry(meta_path)

    def get(self, entry_id: str) -> tuple[QuarantineEntry, bytes]:
        """The entry and its raw bytes; KeyError when there is no such entry."""
        if not _ENTRY_ID.fullmatch(entry_id):
            raise KeyError(entry_id)
        meta_path = self.directory / f"{entry_id}.json"
        eml_path = self.directory / f"{entry_id}.eml"
        if not meta_path.exists() or not eml_path.exists():
            raise KeyError(entry_id)
        return self._entry(meta_path), eml_path.read_bytes()

    def mark_resolved(self, entry_id: str, outcome: str) -> None:
        meta_path = self.directory / f"{entry_id}.json"
        meta = json.loads(meta_path.read_text())
        meta["resolved"] = outcome
        _write_atomic(meta_path, json.dumps(meta, indent=2).encode())
