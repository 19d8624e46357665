"""Reading messages from local files for ``process``: .eml files, Maildir folders, mbox files."""

from __future__ import annotations

import mailbox
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError
from .model import SourceRef

__all__ = ["iter_messages"]


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _is_mbox(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(5) == b"From "


def _maildir(path: Path) -> Iterator[tuple[SourceRef, bytes]]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for sub in ("new", "cur"):
        for entry in sorted((path / sub).iterdir()):
            if entry.name.startswith("."):
                continue
            key = entry.name.split(box.colon)[0]
            yield SourceRef(kind="maildir", name=str(path), uidl=key), entry.read_bytes()


def _mbox(path: Path) -> Iterator[tuple[SourceRef, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys()):
            yield SourceRef(kind="mbox", name=str(path), uidl=str(index)), box.get_bytes(key)
    finally:
        box.close()


def iter_messages(paths: Iterable[str | Path]) -> Iterator[tuple[SourceRef, bytes]]:
    """Every message under ``paths``, in a stable order, with where it came from.

    A folder with ``cur/`` and ``new/`` is a Maildir; any other folder is read file by file
    (hidden files skipped, sub-folders recursed); a file starting with ``From `` is an mbox;
    any other file is one message.
    """
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise InputError("no such file or folder", path=str(path))
        if path.is_dir():
            if _is_maildir(path):
                yield from _maildir(path)
                continue
            children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            yield from iter_messages(children)
        elif _is_mbox(path):
            yield from _mbox(path)
        else:
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from exc
            yield SourceRef(kind="file", name=str(path)), raw
