"""The built-in IMAP source: one folder of one mailbox, over IMAPClient.

A message is named ``UIDVALIDITY:UID`` (under the mailbox name ``user@host:port/FOLDER``):
RFC 3501 promises that a UID names one message for as long as the folder's UIDVALIDITY
stays, so the pair is stable across sessions. When the server resets UIDVALIDITY (a
folder rebuilt, a migration), every message gets a new id; the connector's Message-ID
digest then recognises what was already processed (outcome ``duplicate``, no ticket).

Messages are read with ``BODY.PEEK[]``, which leaves ``\\Seen`` alone, after their
``RFC822.SIZE`` was checked: a message over ``connector.max_message_bytes`` is never
downloaded (moved to ``quarantine_folder``, or left with the reason logged). Bodies are
fetched in batches (by count and by size) by a thread of their own, one batch ahead of the
processing, so the server streams the next messages while one is processed. Once an
outcome is durable, the run loop acknowledges the message: it is moved to
``processed_folder`` (``UID MOVE``, RFC 6851, or where MOVE is not offered ``UID COPY`` +
``\\Deleted`` + ``UID EXPUNGE``, RFC 4315), deleted (``\\Deleted`` +
``UID EXPUNGE``) or kept. A plain ``EXPUNGE`` is never sent: it would also remove mail that
someone else flagged ``\\Deleted``; a server with neither MOVE nor UIDPLUS is refused for
``after = "move"``/``"delete"``. Between polls the session waits with IDLE (RFC 2177) where
the server offers it, re-issued at least every 25 minutes.

Why IMAPClient (the ``imap`` extra) and not the standard library's imaplib: imaplib leaves
FETCH responses (nested lists, literals) to the caller and has no IDLE before Python 3.14;
IMAPClient, maintained and built on imaplib, parses responses into typed values and gives
IDLE, MOVE, UID EXPUNGE and the OAuth SASL mechanisms. The two FETCHes of a pass (sizes,
bodies) are the exception: their responses are read here, off IMAPClient's connection, since
imaplib's general reader took twenty times the CPU of the bytes (:func:`_uid_fetch`). Every
IMAPClient, imaplib, socket and TLS failure leaves this module as
:class:`~commit_email.errors.SourceError` with the original exception as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import queue
import re
import select
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from .errors import ConfigError, LoginError, SourceError, TokenRefused, TokenUnavailable
from .model import OutcomeKind
from .oauth import (
    AccessToken,
    SaslChallenge,
    TokenProvider,
    TokenRejected,
    failure_reply,
    log_in,
    login_error,
    parse_challenge,
    sasl_response,
)

if TYPE_CHECKING:
    from .config import Config, ImapConfig
    from .oauth import OAuthCredentials

__all__ = ["ImapMailbox", "import_imapclient"]

log = logging.getLogger(__name__)

#: bodies per UID FETCH, and bytes by RFC822.SIZE (a larger message goes alone): the
#: response is read whole, so this bounds memory, while a batch keeps the link busy
_FETCH_BATCH = 64
_FETCH_BATCH_BYTES = 8 * 1024 * 1024
#: UIDs per command: a set like 1,5,9,… of thousands would make an over-long command line
_UID_CHUNK = 500
#: IDLE is ended and re-issued after this long at the latest (RFC 2177: servers may log a
#: client out after 30 minutes of IDLE)
IDLE_RENEW = 25 * 60.0
#: how often a waiting IDLE looks at the stop event
_IDLE_SLICE = 0.25
#: RFC 5530 response codes of a login failure that may pass by itself
_TEMPORARY_LOGIN = re.compile(r"\[(UNAVAILABLE|INUSE|LIMIT|SERVERBUG)\]", re.IGNORECASE)
_ID = re.compile(r"(\d+):(\d+)")


def import_imapclient() -> ModuleType:
    """IMAPClient, or a :class:`~commit_email.errors.ConfigError` naming the extra."""
    try:
        module = importlib.import_module("imapclient")
    except ImportError:
        raise ConfigError(
            "reading IMAP needs IMAPClient: pip install 'commit-email[imap]'", key="imap.host"
        ) from None
    return module


class ImapMailbox:
    """An IMAP session on one folder; use it as a context manager.

    ``with ImapMailbox(config.imap) as box:`` connects, secures the connection as
    ``security`` says, logs in, creates ``processed_folder``/``quarantine_folder`` if they
    are missing, and selects ``folder``. Implements
    :class:`~commit_email.protocols.IdleMailSession`.
    """

    #: the source kind written into the processed log
    kind = "imap"

    def __init__(
        self, config: ImapConfig, *, ca_file: Path | None = None, max_message_bytes: int = 0,
        tokens: TokenProvider | None = None,
    ) -> None:
        self.config = config
        #: where the access tokens come from when ``auth`` is ``xoauth2``/``oauthbearer``
        self.tokens = tokens
        self._ca_file = ca_file if ca_file is not None else (
            Path(config.ca_file) if config.ca_file else None
        )
        #: messages over this many octets (RFC822.SIZE) are not downloaded; 0: no limit
        self.max_message_bytes = max_message_bytes
        self._client: Any = None
        self._capabilities: frozenset[str] = frozenset()
        self._uidvalidity = 0
        self._exists_at_select = 0
        self._oversized_seen: set[int] = set()

    @classmethod
    def from_config(
        cls, config: Config, *, credentials: OAuthCredentials | None = None
    ) -> ImapMailbox:
        """The mailbox of a whole configuration (``ca_file`` relative to the config file); an
        OAuth login takes its tokens from ``credentials`` (shared, so the token cache
        outlives the session), else from credentials of its own."""
        ca = config.resolve_path(config.imap.ca_file) if config.imap.ca_file else None
        tokens = None
        if config.imap.sasl_mechanism:
            if credentials is None:
                from .oauth import OAuthCredentials  # noqa: PLC0415 - only for a lone session

                credentials = OAuthCredentials(config)
            tokens = credentials.get(config.imap.oauth)
        return cls(config.imap, ca_file=ca, max_message_bytes=config.connector.max_message_bytes,
                   tokens=tokens)

    @property
    def name(self) -> str:
        """The mailbox name the processed log files ids under (``user@host:port/FOLDER``)."""
        return self.config.mailbox

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def keeps_messages(self) -> bool:
        """``after = "keep"``: processed mail stays in the folder."""
        return self.config.after == "keep"

    @property
    def capabilities(self) -> frozenset[str]:
        """What the server said it can do (after login), upper-case."""
        return self._capabilities

    @property
    def uidvalidity(self) -> int:
        """The folder's UIDVALIDITY as of the last SELECT (0 before it)."""
        return self._uidvalidity

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
        if exc is None:
            self.logout()
            return
        with contextlib.suppress(SourceError):
            self.logout()

    def connect(self) -> None:
        """Open, secure, log in, prepare the folders and select ``folder``."""
        if self._client is not None:
            return
        cfg = self.config
        if not cfg.host:
            raise ConfigError("no IMAP server configured", key="imap.host")
        imapclient = import_imapclient()
        context = self._tls_context() if cfg.security in ("ssl", "starttls") else None
        with self._errors(f"connect to {cfg.host}:{cfg.effective_port}"):
            self._client = self._open(imapclient, context)
        try:
            with self._errors("log in"):
                self._log_in(imapclient)
            with self._errors("CAPABILITY"):
                self._capabilities = frozenset(
                    c.decode("ascii", "replace").upper() for c in self._client.capabilities()
                )
            self._check_removal()
            with self._errors("prepare the folders"):
                self._prepare_folders()
            self._select()
        except BaseException:
            self.close()  # a half-open session is of no use to anyone
            raise
        log.debug("IMAP %s: UIDVALIDITY %d", self.name, self._uidvalidity)

    def logout(self) -> None:
        """Send LOGOUT and close the connection."""
        client = self._client
        if client is None:
            return
        try:
            with self._errors("LOGOUT"):
                client.logout()
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection without a word (after a fault, or when the session is done)."""
        client, self._client = self._client, None
        self._capabilities = frozenset()
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    # -- the MailSession seam --------------------------------------------------------------

    def message_ids(self) -> list[str]:
        """``UIDVALIDITY:UID`` of every message in the folder, oldest first.

        The folder is selected again first, so a pass on a long-lived (IDLE) session works
        with the UIDVALIDITY the server has now.
        """
        exists = self._select()
        if not exists:
            return []
        with self._errors("UID SEARCH"):
            uids = sorted(int(u) for u in self._session().search(["ALL"]))
        return [f"{self._uidvalidity}:{uid}" for uid in uids]

    def fetch(self, ids: Sequence[str]) -> Generator[tuple[str, bytes], None, None]:
        """Yield ``(id, bytes)`` in order, as the server stores each message.

        Sizes are asked for first (``RFC822.SIZE``): a message over ``max_message_bytes`` is
        not downloaded but moved to ``quarantine_folder`` (or left, logged once per
        session). The others are read with ``BODY.PEEK[]`` in batches of at most
        ``_FETCH_BATCH`` messages and ``_FETCH_BATCH_BYTES``. A message expunged meanwhile by
        someone else is simply not yielded.
        """
        uids = [uid for uid in map(self._uid, ids) if uid is not None]
        sizes = self._sizes(uids)
        wanted = self._set_aside_oversized([u for u in uids if u in sizes], sizes)
        batches = list(_batches(wanted, sizes))
        fetch = functools.partial(self._fetch_batch, sizes=sizes)
        if len(batches) == 1:
            yield from fetch(batches[0])
        elif batches:
            yield from self._fetch_ahead(batches, fetch)

    def _fetch_batch(self, batch: list[int], *, sizes: dict[int, int]) -> list[tuple[str, bytes]]:
        # A literal may be somewhat larger than RFC822.SIZE said (a server converting line
        # ends), not arbitrarily: a server that lies about the size cannot make us read more.
        limit = max(2 * max(sizes.get(uid, 0) for uid in batch) + (1 << 20),
                    self.max_message_bytes)
        with self._errors(f"FETCH {batch[0]}"):
            got = _read_bodies(import_imapclient(), self._session(), batch, limit)
        bodies = []
        for uid in batch:
            raw = got.get(uid)
            if raw is None:
                log.warning("IMAP %s: UID %d: the server sent no body; it stays in %s",
                            self.name, uid, self.config.folder)
                continue
            bodies.append((f"{self._uidvalidity}:{uid}", raw))
        return bodies

    def _fetch_ahead(
        self, batches: list[list[int]], fetch: Callable[[list[int]], list[tuple[str, bytes]]]
    ) -> Iterator[tuple[str, bytes]]:
        """The batches, read by a thread of their own one batch ahead of the caller: the
        next FETCH is on the wire (and the server reading its files) while this batch is
        processed. An IMAP response is read whole before it can be parsed, so without this
        the link and the server would wait for every batch's processing, and the processing
        for every batch's transfer. At most three batches are in memory: the one handed out,
        one waiting and one being read. A failure reaches the caller where it happened,
        after the messages read before it; closing the generator lets the FETCH in flight
        finish (the session stays in step for the acknowledgements) and joins the thread."""
        ahead: queue.Queue[list[tuple[str, bytes]] | BaseException | None] = queue.Queue(1)
        stop = threading.Event()

        def read() -> None:
            try:
                for batch in batches:
                    if stop.is_set():
                        return
                    ahead.put(fetch(batch))
            except BaseException as exc:  # handed to the caller, raised there
                ahead.put(exc)
            else:
                ahead.put(None)

        reader = threading.Thread(target=read, name=f"imap-fetch {self.name}", daemon=True)
        reader.start()
        try:
            while (item := ahead.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield from item
        finally:
            stop.set()
            while reader.is_alive():  # take what it still puts, so that it can end
                with contextlib.suppress(queue.Empty):
                    ahead.get(timeout=0.05)
            reader.join()

    def acknowledge(self, done: Sequence[tuple[str, OutcomeKind]]) -> list[tuple[str, str]]:
        """Move (or delete) the messages as ``after`` says; quarantined ones go to
        ``quarantine_folder`` when it is set. Returns what the server refused, with its
        reason; those stay in the folder for a later pass."""
        cfg = self.config
        refused: list[tuple[str, str]] = []
        aside: list[int] = []
        rest: list[int] = []
        for id_, kind in done:
            uid = self._uid(id_)
            if uid is None:
                refused.append((id_, f"UIDVALIDITY is {self._uidvalidity} now"))
            elif kind is OutcomeKind.QUARANTINED and cfg.quarantine_folder:
                aside.append(uid)
            elif cfg.after != "keep":
                rest.append(uid)
        refused += self._move(aside, cfg.quarantine_folder)
        if cfg.after == "move":
            refused += self._move(rest, cfg.processed_folder)
        elif cfg.after == "delete":
            refused += self._delete(rest)
        return refused

    def wait_for_mail(self, seconds: float, stop: threading.Event) -> bool:
        """IDLE until new mail arrives (``EXISTS``), ``stop`` is set, or ``seconds`` pass
        (at most :data:`IDLE_RENEW`). Other news (``* OK Still here``, flags, expunges)
        only re-issues the IDLE. False without IDLE (not offered, or ``idle = false``)."""
        client = self._session()
        if not (self.config.idle and "IDLE" in self._capabilities):
            return False
        if self._exists_reports() > self._exists_at_select:
            # New mail was announced in a reply to a command of the pass (a FETCH, the
            # MOVE): IDLE would not announce it again, so the caller lists the folder now.
            return True
        deadline = time.monotonic() + min(max(seconds, 0.0), IDLE_RENEW)
        while not stop.is_set() and time.monotonic() < deadline:
            with self._errors("IDLE"):
                client.idle()
                woken = self._buffered(client) or _wait_readable(client.socket(), deadline,
                                                                 stop)
                _, responses = client.idle_done()
            if woken and any(_is_new_mail(r) for r in responses):
                return True
        return True

    # -- internals -------------------------------------------------------------------------

    def _session(self) -> Any:
        if self._client is None:
            raise SourceError(f"IMAP {self.name}: not connected")
        return self._client

    def _buffered(self, client: Any) -> bool:
        """Whether the server's next words are already read into imaplib's buffer, where
        waiting on the socket would not see them: Dovecot announces mail that arrived
        during the pass right behind its ``+ idling``, often in the same packet."""
        sock = client.socket()
        reader = getattr(getattr(client, "_imap", None), "file", None)
        if reader is None or not hasattr(reader, "peek"):
            return False
        sock.setblocking(False)
        try:
            return bool(reader.peek(1))
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return False  # nothing buffered, nothing on the wire either
        finally:
            timeout = self.config.timeout
            sock.settimeout(timeout if timeout > 0 else None)

    def _uid(self, id_: str) -> int | None:
        """The UID of an id of the current UIDVALIDITY, else None."""
        match = _ID.fullmatch(id_)
        if match is None or int(match.group(1)) != self._uidvalidity:
            return None
        return int(match.group(2))

    def _select(self) -> int:
        """SELECT the folder (read-write); returns EXISTS and notes UIDVALIDITY."""
        folder = self.config.folder
        with self._errors(f"SELECT {folder}"):
            info = self._session().select_folder(folder)
        try:
            validity = int(info[b"UIDVALIDITY"])
        except (KeyError, TypeError, ValueError):
            self.close()
            raise SourceError(
                f"IMAP {self.name}: SELECT {folder}: no UIDVALIDITY in the reply; "
                "commit-email cannot track messages without it"
            ) from None
        if self._uidvalidity and validity != self._uidvalidity:
            log.warning("IMAP %s: UIDVALIDITY changed from %d to %d; messages already "
                        "processed are recognised by their Message-ID digest",
                        self.name, self._uidvalidity, validity)
        self._uidvalidity = validity
        self._exists_at_select = self._exists_reports()
        return int(info.get(b"EXISTS", 1))

    def _exists_reports(self) -> int:
        """How many ``* N EXISTS`` the server sent since the last SELECT (imaplib keeps the
        untagged responses of every command until the next SELECT, where IMAPClient's
        parsed replies leave them)."""
        untagged = getattr(getattr(self._client, "_imap", None), "untagged_responses", {})
        return len(untagged.get("EXISTS", ()))

    def _sizes(self, uids: list[int]) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), _UID_CHUNK):
            chunk = uids[start:start + _UID_CHUNK]
            with self._errors(f"FETCH {chunk[0]} RFC822.SIZE"):
                sizes.update(_read_sizes(import_imapclient(), self._session(), chunk))
        return sizes

    def _set_aside_oversized(self, uids: list[int], sizes: dict[int, int]) -> list[int]:
        """The UIDs small enough to download; the others are moved to quarantine_folder
        (or left in the folder), with the reason logged."""
        limit = self.max_message_bytes
        if not limit:
            return uids
        over = [uid for uid in uids if sizes[uid] > limit]
        if not over:
            return uids
        folder = self.config.quarantine_folder
        for uid in over:
            if folder or uid not in self._oversized_seen:
                where = f"moved to {folder}" if folder else f"left in {self.config.folder}"
                log.warning(
                    "IMAP %s: UID %d is %d bytes, over connector.max_message_bytes (%d): %s "
                    "without downloading it", self.name, uid, sizes[uid], limit, where,
                )
            self._oversized_seen.add(uid)
        if folder:
            for id_, reason in self._move(over, folder):
                log.error("IMAP %s: %s: could not move it to %s: %s", self.name, id_, folder,
                          reason)
        big = set(over)
        return [uid for uid in uids if uid not in big]

    def _move(self, uids: list[int], folder: str) -> list[tuple[str, str]]:
        """UID MOVE where offered, else UID COPY + \\Deleted + UID EXPUNGE, in chunks."""
        refused: list[tuple[str, str]] = []
        for start in range(0, len(uids), _UID_CHUNK):
            chunk = uids[start:start + _UID_CHUNK]
            try:
                with self._errors(f"MOVE {chunk[0]} to {folder}", server_said=True):
                    client = self._session()
                    if "MOVE" in self._capabilities:
                        client.move(chunk, folder)
                    else:
                        client.copy(chunk, folder)
                        self._expunge(client, chunk)
            except _Refused as exc:
                refused += [(f"{self._uidvalidity}:{uid}", exc.reason) for uid in chunk]
        return refused

    def _delete(self, uids: list[int]) -> list[tuple[str, str]]:
        refused: list[tuple[str, str]] = []
        for start in range(0, len(uids), _UID_CHUNK):
            chunk = uids[start:start + _UID_CHUNK]
            try:
                with self._errors(f"delete {chunk[0]}", server_said=True):
                    self._expunge(self._session(), chunk)
            except _Refused as exc:
                refused += [(f"{self._uidvalidity}:{uid}", exc.reason) for uid in chunk]
        return refused

    @staticmethod
    def _expunge(client: Any, uids: list[int]) -> None:
        """\\Deleted on exactly these UIDs, then UID EXPUNGE of exactly these (UIDPLUS)."""
        client.add_flags(uids, [b"\\Deleted"], silent=True)
        client.uid_expunge(uids)

    def _check_removal(self) -> None:
        """Refuse a server on which moving or deleting would need a plain EXPUNGE."""
        cfg = self.config
        removes = cfg.after in ("move", "delete") or bool(cfg.quarantine_folder)
        caps = self._capabilities
        if not removes or "UIDPLUS" in caps or ("MOVE" in caps and cfg.after != "delete"):
            return
        self.close()
        raise SourceError(
            f"IMAP {self.name}: the server offers neither MOVE nor UIDPLUS, so messages "
            "cannot be removed without a plain EXPUNGE, which would also remove mail others "
            'flagged \\Deleted; set imap.after = "keep" (and no quarantine_folder)'
        )

    def _prepare_folders(self) -> None:
        cfg = self.config
        client = self._session()
        wanted = [cfg.quarantine_folder] if cfg.quarantine_folder else []
        if cfg.after == "move":
            wanted.insert(0, cfg.processed_folder)
        for folder in wanted:
            if client.folder_exists(folder):
                continue
            try:
                client.create_folder(folder)
            except client.Error:
                if not client.folder_exists(folder):  # not created by a racing client
                    raise
            with contextlib.suppress(client.Error):
                client.subscribe_folder(folder)  # so that mail clients show it
            log.info("IMAP %s: created folder %s", self.name, folder)

    def _tls_context(self) -> ssl.SSLContext:
        cafile = str(self._ca_file) if self._ca_file else None
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA file {cafile}: {exc}", key="imap.ca_file") from exc
        if not self.config.verify_certificate:
            log.warning(
                "IMAP %s: certificate verification is off (imap.verify_certificate = false)",
                self.name,
            )
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _open(self, imapclient: ModuleType, context: ssl.SSLContext | None) -> Any:
        cfg = self.config
        timeout = cfg.timeout if cfg.timeout > 0 else None
        client = imapclient.IMAPClient(
            cfg.host, port=cfg.effective_port, ssl=cfg.security == "ssl", ssl_context=context,
            timeout=timeout,
        )
        if cfg.security == "starttls":
            try:
                client.starttls(context)
            except (imapclient.exceptions.IMAPClientError, OSError) as exc:
                # Never fall back to plaintext: the password would cross the wire in clear.
                with contextlib.suppress(Exception):
                    client.shutdown()
                raise SourceError(
                    f"IMAP {self.name}: STARTTLS failed, refusing to continue without TLS: "
                    f"{_describe(exc)}"
                ) from exc
        return client

    def _log_in(self, imapclient: ModuleType) -> None:
        """Authenticate; a refusal by the server becomes :class:`LoginError`."""
        cfg = self.config
        client = self._session()
        if cfg.sasl_mechanism:
            self._oauth_login(imapclient, client, cfg.sasl_mechanism)
            return
        password = cfg.resolved_password()
        offered = {c.decode("ascii", "replace").upper() for c in client.capabilities()}
        use_plain = cfg.auth == "plain" or (
            cfg.auth == "auto" and "LOGINDISABLED" in offered and "AUTH=PLAIN" in offered
        )
        try:
            if use_plain:
                client.plain_login(cfg.user, password)
            else:
                client.login(cfg.user, password)
        except imapclient.exceptions.LoginError as exc:
            _reraise_broken_connection(imapclient, exc)
            text = _describe(exc)
            raise LoginError(
                f"IMAP {self.name}: log in: {text}",
                permanent=_TEMPORARY_LOGIN.search(text) is None,
            ) from exc

    def _oauth_login(self, imapclient: ModuleType, client: Any, mechanism: str) -> None:
        """AUTHENTICATE XOAUTH2/OAUTHBEARER, retried once with a new token after a refusal;
        a provider that refuses the grant is a permanent :class:`LoginError`, an unreachable
        one a transient :class:`SourceError`."""
        tokens = self.tokens
        if tokens is None:
            raise ConfigError(f"auth = {self.config.auth!r} needs OAuth credentials",
                              key="imap.oauth")
        where = f"IMAP {self.name}"

        def attempt(token: AccessToken) -> None:
            self._sasl(imapclient, client, mechanism, token)

        try:
            log_in(tokens, attempt, valid_for=self.config.timeout)
        except TokenRejected as exc:
            raise login_error(where, mechanism, tokens, exc) from None
        except TokenRefused as exc:
            raise LoginError(f"{where}: {exc}", permanent=True) from exc
        except TokenUnavailable as exc:
            raise SourceError(f"{where}: {exc}") from exc

    def _sasl(self, imapclient: ModuleType, client: Any, mechanism: str,
              token: AccessToken) -> None:
        """One AUTHENTICATE exchange: the response after the server's ``+``; a failure
        challenge (``+ base64 JSON``) is answered as the mechanism says (RFC 7628 §3.2.3)
        before the server's NO, which becomes :class:`TokenRejected` (an ``[UNAVAILABLE]``
        NO a temporary :class:`LoginError` instead: the server's trouble, not the token's)."""
        cfg = self.config
        response = sasl_response(mechanism, cfg.user, token.value, host=cfg.host,
                                 port=cfg.effective_port)
        challenges: list[SaslChallenge] = []

        def answer(challenge: bytes) -> bytes:
            if not challenges and not challenge:
                challenges.append(SaslChallenge())  # the empty first challenge: client first
                return response
            challenges.append(parse_challenge(challenge))
            return failure_reply(mechanism)

        try:
            client.sasl_login(mechanism, answer)
        except imapclient.exceptions.LoginError as exc:
            _reraise_broken_connection(imapclient, exc)
            text = _describe(exc)
            if _TEMPORARY_LOGIN.search(text):
                raise LoginError(f"IMAP {self.name}: log in: {text}", permanent=False) from exc
            failure = challenges[-1] if len(challenges) > 1 else None
            raise TokenRejected(failure, text) from None

    @contextlib.contextmanager
    def _errors(self, action: str, *, server_said: bool = False) -> Iterator[None]:
        """Translate IMAPClient/imaplib/socket/TLS errors into :class:`SourceError`.

        A NO or BAD reply leaves the session usable; with ``server_said`` it is raised as
        :class:`_Refused` for the caller to collect. Anything else (a dropped or stalled
        connection, a reply that does not parse) drops the connection.
        """
        imapclient = import_imapclient()
        try:
            yield
        except SourceError:
            raise  # already translated (SourceError is an OSError too)
        except imapclient.exceptions.IMAPClientAbortError as exc:
            self.close()
            raise SourceError(f"IMAP {self.name}: {action}: {_describe(exc)}") from exc
        except imapclient.exceptions.IMAPClientError as exc:
            if server_said:
                raise _Refused(_describe(exc)) from exc
            raise SourceError(f"IMAP {self.name}: {action}: {_describe(exc)}") from exc
        except (OSError, EOFError, ValueError, IndexError, KeyError) as exc:
            # OSError covers refused/reset connections, timeouts and ssl.SSLError; the
            # others a reply that does not parse. Either way the stream is out of step.
            self.close()
            raise SourceError(f"IMAP {self.name}: {action}: {_describe(exc)}") from exc


def _reraise_broken_connection(imapclient: ModuleType, exc: BaseException) -> None:
    """IMAPClient turns every error during a login into its LoginError, a dropped connection
    too: raise that one as what it is, so that it is not taken for a wrong password."""
    cause = exc.__context__
    if isinstance(cause, imapclient.exceptions.IMAPClientAbortError | OSError):
        raise cause from None


class _Refused(Exception):
    """A NO/BAD reply to an acknowledgement: those messages stay, the session goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: an IMAP response line we read ourselves may be this long at most (imaplib allows 1 MB)
_MAX_LINE = 64 * 1024
_LITERAL = re.compile(rb"\{(\d+)\}\r?\n$")
_BODY_LITERAL = re.compile(rb"BODY\[\]\s*\{\d+\}\r?\n$", re.IGNORECASE)
_FETCH_UID = re.compile(rb"\bUID\s+(\d+)", re.IGNORECASE)
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE\s+(\d+)", re.IGNORECASE)
_NUMBERED = re.compile(rb"\* (\d+) ([A-Za-z]+)")


def _read_bodies(imapclient: ModuleType, client: Any, batch: list[int],
                 limit: int) -> dict[int, bytes]:
    """``UID FETCH batch (BODY.PEEK[])``: each message's bytes by UID (see :func:`_uid_fetch`).
    """
    bodies: dict[int, bytes] = {}

    def body(uid: int, segments: list[bytes], literals: list[bytes]) -> None:
        for segment, data in zip(segments, literals, strict=False):
            if _BODY_LITERAL.search(segment):
                bodies[uid] = data

    _uid_fetch(imapclient, client, batch, b"BODY.PEEK[]", limit=limit, each=body)
    return bodies


def _read_sizes(imapclient: ModuleType, client: Any, uids: list[int]) -> dict[int, int]:
    """``UID FETCH uids (RFC822.SIZE)``: each message's size by UID."""
    sizes: dict[int, int] = {}

    def size(uid: int, segments: list[bytes], literals: list[bytes]) -> None:
        found = _FETCH_SIZE.search(segments[0])
        if found is not None:
            sizes[uid] = int(found.group(1))

    _uid_fetch(imapclient, client, uids, b"RFC822.SIZE", limit=0, each=size)
    return sizes


def _uid_fetch(imapclient: ModuleType, client: Any, uids: list[int], items: bytes, *,
               limit: int, each: Callable[[int, list[bytes], list[bytes]], None]) -> None:
    """``UID FETCH uids (items)``, its response read straight off the connection: ``each``
    gets every FETCH response's UID, its lines and its literals.

    imaplib reads a FETCH response line by line through a general parser that cost twenty
    times more CPU than reading the bytes (0.2 ms a 25 KB message against 0.01 ms), and that
    CPU is taken from the processing, which shares the interpreter. The FETCHes this source
    sends have a simple shape — ``* n FETCH (UID u BODY[] {size}``, the literal, the rest
    of the line — so they are read here, on the connection IMAPClient opened and logged in
    (its imaplib object's socket file, TLS or not); every other command still goes through
    IMAPClient. Other untagged responses are kept where imaplib keeps them (``* n EXISTS``
    tells the IDLE wait that mail came). Lines are bounded, and each literal by ``limit``.
    """
    imap = client._imap
    tag: bytes = imap._new_tag()
    uid_set = ",".join(str(uid) for uid in uids).encode()
    try:
        imap.send(tag + b" UID FETCH " + uid_set + b" (" + items + b")\r\n")
        while True:
            line = _response_line(imapclient, imap.file)
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1:].strip()
                if not status.upper().startswith(b"OK"):
                    raise imapclient.exceptions.IMAPClientError(
                        "UID FETCH failed: " + status.decode("utf-8", "replace"))
                return
            if not line.startswith(b"* "):
                raise imapclient.exceptions.IMAPClientAbortError(
                    f"unexpected response {line[:80]!r}")
            segments, literals = [line], []
            while (literal := _LITERAL.search(segments[-1])) is not None:
                size = int(literal.group(1))
                if size > limit:
                    raise imapclient.exceptions.IMAPClientAbortError(
                        f"a literal of {size} bytes where at most {limit} were expected")
                data = imap.file.read(size)
                if len(data) != size:
                    raise EOFError("the connection closed in the middle of a literal")
                literals.append(data)
                segments.append(_response_line(imapclient, imap.file))
            _untagged(imapclient, imap, segments, literals, each)
    finally:
        imap.tagged_commands.pop(tag, None)


def _response_line(imapclient: ModuleType, reader: Any) -> bytes:
    line: bytes = reader.readline(_MAX_LINE + 1)
    if not line:
        raise EOFError("the server closed the connection")
    if len(line) > _MAX_LINE:
        raise imapclient.exceptions.IMAPClientAbortError(
            f"a response line of more than {_MAX_LINE} bytes")
    return line


def _untagged(imapclient: ModuleType, imap: Any, segments: list[bytes], literals: list[bytes],
              each: Callable[[int, list[bytes], list[bytes]], None]) -> None:
    """Hand one untagged FETCH response to ``each``, or file what imaplib would keep."""
    first = segments[0]
    numbered = _NUMBERED.match(first)
    word = numbered.group(2).upper() if numbered else first[2:].split(b" ", 1)[0].upper()
    if word == b"FETCH":
        uid = _FETCH_UID.search(b"".join(segments))
        if uid is not None:  # without a UID: a flag change of another message, not ours
            each(int(uid.group(1)), segments, literals)
        return
    if word == b"BYE":
        raise imapclient.exceptions.IMAPClientAbortError(
            "the server said BYE: " + first.decode("utf-8", "replace").strip())
    if numbered is not None:  # EXISTS, RECENT, EXPUNGE: as imaplib files them
        imap._append_untagged(word.decode(), numbered.group(1))


def _batches(uids: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    """Consecutive groups of at most ``_FETCH_BATCH`` UIDs and ``_FETCH_BATCH_BYTES``
    (by RFC822.SIZE); a message larger than that alone."""
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and (len(batch) >= _FETCH_BATCH or total + size > _FETCH_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


def _wait_readable(sock: Any, deadline: float, stop: threading.Event) -> bool:
    """Wait until the server sends something (True), or the deadline or a stop (False)."""
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        readable, _, _ = select.select([sock], [], [], min(left, _IDLE_SLICE))
        if readable:
            return True
    return False


def _is_new_mail(response: object) -> bool:
    """An untagged ``* N EXISTS`` (or ``RECENT``) among the IDLE responses."""
    return (isinstance(response, tuple) and len(response) >= 2
            and response[1] in (b"EXISTS", b"RECENT"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    text = str(exc) or type(exc).__name__
    return text.removeprefix("b'").removesuffix("'") if text.startswith("b'") else text
