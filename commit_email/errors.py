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
    │       └── OAuthLoginError    an OAuth login refused even with a new token; names the
    │                              mailbox, the SASL mechanism and the server's status
    ├── MailerError(OSError)       a mail could not be sent; ``permanent``, ``code``
    │   ├── SmtpTransientError     4xx, connection trouble: retried (commit_email.smtp)
    │   └── SmtpPermanentError     5xx, refused login, bad TLS: given up (commit_email.smtp)
    └── OAuthError                 no OAuth 2.0 access token could be had
        ├── TokenRefused           the provider refused the grant (``invalid_grant``, …):
        │                          a person must act (``commit-email auth login NAME``)
        └── TokenUnavailable(OSError)  the token endpoint or command failed for now

    XmlApiError(CommitEmailError, ValueError), in commit_email.xml_api, refuses one XML
    transaction with its ``code``.

Outside the tree on purpose: ``MessageTimeout`` (commit_email.deadline) is a
``BaseException``, so that no ``except Exception`` in a stage or a plugin can swallow the
per-message time limit.

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
    "OAuthError",
    "OAuthLoginError",
    "PluginError",
    "SourceError",
    "StoreError",
    "TokenRefused",
    "TokenUnavailable",
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
    """The mail source (POP3 server, file, folder) could not be read.

    ``permanent`` when waiting will not help (a refused password, a certificate that does
    not verify): ``run --once`` then stops at once with exit status 2 instead of retrying.
    """

    #: waiting will not help; False unless the raiser says so
    permanent: bool = False

    def __init__(self, *args: object, permanent: bool = False) -> None:
        super().__init__(*args)
        self.permanent = permanent


class LoginError(SourceError):
    """The server refused the login. ``permanent`` unless it said the failure is temporary
    (POP3 ``[SYS/TEMP]``/``[IN-USE]``, RFC 3206; IMAP ``[UNAVAILABLE]``, RFC 5530): a wrong
    password will not fix itself, so ``run --once`` stops at once instead of retrying."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message, permanent=permanent)


class OAuthLoginError(LoginError):
    """The server refused an OAuth 2.0 login (XOAUTH2, OAUTHBEARER), a new token included.

    ``mailbox`` names the mailbox or relay, ``mechanism`` the SASL mechanism, ``status`` the
    status of the server's failure challenge (``"401"``, or ``""`` if it sent none).
    """

    def __init__(self, message: str, *, mailbox: str, mechanism: str, status: str) -> None:
        super().__init__(message, permanent=True)
        self.mailbox = mailbox
        self.mechanism = mechanism
        self.status = status


class MailerError(CommitEmailError, OSError):
    """A mail could not be handed to the SMTP server (or a plugin's mailer).

    ``permanent`` when sending it again cannot help (a 5xx reply, a refused login, a
    certificate that does not verify): the outbox gives the mail up at once instead of
    retrying it. ``code`` is the server's reply code when there was one.
    """

    #: sending again cannot help; False unless the raiser says so
    permanent: bool = False
    #: the SMTP server's reply code; None when there was no reply (it could not be reached)
    code: int | None = None

    def __init__(self, *args: object, permanent: bool = False, code: int | None = None) -> None:
        super().__init__(*args)
        self.permanent = permanent
        self.code = code


class OAuthError(CommitEmailError):
    """No OAuth 2.0 access token could be had for an ``[oauth.NAME]`` section."""


class TokenRefused(OAuthError):
    """The provider refused the grant; retrying will not help until a person acts.

    ``error`` is the OAuth error code (``invalid_grant``: the refresh token was revoked or
    expired; ``invalid_client``: a wrong client id or secret) or ``no_token`` before the
    first ``commit-email auth login``.
    """

    def __init__(self, message: str, *, error: str) -> None:
        super().__init__(message)
        self.error = error


class TokenUnavailable(OAuthError, OSError):
    """The token endpoint could not be reached, timed out or failed (5xx), or the token
    command failed: a transient fault like an unreachable mail server."""


class AmbiguousMatch(CommitEmailError):
    """A sender matches more than one Account (a domain typed on two Accounts, say).

    The message is forwarded with this reason; commit-email never guesses.
    """

    def __init__(self, message: str, *, candidates: tuple[str, ...] = ()) -> None:
        self.candidates = candidates
        super().__init__(message)
