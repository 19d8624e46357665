"""A private Dovecot POP3 (and IMAP, where dovecot-imapd is installed) server for tests.

Each server lives in its own temp directory with its own config, user file, Maildir and
port, is started with ``dovecot -c`` and stopped through ``master.pid``. Nothing of the
system's Dovecot configuration is used. The TLS variant gets a throw-away CA and a server
certificate for ``127.0.0.1``/``localhost`` made with the ``openssl`` command line tool.

Tests that need a server fail (not skip) when ``CI=true`` and Dovecot is missing, so a CI
machine without it cannot turn the delivery tests green by skipping them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from commit_email.config import ImapConfig, Pop3Config

USER = "support"
PASSWORD = "secret"
#: users support1..supportN exist from the start: Dovecot does not reliably notice a
#: passwd-file that grew within the same second, so users are not added later
_USERS = 2000

_CONFIG = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
# a wrong password is answered at once instead of after Dovecot's anti-guessing delay
auth_failure_delay = 0
mail_location = maildir:{base}/mail/%u
pop3_uidl_format = %08Xu%08Xv
{passdbs}passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={base}/mail/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s_port}
    ssl = yes
  }}
}}
{imap}{ssl}
"""

#: the IMAP listeners (plain/STARTTLS and IMAPS) and options, when IMAP is served
_IMAP = """\
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
protocol imap {{
  # a client is told about new mail within this long of it arriving while it IDLEs
  mailbox_idle_check_interval = 1 secs
{imap_capability}}}
"""

#: Dovecot's oauth2 passdb, checking each XOAUTH2/OAUTHBEARER token with the test
#: authorization server's RFC 7662 introspection endpoint (POST, client credentials in the
#: URL), the token's ``username`` having to be the user logging in
_OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {base}/dovecot-oauth2.conf.ext
}}
"""
_OAUTH2_CONF = """\
introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""

_SSL_OFF = "ssl = no\n"
_SSL_ON = """\
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
"""


def free_port() -> int:
    """A TCP port that nothing listens on right now (good enough for a private test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dovecot_binary() -> str | None:
    """The dovecot executable; Debian installs it in /usr/sbin, which may not be on PATH."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def require_server_tool(name: str, path: str | None) -> str:
    """Return ``path``; without it skip locally, but fail on CI where skipping hides breakage."""
    if path:
        return path
    package = "dovecot-imapd" if "imap" in name else "dovecot-pop3d"
    message = f"{name} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; server tests must not be skipped on CI", pytrace=False)
    pytest.skip(message)


@attrs.frozen(kw_only=True)
class TestCA:
    """A CA certificate and a server certificate/key it signed, for 127.0.0.1 and localhost."""

    __test__ = False  # not a test class, despite the name
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_test_ca(directory: Path, name: str = "commit-email test CA") -> TestCA:
    """Create a CA and a server certificate with the ``openssl`` CLI (no Python dependency)."""
    openssl = require_server_tool("openssl", shutil.which("openssl"))
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )

    def run(*args: str | Path) -> None:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_cert,
        "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=localhost")
    run("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext)
    for p in (key, cert):
        p.chmod(0o644)  # dovecot reads them as root, but keep the temp tree readable
    return TestCA(ca_cert=ca_cert, server_cert=cert, server_key=key)


@attrs.define(kw_only=True)
class DovecotServer:
    """A running private Dovecot; ``deliver`` drops messages into the user's Maildir."""

    base: Path
    pop3_port: int
    pop3s_port: int
    ca: TestCA | None = None
    #: 0 when the server has no IMAP (dovecot-imapd missing)
    imap_port: int = 0
    imaps_port: int = 0
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD
    _process: subprocess.Popen[bytes] | None = None
    _counter: Iterator[int] = attrs.field(factory=itertools.count)
    _user_numbers: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    @property
    def maildir(self) -> Path:
        return self.base / "mail" / self.user

    @property
    def log(self) -> str:
        """This user's lines of the server log (logins, disconnects)."""
        path = self.base / "dovecot.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        marks = (f"user=<{self.user}>", f"pop3({self.user})", f"imap({self.user})")
        return "".join(ln for ln in text.splitlines(True) if any(m in ln for m in marks))

    def new_user(self) -> DovecotServer:
        """The same server seen as a new user with an empty Maildir (same password)."""
        number = next(self._user_numbers)
        if number > _USERS:
            raise RuntimeError(f"more than {_USERS} mailboxes asked of one test server")
        name = f"{USER}{number}"
        _make_maildir(self.base / "mail" / name)
        return attrs.evolve(self, user=name, process=None)

    def pop3_config(self, security: str = "plain", **overrides: Any) -> Pop3Config:
        """A Pop3Config pointing at this server (POP3S port for ``ssl``, else the POP3 port)."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.pop3s_port if security == "ssl" else self.pop3_port,
            "security": security,
            "user": self.user,
            "password": self.password,
            "timeout": 10.0,
            "ca_file": str(self.ca.ca_cert) if self.ca else "",
        }
        values.update(overrides)
        return Pop3Config(**values)

    def imap_config(self, security: str = "plain", **overrides: Any) -> ImapConfig:
        """An ImapConfig pointing at this server (IMAPS port for ``ssl``, else the IMAP
        port, which offers STARTTLS on a TLS server)."""
        if not self.imap_port:
            require_server_tool("dovecot-imapd", None)
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.imaps_port if security == "ssl" else self.imap_port,
            "security": security,
            "user": self.user,
            "password": self.password,
            "timeout": 10.0,
            "ca_file": str(self.ca.ca_cert) if self.ca else "",
        }
        values.update(overrides)
        return ImapConfig(**values)

    def folder_files(self, folder: str) -> list[Path]:
        """The messages in an IMAP folder other than INBOX (Maildir++: ``.NAME/``)."""
        root = self.maildir / f".{folder}"
        return sorted(
            p for sub in ("new", "cur") if (root / sub).is_dir()
            for p in (root / sub).iterdir() if p.is_file()
        )

    def deliver(self, raw: bytes) -> Path:
        """Put one message into ``new/`` the Maildir way (write in tmp/, rename) and chown it."""
        n = next(self._counter)
        name = f"{time.time_ns()}.P{os.getpid()}Q{n}.commit-email-test"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(raw)
        _chown_dovecot(tmp)
        target = self.maildir / "new" / name
        tmp.rename(target)
        return target

    def deliver_many(self, messages: list[bytes]) -> list[Path]:
        return [self.deliver(raw) for raw in messages]

    def message_files(self) -> list[Path]:
        """The messages still in the mailbox (new/ and cur/)."""
        return sorted(
            p for sub in ("new", "cur") for p in (self.maildir / sub).iterdir() if p.is_file()
        )

    def start(self, binary: str) -> None:
        self._process = subprocess.Popen(
            [binary, "-F", "-c", str(self.base / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                raise RuntimeError(f"dovecot exited at start: {err}\n{self.log}")
            ports = [p for p in (self.pop3_port, self.pop3s_port, self.imap_port,
                                 self.imaps_port) if p]
            if all(_accepts(self.host, p) for p in ports):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not start listening in 15 s\n{self.log}")

    def stop(self) -> None:
        pid_file = self.base / "run" / "master.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _make_maildir(maildir: Path) -> None:
    for d in (maildir, maildir / "new", maildir / "cur", maildir / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
        _chown_dovecot(d)


def _chown_dovecot(path: Path) -> None:
    """Dovecot reads the Maildir as user dovecot; as root we hand files over to it."""
    if os.geteuid() != 0:
        return  # running as the mail user itself: nothing to hand over
    entry = pwd.getpwnam("dovecot")
    os.chown(path, entry.pw_uid, entry.pw_gid)


def imap_binary() -> Path | None:
    """Dovecot's IMAP process, installed by dovecot-imapd (Debian) beside the POP3 one."""
    for lib in ("/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot"):
        if (Path(lib) / "imap").is_file():
            return Path(lib) / "imap"
    return None


def start_dovecot(
    base: Path, *, ca: TestCA | None = None, apop: bool = False,
    oauth2_introspection_url: str | None = None, imap_capability: str | None = None,
) -> DovecotServer:
    """Write a private config under ``base`` and start Dovecot on free ports: POP3 (and
    POP3S with ``ca``), and IMAP (and IMAPS) where dovecot-imapd is installed.

    With ``oauth2_introspection_url`` (``http://client:secret@127.0.0.1:PORT/introspect``)
    Dovecot offers SASL PLAIN XOAUTH2 OAUTHBEARER and checks tokens there.
    ``imap_capability`` replaces the IMAP capability list the server announces (to test a
    client against a server without MOVE, say); the commands still work.
    """
    binary = require_server_tool("dovecot", dovecot_binary())
    try:
        pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError:
        require_server_tool("the dovecot/dovenull users", None)
    base.mkdir(parents=True, exist_ok=True)
    # Dovecot's unprivileged processes must traverse the tree (pytest makes it 0700).
    for p in (base, *base.parents):
        if p == Path("/") or p == Path("/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o755)
    # Without TLS the POP3S listener stays off (port 0): Dovecot would not open it anyway.
    imap = imap_binary() is not None
    server = DovecotServer(
        base=base, pop3_port=free_port(), pop3s_port=free_port() if ca else 0, ca=ca,
        imap_port=free_port() if imap else 0, imaps_port=free_port() if imap and ca else 0,
    )
    ssl = _SSL_ON.format(cert=ca.server_cert, key=ca.server_key) if ca else _SSL_OFF
    mechanisms = "plain apop" if apop else "plain"
    passdbs = ""
    if oauth2_introspection_url:
        mechanisms += " xoauth2 oauthbearer"
        passdbs = _OAUTH2_PASSDB.format(base=base)
        (base / "dovecot-oauth2.conf.ext").write_text(
            _OAUTH2_CONF.format(url=oauth2_introspection_url))
    capability = f"  imap_capability = {imap_capability}\n" if imap_capability else ""
    imap_section = _IMAP.format(imap_port=server.imap_port, imaps_port=server.imaps_port,
                                imap_capability=capability) if imap else ""
    (base / "dovecot.conf").write_text(
        _CONFIG.format(
            base=base,
            pop3_port=server.pop3_port,
            pop3s_port=server.pop3s_port,
            ssl=ssl,
            auth_mechanisms=mechanisms,
            passdbs=passdbs,
            imap=imap_section,
            protocols="pop3 imap" if imap else "pop3",
        )
    )
    (base / "users").write_text(
        "".join(f"{USER}{n}:{{PLAIN}}{PASSWORD}::::::\n" for n in ("", *range(1, _USERS + 1)))
    )
    (base / "mail").mkdir(exist_ok=True)
    _chown_dovecot(base / "mail")
    _make_maildir(server.maildir)
    server.start(binary)
    return server


@pytest.fixture(scope="session")
def test_ca() -> Iterator[TestCA]:
    base = Path(tempfile.mkdtemp(prefix="commit-email-ca-"))
    try:
        yield make_test_ca(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _session_server(name: str, **options: Any) -> Iterator[DovecotServer]:
    # Not under pytest's tmp dir: pytest resets /tmp/pytest-of-<user> to 0700 whenever any
    # pytest run starts, which would lock Dovecot's unprivileged processes out mid-session.
    base = Path(tempfile.mkdtemp(prefix=f"commit-email-{name}-"))
    try:
        server = start_dovecot(base, **options)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# One Dovecot per flavour for the whole session (starting and stopping one costs about a
# second); each test gets a fresh user with an empty Maildir on it, so tests stay isolated.
@pytest.fixture(scope="session")
def dovecot_plain_server() -> Iterator[DovecotServer]:
    yield from _session_server("dovecot-plain")


@pytest.fixture(scope="session")
def dovecot_apop_server() -> Iterator[DovecotServer]:
    yield from _session_server("dovecot-apop", apop=True)


@pytest.fixture(scope="session")
def dovecot_tls_server(test_ca: TestCA) -> Iterator[DovecotServer]:
    yield from _session_server("dovecot-tls", ca=test_ca)


@pytest.fixture
def dovecot_factory(tmp_path: Path) -> Iterator[Callable[..., DovecotServer]]:
    """Start private servers of one's own (``apop=True``, ``ca=...``); stopped afterwards.

    Tests of failed logins need one: Dovecot slows down every later login from the same
    IP after a failure (its anvil "auth penalty"), which would stall the shared servers.
    """
    servers: list[DovecotServer] = []

    def start(**options: Any) -> DovecotServer:
        base = Path(tempfile.mkdtemp(prefix="commit-email-dovecot-"))
        servers.append(start_dovecot(base, **options))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
            shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_plain_server: DovecotServer) -> DovecotServer:
    """A plain-text (no TLS) private Dovecot, seen as a fresh user with an empty mailbox."""
    return dovecot_plain_server.new_user()


@pytest.fixture
def dovecot_apop(dovecot_apop_server: DovecotServer) -> DovecotServer:
    """A plain-text Dovecot that offers APOP (a timestamp in its greeting); fresh user."""
    return dovecot_apop_server.new_user()


@pytest.fixture
def dovecot_tls(dovecot_tls_server: DovecotServer) -> DovecotServer:
    """A Dovecot that requires TLS: STLS on the POP3 port, POP3S on the other; fresh user."""
    return dovecot_tls_server.new_user()


def as_served(raw: bytes) -> bytes:
    """The form a POP3 server sends a stored file in: CRLF line ends, last line ended."""
    served = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    return served if served.endswith(b"\r\n") else served + b"\r\n"


def corpus_messages() -> list[tuple[str, bytes]]:
    """Real-world messages from the shared corpus named by ``COMMIT_EMAIL_CORPUS``, if set.

    Returns (relative name, bytes) for every file that is an RFC 822 message there:
    ``*.eml``, mime4j's ``*.msg``, CPython's ``msg_*.txt`` and SpamScope's ``mail_test_*``
    (its Outlook ``.msg`` binary is not RFC 822 and is left out).
    """
    root = os.environ.get("COMMIT_EMAIL_CORPUS", "")
    if not root or not Path(root).is_dir():
        return []
    base = Path(root)
    patterns = ("**/*.eml", "mime4j/**/*.msg", "cpython-test_email/msg_*.txt",
                "spamscope-mail-parser/mail_test_*")
    files = sorted({p for pattern in patterns for p in base.glob(pattern) if p.is_file()})
    return [(str(p.relative_to(base)), p.read_bytes()) for p in files]


@pytest.fixture
def imap_dovecot(dovecot_plain_server: DovecotServer) -> DovecotServer:
    """The plain-text Dovecot as a fresh user, for IMAP (fails on CI without dovecot-imapd)."""
    if not dovecot_plain_server.imap_port:
        require_server_tool("dovecot-imapd", None)
    return dovecot_plain_server.new_user()


@pytest.fixture
def imap_dovecot_tls(dovecot_tls_server: DovecotServer) -> DovecotServer:
    """The Dovecot that requires TLS (STARTTLS on the IMAP port, IMAPS on the other)."""
    if not dovecot_tls_server.imap_port:
        require_server_tool("dovecot-imapd", None)
    return dovecot_tls_server.new_user()
