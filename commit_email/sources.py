"""Reading messages from local files for ``process``: .eml files, Maildir folders, mbox files."""

from __future__ import annotations

import mailbox
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError
from .model import SourceRef

__all__ = ["iter_messages", "one_message"]


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


MBOX_SUFFIXES = frozenset({".mbox", ".mbx"})


def _is_mbox(path: Path) -> bool:
    """An mbox is recognised by its name: a body line starting with ``From `` must never
    split a single message in two, so the content is not sniffed."""
    return path.suffix.lower() in MBOX_SUFFIXES or path.name.lower() == "mbox"


def one_message(raw: bytes) -> bytes:
    """The message in a single-message file, its leading mbox ``From `` line dropped."""
    if raw.startswith(b"From "):
        end = raw.find(b"\n")
        return b"" if end < 0 else raw[end + 1 :]
    return raw


def _maildir(path: Path) -> Iterator[tuple[SourceRef, bytes]]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for sub in ("new", "cur"):
        for entry in sorted((path / sub).iterdir()):
            if entry.name.startswith("."):
                continue
            key = entry.name.split(box.colon)[0]
            raw = one_message(entry.read_bytes())
            yield SourceRef(kind="maildir", name=str(path), uidl=key), raw


def _mbox(path: Path) -> Iterator[tuple[SourceRef, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys()):
            yield SourceRef(kind="mbox", name=str(path), uidl=str(index)), box.get_bytes(key)
    finally:
        box.close()


def iter_messages(
    paths: Iterable[str | Path], *, mbox: bool = False
) -> Iterator[tuple[SourceRef, bytes]]:
    """Every message under ``paths``, in a stable order, with where it came from.

    A folder with ``cur/`` and ``new/`` is a Maildir; any other folder is read file by file
    (hidden files skipped, sub-folders recursed); a file named ``*.mbox``, ``*.mbx`` or
    ``mbox`` is an mbox, and so is every other file when ``mbox`` is true; any other file
    (``.eml`` included) is one message, a leading mbox ``From `` line dropped.
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
            yield from iter_messages(children, mbox=mbox)
        elif _is_mbox(path) or (mbox and path.suffix.lower() != ".eml"):
            yield from _mbox(path)
        else:
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from exc
            yield SourceRef(kind="file", name=str(path)), one_message(raw)
