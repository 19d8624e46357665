"""A private PostgreSQL server for tests (Debian's ``postgresql``, run as the postgres user).

One server per test session: ``initdb`` into a temp data directory owned by ``postgres``,
``pg_ctl start`` on a free port of 127.0.0.1 (and a Unix socket in the same directory),
``trust`` authentication for local connections only. Each test gets a schema of its own
(``pg_url``: a ``postgresql://`` URL whose ``search_path`` is that schema), dropped
afterwards, so tests stay isolated without paying for a ``CREATE DATABASE`` each.

Tests that need the server fail (not skip) when ``CI=true`` and it cannot start, so a CI
machine without PostgreSQL cannot turn the store tests green by skipping them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import attrs
import pytest

from tests.dovecot_fixtures import free_port

_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
             "/usr/lib/postgresql/17/bin", "/usr/local/bin", "/usr/bin")
_schemas = itertools.count(1)


def pg_binary(name: str) -> str | None:
    """``initdb``/``pg_ctl``: Debian keeps them out of PATH, in the versioned folder."""
    for folder in _BIN_DIRS:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; server tests must not be skipped on CI", pytrace=False)
    pytest.skip(message)


@attrs.define(kw_only=True)
class PostgresServer:
    """A running private PostgreSQL; ``url(schema)`` names a schema of database postgres."""

    base: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def url(self, schema: str = "") -> str:
        if not schema:
            return self.admin_url
        return self.admin_url + "?options=" + quote(f"-csearch_path={schema}", safe="")

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser (autocommit)."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement.encode())

    def new_schema(self) -> str:
        name = f"t{os.getpid()}_{next(_schemas)}"
        self.sql(f"CREATE SCHEMA {name}")
        return name


def _as_postgres(*argv: str) -> list[str]:
    if os.geteuid() != 0:
        return list(argv)  # already an unprivileged user: run the tools as oneself
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser:
        return [runuser, "-u", "postgres", "--", *argv]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in argv)]


def start_postgres(base: Path) -> PostgresServer:
    """initdb + pg_ctl start in ``base`` (chowned to postgres) on a free port."""
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        _unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    assert initdb and pg_ctl
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'commit-email[postgres]')")
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("there is no postgres user to run the server as")
            raise
        os.chown(base, entry.pw_uid, entry.pw_gid)
    base.chmod(0o700)
    data = base / "data"
    server = PostgresServer(base=base, port=free_port())
    done = subprocess.run(
        _as_postgres(initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                     "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
        capture_output=True, text=True, check=False,
    )
    if done.returncode:
        _unavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
    options = (f"-p {server.port} -k {base} -c listen_addresses={server.host} "
               "-c fsync=off -c full_page_writes=off -c synchronous_commit=off "
               "-c max_connections=100")
    done = subprocess.run(
        _as_postgres(pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-o", options,
                     "-w", "-t", "30", "start"),
        capture_output=True, text=True, check=False,
    )
    if done.returncode:
        log = (base / "server.log").read_text(errors="replace") if (
            base / "server.log").exists() else ""
        _unavailable(f"PostgreSQL did not start: {done.stdout.strip()} {log[-2000:]}")
    deadline = time.monotonic() + 15
    while True:
        try:
            server.sql("SELECT 1")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return server


def stop_postgres(server: PostgresServer) -> None:
    pg_ctl = pg_binary("pg_ctl")
    if pg_ctl:
        subprocess.run(
            _as_postgres(pg_ctl, "-D", str(server.base / "data"), "-m", "immediate", "-w",
                         "stop"),
            capture_output=True, check=False,
        )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix="commit-email-pg-"))
    try:
        server = start_postgres(base)
        try:
            yield server
        finally:
            stop_postgres(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url_factory(pg_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """Make as many empty stores (schemas) as a test needs; dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(pg_server.new_schema())
        return pg_server.url(made[-1])

    try:
        yield make
    finally:
        for schema in made:
            with contextlib.suppress(Exception):
                pg_server.sql(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_url(pg_url_factory: Callable[[], str]) -> str:
    """A ``postgresql://`` store URL naming an empty schema of the private server."""
    return pg_url_factory()
