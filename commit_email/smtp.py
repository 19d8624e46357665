"""SMTP out: the :class:`~commit_email.protocols.Mailer` that talks to a real server.

``SmtpMailer.send`` hands ``mail.raw`` over byte for byte (no header rewriting, so a
forward carries exactly what the customer sent; only a bare LF line end, which SMTP
forbids, becomes CRLF) with the envelope ``mail.sender`` -> ``mail.recipients``.

Failures are sorted into two kinds, because the outbox retries on the next run
and a retry must be able to succeed:

- *transient* — a 4xx reply, a dropped connection, a timeout, a refused
  connection: retried here with exponential backoff (``smtp.retries`` times), and
  if it still fails, raised as :class:`SmtpTransientError` so the mail stays
  queued for the next run;
- *permanent* — a 5xx reply, failed authentication, a server without STARTTLS
  when STARTTLS is configured, a certificate that does not verify: raised at once
  as :class:`SmtpPermanentError`, because repeating it only hammers the server.

Both are :class:`~commit_email.errors.MailerError`; nothing from smtplib, socket
or ssl leaves this module.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import smtplib
import ssl
import time
from collections.abc import Callable

from .config import SmtpConfig
from .errors import ConfigError, MailerError, TokenRefused, TokenUnavailable
from .model import OutgoingMail
from .oauth import (
    AccessToken,
    TokenProvider,
    TokenRejected,
    failure_reply,
    log_in,
    login_error,
    parse_challenge,
    sasl_response,
)

__all__ = ["SmtpMailer", "SmtpPermanentError", "SmtpTransientError", "classify", "wire_bytes"]

log = logging.getLogger(__name__)


class SmtpTransientError(MailerError):
    """Sending failed for a reason that may go away (4xx, connection trouble)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message, permanent=False, code=code)


class SmtpPermanentError(MailerError):
    """The server refused the mail or the session for good (5xx, bad login, bad TLS)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message, permanent=True, code=code)


def _decode(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def classify(exc: BaseException) -> MailerError:
    """Translate an smtplib / socket / ssl exception into transient or permanent."""
    if isinstance(exc, MailerError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{rcpt}: {code} {_decode(msg)}" for rcpt, (code, msg) in exc.recipients.items()
        )
        cls = SmtpTransientError if codes and all(400 <= c < 500 for c in codes) else (
            SmtpPermanentError
        )
        return cls(f"all recipients refused ({detail})", code=max(codes, default=None))
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SmtpPermanentError(f"server does not support a required extension: {exc}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SmtpTransientError(f"connection closed by server: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        message = f"{code} {_decode(exc.smtp_error)}"
        if 400 <= code < 500:
            return SmtpTransientError(message, code=code)
        return SmtpPermanentError(message, code=code)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpPermanentError(f"TLS certificate not accepted: {exc.verify_message or exc}")
    if isinstance(exc, ssl.SSLError):
        return SmtpPermanentError(f"TLS failed: {exc}")
    if isinstance(exc, smtplib.SMTPException):
        return SmtpPermanentError(f"SMTP error: {exc}")
    if isinstance(exc, TimeoutError):
        return SmtpTransientError("timed out")
    if isinstance(exc, OSError):
        return SmtpTransientError(f"connection failed: {exc.strerror or exc}")
    raise TypeError(f"not an SMTP failure: {exc!r}")  # pragma: no cover


_BARE_LF = re.compile(rb"(?<!\r)\n")


def _code(reply: str) -> int | None:
    head = reply.split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def wire_bytes(raw: bytes) -> bytes:
    """``raw`` as it may go over SMTP: bare LFs become CRLF (RFC 5321 forbids them, and
    servers that defend against SMTP smuggling reject them); anything else is untouched.
    smtplib does the dot-stuffing itself."""
    return _BARE_LF.sub(b"\r\n", raw) if b"\n" in raw else raw


class SmtpMailer:
    """Sends mail through the server in ``config``; one connection per mail.

    ``sleep`` and ``backoff`` exist so tests can retry without waiting; the delay before
    retry *n* (1-based) is ``backoff * 2**(n-1)`` seconds plus up to 25 % jitter, so that
    several connectors hitting a greylisting server do not come back in lockstep.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        backoff: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        local_hostname: str | None = None,
        tokens: TokenProvider | None = None,
    ) -> None:
        if not config.host:
            raise MailerError("smtp.host is not set")
        self.config = config
        #: where the access tokens come from when ``auth`` is ``xoauth2``/``oauthbearer``
        self.tokens = tokens
        self.backoff = backoff
        self._sleep = sleep
        self._local_hostname = local_hostname
        self._password: str | None = None

    def send(self, mail: OutgoingMail) -> None:
        """Deliver ``mail`` or raise :class:`SmtpTransientError` / :class:`SmtpPermanentError`."""
        if not mail.recipients:
            raise SmtpPermanentError(f"{mail.kind} mail {mail.message_id!r} has no recipients")
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self._deliver(mail)
                return
            except (smtplib.SMTPException, OSError) as exc:
                error = classify(exc)
                if error.permanent or attempt == attempts:
                    log.warning("sending %s %s failed: %s", mail.kind, mail.message_id, error)
                    raise error from exc
                delay = self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4)
                log.info("sending %s failed (%s); retry %d in %.1fs", mail.kind, error,
                         attempt, delay)
                self._sleep(delay)

    def _deliver(self, mail: OutgoingMail) -> None:
        with self._connect() as smtp:
            refused = smtp.sendmail(mail.sender, list(mail.recipients), wire_bytes(mail.raw))
        if refused:
            # Some recipients got it: raising would make the outbox send it to them again.
            log.warning("%s %s not accepted for %s", mail.kind, mail.message_id,
                        ", ".join(f"{r} ({c})" for r, (c, _) in refused.items()))

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        port = cfg.effective_port
        if cfg.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host, port, local_hostname=self._local_hostname, timeout=cfg.timeout,
                context=self._tls_context(),
            )
        else:
            smtp = smtplib.SMTP(
                cfg.host, port, local_hostname=self._local_hostname, timeout=cfg.timeout
            )
        try:
            smtp.ehlo()
            if cfg.security == "starttls":
                # starttls() raises SMTPNotSupportedError rather than silently staying plain.
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if cfg.user:
                self._log_in(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def check_login(self) -> None:
        """Connect, secure and log in as for a mail, then QUIT: nothing is sent. Raises
        :class:`SmtpTransientError` / :class:`SmtpPermanentError` as :meth:`send` does."""
        try:
            with self._connect():
                pass
        except (smtplib.SMTPException, OSError) as exc:
            raise classify(exc) from exc

    def _log_in(self, smtp: smtplib.SMTP) -> None:
        cfg = self.config
        mechanism = cfg.sasl_mechanism
        if mechanism:
            self._oauth_login(smtp, mechanism)
            return
        password = self._resolved_password()
        if cfg.auth == "auto":
            smtp.login(cfg.user, password)
            return
        smtp.user, smtp.password = cfg.user, password
        method = smtp.auth_plain if cfg.auth == "plain" else smtp.auth_login
        smtp.auth(cfg.auth.upper(), method)

    def _oauth_login(self, smtp: smtplib.SMTP, mechanism: str) -> None:
        """SASL XOAUTH2/OAUTHBEARER (RFC 4954 AUTH), retried once with a new token after a
        refusal. A provider that cannot give a token (down, or refusing the grant until
        ``auth login`` is run) leaves the mail queued; a relay that refuses a new token is
        a permanent failure, as a wrong password is."""
        cfg = self.config
        where = f"SMTP {cfg.user}@{cfg.host}:{cfg.effective_port}"
        tokens = self.tokens
        if tokens is None:
            raise SmtpPermanentError(f"{where}: auth = {cfg.auth!r} needs OAuth credentials "
                                     "(smtp.oauth)")
        try:
            log_in(tokens, lambda token: self._sasl(smtp, mechanism, token))
        except TokenRejected as exc:
            error = login_error(where, mechanism, tokens, exc)
            raise SmtpPermanentError(str(error), code=_code(exc.reply)) from None
        except (TokenRefused, TokenUnavailable) as exc:
            raise SmtpTransientError(f"{where}: {exc}") from exc

    def _sasl(self, smtp: smtplib.SMTP, mechanism: str, token: AccessToken) -> None:
        """One AUTH exchange, the response on its own line after the server's 334 (no
        initial response on the AUTH line, whose length servers limit); a failure challenge
        is answered before the server's final reply."""
        cfg = self.config
        response = sasl_response(mechanism, cfg.user, token.value, host=cfg.host,
                                 port=cfg.effective_port)
        code, reply = smtp.docmd("AUTH", mechanism)
        if code != 334:
            raise smtplib.SMTPAuthenticationError(code, reply)  # no such mechanism here
        code, reply = smtp.docmd(base64.b64encode(response).decode("ascii"))
        challenge = None
        if code == 334:
            challenge = parse_challenge(reply.decode("ascii", "replace"))
            code, reply = smtp.docmd(base64.b64encode(failure_reply(mechanism)).decode("ascii"))
        if code == 235:
            return
        if 400 <= code < 500:
            raise smtplib.SMTPAuthenticationError(code, reply)  # the relay's trouble: retried
        raise TokenRejected(challenge, f"{code} {_decode(reply)}")

    def _resolved_password(self) -> str:
        if self._password is None:
            try:
                self._password = self.config.resolved_password()
            except ConfigError as exc:
                raise SmtpPermanentError(str(exc)) from exc
        return self._password

    def _tls_context(self) -> ssl.SSLContext:
        cfg = self.config
        try:
            context = ssl.create_default_context(cafile=cfg.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise SmtpPermanentError(f"smtp.ca_file {cfg.ca_file!r} unusable: {exc}") from exc
        if not cfg.verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
