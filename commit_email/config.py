"""The TOML configuration, loaded into frozen attrs classes.

Every section is a class whose fields are the section's keys with their defaults;
the loader is generic over them, so adding a key is adding a field. Unknown keys are
errors, because a typo must not silently disable a feature. Secrets are read from
``password`` or the environment variable named by ``password_env`` only when they
are needed (``check-config`` asks for all of them).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
from attrs import field, frozen

from ._regex import backtracking_risk
from .alerts import BUILTIN_PARSERS
from .errors import ConfigError
from .extras import require
from .store import check_store_url

__all__ = [
    "AccountRule",
    "AutomatedConfig",
    "Config",
    "ConnectorConfig",
    "DetectionRule",
    "EmailToTicketConfig",
    "ImapConfig",
    "LoopProtectionConfig",
    "OAuthConfig",
    "Pop3Config",
    "SkipRule",
    "SmtpConfig",
    "StoreConfig",
    "ThreadingConfig",
    "XmlApiConfig",
    "compile_regex",
    "load_config",
    "parse_config",
    "validate_oauth",
    "validate_oauth_login",
]

T = TypeVar("T")


def compile_regex(pattern: str, key: str) -> re.Pattern[str]:
    """Compile a user-supplied regex case-insensitively, naming ``key`` when it is invalid."""
    try:
        compiled = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    except re.error as exc:
        raise ConfigError(f"invalid regular expression {pattern!r}: {exc}", key=key) from None
    # No time limit can stop a search inside re: a regex that can run away is refused here.
    risk = backtracking_risk(pattern, compiled.flags)
    if risk:
        raise ConfigError(f"regular expression {pattern!r} refused: {risk}", key=key)
    return compiled


def _secret(value: str, env: str, key: str) -> str:
    if value:
        return value
    if env:
        try:
            return os.environ[env]
        except KeyError:
            raise ConfigError(
                f"environment variable {env} is not set", key=f"{key}.password_env"
            ) from None
    return ""


@frozen(kw_only=True)
class ConnectorConfig:
    public_address: str = ""
    internal_address: str = ""
    state_dir: str = "./state"
    max_message_bytes: int = 26_214_400
    #: seconds one message may take before it is quarantined (0 = no limit)
    message_time_limit: float = 120.0
    #: domain of the Message-IDs the connector generates; default: public_address's domain
    message_id_domain: str = ""


@frozen(kw_only=True)
class StoreConfig:
    #: ``sqlite:///PATH`` (relative to this file) or ``memory:``; options:
    #: ``?synchronous=FULL`` (survive power loss, slower commits) and ``mmap_size=BYTES``
    #: (read at most this much of the file, as it is when opened, through a memory map:
    #: faster look-ups in a big directory; default 256 MB, 0 turns it off);
    #: ``postgresql://user@host/db`` for a store several ``run`` processes share
    #: (needs ``pip install 'commit-email[postgres]'``)
    url: str = "sqlite:///./commit.db"
    #: the PostgreSQL password, when the URL has none (libpq's PGPASSWORD and
    #: ~/.pgpass work too)
    password: str = field(default="", repr=False)
    #: the environment variable holding that password
    password_env: str = ""

    def resolved_password(self) -> str:
        return _secret(self.password, self.password_env, "store")


@frozen(kw_only=True)
class Pop3Config:
    #: the mailbox's name in logs, ``run --json`` and the processed log, which files its
    #: UIDLs under it (so choose it once); required and unique in ``[[pop3]]`` arrays;
    #: empty: ``user@host:port``
    name: str = ""
    host: str = ""
    port: int = 0  # 0: 995 for ssl, 110 otherwise
    security: str = field(default="ssl", metadata={"choices": ("ssl", "starttls", "plain")})
    user: str = ""
    password: str = field(default="", repr=False)
    password_env: str = ""
    leave_on_server: bool = False
    poll_interval: float = 60.0
    timeout: float = 60.0
    ca_file: str = ""
    verify_certificate: bool = True
    #: how to log in: ``auto`` (APOP when the greeting offers it, else USER/PASS; XOAUTH2
    #: when ``oauth`` is set), ``user``, ``apop``, or OAuth 2.0 with ``xoauth2`` or
    #: ``oauthbearer`` (SASL, RFC 7628; needs ``oauth``)
    auth: str = field(default="auto", metadata={"choices": (
        "auto", "user", "apop", "xoauth2", "oauthbearer")})
    #: the ``[oauth.NAME]`` section whose tokens log in (with ``auth = "xoauth2"`` or
    #: ``"oauthbearer"``); no password is needed then
    oauth: str = ""
    #: seconds before the first reconnect after a failed poll; doubles per failure
    reconnect_delay: float = 1.0
    #: cap of the reconnect back-off, in seconds
    reconnect_max_delay: float = 300.0
    #: ``run --once`` gives up after this many failed attempts at one complete pass
    once_attempts: int = 5
    #: QUIT (which applies the deletions) and reconnect after this many fetched messages,
    #: so a long backlog frees the mailbox as it goes; each session costs a login and a
    #: listing of what is left
    messages_per_session: int = 2000
    #: where this table stands in the file (``pop3`` or ``pop3[N]``), for error messages
    key: str = field(default="pop3", metadata={"internal": True})

    @property
    def effective_port(self) -> int:
        return self.port or (995 if self.security == "ssl" else 110)

    @property
    def mailbox(self) -> str:
        """The name the delivery log files this mailbox's UIDLs under: ``name``, else
        ``user@host:port``."""
        return self.name or f"{self.user}@{self.host}:{self.effective_port}"

    @property
    def sasl_mechanism(self) -> str:
        """``XOAUTH2``/``OAUTHBEARER`` when this mailbox logs in with OAuth, else ``""``."""
        return _sasl_mechanism(self.auth, self.oauth)

    def resolved_password(self) -> str:
        return _secret(self.password, self.password_env, self.key)


@frozen(kw_only=True)
class ImapConfig:
    #: the mailbox's name in logs, ``run --json`` and the processed log, which files its
    #: messages under it (so choose it once); required and unique in ``[[imap]]`` arrays;
    #: empty: ``user@host:port/folder``
    name: str = ""
    #: The IMAP server; empty means no IMAP source.
    host: str = ""
    #: The server's port; 0 means 993 for `ssl`, 143 otherwise.
    port: int = 0
    #: `ssl` (IMAPS, TLS from the first byte), `starttls` (STARTTLS on the plain port; never
    #: falls back to plaintext) or `plain` (no TLS: a trusted network only).
    security: str = field(default="ssl", metadata={"choices": ("ssl", "starttls", "plain")})
    #: The mailbox login.
    user: str = ""
    #: The password, written in the file (prefer `password_env`).
    password: str = field(default="", repr=False)
    #: Name of the environment variable that holds the password.
    password_env: str = ""
    #: how to log in: `auto` (LOGIN, or AUTHENTICATE PLAIN where the server disables LOGIN;
    #: XOAUTH2 when `oauth` is set), `login`, `plain` (AUTHENTICATE PLAIN, RFC 4616), or
    #: OAuth 2.0 with `xoauth2` or `oauthbearer` (SASL, RFC 7628; needs `oauth`)
    auth: str = field(default="auto", metadata={"choices": (
        "auto", "login", "plain", "xoauth2", "oauthbearer")})
    #: the `[oauth.NAME]` section whose tokens log in (with `auth = "xoauth2"` or
    #: `"oauthbearer"`); no password is needed then
    oauth: str = ""
    #: The folder new mail is read from.
    folder: str = "INBOX"
    #: What happens to a message once its outcome is recorded: `move` it to
    #: `processed_folder` (kept for audit), `delete` it, or `keep` it where it is (it is
    #: still processed only once).
    after: str = field(default="move", metadata={"choices": ("move", "delete", "keep")})
    #: Where `after = "move"` puts processed mail; created (and subscribed) if missing.
    processed_folder: str = "Processed"
    #: Where mail that failed (quarantined locally) and mail over
    #: `connector.max_message_bytes` (not downloaded) is moved, whatever `after` says; empty
    #: leaves oversized mail in `folder` (logged) and treats failed mail like the rest.
    #: Created if missing.
    quarantine_folder: str = ""
    #: Wait for new mail with IDLE (RFC 2177) when the server offers it, so a mail opens its
    #: ticket within seconds; otherwise (or when false) poll every `poll_interval`.
    idle: bool = True
    #: Seconds between two polls; with IDLE, the longest wait before the folder is listed
    #: again anyway (capped at 25 minutes, within the 29 that RFC 2177 allows).
    poll_interval: float = 60.0
    #: Socket timeout in seconds for connecting and for every reply.
    timeout: float = 60.0
    #: A PEM file of CA certificates to verify the server with (default: the system store);
    #: relative to the config file.
    ca_file: str = ""
    #: Verify the server's certificate and host name. Turn off only for a test server.
    verify_certificate: bool = True
    #: seconds before the first reconnect after a failed poll; doubles per failure
    reconnect_delay: float = 1.0
    #: cap of the reconnect back-off, in seconds
    reconnect_max_delay: float = 300.0
    #: `run --once` gives up after this many failed attempts at one complete pass
    once_attempts: int = 5
    #: Messages fetched in one pass before they are moved (or deleted) together and the
    #: folder is listed again, so a long backlog leaves the folder as it goes.
    messages_per_session: int = 500
    #: where this table stands in the file (``imap`` or ``imap[N]``), for error messages
    key: str = field(default="imap", metadata={"internal": True})

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)

    @property
    def mailbox(self) -> str:
        """The name the processed log files this folder's messages under: ``name``, else
        ``user@host:port/folder``."""
        return self.name or f"{self.user}@{self.host}:{self.effective_port}/{self.folder}"

    @property
    def sasl_mechanism(self) -> str:
        """``XOAUTH2``/``OAUTHBEARER`` when this mailbox logs in with OAuth, else ``""``."""
        return _sasl_mechanism(self.auth, self.oauth)

    def resolved_password(self) -> str:
        return _secret(self.password, self.password_env, self.key)


@frozen(kw_only=True)
class SmtpConfig:
    host: str = ""
    port: int = 0  # 0: 465 for ssl, 587 for starttls, 25 for plain
    security: str = field(default="starttls", metadata={"choices": ("ssl", "starttls", "plain")})
    user: str = ""
    password: str = field(default="", repr=False)
    password_env: str = ""
    from_address: str = ""
    #: how to log in when ``user`` is set: ``auto`` (what the server offers; XOAUTH2 when
    #: ``oauth`` is set), ``login``, ``plain``, or OAuth 2.0 with ``xoauth2`` or
    #: ``oauthbearer`` (needs ``oauth``)
    auth: str = field(default="auto", metadata={"choices": (
        "auto", "login", "plain", "xoauth2", "oauthbearer")})
    #: the ``[oauth.NAME]`` section whose tokens log in to the relay
    oauth: str = ""
    timeout: float = 60.0
    ca_file: str = ""
    verify_certificate: bool = True
    retries: int = 3
    #: Attempts (each with its ``retries``) after which a mail that keeps failing
    #: transiently (a ``4xx``, the server down) is given up like a ``5xx``: kept as failed,
    #: logged at ERROR and listed by ``commit-email outbox list`` until ``outbox retry`` or
    #: ``purge``; 0 never gives up. 48 attempts ``retry_interval`` apart ride out greylisting
    #: and a relay outage of about four hours, yet an auto-response never turns up days late.
    max_attempts: int = 48
    #: Seconds to wait after a transient failure before the outbox tries that mail again.
    #: Without it every processed message would spend one attempt, so a burst of incoming
    #: mail during an SMTP outage would use up ``max_attempts`` in seconds.
    retry_interval: float = 300.0
    #: SMTP sessions ``run`` and ``process`` send over at the same time, from threads
    #: beside processing (per mailbox worker in a ``run`` of several mailboxes). Each stays
    #: open across mails (one TLS handshake and login for many) and a second one is opened
    #: only while the first has a backlog: a relay tens of milliseconds away answers each
    #: mail a round trip later, and more sessions send more mails in that time. Mail to one
    #: customer address keeps its order whatever this is.
    connections: int = 4
    #: Seconds a session may sit unused before it is closed (QUIT); the next mail opens a
    #: new one. A session the server closed earlier is reopened without costing an attempt.
    idle_timeout: float = 30.0
    #: Seconds ``process`` and ``run --once`` wait at the end for the outbox to be sent;
    #: what is still queued then (or waits for ``retry_interval``) stays in the outbox for
    #: the next ``run`` or ``process``, and the summary says how many.
    drain_timeout: float = 120.0

    @property
    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587}.get(self.security, 25)

    @property
    def sasl_mechanism(self) -> str:
        """``XOAUTH2``/``OAUTHBEARER`` when the relay is logged in to with OAuth, else ``""``."""
        return _sasl_mechanism(self.auth, self.oauth)

    def resolved_password(self) -> str:
        return _secret(self.password, self.password_env, "smtp")


def _sasl_mechanism(auth: str, oauth: str) -> str:
    if auth in ("xoauth2", "oauthbearer"):
        return auth.upper()
    return "XOAUTH2" if auth == "auto" and oauth else ""


#: what each provider can do, and its presets (the endpoints are Microsoft Entra ID's v2.0
#: and Google's; ``{tenant}`` is filled in from the section)
OAUTH_PROVIDERS = ("microsoft", "google", "generic")
OAUTH_GRANTS = ("client_credentials", "refresh_token", "command")


@frozen(kw_only=True)
class OAuthConfig:
    """One ``[oauth.NAME]`` section: where tokens come from for the mailboxes and the relay
    that name it (``oauth = "NAME"``)."""

    #: who issues the tokens: ``microsoft`` (Entra ID / Microsoft 365), ``google`` (Google
    #: Workspace) or ``generic`` (any OAuth 2.0 server; ``token_url`` required)
    provider: str = ""
    #: Microsoft only: the directory (tenant) name or id, ``contoso.onmicrosoft.com``
    tenant: str = ""
    #: the application (client) id of the app registration
    client_id: str = ""
    #: the client secret (``client_secret_env``: the environment variable holding it)
    client_secret: str = field(default="", repr=False)
    #: environment variable that holds the client secret
    client_secret_env: str = ""
    #: ``client_credentials`` (app-only, unattended), ``refresh_token`` (delegated: a user
    #: signs in once with ``commit-email auth login NAME``) or ``command`` (an external
    #: helper prints the access token)
    grant: str = field(default="client_credentials", metadata={"choices": OAUTH_GRANTS})
    #: scopes asked for, space-separated; empty: the provider's preset for the grant
    scope: str = ""
    #: the token endpoint; empty: the provider's (required for ``generic``). Must be https
    #: except on a loopback address
    token_url: str = ""
    #: ``grant = "command"``: the program (and its arguments; no shell) that prints an access
    #: token on stdout, as fetchmail's ``passwordeval``; a JSON object with ``access_token``
    #: and ``expires_in`` is understood too
    token_command: str = ""
    #: Microsoft ``client_credentials``: a PEM file with the certificate and its private key
    #: (or a ``.pfx``), used to sign a client assertion instead of sending a secret; needs
    #: ``pip install 'commit-email[microsoft]'``
    certificate_file: str = ""
    #: environment variable with the password of ``certificate_file``'s key, if it has one
    certificate_password_env: str = ""
    #: RFC 8628 device authorization endpoint for ``auth login``; empty: the provider's
    device_url: str = ""
    #: authorization endpoint for ``auth login`` in a browser; empty: the provider's
    authorize_url: str = ""
    #: seconds a token request (or ``token_command``) may take
    timeout: float = 30.0
    name: str = field(default="", metadata={"internal": True})

    def resolved_client_secret(self) -> str:
        """The client secret, from ``client_secret`` or the environment."""
        if self.client_secret:
            return self.client_secret
        if self.client_secret_env:
            try:
                return os.environ[self.client_secret_env]
            except KeyError:
                raise ConfigError(f"environment variable {self.client_secret_env} is not set",
                                  key=f"oauth.{self.name}.client_secret_env") from None
        return ""


@frozen(kw_only=True)
class EmailToTicketConfig:
    enabled: bool = True
    match_domains: bool = True
    public_domains: tuple[str, ...] = ()
    auto_response: bool = True
    ticket_defaults: Mapping[str, str] = field(
        factory=lambda: {"status": "100", "priority": "10", "kind": "General", "source": "Email"},
        metadata={"keys": ("status", "priority", "kind", "source", "manager")},
    )
    auto_response_subject: str = ""
    auto_response_template: str = ""
    auto_response_template_file: str = ""


@frozen(kw_only=True)
class ThreadingConfig:
    enabled: bool = True
    subject_format: str = "[Ticket#{number}]"
    #: tolerant regex with one group (the number); derived from subject_format when empty
    subject_regex: str = ""
    quote_patterns: tuple[str, ...] = ()
    builtin_quote_patterns: bool = True
    forward_customer_replies: bool = True
    #: Who may write into a ticket by replying: ``"ticket"`` — its Account's addresses,
    #: contacts and domain, an address the ticket's mail went to, active employees (anyone
    #: else is forwarded as an unverified reply and filed nowhere); ``"anyone"`` — whoever
    #: knows the ticket number, as Commit itself does.
    accept_replies_from: str = field(default="ticket", metadata={"choices": ("ticket", "anyone")})


@frozen(kw_only=True)
class LoopProtectionConfig:
    max_auto_responses_per_sender: int = 3
    auto_response_window: float = 3600.0
    ignore_senders: tuple[str, ...] = ()


@frozen(kw_only=True)
class SenderAuthConfig:
    #: The host names your receiving mail server writes into ``Authentication-Results``
    #: (RFC 8601); only those headers count. Empty: sender authentication is off.
    trusted_authserv_ids: tuple[str, ...] = ()
    #: What unauthenticated mail loses: ``employee`` (filed without telling anyone),
    #: ``xml_api`` (records written), ``threading`` (filed into a ticket).
    require_for: tuple[str, ...] = field(
        default=("employee", "xml_api"),
        metadata={"choices": ("employee", "xml_api", "threading")},
    )
    #: Verify DKIM signatures here when no trusted header is present (extra ``dkim``).
    verify_dkim: bool = False
    #: Time limit of the DNS lookups of ``verify_dkim``, in seconds.
    dns_timeout: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.trusted_authserv_ids) or self.verify_dkim


@frozen(kw_only=True)
class XmlApiConfig:
    enabled: bool = False
    password: str = field(default="", repr=False)
    password_env: str = ""
    allowed_senders: tuple[str, ...] = ()
    send_response: bool = True
    response_bcc: str = ""
    max_bytes: int = 5_242_880
    max_depth: int = 32
    #: Wrong passwords accepted from one sender within ``failed_login_window``; after that
    #: every mail of the sender is refused unread (error 202), without a response.
    max_failed_logins: int = 5
    #: The window of ``max_failed_logins``, in seconds; older failures are forgotten.
    failed_login_window: float = 3600.0

    def resolved_password(self) -> str:
        return _secret(self.password, self.password_env, "xml_api")


@frozen(kw_only=True)
class DetectionRule:
    senders: tuple[str, ...] = ()
    subject_contains: str = ""
    body_contains: str = ""
    subject_regex: str = ""
    body_regex: str = ""
    #: correlation for tools no parser knows: one group (subject, then body) = the alert key
    key_regex: str = ""
    #: with key_regex: a subject containing this is the recovery of that key
    recovery_contains: str = ""


@frozen(kw_only=True)
class SkipRule:
    subject_contains: str = ""
    subject_regex: str = ""
    body_contains: str = ""
    body_regex: str = ""


ACCOUNT_RULE_FIELDS = (
    "file_as",
    "account_number",
    "account_id",
    "field1",
    "field2",
    "field3",
    "field4",
    "rec_id",
)


@frozen(kw_only=True)
class AccountRule:
    search_for: str = field(default="account_number", metadata={"choices": ACCOUNT_RULE_FIELDS})
    #: "host"/"service" read the parsed alert's host or service name
    located_in: str = field(
        default="subject", metadata={"choices": ("subject", "body", "host", "service")}
    )
    after: str = ""
    before: str = ""
    regex: str = ""


@frozen(kw_only=True)
class AutomatedConfig:
    enabled: bool = True
    account_by_sender: bool = True
    default_account: str = ""
    close_on_recovery: bool = True
    parsers: tuple[str, ...] = ("nagios", "icinga", "monit")
    #: status set on an alert ticket closed by its recovery ("" keeps the status)
    closed_status: str = ""
    #: seconds a recovery is remembered, so that a problem older than it opens nothing
    recovery_memory: float = 86_400.0
    #: alert tickets' status/priority/kind/source/manager, over [email_to_ticket]'s defaults
    ticket_defaults: Mapping[str, str] = field(
        factory=dict, metadata={"keys": ("status", "priority", "kind", "source", "manager")}
    )
    detection: tuple[DetectionRule, ...] = field(default=(), metadata={"rules": DetectionRule})
    skip: tuple[SkipRule, ...] = field(default=(), metadata={"rules": SkipRule})
    account: tuple[AccountRule, ...] = field(default=(), metadata={"rules": AccountRule})


@frozen(kw_only=True)
class Config:
    """The whole configuration. ``path`` is the file it came from (for relative paths)."""

    connector: ConnectorConfig = field(factory=ConnectorConfig)
    store: StoreConfig = field(factory=StoreConfig)
    #: one ``[pop3]`` table, or the first of several ``[[pop3]]`` tables
    pop3: Pop3Config = field(factory=Pop3Config, metadata={"many": "pop3_all"})
    #: every ``[[pop3]]`` table when the file has an array of them (see ``mailboxes``)
    pop3_all: tuple[Pop3Config, ...] = field(default=(), metadata={"internal": True})
    #: one ``[imap]`` table, or the first of several ``[[imap]]`` tables
    imap: ImapConfig = field(factory=ImapConfig, metadata={"many": "imap_all"})
    #: every ``[[imap]]`` table when the file has an array of them (see ``mailboxes``)
    imap_all: tuple[ImapConfig, ...] = field(default=(), metadata={"internal": True})
    smtp: SmtpConfig = field(factory=SmtpConfig)
    email_to_ticket: EmailToTicketConfig = field(factory=EmailToTicketConfig)
    threading: ThreadingConfig = field(factory=ThreadingConfig)
    loop_protection: LoopProtectionConfig = field(factory=LoopProtectionConfig)
    xml_api: XmlApiConfig = field(factory=XmlApiConfig)
    sender_auth: SenderAuthConfig = field(factory=SenderAuthConfig)
    automated: AutomatedConfig = field(factory=AutomatedConfig)
    #: ``[oauth.NAME]`` sections, by NAME
    oauth: Mapping[str, OAuthConfig] = field(factory=dict, metadata={"named": OAuthConfig})
    path: str = field(default="", metadata={"internal": True})

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config are relative to the config file's folder."""
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def resolve_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def state_dir(self) -> Path:
        return self.resolve_path(self.connector.state_dir)

    @property
    def mailboxes(self) -> tuple[Pop3Config | ImapConfig, ...]:
        """Every configured mailbox: the ``[[pop3]]`` tables (or the one ``[pop3]`` table
        when it names a host), then the ``[[imap]]`` tables (or ``[imap]``). ``run`` serves
        them all."""
        pop3 = self.pop3_all or ((self.pop3,) if self.pop3.host else ())
        imap = self.imap_all or ((self.imap,) if self.imap.host else ())
        return (*pop3, *imap)

    def for_mailbox(self, mailbox: Pop3Config | ImapConfig) -> Config:
        """This configuration for one of its mailboxes alone (``pop3`` or ``imap`` is that
        mailbox, the other section is empty)."""
        if isinstance(mailbox, ImapConfig):
            return attrs.evolve(self, pop3=Pop3Config(), pop3_all=(), imap=mailbox,
                                imap_all=())
        return attrs.evolve(self, pop3=mailbox, pop3_all=(), imap=ImapConfig(), imap_all=())

    @property
    def smtp_configured(self) -> bool:
        return bool(self.smtp.host)

    @property
    def message_id_domain(self) -> str:
        if self.connector.message_id_domain:
            return self.connector.message_id_domain
        _, _, domain = self.connector.public_address.rpartition("@")
        return domain or "commit-email.invalid"


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _coerce(default: object, value: object, key: str) -> object:
    """Check ``value`` against the type of the field's default."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", key=key)
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", key=key)
        if value < 0:
            raise ConfigError(f"must not be negative, got {value}", key=key)
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", key=key)
        if not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {value}", key=key)
        if value < 0:
            raise ConfigError(f"must not be negative, got {value}", key=key)
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {_type_name(value)}", key=key)
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("expected a list of strings", key=key)
        return tuple(value)
    if isinstance(default, Mapping):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError("expected a table of strings", key=key)
        return dict(value)
    raise ConfigError(f"unsupported value {value!r}", key=key)  # pragma: no cover


def _default_of(f: attrs.Attribute[Any]) -> Any:
    factory = getattr(f.default, "factory", None)
    return factory() if callable(factory) else f.default


def _build(cls: type[T], table: object, key: str) -> T:
    if not isinstance(table, dict):
        raise ConfigError("expected a table", key=key)
    fields = {f.name: f for f in attrs.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {unknown[0]!r} (known keys: {known})", key=key)
    values: dict[str, Any] = {}
    for name, value in table.items():
        f = fields[name]
        sub = f"{key}.{name}" if key else name
        named_cls = f.metadata.get("named")
        if named_cls is not None:
            values[name] = _build_named(named_cls, value, sub)
            continue
        rule_cls = f.metadata.get("rules")
        if rule_cls is not None:
            if not isinstance(value, list):
                raise ConfigError("expected an array of tables ([[...]])", key=sub)
            values[name] = tuple(_build(rule_cls, v, f"{sub}[{i}]") for i, v in enumerate(value))
            continue
        default = _default_of(f)
        many = f.metadata.get("many")
        if many and isinstance(value, list):  # [[pop3]]: several tables of this section
            if not value:
                raise ConfigError("an empty array: give at least one table", key=sub)
            items = tuple(
                attrs.evolve(_build(type(default), v, f"{sub}[{i}]"), key=f"{sub}[{i}]")
                for i, v in enumerate(value)
            )
            values[name], values[many] = items[0], items
            continue
        if attrs.has(type(default)):
            values[name] = _build(type(default), value, sub)
            continue
        coerced = _coerce(default, value, sub)
        choices = f.metadata.get("choices")
        for item in (coerced if isinstance(coerced, tuple) else (coerced,)) if choices else ():
            if item not in choices:  # a list's every item is one of the choices
                raise ConfigError(f"must be one of {', '.join(choices)}; got {item!r}", key=sub)
        allowed_keys = f.metadata.get("keys")
        if allowed_keys and isinstance(coerced, dict):
            bad = sorted(set(coerced) - set(allowed_keys))
            if bad:
                raise ConfigError(
                    f"unknown key {bad[0]!r} (known keys: {', '.join(allowed_keys)})", key=sub
                )
            coerced = {**default, **coerced}
        values[name] = coerced
    return cls(**values)


def _build_named(cls: type[T], table: object, key: str) -> dict[str, T]:
    """``[KEY.NAME]`` sections: a table of tables, each built as ``cls`` with its ``name``."""
    if not isinstance(table, dict):
        raise ConfigError("expected tables ([KEY.NAME])", key=key)
    built = {}
    for name, sub in table.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ConfigError("a name of letters, digits, '-' and '_' expected",
                              key=f"{key}.{name}")
        built[name] = attrs.evolve(_build(cls, sub, f"{key}.{name}"), name=name)  # type: ignore[misc]
    return built


def _validate_optional(config: Config) -> None:
    """A missing optional dependency is a configuration error, reported when loading."""
    if config.sender_auth.verify_dkim:
        require("dkim", extra="dkim", feature="[sender_auth] verify_dkim")


def _validate(config: Config) -> None:
    """Cross-field checks and regex compilation, each naming its key."""
    th = config.threading
    if "{number}" not in th.subject_format:
        raise ConfigError("must contain {number}", key="threading.subject_format")
    if th.subject_regex:
        rx = compile_regex(th.subject_regex, "threading.subject_regex")
        if rx.groups < 1:
            raise ConfigError("needs one capture group (the number)", key="threading.subject_regex")
    for i, pattern in enumerate(th.quote_patterns):
        compile_regex(pattern, f"threading.quote_patterns[{i}]")
    for i, pattern in enumerate(config.loop_protection.ignore_senders):
        if not pattern.startswith("*@") and "@" not in pattern:
            compile_regex(pattern, f"loop_protection.ignore_senders[{i}]")
    auto = config.automated
    for i, det in enumerate(auto.detection):
        key = f"automated.detection[{i}]"
        if not (det.senders or det.subject_contains or det.body_contains or det.subject_regex
                or det.body_regex):
            raise ConfigError("a detection rule needs senders or a subject/body condition",
                              key=key)
        for name in ("subject_regex", "body_regex"):
            if getattr(det, name):
                compile_regex(getattr(det, name), f"{key}.{name}")
        if det.key_regex:
            rx = compile_regex(det.key_regex, f"{key}.key_regex")
            if rx.groups != 1:
                raise ConfigError(
                    f"needs exactly one capture group, has {rx.groups}", key=f"{key}.key_regex"
                )
        elif det.recovery_contains:
            raise ConfigError("recovery_contains needs key_regex", key=f"{key}.recovery_contains")
    for i, name in enumerate(auto.parsers):
        if name not in BUILTIN_PARSERS:
            raise ConfigError(
                f"unknown parser {name!r} (built-in parsers: {', '.join(BUILTIN_PARSERS)}; "
                "plugin parsers need no entry here)",
                key=f"automated.parsers[{i}]",
            )
    for i, skip in enumerate(auto.skip):
        key = f"automated.skip[{i}]"
        if not (skip.subject_contains or skip.subject_regex or skip.body_contains
                or skip.body_regex):
            raise ConfigError("a skip rule needs a subject or body condition", key=key)
        for name in ("subject_regex", "body_regex"):
            if getattr(skip, name):
                compile_regex(getattr(skip, name), f"{key}.{name}")
    for i, rule in enumerate(auto.account):
        key = f"automated.account[{i}]"
        if rule.regex:
            rx = compile_regex(rule.regex, f"{key}.regex")
            if rx.groups != 1:
                raise ConfigError(
                    f"needs exactly one capture group, has {rx.groups}", key=f"{key}.regex"
                )
        elif not (rule.after or rule.before):
            raise ConfigError("an account rule needs after/before delimiters or a regex", key=key)
    check_store_url(config.store.url)
    for name in ("public_address", "internal_address"):
        value = getattr(config.connector, name)
        if value and not _is_address(value):
            raise ConfigError(f"not an email address: {value!r}", key=f"connector.{name}")
    _validate_servers(config)
    _validate_mailbox_names(config)
    _validate_xml_addresses(config.xml_api)
    for oauth in config.oauth.values():
        validate_oauth(oauth)
    for mailbox in config.mailboxes:
        validate_oauth_login(config, mailbox.key, mailbox.auth, mailbox.oauth)
    validate_oauth_login(config, "smtp", config.smtp.auth, config.smtp.oauth)


#: the grants each provider can do (Google has no client-credentials grant for Gmail: its
#: service accounts use a signed JWT, and its device flow refuses the mail scope)
_PROVIDER_GRANTS = {
    "microsoft": ("client_credentials", "refresh_token", "command"),
    "google": ("refresh_token", "command"),
    "generic": ("client_credentials", "refresh_token", "command"),
}


def validate_oauth(oauth: OAuthConfig) -> None:
    """One ``[oauth.NAME]`` section on its own; each problem names its key."""
    key = f"oauth.{oauth.name}"
    if oauth.provider not in OAUTH_PROVIDERS:
        raise ConfigError(f"unknown provider {oauth.provider!r} (known: "
                          f"{', '.join(OAUTH_PROVIDERS)})", key=f"{key}.provider")
    if oauth.grant not in _PROVIDER_GRANTS[oauth.provider]:
        raise ConfigError(
            f"{oauth.provider} cannot do grant {oauth.grant!r} (it can do: "
            f"{', '.join(_PROVIDER_GRANTS[oauth.provider])})", key=f"{key}.grant")
    if oauth.grant == "command":
        if not oauth.token_command.strip():
            raise ConfigError("grant = \"command\" needs the command that prints a token",
                              key=f"{key}.token_command")
        return
    if oauth.token_command:
        raise ConfigError(f"only used with grant = \"command\" (grant is {oauth.grant!r})",
                          key=f"{key}.token_command")
    if oauth.provider == "microsoft" and not oauth.tenant:
        raise ConfigError("Microsoft needs the tenant (contoso.onmicrosoft.com or its id)",
                          key=f"{key}.tenant")
    if oauth.tenant and oauth.provider != "microsoft":
        raise ConfigError("only Microsoft has tenants", key=f"{key}.tenant")
    if not oauth.client_id:
        raise ConfigError("the application (client) id is required", key=f"{key}.client_id")
    if oauth.provider == "generic" and not oauth.token_url:
        raise ConfigError("a generic provider needs its token endpoint", key=f"{key}.token_url")
    for name in ("token_url", "device_url", "authorize_url"):
        url = getattr(oauth, name)
        if url and not _secure_url(url):
            raise ConfigError(f"must be an https:// URL (http:// only on a loopback address), "
                              f"got {url!r}", key=f"{key}.{name}")
    if oauth.certificate_file:
        if oauth.provider != "microsoft" or oauth.grant != "client_credentials":
            raise ConfigError("a certificate credential is for Microsoft client_credentials",
                              key=f"{key}.certificate_file")
        if oauth.client_secret or oauth.client_secret_env:
            raise ConfigError("give a certificate or a client secret, not both",
                              key=f"{key}.certificate_file")
    elif oauth.grant == "client_credentials" and not (
            oauth.client_secret or oauth.client_secret_env):
        raise ConfigError("client_credentials needs client_secret (or client_secret_env"
                          + (", or certificate_file" if oauth.provider == "microsoft" else "")
                          + ")", key=f"{key}.client_secret")
    if oauth.timeout <= 0:
        raise ConfigError("must be more than 0 seconds", key=f"{key}.timeout")


def _secure_url(url: str) -> bool:
    """https, or http to a loopback address (a local token helper, the tests' server)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    host = parts.hostname
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_oauth_login(config: Config, section: str, auth: str, oauth: str) -> None:
    """A mailbox's or the relay's ``auth``/``oauth`` pair: an OAuth mechanism needs ``oauth``,
    and ``oauth`` must name an ``[oauth.NAME]`` section. ``section`` is the key prefix
    (``pop3``, ``imap[1]``)."""
    if auth in ("xoauth2", "oauthbearer") and not oauth:
        raise ConfigError(f"auth = {auth!r} needs oauth = \"NAME\" naming an [oauth.NAME] "
                          "section", key=f"{section}.oauth")
    if oauth and oauth not in config.oauth:
        known = ", ".join(sorted(config.oauth)) or "none"
        raise ConfigError(f"no section [oauth.{oauth}] (sections: {known})",
                          key=f"{section}.oauth")
    if oauth and auth not in ("auto", "xoauth2", "oauthbearer"):
        raise ConfigError(f"oauth is set but auth = {auth!r} logs in with a password",
                          key=f"{section}.auth")


def _validate_xml_addresses(xml: XmlApiConfig) -> None:
    for i, entry in enumerate(xml.allowed_senders):
        bare = entry.strip()
        if not (_is_address(bare) or (bare.startswith("*@") and _is_domain(bare[2:]))):
            raise ConfigError(f"expected an address or *@domain, got {entry!r}",
                              key=f"xml_api.allowed_senders[{i}]")
    if xml.response_bcc and not _is_address(xml.response_bcc.strip()):
        raise ConfigError(f"not an email address: {xml.response_bcc!r}",
                          key="xml_api.response_bcc")


_DOMAIN = re.compile(r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")


def _is_domain(value: str) -> bool:
    return bool(_DOMAIN.match(value))


def _is_address(value: str) -> bool:
    """A bare ``local@domain`` address, the only form the connector writes to or matches."""
    local, at, domain = value.rpartition("@")
    return bool(at) and bool(_LOCAL_PART.match(local)) and _is_domain(domain)


def _validate_servers(config: Config) -> None:
    """Ports, time-outs, retry counts and CA files of the configured servers."""
    servers: list[tuple[str, Pop3Config | ImapConfig | SmtpConfig]] = [
        (m.key, m) for m in config.mailboxes]
    for section, server in [*servers, ("smtp", config.smtp)]:
        if not server.host:
            continue
        if server.port > 65535:
            raise ConfigError(f"must be a TCP port (1-65535), got {server.port}",
                              key=f"{section}.port")
        if server.timeout <= 0:
            raise ConfigError("must be more than 0 seconds (it bounds every network wait)",
                              key=f"{section}.timeout")
        if server.ca_file and not config.resolve_path(server.ca_file).is_file():
            raise ConfigError(f"no such file: {config.resolve_path(server.ca_file)}",
                              key=f"{section}.ca_file")
    for mailbox in config.mailboxes:
        if isinstance(mailbox, ImapConfig):
            _validate_imap_folders(mailbox)
    # Each retry waits for the server's time-out; past these counts a poll or a send would
    # hang for hours, which is never what was meant.
    if config.smtp.retries > 100:
        raise ConfigError(f"at most 100, got {config.smtp.retries}", key="smtp.retries")
    if not 1 <= config.smtp.connections <= 64:
        raise ConfigError(f"must be 1 to 64, got {config.smtp.connections}",
                          key="smtp.connections")
    for key in ("idle_timeout", "drain_timeout"):
        if getattr(config.smtp, key) < 0:
            raise ConfigError("must not be negative", key=f"smtp.{key}")
    for mailbox in config.mailboxes:
        if mailbox.once_attempts > 100:
            raise ConfigError(f"at most 100, got {mailbox.once_attempts}",
                              key=f"{mailbox.key}.once_attempts")


def _validate_mailbox_names(config: Config) -> None:
    """``[[pop3]]`` and ``[[imap]]`` tables: each has a host and a name of its own, and no
    two mailboxes share a name (the name keys the mailbox's state)."""
    seen: dict[str, str] = {}
    tables: tuple[Pop3Config | ImapConfig, ...] = (*config.pop3_all, *config.imap_all)
    for table in tables:
        key = table.key
        if not table.name.strip():
            raise ConfigError("each of several mailboxes needs a name", key=f"{key}.name")
        if table.name != table.name.strip() or len(table.name) > 100 or any(
            not ch.isprintable() for ch in table.name
        ):
            raise ConfigError(f"a name of at most 100 printable characters without "
                              f"leading or trailing spaces, got {table.name!r}",
                              key=f"{key}.name")
        if not table.host:
            raise ConfigError("a mailbox needs a host", key=f"{key}.host")
    for mailbox in config.mailboxes:
        if mailbox.mailbox in seen:
            raise ConfigError(f"{mailbox.mailbox!r} is also the name of "
                              f"{seen[mailbox.mailbox]}; mailbox names must be unique",
                              key=f"{mailbox.key}.name")
        seen[mailbox.mailbox] = mailbox.key


def _validate_imap_folders(imap: ImapConfig) -> None:
    """Folders that would make ``after`` a no-op or a loop."""
    if not imap.host:
        return
    if not imap.folder:
        raise ConfigError("must name a folder (INBOX, say)", key=f"{imap.key}.folder")
    if imap.after == "move" and not imap.processed_folder:
        raise ConfigError('after = "move" needs a folder to move to',
                          key=f"{imap.key}.processed_folder")
    for key in ("processed_folder", "quarantine_folder"):
        value = getattr(imap, key)
        if value and value.casefold() == imap.folder.casefold():
            raise ConfigError(f"must not be the folder mail is read from ({imap.folder})",
                              key=f"{imap.key}.{key}")


def deployment_problems(config: Config) -> list[str]:
    """What makes a valid configuration unusable for running a help desk (``check-config``
    reports these; a library user may have reasons to leave them)."""
    problems = []
    c = config.connector
    if not c.internal_address and not c.public_address:
        problems.append("connector.internal_address: not set, and neither is "
                        "connector.public_address: mail that opens no ticket could not be "
                        "forwarded to anyone")
    return problems


def parse_config(data: Mapping[str, object], *, path: str = "") -> Config:
    """Build a :class:`Config` from an already-parsed TOML document."""
    try:
        config = _build(Config, dict(data), "")
    except ConfigError as exc:
        if path and exc.path is None:
            raise ConfigError(str(exc), key=None, path=path) from None
        raise
    config = attrs.evolve(config, path=path)
    try:
        _validate(config)
        _validate_optional(config)
    except ConfigError as exc:
        if path:
            raise ConfigError(str(exc), path=path) from None
        raise
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError("configuration file not found", path=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(p)) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=str(p)) from None
    return parse_config(data, path=str(p))


def check_secrets(config: Config) -> Sequence[str]:
    """Resolve every secret that a configured feature will need; return what was checked."""
    checked = []
    if config.store.password or config.store.password_env:
        config.store.resolved_password()
        checked.append("store.password")
    used_oauth = set()
    for mailbox in config.mailboxes:
        if mailbox.sasl_mechanism:
            used_oauth.add(mailbox.oauth)
        else:
            mailbox.resolved_password()
            checked.append(f"{mailbox.key}.password")
    if config.smtp.host and config.smtp.user:
        if config.smtp.sasl_mechanism:
            used_oauth.add(config.smtp.oauth)
        else:
            config.smtp.resolved_password()
            checked.append("smtp.password")
    for name in sorted(used_oauth):
        oauth = config.oauth[name]
        if oauth.grant != "command" and not oauth.certificate_file:
            if not oauth.resolved_client_secret() and oauth.grant == "client_credentials":
                raise ConfigError("the client secret is empty", key=f"oauth.{name}.client_secret")
            checked.append(f"oauth.{name}.client_secret")
    if config.xml_api.enabled:
        if not config.xml_api.resolved_password():
            raise ConfigError("the XML API needs a password", key="xml_api.password")
        checked.append("xml_api.password")
    return checked
