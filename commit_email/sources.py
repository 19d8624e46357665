"""Where mail comes from: the mailboxes ``run`` serves, and local files for ``process``.

A :class:`Mailbox` is one configured mailbox: its name, how to open a
:class:`~commit_email.protocols.MailSession` on it, and how often to poll it. The built-in
POP3 and IMAP mailboxes come from the ``[pop3]`` and ``[imap]`` sections (see
``commit_email.mailboxes``) through ``commit_email_register_sources``, the hook a plugin
implements to add a source of its own. :func:`iter_messages` reads .eml files, Maildir
folders and mbox files.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from attrs import field, frozen

from .errors import InputError
from .model import SourceRef

if TYPE_CHECKING:
    from .protocols import MailSession

__all__ = ["Mailbox", "iter_messages", "one_message"]


@frozen(kw_only=True)
class Mailbox:
    """A mailbox ``commit-email run`` serves, as the ``commit_email_register_sources`` hook
    returns it.

    ``open_session`` makes a new, not yet connected session (``run`` enters it, uses it and
    leaves it, and asks for a new one after a fault or, unless the session can wait for
    mail, for every poll). The rest is the schedule: seconds between polls, the back-off
    after a failed poll (``reconnect_delay`` doubling up to ``reconnect_max_delay``, with
    jitter), how many failed tries ``run --once`` makes, and how many messages one pass
    fetches before it acknowledges them and starts the next.
    """

    name: str
    kind: str
    open_session: Callable[[], MailSession] = field(repr=False)
    poll_interval: float = 60.0
    reconnect_delay: float = 1.0
    reconnect_max_delay: float = 300.0
    once_attempts: int = 5
    messages_per_session: int = 2000


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
