"""Every error commit-email raises on purpose.

The tree::

    CommitEmailError                      base of everything below
    ├── ConfigError(ValueError)    bad TOML, unknown key, invalid regex; names the key
    ├── InputError(ValueError)     a file the user gave (CSV, .eml) is unusable; names the line
    ├── PluginError                a plugin failed to load or has a wrong hook; names the plugin
    ├── StoreError                 the store failed (sqlite3 errors are translated here)
    ├── MessageError(ValueError)   a message cannot be processed at all (too big)
    ├── AmbiguousMatch             a sender matches several Accounts; never guessed
    ├── SourceError(OSError)       the mailbox could not be read (POP3/IMAP faults translated here)
    │   └── LoginError             the server refused the login; ``permanent`` unless it said not
    └── MailerError(OSError)       a mail could not be sent (smtplib faults translated here)

Low-level exceptions (sqlite3, poplib, imaplib/IMAPClient, smtplib, lxml) never leave the layer that
caused them: each boundary translates them into one of these, keeping the
original as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousMatch",
    "CommitEmailError",
    "ConfigError",
    "InputError",
    "LoginError",
    "MailerError",
    "MessageError",
    "PluginError",
    "SourceError",
    "StoreError",
]


class CommitEmailError(Exception):
    """Base class of every error raised by commit-email."""


class ConfigError(CommitEmailError, ValueError):
    """The configuration is invalid. ``key`` names the offending setting (``pop3.port``)."""

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None) -> None:
        self.key = key
        self.path = path
        where = f"{path}: " if path else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")


class InputError(CommitEmailError, ValueError):
    """A file the user handed over cannot be used. ``line`` is 1-based where it applies."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = path or ""
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(CommitEmailError):
    """A plugin could not be loaded or registered. ``plugin`` names it."""

    def __init__(self, message: str, *, plugin: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class StoreError(CommitEmailError):
    """The store failed to read or write."""


class MessageError(CommitEmailError, ValueError):
    """A message cannot be processed. ``message_id`` is set when it is known."""

    def __init__(self, message: str, *, message_id: str | None = None) -> None:
        self.message_id = message_id
        super().__init__(f"{message} ({message_id})" if message_id else message)


class SourceError(CommitEmailError, OSError):
    """The mail source (POP3 server, file, folder) could not be read."""


class LoginError(SourceError):
    """The server refused the login. ``permanent`` unless it said the failure is temporary
    (POP3 ``[SYS/TEMP]``/``[IN-USE]``, RFC 3206; IMAP ``[UNAVAILABLE]``, RFC 5530): a wrong
    password will not fix itself, so ``run --once`` stops at once instead of retrying."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class MailerError(CommitEmailError, OSError):
    """A mail could not be handed to the SMTP server."""


class AmbiguousMatch(CommitEmailError):
    """A sender matches more than one Account (a domain typed on two Accounts, say).

    The message is forwarded with this reason; commit-email never guesses.
    """

    def __init__(self, message: str, *, candidates: tuple[str, ...] = ()) -> None:
        self.candidates = candidates
        super().__init__(message)
