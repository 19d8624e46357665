"""OAuth 2.0 credentials for the mailboxes and the SMTP relay, and the SASL messages that
carry their tokens (XOAUTH2, and OAUTHBEARER of RFC 7628).

Three layers, each usable on its own, so that every mail protocol (POP3, IMAP, SMTP) logs
in the same way:

- a **grant** fetches a new access token: :class:`ClientCredentialsGrant` (a client
  secret), :class:`CertificateGrant` (Microsoft, a certificate through MSAL),
  :class:`RefreshTokenGrant` (delegated; the refresh token lives in a private file and is
  replaced whenever the provider rotates it), :class:`CommandGrant` (an external helper);
- a :class:`Credential` is the :class:`TokenProvider` the protocols see: it caches the
  access token until a margin before it expires, fetches a new one when a session would
  outlive it, and forgets one the server rejected (:meth:`Credential.reject`);
- the SASL functions build the client's response (:func:`sasl_response`) and read the
  server's failure challenge (:func:`parse_challenge`); :func:`log_in` runs a login with
  one retry on a fresh token after a rejection.

A protocol module logs in like this::

    def attempt(token: AccessToken) -> None:
        ...send AUTH <mechanism>, then sasl_response(mechanism, user, token.value)...
        ...on the server's base64 JSON challenge, answer failure_reply(mechanism) and
        raise TokenRejected(parse_challenge(decoded), server_reply)...

    log_in(provider, attempt)   # raises TokenRejected if the fresh token is refused too

and turns a final :class:`TokenRejected` into :class:`~commit_email.errors.OAuthLoginError`
with :func:`login_error`. :class:`OAuthCredentials` builds and shares the credentials of
one configuration (``credentials.get("m365")``), so all mailboxes and the relay that name
one section use one cached token.

Tokens and secrets are never part of a ``repr``, a log line or an error message: the
error text names the credential, the endpoint and what the provider said.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attrs import field, frozen

from .errors import ConfigError, OAuthLoginError, TokenRefused, TokenUnavailable
from .quarantine import private_directory

if TYPE_CHECKING:
    from .config import Config, OAuthConfig

__all__ = [
    "AccessToken",
    "CertificateGrant",
    "ClientCredentialsGrant",
    "CommandGrant",
    "Credential",
    "Endpoints",
    "OAuthCredentials",
    "RefreshTokenGrant",
    "RefreshTokenStore",
    "SaslChallenge",
    "TokenGrant",
    "TokenProvider",
    "TokenRejected",
    "endpoints",
    "failure_reply",
    "log_in",
    "login_error",
    "parse_challenge",
    "post_token_request",
    "sasl_response",
]

log = logging.getLogger(__name__)

#: a token response larger than this is not a token response
_MAX_RESPONSE = 1024 * 1024
#: what a token command may print at most (a JWT is a few KB)
_MAX_COMMAND_OUTPUT = 64 * 1024
#: a token without ``expires_in`` (a command that prints only the token) is used this long
_UNKNOWN_LIFETIME = 300.0
#: a cached token is replaced this long before it expires (at most a quarter of its life)
_MARGIN = 300.0
#: the OAuth error codes after which retrying the same request cannot succeed (MSAL's
#: answers carry them; HTTP answers are sorted by status, see post_token_request)
_REFUSALS = frozenset({
    "invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope",
    "unsupported_grant_type", "access_denied", "consent_required", "interaction_required",
    "invalid_request", "expired_token",
})


# -- tokens ------------------------------------------------------------------------------------


@frozen(kw_only=True)
class AccessToken:
    """An access token and when it stops working (``time.time()`` seconds)."""

    value: str = field(repr=False)
    obtained_at: float
    expires_at: float
    scope: str = ""

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.obtained_at

    def usable(self, now: float, *, valid_for: float = 0.0) -> bool:
        """Whether the token still works ``valid_for`` seconds from ``now``, with the margin
        (5 minutes, or a quarter of the token's lifetime for short-lived ones) kept."""
        margin = min(_MARGIN, self.lifetime / 4)
        return now + valid_for < self.expires_at - margin


def _token_from_response(data: Mapping[str, Any], now: float, what: str) -> AccessToken:
    value = data.get("access_token")
    if not isinstance(value, str) or not value.strip():
        raise TokenUnavailable(f"{what}: the answer has no access_token")
    if any(c in value for c in "\x00\x01\r\n "):
        raise TokenUnavailable(f"{what}: the access token has characters SASL cannot carry")
    lifetime = _expires_in(data.get("expires_in"))
    scope = data.get("scope")
    return AccessToken(value=value, obtained_at=now, expires_at=now + lifetime,
                       scope=scope if isinstance(scope, str) else "")


def _expires_in(raw: object) -> float:
    # Microsoft has sent it as a string ("3599"); some servers leave it out.
    try:
        seconds = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _UNKNOWN_LIFETIME
    return seconds if math.isfinite(seconds) and seconds > 0 else _UNKNOWN_LIFETIME


class TokenProvider(Protocol):
    """What a mail protocol needs to log in with OAuth 2.0."""

    @property
    def name(self) -> str:
        """The ``[oauth.NAME]`` section's NAME, for messages."""
        ...

    def access_token(self, *, valid_for: float = 0.0) -> AccessToken:
        """A token that works for at least ``valid_for`` more seconds (cached or new).

        Raises :class:`~commit_email.errors.TokenRefused` when the provider refuses the
        grant and :class:`~commit_email.errors.TokenUnavailable` when it cannot be reached.
        """
        ...

    def reject(self, token: AccessToken) -> None:
        """The server refused ``token``: do not hand it out again."""
        ...


class TokenGrant(Protocol):
    """One way of getting a new access token; :class:`Credential` caches what it returns."""

    def fetch(self) -> AccessToken:
        """A new access token, never a cached one."""
        ...


class Credential:
    """A :class:`TokenProvider` over a grant: caches the token and replaces it in time.

    Thread-safe (mailboxes served by threads share one), and only one thread fetches at
    a time: the others wait for its token instead of asking the provider too.
    """

    def __init__(self, name: str, grant: TokenGrant, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._name = name
        self.grant = grant
        self._clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        #: ``time.time()`` of the last token fetched (for ``auth status``), or None
        self.last_refresh: float | None = None

    def __repr__(self) -> str:
        return f"<Credential {self._name!r} grant={type(self.grant).__name__}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def cached(self) -> AccessToken | None:
        """The token in the cache, if any (without fetching one)."""
        return self._token

    def access_token(self, *, valid_for: float = 0.0) -> AccessToken:
        with self._lock:
            token = self._token
            if token is not None and token.usable(self._clock(), valid_for=valid_for):
                return token
            self._token = None
            token = self.grant.fetch()
            self._token = token
            self.last_refresh = token.obtained_at
            log.debug("oauth %s: new access token, valid for %.0f s", self._name,
                      token.lifetime)
            return token

    def reject(self, token: AccessToken) -> None:
        with self._lock:
            if self._token is token:
                self._token = None


# -- HTTP token requests (RFC 6749 §4.4, §6; no dependency) -------------------------------------


Opener = Callable[..., Any]


def post_token_request(url: str, form: Mapping[str, str], *, timeout: float, what: str,
                       opener: Opener | None = None,
                       clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """POST ``form`` to a token endpoint and return its JSON answer.

    An OAuth error the request cannot outlive (``invalid_grant``, ``invalid_client``, …)
    raises :class:`TokenRefused` with the provider's code; an unreachable endpoint, a
    time-out, a 5xx or a throttling answer raise :class:`TokenUnavailable`. ``what`` starts
    every message (``oauth m365: token request``); the form's secrets never appear in one.
    """
    body = urllib.parse.urlencode(dict(form)).encode("ascii")
    # The URL is the configuration's, and config validation allows https (http on loopback).
    request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "User-Agent": "commit-email",
    })
    open_url = opener or urllib.request.urlopen
    host = urllib.parse.urlsplit(url).netloc
    try:
        with open_url(request, timeout=timeout) as response:
            status, raw = response.status, response.read(_MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            raw = exc.read(_MAX_RESPONSE + 1)
        except OSError:
            raw = b""
        finally:
            exc.close()
    except TimeoutError as exc:
        raise TokenUnavailable(f"{what}: {host} did not answer in {timeout:g} s") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise TokenUnavailable(f"{what}: cannot reach {host}: {reason}") from exc
    if len(raw) > _MAX_RESPONSE:
        raise TokenUnavailable(f"{what}: {host} sent more than {_MAX_RESPONSE} bytes")
    data = _json_object(raw)
    if 200 <= status < 300 and data is not None:
        return data
    error = str(data.get("error", "")) if data else ""
    description = _shorten(str(data.get("error_description", ""))) if data else ""
    said = f"{error}: {description}" if error and description else error or f"HTTP {status}"
    transient = status == 429 or status >= 500 or error == "temporarily_unavailable"
    if not transient and 400 <= status < 500 and (error or data is not None):
        # RFC 6749 §5.2: the provider said why, and asking again will not change it (the
        # device flow's authorization_pending and slow_down are read by its caller)
        raise TokenRefused(f"{what}: {host} refused the request ({said})",
                           error=error or f"http_{status}")
    raise TokenUnavailable(f"{what}: {host} answered {said} (HTTP {status})")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- provider presets ----------------------------------------------------------------------------


@frozen(kw_only=True)
class Endpoints:
    """Where a provider's tokens come from, and the scope asked for by default."""

    token_url: str
    device_url: str = ""
    authorize_url: str = ""
    scope: str = ""


_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"
#: app-only access to Exchange Online (POP, IMAP and SMTP AUTH alike)
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
#: delegated access to the signed-in mailbox over POP, IMAP and SMTP, plus a refresh token
MICROSOFT_DELEGATED_SCOPE = (
    "offline_access https://outlook.office.com/POP.AccessAsUser.All "
    "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send"
)
GOOGLE_SCOPE = "https://mail.google.com/"


def endpoints(oauth: OAuthConfig) -> Endpoints:
    """The section's endpoints and scope: its own keys, else the provider's presets."""
    if oauth.provider == "microsoft":
        base = _MICROSOFT.format(tenant=urllib.parse.quote(oauth.tenant, safe=""))
        preset = Endpoints(
            token_url=base + "token", device_url=base + "devicecode",
            authorize_url=base + "authorize",
            scope=MICROSOFT_APP_SCOPE if oauth.grant == "client_credentials"
            else MICROSOFT_DELEGATED_SCOPE)
    elif oauth.provider == "google":
        preset = Endpoints(token_url="https://oauth2.googleapis.com/token",  # noqa: S106 - a URL
                           device_url="https://oauth2.googleapis.com/device/code",
                           authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
                           scope=GOOGLE_SCOPE)
    else:
        preset = Endpoints(token_url="")
    return Endpoints(token_url=oauth.token_url or preset.token_url,
                     device_url=oauth.device_url or preset.device_url,
                     authorize_url=oauth.authorize_url or preset.authorize_url,
                     scope=oauth.scope or preset.scope)


# -- grants ------------------------------------------------------------------------------------


class ClientCredentialsGrant:
    """App-only tokens for a client id and secret (RFC 6749 §4.4)."""

    def __init__(self, oauth: OAuthConfig, *, opener: Opener | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.oauth = oauth
        self.endpoints = endpoints(oauth)
        self._opener = opener
        self._clock = clock

    def __repr__(self) -> str:
        return f"<ClientCredentialsGrant {self.oauth.name!r}>"

    def fetch(self) -> AccessToken:
        what = f"oauth {self.oauth.name}: client_credentials token request"
        try:
            secret = self.oauth.resolved_client_secret()
        except ConfigError as exc:
            raise TokenRefused(f"{what}: {exc}", error="invalid_client") from exc
        form = {"grant_type": "client_credentials", "client_id": self.oauth.client_id,
                "client_secret": secret}
        if self.endpoints.scope:
            form["scope"] = self.endpoints.scope
        now = self._clock()
        data = post_token_request(self.endpoints.token_url, form, timeout=self.oauth.timeout,
                                  what=what, opener=self._opener)
        return _token_from_response(data, now, what)


class CertificateGrant:
    """Microsoft app-only tokens for a certificate: MSAL signs the client assertion (the
    credential Microsoft recommends for unattended services). Needs the ``microsoft`` extra.

    Every :meth:`fetch` asks the provider: MSAL's own token cache is emptied first, so a
    token the mail server refused (:meth:`Credential.reject`) or one too short-lived for
    the session is never handed back; :class:`Credential` does the caching.

    By default MSAL talks to ``https://login.microsoftonline.com/TENANT`` and trusts what
    ``requests`` trusts. Two seams are for a private authority (the tests' own server):
    ``authority`` replaces that URL (MSAL reads ``AUTHORITY/v2.0/.well-known/
    openid-configuration``; an authority given here is taken as it is, without MSAL's
    instance discovery at login.microsoftonline.com), and ``ca_file`` is the only CA its
    https certificate is checked against (``REQUESTS_CA_BUNDLE`` does not override it).
    """

    def __init__(self, oauth: OAuthConfig, certificate: Path, *,
                 clock: Callable[[], float] = time.time,
                 authority: str | None = None, ca_file: str | Path | None = None) -> None:
        self.oauth = oauth
        self.certificate = certificate
        self._clock = clock
        self._custom_authority = authority is not None
        self._authority = authority or (
            f"https://login.microsoftonline.com/{urllib.parse.quote(oauth.tenant, safe='')}")
        self._ca_file = str(ca_file) if ca_file is not None else None
        self._app: Any = None

    def __repr__(self) -> str:
        return f"<CertificateGrant {self.oauth.name!r} {self.certificate}>"

    def _application(self, what: str) -> Any:
        if self._app is not None:
            return self._app
        try:
            import msal  # type: ignore[import-untyped]  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise ConfigError("a certificate credential needs MSAL: "
                              "pip install 'commit-email[microsoft]'",
                              key=f"oauth.{self.oauth.name}.certificate_file") from exc
        options: dict[str, Any] = {}
        if self._custom_authority:
            options["instance_discovery"] = False
        if self._ca_file is not None:
            options["http_client"] = self._session()
        credential = self._client_credential()
        # MSAL reads the key (a wrong password fails here) and the authority's discovery
        # document (the first request) while it builds the application; cryptography's
        # and MSAL's messages carry no key material
        try:
            self._app = msal.ConfidentialClientApplication(
                self.oauth.client_id, authority=self._authority,
                client_credential=credential, timeout=self.oauth.timeout,
                token_cache=msal.TokenCache(), **options)
        except OSError as exc:  # requests' errors are OSErrors
            raise TokenUnavailable(f"{what}: cannot reach {self._authority}: "
                                   f"{type(exc).__name__}: {_shorten(str(exc), 200)}") from exc
        except msal.exceptions.MsalError as exc:  # an HTTP error status (a 5xx, say)
            raise TokenUnavailable(f"{what}: {self._authority} answered "
                                   f"{_shorten(str(exc))}") from exc
        except ValueError as exc:  # the key (a wrong password), or an unknown tenant
            raise TokenRefused(f"{what}: {_shorten(str(exc), 200)} (certificate_file "
                               f"{self.certificate})", error="invalid_client") from exc
        return self._app

    def _session(self) -> Any:
        """A requests session that checks the authority against ``ca_file`` only: set on
        each request, as a session's own ``verify`` loses to ``REQUESTS_CA_BUNDLE``."""
        import functools  # noqa: PLC0415 - only here

        import requests  # noqa: PLC0415 - comes with MSAL

        session: Any = requests.Session()
        session.request = functools.partial(session.request, timeout=self.oauth.timeout,
                                            verify=self._ca_file)
        return session

    def _client_credential(self) -> dict[str, Any]:
        key = f"oauth.{self.oauth.name}.certificate_file"
        password = ""
        if self.oauth.certificate_password_env:
            password = os.environ.get(self.oauth.certificate_password_env, "")
            if not password:
                raise ConfigError(f"environment variable {self.oauth.certificate_password_env}"
                                  " is not set", key=f"oauth.{self.oauth.name}"
                                  ".certificate_password_env")
        if self.certificate.suffix.lower() in (".pfx", ".p12"):
            credential: dict[str, Any] = {"private_key_pfx_path": str(self.certificate)}
            if password:
                credential["passphrase"] = password
            return credential
        try:
            pem = self.certificate.read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {self.certificate}: {exc}", key=key) from exc
        return _pem_credential(pem, password, key)

    def fetch(self) -> AccessToken:
        what = f"oauth {self.oauth.name}: certificate token request"
        app = self._application(what)
        scope = endpoints(self.oauth).scope
        from msal.exceptions import MsalError  # type: ignore[import-untyped]  # noqa: PLC0415

        cache = app.token_cache
        for cached in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(cached)  # a new token, never MSAL's cached one (see above)
        now = self._clock()
        try:
            result = app.acquire_token_for_client(scopes=scope.split())
        # requests' errors are OSErrors or ValueErrors; MsalError, an HTTP error status
        # without an OAuth error in the answer
        except (OSError, ValueError, MsalError) as exc:
            raise TokenUnavailable(f"{what}: {type(exc).__name__}: {_shorten(str(exc))}") from exc
        if not isinstance(result, dict):
            raise TokenUnavailable(f"{what}: MSAL returned nothing")
        if "access_token" not in result:
            error = str(result.get("error", "unknown"))
            said = f"{error}: {_shorten(str(result.get('error_description', '')))}"
            if error in _REFUSALS:
                hint = (f"; check client_id, tenant, and that the certificate in "
                        f"{self.certificate} is uploaded to the app registration"
                        if error == "invalid_client" else "")
                raise TokenRefused(f"{what}: the provider refused it ({said}){hint}",
                                   error=error)
            raise TokenUnavailable(f"{what}: {said}")
        return _token_from_response(result, now, what)


def _pem_credential(pem: str, password: str, key: str) -> dict[str, Any]:
    """MSAL's credential for a PEM holding the private key and its certificate: the key
    and the certificate's SHA-1 thumbprint (the ``x5t`` Entra ID looks the key up by)."""
    begin = "-----BEGIN CERTIFICATE-----"
    end = "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0 or "PRIVATE KEY-----" not in pem:
        raise ConfigError("expected a PEM file with the certificate and its private key",
                          key=key)
    body = pem[start + len(begin):stop]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise ConfigError("the certificate in the PEM file is not base64", key=key) from exc
    if not password:
        _check_private_key(pem, key)
    import hashlib  # noqa: PLC0415 - only here

    credential: dict[str, Any] = {
        "private_key": pem,
        "thumbprint": hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        "public_certificate": pem[start:stop + len(end)],
    }
    if password:
        credential["passphrase"] = password
    return credential


def _check_private_key(pem: str, key: str) -> None:
    """Read an unencrypted key now: MSAL would only find it damaged when it signs the first
    assertion, and that failure would look like a passing network fault. (An encrypted key
    is read, with its password, when MSAL builds the application.)"""
    try:
        from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
            load_pem_private_key,
        )
    except ImportError:  # comes with MSAL, which says what is missing
        return
    try:
        load_pem_private_key(pem.encode("ascii"), password=None)
    except TypeError as exc:  # encrypted, and no password
        raise ConfigError("the private key in the PEM file is encrypted: set "
                          "certificate_password_env", key=key) from exc
    except ValueError as exc:
        raise ConfigError("the private key in the PEM file cannot be read (damaged, or "
                          "not a key)", key=key) from exc


class RefreshTokenStore:
    """The refresh token of one credential, in a file only its owner can read.

    Written the crash-safe way: a new file (0600) beside the old one, written, fsynced,
    renamed over it, and the directory fsynced, so whatever moment a crash (or ``kill
    -9``) hits, the file holds the old token or the new one, whole.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<RefreshTokenStore {self.path}>"

    def load(self) -> str | None:
        """The stored refresh token, or None when there is none yet."""
        data = self.load_record()
        return data.get("refresh_token") if data else None

    def load_record(self) -> dict[str, str] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        data = _json_object(raw)
        token = data.get("refresh_token") if data else None
        if not isinstance(token, str) or not token:
            raise TokenRefused(f"{self.path} holds no refresh token (damaged or edited)",
                               error="invalid_grant")
        return {k: v for k, v in (data or {}).items() if isinstance(v, str)}

    def save(self, refresh_token: str, **details: str) -> None:
        """Replace the stored token (and ``details``, such as the client id) atomically."""
        record = {"refresh_token": refresh_token,
                  "saved_at": datetime.now(UTC).isoformat(timespec="seconds"), **details}
        _write_private(self.path, json.dumps(record, indent=1).encode() + b"\n")

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the token's lock file: one refresh at a time across processes (the worker
        processes of ``run`` each refresh on their own), so a rotated token is read by the
        next refresh, never raced past. The lock goes with its process, even at ``kill -9``."""
        directory = private_directory(self.path.parent)
        lock = directory / f".{self.path.name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        try:
            _lock_file(fd, lock)
            yield
        finally:
            os.close(fd)  # closing releases the lock on every system


def _lock_file(fd: int, path: Path) -> None:
    if sys.platform == "win32":
        import msvcrt  # noqa: PLC0415 - Windows only

        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for about 10 s, then fails
        except OSError as exc:
            raise TokenUnavailable(f"{path} is locked by another process") from exc
    else:
        import fcntl  # noqa: PLC0415 - POSIX only

        fcntl.flock(fd, fcntl.LOCK_EX)  # the holder's request is bounded by its time-out


def _write_private(path: Path, data: bytes) -> None:
    directory = private_directory(path.parent)
    tmp = directory / f".{path.name}.{uuid.uuid4().hex}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name != "nt":  # Windows cannot open a directory; NTFS journals the rename
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    for stale in directory.glob(f".{path.name}.*.tmp"):  # left by a crash mid-write
        stale.unlink(missing_ok=True)


class RefreshTokenGrant:
    """Delegated tokens from a stored refresh token (RFC 6749 §6).

    A new refresh token in the answer (rotation) replaces the stored one before the access
    token is handed out, so the token on disk is always the newest the provider issued.
    """

    def __init__(self, oauth: OAuthConfig, store: RefreshTokenStore, *,
                 opener: Opener | None = None, clock: Callable[[], float] = time.time) -> None:
        self.oauth = oauth
        self.store = store
        self.endpoints = endpoints(oauth)
        self._opener = opener
        self._clock = clock

    def __repr__(self) -> str:
        return f"<RefreshTokenGrant {self.oauth.name!r} {self.store.path}>"

    def fetch(self) -> AccessToken:
        name = self.oauth.name
        what = f"oauth {name}: refresh_token token request"
        with self.store.locked():
            return self._refresh(name, what)

    def _refresh(self, name: str, what: str) -> AccessToken:
        hint = f"; run: commit-email auth login {name}"
        refresh_token = self.store.load()
        if refresh_token is None:
            raise TokenRefused(f"oauth {name}: no refresh token yet{hint}", error="no_token")
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                "client_id": self.oauth.client_id}
        try:
            secret = self.oauth.resolved_client_secret()
        except ConfigError as exc:
            raise TokenRefused(f"{what}: {exc}", error="invalid_client") from exc
        if secret:
            form["client_secret"] = secret
        if self.endpoints.scope:
            form["scope"] = self.endpoints.scope
        now = self._clock()
        try:
            data = post_token_request(self.endpoints.token_url, form,
                                      timeout=self.oauth.timeout, what=what,
                                      opener=self._opener)
        except TokenRefused as exc:
            raise TokenRefused(f"{exc}{hint}", error=exc.error) from exc
        token = _token_from_response(data, now, what)
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != refresh_token:
            self.store.save(rotated, client_id=self.oauth.client_id)
            log.info("oauth %s: the provider rotated the refresh token; saved", name)
        return token


class CommandGrant:
    """Tokens printed by an external helper (the Unix convention of fetchmail, msmtp, isync).

    The command is split like a shell would (no shell runs it: use ``sh -c '…'`` for
    pipes), runs with the ``timeout`` of the section, and must print the token on its first
    line, or a JSON object with ``access_token`` (and ``expires_in``). A non-zero exit, no
    output, or a time-out raise :class:`TokenUnavailable` naming the command's first word
    and its stderr's last line.
    """

    def __init__(self, oauth: OAuthConfig, *, clock: Callable[[], float] = time.time,
                 cwd: Path | None = None) -> None:
        self.oauth = oauth
        self._clock = clock
        self._cwd = cwd

    def __repr__(self) -> str:
        return f"<CommandGrant {self.oauth.name!r}>"

    def _argv(self) -> list[str] | str:
        command = self.oauth.token_command
        if os.name == "nt":
            return command  # CreateProcess parses the command line itself
        return shlex.split(command)

    def fetch(self) -> AccessToken:
        argv = self._argv()
        program = argv[0] if isinstance(argv, list) and argv else self.oauth.token_command
        what = f"oauth {self.oauth.name}: token_command {Path(str(program)).name}"
        now = self._clock()
        try:
            # The command is the configuration's own, run as its owner wrote it.
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,  # noqa: S603
                                  timeout=self.oauth.timeout, cwd=self._cwd, check=False)
        except subprocess.TimeoutExpired as exc:
            raise TokenUnavailable(f"{what}: no token within {self.oauth.timeout:g} s "
                                   "(stopped)") from exc
        except OSError as exc:
            raise TokenUnavailable(f"{what}: cannot run it: {exc.strerror or exc}") from exc
        stderr = done.stderr.decode("utf-8", "replace").strip().splitlines()
        said = f": {_shorten(stderr[-1], 200)}" if stderr else ""
        if done.returncode != 0:
            raise TokenUnavailable(f"{what}: exited with status {done.returncode}{said}")
        out = done.stdout[:_MAX_COMMAND_OUTPUT].decode("utf-8", "replace").strip()
        if not out:
            raise TokenUnavailable(f"{what}: printed no token{said}")
        if out.startswith("{"):
            data = _json_object(out.encode())
            if data is None:
                raise TokenUnavailable(f"{what}: printed something that is not JSON")
            if "access_token" not in data and "accessToken" in data:  # az account get-access-token
                data = {**data, "access_token": data["accessToken"]}
            return _token_from_response(data, now, what)
        return _token_from_response({"access_token": out.splitlines()[0].strip()}, now, what)


# -- the credentials of a configuration -----------------------------------------------------------


def refresh_token_path(config: Config, name: str) -> Path:
    """Where the refresh token of ``[oauth.NAME]`` is kept: ``state_dir/oauth/NAME.json``."""
    return config.state_dir / "oauth" / f"{name}.json"


def build_grant(config: Config, oauth: OAuthConfig, *, opener: Opener | None = None,
                clock: Callable[[], float] = time.time) -> TokenGrant:
    """The grant an ``[oauth.NAME]`` section describes."""
    if oauth.grant == "command":
        return CommandGrant(oauth, clock=clock, cwd=config.base_dir)
    if oauth.grant == "refresh_token":
        store = RefreshTokenStore(refresh_token_path(config, oauth.name))
        return RefreshTokenGrant(oauth, store, opener=opener, clock=clock)
    if oauth.certificate_file:
        return CertificateGrant(oauth, config.resolve_path(oauth.certificate_file), clock=clock)
    return ClientCredentialsGrant(oauth, opener=opener, clock=clock)


class OAuthCredentials:
    """The credentials of one configuration, each built once and shared by every mailbox
    and the relay that names it. Build one per running service and hand it to the sources
    and the mailer (``Runner`` and ``Connector.from_config`` do)."""

    def __init__(self, config: Config, *, opener: Opener | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._opener = opener
        self._clock = clock
        self._lock = threading.Lock()
        self._built: dict[str, Credential] = {}

    def __repr__(self) -> str:
        return f"<OAuthCredentials {sorted(self.config.oauth)}>"

    def get(self, name: str) -> Credential:
        """The credential of ``[oauth.NAME]``."""
        with self._lock:
            credential = self._built.get(name)
            if credential is None:
                try:
                    oauth = self.config.oauth[name]
                except KeyError:
                    raise ConfigError(f"no section [oauth.{name}]", key=f"oauth.{name}") from None
                grant = build_grant(self.config, oauth, opener=self._opener, clock=self._clock)
                credential = self._built[name] = Credential(name, grant, clock=self._clock)
            return credential

    def for_login(self, oauth: str, mechanism: str) -> Credential | None:
        """The credential a mailbox or relay logs in with (None when it uses a password)."""
        return self.get(oauth) if mechanism and oauth else None


# -- SASL XOAUTH2 and OAUTHBEARER ------------------------------------------------------------


MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


def sasl_response(mechanism: str, user: str, token: str, *, host: str = "",
                  port: int = 0) -> bytes:
    """The client's first (and only) SASL message, before base64.

    XOAUTH2 (Google's and Microsoft's): ``user=U^Aauth=Bearer T^A^A``; OAUTHBEARER (RFC
    7628 §3.1): ``n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A``, with ``,`` and ``=`` in the
    user name escaped as the GS2 header requires.
    """
    for what, value in (("user name", user), ("token", token)):
        if any(c in value for c in "\x00\x01\r\n"):
            raise ValueError(f"the {what} has characters SASL cannot carry")
    mechanism = mechanism.upper()
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    if mechanism == "OAUTHBEARER":
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        fields = f"n,a={authzid},\x01"
        if host:
            fields += f"host={host}\x01"
        if port:
            fields += f"port={port}\x01"
        return f"{fields}auth=Bearer {token}\x01\x01".encode()
    raise ValueError(f"not an OAuth SASL mechanism: {mechanism}")


def failure_reply(mechanism: str) -> bytes:
    """What the client answers a failure challenge with, before base64: XOAUTH2 an empty
    response, OAUTHBEARER a single ``^A`` (RFC 7628 §3.2.3); the server then fails the
    exchange with its final status."""
    return b"\x01" if mechanism.upper() == "OAUTHBEARER" else b""


@frozen(kw_only=True)
class SaslChallenge:
    """The server's failure challenge (RFC 7628 §3.2.2): ``status`` such as ``401``
    (``invalid_token``) or ``400``, the ``schemes`` and ``scope`` it wants."""

    status: str = ""
    schemes: str = ""
    scope: str = ""
    #: the challenge as received, for servers that send something else than JSON
    raw: str = ""


def parse_challenge(data: bytes | str) -> SaslChallenge:
    """Read a failure challenge, base64 already removed (or given as base64 text). Never
    fails: a challenge that is no JSON object is kept in ``raw``."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            return SaslChallenge(raw=_shorten(str(data), 200))
    text = data.decode("utf-8", "replace")
    obj = _json_object(data)
    if obj is None:
        return SaslChallenge(raw=_shorten(text, 200))
    return SaslChallenge(status=str(obj.get("status", "")), schemes=str(obj.get("schemes", "")),
                         scope=str(obj.get("scope", "")), raw=_shorten(text, 200))


class TokenRejected(Exception):
    """A login attempt's way of saying the server refused the token (raised by the
    attempt function given to :func:`log_in`)."""

    def __init__(self, challenge: SaslChallenge | None, reply: str) -> None:
        self.challenge = challenge
        self.reply = reply
        super().__init__(reply)

    @property
    def status(self) -> str:
        return self.challenge.status if self.challenge else ""


def log_in(provider: TokenProvider, attempt: Callable[[AccessToken], None], *,
           valid_for: float = 0.0) -> None:
    """Log in with ``attempt(token)``; after a :class:`TokenRejected` the token is dropped
    and the login tried once more with a new one (a token revoked early, a clock skew);
    a second refusal is raised. ``valid_for``: how long the session is expected to last,
    so that a token about to expire is replaced first."""
    token = provider.access_token(valid_for=valid_for)
    try:
        attempt(token)
        return
    except TokenRejected as exc:
        log.info("oauth %s: the server refused the token (%s); getting a new one",
                 provider.name, exc.status or exc.reply)
        provider.reject(token)
    token = provider.access_token(valid_for=valid_for)
    attempt(token)


def login_error(where: str, mechanism: str, provider: TokenProvider,
                rejected: TokenRejected) -> OAuthLoginError:
    """The error for a login the server refused twice: names the mailbox (``where``), the
    mechanism, the server's status and reply, and the credential, never the token."""
    status = rejected.status
    parts = [f"{where}: {mechanism} login refused"]
    if status:
        parts.append(f" (status {status}")
        if rejected.challenge and rejected.challenge.scope:
            parts.append(f", scope {rejected.challenge.scope}")
        parts.append(")")
    reply = f": {_shorten(rejected.reply, 200)}" if rejected.reply else ""
    message = (f"{''.join(parts)}{reply}; a new token from [oauth.{provider.name}] was refused "
               "too: check that the app may use this mailbox")
    return OAuthLoginError(message, mailbox=where, mechanism=mechanism, status=status)
