"""The built-in POP3 source: one mailbox session over :mod:`poplib`.

Callers see messages only by UIDL, never by sequence number: sequence numbers are
valid for one session only, UIDLs are what the delivery log records across sessions.
A session lists the UIDLs once at login (RFC 1939 numbers stay fixed for the
session), retrieves one message at a time, marks deletions with DELE (pipelined when
the server offers PIPELINING, RFC 2449) and applies them at QUIT. Dropping the
connection without QUIT discards the deletions, which is why the runner only ever
DELEs a message whose outcome is already durable: re-delivery is then harmless,
losing a message is impossible.

Every poplib, socket and TLS failure leaves this module as :class:`SourceError` with
the original exception as ``__cause__``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import poplib
import re
import ssl
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol, Self, cast

from .errors import ConfigError, LoginError, SourceError, TokenRefused, TokenUnavailable
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

if TYPE_CHECKING:
    from .config import Config, Pop3Config
    from .oauth import OAuthCredentials

__all__ = ["LoginError", "PeekableStream", "Pop3Mailbox", "read_multiline"]

log = logging.getLogger(__name__)

#: RETR is read in pieces of at most this many bytes, not line by line: poplib's own
#: reader refuses lines over 2048 bytes, which real mail exceeds (unwrapped HTML, long
#: base64 lines), and hundreds of readline calls per message cost more than the fetch.
_CHUNK = 65_536
#: status lines (+OK/-ERR) are short by definition; a longer one means a desynced stream
_MAX_STATUS = 4096
#: a server offers APOP by putting a <timestamp> in its greeting (RFC 1939 §7); poplib's
#: own pattern is the same, but typeshed declares it str while poplib matches bytes
_APOP_TIMESTAMP = re.compile(rb"\+OK.*(<[^>]+>)")
#: DELE commands per write; up to ``_DELE_WINDOWS_AHEAD`` more windows go out before a
#: window's replies are read, so 2,000 DELEs cost about four round trips, and at most
#: 500 replies (about 14 KB) wait: too little for either side's socket buffer to fill up
#: and deadlock the exchange (RFC 2449 §6.6 warns about that)
_PIPELINE_WINDOW = 100
_DELE_WINDOWS_AHEAD = 4
#: RETR commands in flight at most when the server allows pipelining: the server streams
#: these while the caller processes one, and the kernel's socket buffers hold what has
#: arrived (no thread, no queue of our own). Bounded by count and by the LIST sizes, so
#: a high-latency link is kept busy and a run of large messages is not all in flight:
#: refilled at half, so that the messages in flight cover a round trip of tens of
#: milliseconds (measured with benchmarks/pop3_bench.py --rtt-ms 40).
_RETR_AHEAD = 128
_RETR_AHEAD_BYTES = 8 * 1024 * 1024
#: a bare LF (not preceded by CR) in a lax server's reply
_BARE_LF = re.compile(rb"(?<!\r)\n")


class _ServerSaid(poplib.error_proto):
    """A complete ``-ERR`` status line: the session is still usable after it."""


class Pop3Mailbox:
    """A POP3 session for one mailbox; use it as a context manager.

    ``with Pop3Mailbox(config.pop3) as box:`` connects, secures the connection as
    ``security`` says, authenticates and lists the UIDLs. Leaving the block sends QUIT
    (applying the DELEs) unless the connection is broken, in which case it is dropped
    and the server keeps every message.
    """

    def __init__(self, config: Pop3Config, *, ca_file: Path | None = None,
                 tokens: TokenProvider | None = None) -> None:
        self.config = config
        #: where the access tokens come from when ``auth`` is ``xoauth2``/``oauthbearer``
        self.tokens = tokens
        self._ca_file = ca_file if ca_file is not None else (
            Path(config.ca_file) if config.ca_file else None
        )
        self._pop: poplib.POP3 | None = None
        self._numbers: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._deleted: set[str] = set()
        self._capabilities: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: Config, *,
                    credentials: OAuthCredentials | None = None) -> Pop3Mailbox:
        """The mailbox of a whole configuration, with ``ca_file`` relative to the config file;
        an OAuth login takes its tokens from ``credentials`` (shared, so the token cache
        outlives the session), else from credentials of its own."""
        ca = config.resolve_path(config.pop3.ca_file) if config.pop3.ca_file else None
        tokens = None
        if config.pop3.sasl_mechanism:
            if credentials is None:
                from .oauth import OAuthCredentials  # noqa: PLC0415 - only for a lone session

                credentials = OAuthCredentials(config)
            tokens = credentials.get(config.pop3.oauth)
        return cls(config.pop3, ca_file=ca, tokens=tokens)

    #: the source kind written into the processed log
    kind = "pop3"

    @property
    def name(self) -> str:
        """The mailbox name the delivery log files UIDLs under (``user@host:port``)."""
        return self.config.mailbox

    @property
    def keeps_messages(self) -> bool:
        """``leave_on_server``: processed messages are never DELEd."""
        return self.config.leave_on_server

    @property
    def connected(self) -> bool:
        """False once the session is closed, or was dropped after a broken exchange."""
        return self._pop is not None

    @property
    def pipelining(self) -> bool:
        """Whether the server said (CAPA, after login) that it accepts pipelined commands."""
        return "PIPELINING" in self._capabilities

    # -- session ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pop is None:
            return
        if exc is None:
            self.quit()
            return
        # Every DELE sent so far was for a message whose outcome is durable, so applying
        # them is safe even while an error propagates; a failing QUIT changes nothing.
        with contextlib.suppress(SourceError):
            self.quit()

    def connect(self) -> None:
        """Open, secure and authenticate the session, then read the UIDL and size lists."""
        if self._pop is not None:
            return
        cfg = self.config
        if not cfg.host:
            raise ConfigError("no POP3 server configured", key="pop3.host")
        context = self._tls_context() if cfg.security in ("ssl", "starttls") else None
        with self._errors(f"connect to {cfg.host}:{cfg.effective_port}"):
            self._pop = self._open(context)
        try:
            with self._errors("log in"):
                self._log_in(self._pop)
            with self._errors("list messages"):
                self._load_listing(self._pop)
            with self._errors("CAPA"):
                self._capabilities = _capabilities(self._pop)
        except BaseException:
            self.close()  # a half-open session is of no use to anyone
            raise
        log.debug("POP3 %s: %d messages", self.name, len(self._numbers))

    def quit(self) -> None:
        """Send QUIT, which makes the server apply the deletions, and close the connection."""
        pop = self._pop
        if pop is None:
            return
        try:
            with self._errors("QUIT"):
                pop.quit()
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection without QUIT: the server discards this session's DELEs."""
        pop, self._pop = self._pop, None
        self._numbers.clear()
        self._sizes.clear()
        self._deleted.clear()
        self._capabilities = frozenset()
        if pop is not None:
            with contextlib.suppress(OSError, poplib.error_proto):
                pop.close()

    # -- the MailSession seam (commit_email.protocols) ---------------------------------------

    def message_ids(self) -> list[str]:
        """The UIDLs, in the server's order (:meth:`uidls`)."""
        return self.uidls()

    def fetch(self, ids: Sequence[str]) -> Generator[tuple[str, bytes], None, None]:
        """The messages, RETRs pipelined ahead (:meth:`retrieve_many`)."""
        return self.retrieve_many(ids)

    def acknowledge(self, done: Sequence[tuple[str, object]]) -> list[tuple[str, str]]:
        """DELE the messages (:meth:`delete_many`); QUIT applies them. The outcome does not
        matter: a quarantined message is kept locally, byte for byte. Nothing is deleted
        with ``leave_on_server``."""
        if self.config.leave_on_server:
            return []
        return self.delete_many([uidl for uidl, _ in done])

    # -- messages --------------------------------------------------------------------------

    def uidls(self) -> list[str]:
        """The UIDLs of the messages in the mailbox, in the server's order."""
        self._session()
        return [u for u in self._numbers if u not in self._deleted]

    def size(self, uidl: str) -> int:
        """The message's size in octets as the server reports it (LIST)."""
        self._number(uidl)
        return self._sizes.get(uidl, 0)

    def retrieve(self, uidl: str) -> bytes:
        """The message's bytes: dot-stuffing undone, lines ending in CRLF.

        These are exactly the octets the server sent; Dovecot turns bare LF in its
        files into CRLF and ends an unterminated last line, so that is the form a message
        arrives in.
        """
        ((_, raw),) = self.retrieve_many([uidl])
        return raw

    def retrieve_many(self, uidls: Sequence[str]) -> Generator[tuple[str, bytes], None, None]:
        """Yield ``(uidl, bytes)`` for each message in order, like :meth:`retrieve`.

        With PIPELINING, RETR commands go out ahead, in groups, up to ``_RETR_AHEAD``
        messages and ``_RETR_AHEAD_BYTES`` (by their LIST sizes; always at least one): the
        server sends the next messages while the caller handles one, and the commands cost
        a write per group instead of one per message. A ``-ERR`` to one RETR raises
        :class:`SourceError` for that message; the replies to the commands sent after it
        are read and dropped first, so the session stays usable. Closing the iterator
        early does the same.
        """
        pop = self._session()
        window = _Window(self._sizes, pipelined=self.pipelining)
        queued = deque(uidls)
        in_flight: deque[str] = deque()
        try:
            while True:
                self._send_retrs(pop, in_flight, window.next_batch(in_flight, queued))
                if not in_flight:
                    return
                uidl = in_flight.popleft()
                with self._errors(f"RETR {uidl}"):
                    _read_status(pop.file)
                    raw = read_multiline(cast(PeekableStream, pop.file))
                yield uidl, raw
        finally:
            self._drain_retrs(in_flight)

    def _send_retrs(self, pop: poplib.POP3, in_flight: deque[str], batch: list[str]) -> None:
        if not batch:
            return
        commands = b"".join(b"RETR %d\r\n" % self._number(uidl) for uidl in batch)
        with self._errors(f"RETR {batch[0]}"):
            pop.sock.sendall(commands)
        in_flight.extend(batch)

    def _drain_retrs(self, in_flight: deque[str]) -> None:
        """Read (and drop) the replies to RETRs sent but not handed out."""
        while in_flight and self._pop is not None:
            uidl = in_flight.popleft()
            with contextlib.suppress(SourceError), self._errors(f"RETR {uidl}"):
                _read_status(self._pop.file)
                read_multiline(cast(PeekableStream, self._pop.file))

    def delete(self, uidl: str) -> None:
        """Mark the message deleted; the server removes it at QUIT."""
        for _, reason in self.delete_many([uidl]):
            raise SourceError(f"POP3 {self.name}: DELE {uidl}: {reason}")

    def delete_many(self, uidls: Sequence[str]) -> list[tuple[str, str]]:
        """Mark the messages deleted; the server removes them at QUIT.

        With PIPELINING the DELE commands go out in windows, a few written ahead of the
        replies being read, so a batch costs a few round trips instead of one per message.
        Returns
        the messages the server refused (``-ERR``) with its reason: every reply is read
        even after a refusal, so the session stays in step and QUIT still applies the
        others. A broken connection raises :class:`SourceError` (and nothing is applied).
        """
        numbers = [(uidl, self._number(uidl)) for uidl in uidls]
        pop = self._session()
        window = _PIPELINE_WINDOW if self.pipelining else 1
        batches = [numbers[start:start + window] for start in range(0, len(numbers), window)]
        ahead = _DELE_WINDOWS_AHEAD if self.pipelining else 0
        written = 0
        refused: list[tuple[str, str]] = []
        for i, batch in enumerate(batches):
            with self._errors(f"DELE {batch[0][0]}"):
                while written < len(batches) and written <= i + ahead:
                    pop.sock.sendall(b"".join(b"DELE %d\r\n" % n for _, n in batches[written]))
                    written += 1
                for uidl, _ in batch:
                    try:
                        _read_status(pop.file)
                    except _ServerSaid as exc:
                        refused.append((uidl, _describe(exc)))
                        continue
                    self._deleted.add(uidl)
        return refused

    # -- internals -------------------------------------------------------------------------

    def _session(self) -> poplib.POP3:
        if self._pop is None:
            raise SourceError(f"POP3 {self.name}: not connected")
        return self._pop

    def _number(self, uidl: str) -> int:
        self._session()
        if uidl in self._deleted:
            raise SourceError(f"POP3 {self.name}: message {uidl} is already deleted")
        try:
            return self._numbers[uidl]
        except KeyError:
            raise SourceError(f"POP3 {self.name}: no message with UIDL {uidl}") from None

    def _tls_context(self) -> ssl.SSLContext:
        cafile = str(self._ca_file) if self._ca_file else None
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA file {cafile}: {exc}", key="pop3.ca_file") from exc
        if not self.config.verify_certificate:
            log.warning(
                "POP3 %s: certificate verification is off (pop3.verify_certificate = false)",
                self.name,
            )
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _open(self, context: ssl.SSLContext | None) -> poplib.POP3:
        cfg = self.config
        # 0 means no timeout; poplib hands the value to socket.create_connection,
        # which takes None for that (typeshed says float only).
        timeout = cast(float, cfg.timeout if cfg.timeout > 0 else None)
        if cfg.security == "ssl":
            assert context is not None
            return poplib.POP3_SSL(cfg.host, cfg.effective_port, timeout=timeout, context=context)
        pop = poplib.POP3(cfg.host, cfg.effective_port, timeout=timeout)
        if cfg.security == "starttls":
            try:
                pop.stls(context)
            except (poplib.error_proto, OSError) as exc:
                # Never fall back to plaintext: the password would cross the wire in clear.
                with contextlib.suppress(OSError, poplib.error_proto):
                    pop.close()
                raise SourceError(
                    f"POP3 {self.name}: STLS failed, refusing to continue without TLS: "
                    f"{_describe(exc)}",
                    permanent=isinstance(exc, ssl.SSLCertVerificationError),
                ) from exc
        return pop

    def _log_in(self, pop: poplib.POP3) -> None:
        """Authenticate; a refusal by the server becomes :class:`LoginError`."""
        try:
            self._authenticate(pop)
        except poplib.error_proto as exc:
            if not isinstance(exc.args[0], bytes):
                raise  # not a reply: a broken connection, handled as such
            text = _describe(exc)
            raise LoginError(
                f"POP3 {self.name}: log in: {text}",
                permanent="[SYS/TEMP]" not in text and "[IN-USE]" not in text,
            ) from exc

    def _authenticate(self, pop: poplib.POP3) -> None:
        cfg = self.config
        if cfg.sasl_mechanism:
            self._oauth_login(pop, cfg.sasl_mechanism)
            return
        password = cfg.resolved_password()
        offers_apop = _APOP_TIMESTAMP.search(pop.getwelcome()) is not None
        if cfg.auth == "apop" and not offers_apop:
            raise _ServerSaid(b"-ERR server does not offer APOP (pop3.auth = apop)")
        if cfg.auth == "apop" or (cfg.auth == "auto" and offers_apop):
            try:
                pop.apop(cfg.user, password)
            except poplib.error_proto as exc:
                if cfg.auth == "apop" or not isinstance(exc.args[0], bytes):
                    raise
                # APOP needs the plaintext secret on the server side; some servers offer it
                # without having it, so auto mode tries USER/PASS before giving up.
                log.info("POP3 %s: APOP refused (%s), trying USER/PASS", self.name,
                         _describe(exc))
            else:
                return
        pop.user(cfg.user)
        pop.pass_(password)

    def _oauth_login(self, pop: poplib.POP3, mechanism: str) -> None:
        """SASL XOAUTH2/OAUTHBEARER (RFC 5034 AUTH), retried once with a new token after a
        refusal; a provider that refuses the grant is a permanent :class:`LoginError`, an
        unreachable one a transient :class:`SourceError`."""
        tokens = self.tokens
        if tokens is None:
            raise ConfigError(f"auth = {self.config.auth!r} needs OAuth credentials",
                              key="pop3.oauth")
        where = f"POP3 {self.name}"
        try:
            log_in(tokens, lambda token: self._sasl(pop, mechanism, token))
        except TokenRejected as exc:
            raise login_error(where, mechanism, tokens, exc) from None
        except TokenRefused as exc:
            raise LoginError(f"{where}: {exc}", permanent=True) from exc
        except TokenUnavailable as exc:
            raise SourceError(f"{where}: {exc}") from exc

    def _sasl(self, pop: poplib.POP3, mechanism: str, token: AccessToken) -> None:
        """One AUTH exchange. The response goes on its own line after the server's ``+``
        (Exchange Online's POP3 takes no initial response on the AUTH line; every server
        takes this form). A failure challenge (``+ base64 JSON``) is answered as the
        mechanism says before the server's ``-ERR``, which becomes :class:`TokenRejected`."""
        cfg = self.config
        response = sasl_response(mechanism, cfg.user, token.value, host=cfg.host,
                                 port=cfg.effective_port)
        pop.sock.sendall(b"AUTH " + mechanism.encode("ascii") + b"\r\n")
        reply = _read_reply(pop.file)
        if reply.startswith(b"-ERR"):
            raise _ServerSaid(reply.rstrip(b"\r\n"))  # no such mechanism here, or no AUTH
        if not reply.startswith(b"+") or reply.startswith(b"+OK"):
            raise EOFError(f"unexpected reply to AUTH {reply[:80]!r}")
        pop.sock.sendall(base64.b64encode(response) + b"\r\n")
        reply = _read_reply(pop.file)
        challenge = None
        if reply.startswith(b"+") and not reply.startswith(b"+OK"):
            challenge = parse_challenge(reply[1:].strip().decode("ascii", "replace"))
            pop.sock.sendall(base64.b64encode(failure_reply(mechanism)) + b"\r\n")
            reply = _read_reply(pop.file)
        if reply.startswith(b"+OK"):
            return
        text = reply.rstrip(b"\r\n")
        if b"[SYS/TEMP]" in text or b"[IN-USE]" in text:
            raise _ServerSaid(text)  # the server's trouble, not the token's: a temporary LoginError
        raise TokenRejected(challenge, text.decode("utf-8", "replace"))

    def _load_listing(self, pop: poplib.POP3) -> None:
        try:
            _, uidl_lines, _ = pop.uidl()
        except poplib.error_proto as exc:
            raise _ServerSaid(
                b"UIDL failed (commit-email cannot track messages without it): "
                + _describe(exc).encode()
            ) from exc
        _, list_lines, _ = pop.list()
        numbers: dict[str, int] = {}
        duplicated: set[str] = set()
        for line in uidl_lines:
            number, _, uidl = line.decode("ascii", "replace").strip().partition(" ")
            if uidl in numbers:
                duplicated.add(uidl)
            numbers[uidl] = int(number)
        for uidl in duplicated:
            # Two messages under one UIDL cannot be told apart in the delivery log; leave
            # both on the server rather than risk deleting one that was never processed.
            log.error("POP3 %s: UIDL %s is not unique; leaving those messages alone",
                      self.name, uidl)
            del numbers[uidl]
        by_number = {}
        for line in list_lines:
            number, _, size = line.decode("ascii", "replace").strip().partition(" ")
            by_number[int(number)] = int(size or 0)
        self._numbers = numbers
        self._sizes = {u: by_number.get(n, 0) for u, n in numbers.items()}

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate poplib/socket/TLS errors; drop the connection unless the server said -ERR."""
        try:
            yield
        except SourceError:
            raise  # already translated (SourceError is an OSError too)
        except _ServerSaid as exc:
            raise SourceError(f"POP3 {self.name}: {action}: {_describe(exc)}") from exc
        except poplib.error_proto as exc:
            # poplib raises server replies as bytes and its own complaints (EOF, over-long
            # line) as str; only after a real reply is the stream still in step.
            if not isinstance(exc.args[0], bytes):
                self.close()
            raise SourceError(f"POP3 {self.name}: {action}: {_describe(exc)}") from exc
        except ssl.SSLCertVerificationError as exc:
            # A configuration fault, not a network one: retrying cannot fix it.
            self.close()
            raise SourceError(
                f"POP3 {self.name}: {action}: {_describe(exc)}: the server's certificate "
                "does not verify; check [pop3] host, ca_file and security",
                permanent=True) from exc
        except (OSError, EOFError, ValueError) as exc:
            # OSError covers refused/reset connections, timeouts and ssl.SSLError;
            # ValueError a reply that does not parse (a number that is not one).
            self.close()
            raise SourceError(f"POP3 {self.name}: {action}: {_describe(exc)}") from exc


class _Window:
    """Which RETRs :meth:`Pop3Mailbox.retrieve_many` sends next: one at a time without
    PIPELINING; with it, up to ``_RETR_AHEAD`` messages and ``_RETR_AHEAD_BYTES`` by their
    LIST sizes in flight (a larger message goes alone), refilled once half of that has
    arrived, so the commands go out in groups."""

    def __init__(self, sizes: dict[str, int], *, pipelined: bool) -> None:
        self._sizes = sizes
        self._count = _RETR_AHEAD if pipelined else 1
        self._bytes = _RETR_AHEAD_BYTES if pipelined else 0

    def next_batch(self, in_flight: deque[str], queued: deque[str]) -> list[str]:
        """Take from ``queued`` what to send now (possibly nothing)."""
        if in_flight and len(in_flight) > self._count // 2:
            return []
        flying = sum(self._sizes.get(uidl, 0) for uidl in in_flight)
        if in_flight and flying > self._bytes // 2:
            return []
        batch: list[str] = []
        while queued:
            size = self._sizes.get(queued[0], 0)
            if (in_flight or batch) and (
                len(in_flight) + len(batch) >= self._count or flying + size > self._bytes
            ):
                break
            batch.append(queued.popleft())
            flying += size
        return batch


def _capabilities(pop: poplib.POP3) -> frozenset[str]:
    """The server's CAPA keywords; none for a server without CAPA (RFC 1939 only)."""
    try:
        return frozenset(pop.capa())
    except poplib.error_proto:
        # poplib turns every CAPA failure into one str error; a broken connection shows
        # up again at the next command, which is where it is handled.
        return frozenset()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, poplib.error_proto) and exc.args:
        first = exc.args[0]
        return first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    return str(exc) or type(exc).__name__


def _read_reply(stream: BinaryIO) -> bytes:
    """One reply line of an AUTH exchange: ``+OK``, ``-ERR`` or a ``+`` continuation."""
    line = stream.readline(_MAX_STATUS)
    if not line:
        raise EOFError("connection closed by the server")
    if not line.endswith(b"\n"):
        raise EOFError("reply line too long or cut off")
    if not line.startswith((b"+", b"-ERR")):
        raise EOFError(f"unexpected reply {line[:80]!r}")
    return line


def _read_status(stream: BinaryIO) -> bytes:
    line = stream.readline(_MAX_STATUS)
    if not line:
        raise EOFError("connection closed by the server")
    if not line.endswith(b"\n"):
        raise EOFError("status line too long or cut off")
    if line.startswith(b"+OK"):
        return line
    if line.startswith(b"-ERR"):
        raise _ServerSaid(line.rstrip(b"\r\n"))
    raise EOFError(f"unexpected reply {line[:80]!r}")


class PeekableStream(Protocol):
    """What the multi-line reader needs: a buffered binary stream (``BufferedReader``)."""

    def peek(self, size: int = ..., /) -> bytes: ...

    def read(self, size: int | None = ..., /) -> bytes: ...


def read_multiline(stream: PeekableStream, chunk_size: int = _CHUNK) -> bytes:
    """Read a multi-line response up to the lone ``.``, undoing dot-stuffing (RFC 1939 §3).

    Lines come back CRLF-terminated (a lax server's bare LF becomes CRLF). The stream is
    looked at with ``peek`` in pieces of at most ``chunk_size`` bytes and consumed exactly
    up to the terminating line, so a pipelined reply after it stays unread. The pieces are
    searched in C for line starts with a dot (``\\n.``, rare in mail: the terminator, and
    stuffed lines), so a 30 KB message of hundreds of lines costs a few C scans, and the
    unstuffing copy is made only when a stuffed line was seen.
    """
    chunk_size = max(chunk_size, 1)
    data = bytearray()
    scan = _Scan()
    while True:
        piece = stream.peek(chunk_size)[:chunk_size]
        if not piece:
            raise EOFError(f"connection closed after {len(data)} bytes of the message")
        data += piece
        if not scan.advance(data):
            stream.read(len(piece))
            continue
        stream.read(len(piece) - (len(data) - scan.end))  # leave what follows the terminator
        body = bytes(memoryview(data)[: scan.body_end])
        return _unstuff(body) if scan.stuffed else _crlf(body)


class _Scan:
    """Where :func:`read_multiline` is in its search for the terminating line.

    Every line that starts with a dot is either the terminator (``.`` alone) or stuffed,
    so one search for ``\\n.`` finds both: ``at`` is where the next search starts.
    """

    def __init__(self) -> None:
        self.at = -1  # -1: the first line is not looked at yet (it has no \n before it)
        self.stuffed = False
        self.body_end = self.end = -1

    def advance(self, data: bytearray) -> bool:
        """Look at what arrived; True once the terminator is found (``body_end``, ``end``)."""
        if self.at < 0:
            if not data.startswith(b"."):
                self.at = 0
            elif not self._check(data, 0, 1):
                return self.body_end >= 0
        while (dot := data.find(b"\n.", self.at)) >= 0:
            if not self._check(data, dot + 1, dot + 2):
                return self.body_end >= 0
        self.at = max(len(data) - 1, 0)  # a \n at the very end may start the next hit
        return False

    def _check(self, data: bytearray, line: int, after: int) -> bool:
        """The line at ``line`` starts with a dot: terminator, stuffed, or too short to tell.

        Returns True to keep searching (a stuffed line); False when the search ends here,
        with ``body_end`` set if it was the terminator and left unset if more data is needed.
        """
        rest = bytes(data[after:after + 2])
        ending = 1 if rest[:1] == b"\n" else 2 if rest == b"\r\n" else 0
        if ending:
            self.body_end, self.end = line, after + ending
            return False
        if rest in (b"", b"\r"):
            self.at = line - 1  # wait for the bytes that decide it (-1: the first line)
            return False
        self.stuffed = True
        self.at = after
        return True


def _unstuff(body: bytes) -> bytes:
    """Drop the stuffed dot of every line that starts with one; bare LF becomes CRLF."""
    if body.startswith(b"."):
        body = body[1:]
    return _crlf(body.replace(b"\n.", b"\n"))


def _crlf(body: bytes) -> bytes:
    """A lax server's bare LF line ends become CRLF."""
    if body.count(b"\n") != body.count(b"\r\n"):
        body = _BARE_LF.sub(b"\r\n", body)
    return body
