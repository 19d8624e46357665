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
import itertools
import logging
import random
import re
import smtplib
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

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
    """Translate an smtplib / socket / ssl exception into transient or permanent (with the
    original as ``__cause__``)."""
    if isinstance(exc, MailerError):
        return exc
    error = _classify(exc)
    error.__cause__ = exc
    return error


def _classify(exc: BaseException) -> MailerError:
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
    """Sends mail through the server in ``config``, keeping one session for many mails.

    The session (after STARTTLS and AUTH) stays open across mails and is closed (QUIT)
    once it has been idle for ``smtp.idle_timeout`` seconds, or by :meth:`close`. When the
    server offers PIPELINING (RFC 2920), each mail's ``RSET``, ``MAIL``, ``RCPT`` and
    ``DATA`` go out together, and they travel behind the previous mail's content, so a
    stream of mails costs one round trip per mail; without it each command waits for its
    reply. A session the server dropped (its idle time-out, a restart) is reopened and the
    mail sent on the new one: that costs no retry, as long as the session had worked before.

    One instance is one session: use it from one thread at a time. ``sleep`` and
    ``backoff`` exist so tests can retry without waiting; the delay before retry *n*
    (1-based) is ``backoff * 2**(n-1)`` seconds plus up to 25 % jitter, so that several
    connectors hitting a greylisting server do not come back in lockstep.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        backoff: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        local_hostname: str | None = None,
        tokens: TokenProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self._smtp: smtplib.SMTP | None = None
        self._used = 0.0  # when the session last finished a command
        self._dirty = False  # commands written whose replies were not read
        self._proven = False  # the session completed a transaction (a drop is then no fault)
        #: sessions opened so far (TCP connections, each with its TLS handshake and login)
        self.connections = 0

    # One mail, many mails -------------------------------------------------------------

    def send(self, mail: OutgoingMail) -> None:
        """Deliver ``mail`` or raise :class:`SmtpTransientError` / :class:`SmtpPermanentError`."""
        for _, error in self.send_many((mail,)):
            if error is not None:
                raise error

    def send_many(
        self, mails: Iterable[OutgoingMail]
    ) -> Iterator[tuple[OutgoingMail, MailerError | None]]:
        """Send ``mails`` (read lazily) in order over the session, yielding each with
        ``None`` once the server accepted it (replied to the end of DATA), or with the error.

        A transient failure of one mail (a ``4xx`` reply) is retried ``smtp.retries`` times
        with backoff, after the mails behind it. A session that breaks after it worked is
        reopened at once and the mail in hand sent again (it may have arrived: at least
        once, with its Message-ID). When no session can be opened, or a new one breaks
        before it took a mail, ``smtp.retries`` times, the failure is yielded for the mail in
        hand and the generator stops: the mails behind it are not tried. A permanent
        failure to open a session (a refused login, no STARTTLS) is that mail's error.
        """
        source = iter(mails)
        todo: deque[OutgoingMail] = deque()
        later: list[tuple[OutgoingMail, MailerError]] = []  # 4xx, to try again
        tries: dict[int, int] = {}
        failures = 0  # sessions in a row that could not be opened or broke at once
        try:
            while True:
                if not _head(todo, source):
                    if not later:
                        return
                    self._pause(max(tries[id(m)] for m, _ in later))
                    todo.extend(m for m, _ in later)
                    later.clear()
                session_error: MailerError | None = None
                try:
                    smtp, reused = self._session()
                except (smtplib.SMTPException, OSError, MailerError) as exc:
                    self.close()
                    session_error = classify(exc)
                else:
                    try:
                        yield from self._results(smtp, todo, source, reused=reused, tries=tries,
                                                later=later)
                        failures = 0
                        continue
                    except (smtplib.SMTPException, OSError) as exc:
                        # The session broke under the mail in hand, which stays first in
                        # todo: it may or may not have arrived, and goes again.
                        proven = self._proven
                        self._drop()
                        session_error = classify(exc)
                        if proven:
                            log.info("SMTP session lost (%s); reconnecting", session_error)
                            continue
                failures += 1
                if not session_error.permanent and failures <= self.config.retries:
                    log.info("SMTP session failed (%s); retry %d", session_error, failures)
                    self._pause(failures)
                    continue
                mail = todo.popleft()
                self._log_failure(mail, session_error)
                yield mail, session_error
                failures = 0
                if not session_error.permanent:
                    for mail, error in later:  # their last answer stands
                        self._log_failure(mail, error)
                        yield mail, error
                    return  # the server cannot be reached: nothing behind it is tried
        finally:
            if self._dirty:
                self._drop()  # abandoned with commands in flight: the session is unusable

    def _results(
        self, smtp: smtplib.SMTP, todo: deque[OutgoingMail], source: Iterator[OutgoingMail],
        *, reused: bool, tries: dict[int, int],
        later: list[tuple[OutgoingMail, MailerError]],
    ) -> Iterator[tuple[OutgoingMail, MailerError | None]]:
        """The final results of one session's transactions; 4xx answers go to ``later``."""
        for mail, error in self._transactions(smtp, todo, source, reused=reused):
            self._proven = True
            if error is not None and not error.permanent:
                tries[id(mail)] = tries.get(id(mail), 0) + 1
                if tries[id(mail)] <= self.config.retries:
                    log.info("sending %s failed (%s); retry %d", mail.kind, error,
                             tries[id(mail)])
                    later.append((mail, error))
                    continue
            if error is not None:
                self._log_failure(mail, error)
            yield mail, error

    def _pause(self, attempt: int) -> None:
        self._sleep(self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4))

    @staticmethod
    def _log_failure(mail: OutgoingMail, error: MailerError) -> None:
        log.warning("sending %s %s failed: %s", mail.kind, mail.message_id, error)

    # The session ---------------------------------------------------------------------

    def _session(self) -> tuple[smtplib.SMTP, bool]:
        """The open session (True: it was used before), or a new one."""
        if self._smtp is not None:
            if self._clock() - self._used <= self.config.idle_timeout:
                return self._smtp, True
            self.close()
        smtp = self._connect()
        self.connections += 1
        self._proven = False
        self._smtp = smtp
        self._used = self._clock()
        return smtp, False

    def close(self) -> None:
        """End the session politely (QUIT); nothing happens when there is none."""
        if self._dirty:
            self._drop()
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()

    def close_if_idle(self) -> bool:
        """Close the session if it has been unused for ``smtp.idle_timeout``; True if open."""
        if self._smtp is not None and self._clock() - self._used > self.config.idle_timeout:
            self.close()
        return self._smtp is not None

    def _drop(self) -> None:
        self._dirty = False
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    # Transactions --------------------------------------------------------------------

    def _transactions(
        self, smtp: smtplib.SMTP, todo: deque[OutgoingMail], source: Iterator[OutgoingMail],
        *, reused: bool,
    ) -> Iterator[tuple[OutgoingMail, MailerError | None]]:
        """Send what ``todo`` holds, and what ``source`` gives behind it, over ``smtp``.

        A mail leaves ``todo`` once its result is known. A broken session raises (smtplib or
        OSError) with the mail in hand still at the head of ``todo``.
        """
        pipelining = smtp.has_extn("pipelining")
        rset = reused  # a session that sat idle is reset (and so checked) before a new mail
        written = False  # todo[0]'s envelope went out behind the previous mail's content
        while _head(todo, source):
            mail = todo[0]
            problem = None if written else _unsendable(mail, smtp)
            if problem is not None:
                todo.popleft()
                yield mail, problem
                continue
            if pipelining and not written:
                self._write(smtp, _envelope(mail, smtp, rset=rset))
                written = True
            error, refused = self._envelope_replies(smtp, mail, rset=rset, written=written)
            written = False
            if error is not None:
                todo.popleft()
                rset = True  # RSET ends whatever the server kept of that envelope
                yield mail, error
                continue
            # The content, and behind it the next mail's envelope (RFC 2920 lets the
            # content open a group), so the server never waits for us between two mails.
            payload = _content(mail.raw)
            if pipelining:
                if len(todo) < 2:
                    todo.extend(itertools.islice(source, 1))
                if len(todo) > 1 and _unsendable(todo[1], smtp) is None:
                    payload += _envelope(todo[1], smtp, rset=True)
                    written = True
            self._write(smtp, payload)
            code, reply = self._reply(smtp)
            if not written:
                self._dirty = False
            if code == 421:  # closing: the mail was not taken; it goes on a new session
                raise smtplib.SMTPServerDisconnected(f"{code} {_decode(reply)}")
            todo.popleft()
            rset = pipelining  # free when pipelined; otherwise only after a failure
            if code != 250:
                rset = True
                yield mail, classify(smtplib.SMTPDataError(code, reply))
                continue
            if refused:
                # Some recipients got it: reporting a failure would send it to them again.
                log.warning("%s %s not accepted for %s", mail.kind, mail.message_id,
                            ", ".join(f"{r} ({c} {_decode(m)})" for r, (c, m) in refused.items()))
            yield mail, None

    def _write(self, smtp: smtplib.SMTP, data: bytes) -> None:
        self._dirty = True
        smtp.send(data)

    def _reply(self, smtp: smtplib.SMTP) -> tuple[int, bytes]:
        code, reply = smtp.getreply()
        self._used = self._clock()
        if code == -1:  # pragma: no cover - smtplib's answer to a line that is not a reply
            raise smtplib.SMTPServerDisconnected(f"unreadable reply {_decode(reply)!r}")
        return code, reply

    def _envelope_replies(
        self, smtp: smtplib.SMTP, mail: OutgoingMail, *, rset: bool, written: bool
    ) -> tuple[MailerError | None, dict[str, tuple[int, bytes]]]:
        """The replies to RSET, MAIL, each RCPT and DATA, read in order; each command is
        sent first unless the whole envelope was ``written`` (pipelined). Returns (None,
        the refused recipients) when the server waits for the content (354), else the
        mail's error."""
        commands = _commands(mail, smtp, rset=rset)
        if rset:
            if not written:
                self._write(smtp, commands[0])
            code, reply = self._reply(smtp)
            if code == 421:
                raise smtplib.SMTPServerDisconnected(f"{code} {_decode(reply)}")
            if code != 250:
                raise smtplib.SMTPResponseException(code, reply)  # the session is not sane
            commands = commands[1:]
        replies: list[tuple[int, bytes]] = []
        for n, command in enumerate(commands):
            if not written:
                last = n == len(commands) - 1
                mail_refused = n > 0 and replies[0][0] != 250
                nobody = last and all(c not in (250, 251) for c, _ in replies[1:])
                if mail_refused or nobody:
                    break  # one command at a time: what follows a refusal is not sent
                self._write(smtp, command)
            code, reply = self._reply(smtp)
            if code == 421:
                raise smtplib.SMTPServerDisconnected(f"{code} {_decode(reply)}")
            replies.append((code, reply))
        (mail_code, mail_reply), rcpts = replies[0], replies[1:1 + len(mail.recipients)]
        refused = {r: reply for r, reply in zip(mail.recipients, rcpts, strict=False)
                   if reply[0] not in (250, 251)}
        accepted = len(rcpts) - len(refused)
        data = replies[-1] if len(replies) == len(commands) else None
        if data is not None and data[0] == 354:
            if mail_code != 250 or not accepted:
                # It waits for content for a transaction it refused: send none, drop it.
                raise smtplib.SMTPResponseException(354, b"DATA accepted without an envelope")
            return None, refused
        self._dirty = False
        if mail_code != 250:
            return classify(smtplib.SMTPSenderRefused(mail_code, mail_reply, mail.sender)), {}
        if not accepted:
            return classify(smtplib.SMTPRecipientsRefused(refused)), refused
        assert data is not None
        return classify(smtplib.SMTPDataError(data[0], data[1])), refused

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


def _head(todo: deque[OutgoingMail], source: Iterator[OutgoingMail]) -> bool:
    """Whether there is a mail to send: ``todo`` refilled from ``source`` when empty."""
    if not todo:
        todo.extend(itertools.islice(source, 1))
    return bool(todo)


def _needs_utf8(mail: OutgoingMail) -> bool:
    return not all(a.isascii() for a in (mail.sender, *mail.recipients))


def _unsendable(mail: OutgoingMail, smtp: smtplib.SMTP) -> SmtpPermanentError | None:
    """Why ``mail`` cannot go out at all (checked before a byte of it is written)."""
    if not mail.recipients:
        return SmtpPermanentError(f"{mail.kind} mail {mail.message_id!r} has no recipients")
    for address in (mail.sender, *mail.recipients):
        if any(ord(c) < 32 or c in "<>" for c in address):
            return SmtpPermanentError(f"address {address!r} cannot be written in SMTP")
    if _needs_utf8(mail) and not smtp.has_extn("smtputf8"):
        return SmtpPermanentError("a non-ASCII address and a server without SMTPUTF8")
    return None


def _commands(mail: OutgoingMail, smtp: smtplib.SMTP, *, rset: bool) -> list[bytes]:
    """RSET (optional), MAIL FROM, one RCPT TO per recipient, DATA: one line each."""
    utf8 = _needs_utf8(mail)
    options = ""
    if smtp.has_extn("size"):
        options += f" SIZE={len(mail.raw)}"
    if utf8:
        options += " SMTPUTF8"
    encoding = "utf-8" if utf8 else "ascii"
    lines = ["RSET"] if rset else []
    lines.append(f"MAIL FROM:{smtplib.quoteaddr(mail.sender)}{options}")
    lines += [f"RCPT TO:{smtplib.quoteaddr(r)}" for r in mail.recipients]
    lines.append("DATA")
    return [f"{line}\r\n".encode(encoding) for line in lines]


def _envelope(mail: OutgoingMail, smtp: smtplib.SMTP, *, rset: bool) -> bytes:
    return b"".join(_commands(mail, smtp, rset=rset))


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _content(raw: bytes) -> bytes:
    """The DATA content: CRLF line ends, leading dots doubled, the final ``.`` line."""
    data = _LEADING_DOT.sub(b"..", wire_bytes(raw))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
