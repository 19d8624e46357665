"""The PostgreSQL store in the same run as its references: SQLite, a small directory, one
mailbox.

    python benchmarks/postgres_bench.py [--count N] [--reps R] [--small A] [--large A]
                                        [--messages M] [--run-count N] [--rounds R]
                                        [--synchronous-commit on|off] [--only PART]
                                        [--smoke] [--json-out FILE]

A private PostgreSQL server is started here (Debian's ``postgresql``: ``initdb`` into a
temporary data directory and ``pg_ctl start`` as the ``postgres`` user, on a free port of
127.0.0.1, ``trust`` for local connections), with the durability of the SQLite store's
default (``synchronous=NORMAL`` in WAL mode: a crash of the program loses nothing, a crash
of the machine may lose the last commits): ``fsync`` on, ``synchronous_commit = off``
(``--synchronous-commit on`` waits for the disk at every commit instead). Three measures:

1. **process**: ``commit-email process --config FILE --json DIR`` (in-process) over the
   generated corpus (``gen_corpus.py``, 5,000 Accounts + 5,000 contacts), into a fresh
   PostgreSQL database (``CREATE DATABASE … TEMPLATE`` of one that holds the Accounts) and
   into a fresh SQLite store (a copy of a file that holds them), repetitions interleaved
   (``common.interleaved``). Ratio: PostgreSQL's rate over SQLite's, per repetition. Both
   stores must give the same outcome tally and the same number of tickets.
2. **matching**: ``matching_bench.py``'s measure on PostgreSQL: 100,000 Accounts + 200,000
   contacts against 1,000 + 2,000, loaded through ``import_accounts`` (COPY), the same
   generated senders, interleaved. Target: the big directory costs at most 1.2x per
   message.
3. **mailboxes**: ``commit-email run --once`` (in-process; with several mailboxes it starts
   a worker process per mailbox) on a private Dovecot and a fresh PostgreSQL database,
   with three ``[[pop3]]`` mailboxes holding a third of ``--run-count`` messages each,
   against one mailbox holding all of them: the same messages, so the ratio of the times is
   the ratio of total throughput. Target on 2 cores: three mailboxes at least 1.5x. Order
   alternates per round; the mailboxes must be empty afterwards and the processed log hold
   one outcome per message, filed under its mailbox.

Prints one JSON object, then one line for humans. ``--smoke``: a few messages and cards,
one repetition: checks the results (equal tallies and ticket counts on both stores, one
outcome per message, empty mailboxes), judges no timing. ``--only process`` (repeatable)
measures one part. Needs Debian's ``postgresql`` and ``dovecot-pop3d``, and root (each
server runs as its own user: the Maildirs are handed to dovecot, the data directory to
postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import json
import os
import pwd
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import common, gen_corpus

# Note on imports: the rest is imported in the functions that need it. ``run`` starts its
# workers with ``spawn``, which imports this script again in each of them, and a worker
# should cost what it costs under the real ``commit-email run``, not this script's imports
# (pytest, through the Dovecot fixtures) on top.

#: where Debian keeps initdb and pg_ctl (out of PATH, in the versioned folder)
_PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_OWNER = "postgres"


# ---------------------------------------------------------------------------- the server


def pg_tool(name: str) -> str | None:
    """``initdb`` / ``pg_ctl``: the newest Debian version's, else from PATH."""
    for folder in sorted(glob.glob(_PG_BIN_GLOB), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def _as_owner(*argv: str) -> list[str]:
    """The command run as the postgres user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return list(argv)
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if not runuser:
        raise SystemExit("postgres_bench: runuser is missing; cannot start PostgreSQL as root")
    return [runuser, "-u", _OWNER, "--", *argv]


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of this run, in ``base``; stopped by :meth:`stop`."""

    base: Path
    port: int
    settings: dict[str, str]
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """One statement, autocommit (CREATE DATABASE cannot run in a transaction)."""
        import psycopg  # noqa: PLC0415 (see the note on imports)

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return list(cur.fetchall()) if cur.description else []

    def fresh_database(self, name: str, template: str | None = None) -> str:
        """A new database ``name`` (a copy of ``template``); its URL."""
        if template:
            # CREATE DATABASE … TEMPLATE refuses while anyone is connected to the template;
            # a store the garbage collector has not closed yet would be.
            gc.collect()
            self.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{template}' AND pid <> pg_backend_pid()")
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        gc.collect()
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @property
    def pid(self) -> int:
        """The postmaster's process id (its children are the backends)."""
        return int((self.base / "data" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        pg_ctl = pg_tool("pg_ctl")
        if pg_ctl:
            subprocess.run(_as_owner(pg_ctl, "-D", str(self.base / "data"), "-m", "fast",
                                     "-w", "stop"), capture_output=True, check=False)


def start_postgres(base: Path, *, synchronous_commit: str = "off",
                   extra: dict[str, str] | None = None) -> PrivatePostgres:
    """``initdb`` + ``pg_ctl start`` in ``base`` (handed to the postgres user) on a free
    port; SystemExit with the reason when it cannot. ``extra``: more server settings
    (``shared_preload_libraries=pg_stat_statements`` to profile, say)."""
    from tests.dovecot_fixtures import free_port  # noqa: PLC0415 (see the note on imports)

    initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
    if not initdb or not pg_ctl:
        raise SystemExit("postgres_bench: PostgreSQL is not installed "
                         "(Debian: apt-get install postgresql)")
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(_OWNER)
        except KeyError:
            raise SystemExit("postgres_bench: there is no postgres user to run the server "
                             "as") from None
        os.chown(base, owner.pw_uid, owner.pw_gid)
    base.chmod(0o700)
    settings = {"fsync": "on", "synchronous_commit": synchronous_commit,
                "listen_addresses": "127.0.0.1", "max_connections": "50", **(extra or {})}
    server = PrivatePostgres(base=base, port=free_port(), settings=settings)
    done = subprocess.run(
        _as_owner(initdb, "-D", str(base / "data"), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8"),
        capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"postgres_bench: initdb failed: {done.stderr.strip()}")
    options = f"-p {server.port} -k {base} " + " ".join(f"-c {k}={v}"
                                                       for k, v in settings.items())
    done = subprocess.run(
        _as_owner(pg_ctl, "-D", str(base / "data"), "-l", str(base / "server.log"),
                  "-o", options, "-w", "-t", "30", "start"),
        capture_output=True, text=True, check=False)
    if done.returncode:
        log = base / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise SystemExit(f"postgres_bench: PostgreSQL did not start: {done.stdout} {tail}")
    server.settings["version"] = str(server.sql("SHOW server_version")[0][0])
    return server


# ---------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 into ``path`` meanwhile: ``run`` logs a line per message, from
    this process and from its workers (which inherit the descriptor)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def children_cpu() -> float:
    """CPU seconds of the ended and waited-for child processes (``run``'s workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu(root: int) -> float:
    """CPU seconds of process ``root`` and its descendants, the ended ones included (a
    reaped child's time is in its parent's ``cutime``): what a server spent."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    spent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2:].split()
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        spent[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += spent.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / ticks


def store_counts(url: str) -> tuple[int, dict[str, int]]:
    """(tickets, outcome tally of the processed log) of a store."""
    from commit_email.store import open_store  # noqa: PLC0415 (see the note on imports)

    store = open_store(url)
    try:
        return store.count_tickets(), dict(store.outcome_counts())
    finally:
        store.close()


def fail(message: str) -> None:
    raise SystemExit(f"postgres_bench: {message}")


# ---------------------------------------------------------------------------- 1. process


@dataclass
class PgInstallation:
    """As ``common.Installation``, on PostgreSQL: a template database holding the Accounts
    (imported by ``commit-email accounts import``, with COPY), and a fresh copy of it for
    every run."""

    server: PrivatePostgres
    root: Path
    template: str
    config: Path = field(init=False)
    url: str = ""
    runs: int = 0

    @classmethod
    def create(cls, server: PrivatePostgres, root: Path, accounts_csv: Path,
               template: str = "process_template") -> PgInstallation:
        url = server.fresh_database(template)
        config = common.write_config(root / "setup", url=url)
        common.cli("accounts", "--config", str(config), "import", str(accounts_csv))
        server.sql("ANALYZE", database=template)
        inst = cls(server=server, root=root, template=template)
        inst.config = config
        return inst

    def reset(self) -> None:
        """A fresh database (Accounts only) and state dir: untimed, before each run."""
        if self.runs:
            self.server.drop_database(f"process_run{self.runs}")
        self.runs += 1
        self.url = self.server.fresh_database(f"process_run{self.runs}", self.template)
        self.config = common.write_config(self.root / f"run-{self.runs}", url=self.url)


def run_process(config: Path, msg_dir: Path) -> list[dict[str, object]]:
    out = common.cli("process", "--config", str(config), "--json", str(msg_dir))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def check_process(results: Sequence[dict[str, object]], count: int, store: str) -> Counter[str]:
    tally = Counter(str(r["outcome"]) for r in results)
    if len(results) != count:
        fail(f"{store}: {len(results)} outcomes for {count} messages")
    if tally["quarantined"] or tally["duplicate"]:
        fail(f"{store}: {tally['quarantined']} quarantined and {tally['duplicate']} duplicates "
             f"in a corpus of unique, well-formed messages: {dict(tally)}")
    return tally


def bench_process(server: PrivatePostgres, work: Path, count: int, reps: int,
                  warmup: bool) -> dict[str, Any]:
    with common.corpus(count) as (root, paths):
        msg_dir = paths[0].parent
        csv = root / "accounts.csv"
        lite = common.Installation.create(work / "sqlite", csv)
        pg = PgInstallation.create(server, work / "pg", csv)
        # The checked run (also a warm-up): the same outcomes and tickets on both stores.
        checked: dict[str, Any] = {}
        for name, inst, url in (("sqlite", lite, lambda: f"sqlite:///{lite.db}"),
                                ("postgresql", pg, lambda: pg.url)):
            inst.reset()
            tally = check_process(run_process(inst.config, msg_dir), count, name)
            tickets, logged = store_counts(url())
            if sum(logged.values()) != count:
                fail(f"{name}: the processed log has {sum(logged.values())} entries for "
                     f"{count} messages")
            checked[name] = {"outcomes": dict(sorted(tally.items())), "tickets": tickets}
        if checked["sqlite"] != checked["postgresql"]:
            fail(f"the stores disagree on the same corpus: {checked}")
        tallies: list[Counter[str]] = []

        def side(inst: common.Installation | PgInstallation) -> None:
            tallies.append(Counter(str(r["outcome"]) for r in run_process(inst.config, msg_dir)))

        result = common.interleaved(
            "process into PostgreSQL", lambda: side(pg), lambda: side(lite),
            messages=count, nbytes=sum(p.stat().st_size for p in paths), reps=reps,
            warmup=warmup, before_subject=pg.reset, before_floor=lite.reset,
        )
        expected = Counter(checked["sqlite"]["outcomes"])
        if any(t != expected for t in tallies):
            fail(f"a timed repetition's outcomes differ from the checked run's: {tallies}")
        server.drop_database(f"process_run{pg.runs}")
        server.drop_database(pg.template)
    data = result.to_json()
    data.pop("machine")
    data.pop("extra")
    for old, new in (("subject", "postgresql"), ("floor", "sqlite")):
        for key in (f"{old}_rate", f"{old}_cpu_rate"):
            data[key.replace(old, new)] = data.pop(key)
    data["ratio_note"] = "PostgreSQL's msg/s over SQLite's, per repetition"
    data["checked"] = checked
    return data


# ---------------------------------------------------------------------------- 2. matching


def bench_matching(server: PrivatePostgres, work: Path, small_n: int, large_n: int,
                   messages: int, reps: int) -> dict[str, Any]:
    from benchmarks import matching_bench  # noqa: PLC0415 (see the note on imports)
    from commit_email.pgstore import PostgresStore  # noqa: PLC0415 (see the note on imports)

    dirs = {}
    for name, n in (("small", small_n), ("large", large_n)):
        store = PostgresStore(server.fresh_database(f"match_{name}"))
        dirs[name] = matching_bench.Directory(work / f"match-{name}", n, messages, store=store)
    report = matching_bench.compare(dirs["small"], dirs["large"], messages, reps,
                                    label="matching on PostgreSQL", who="postgres_bench")
    for d in dirs.values():
        d.store.close()
    for name in dirs:
        server.drop_database(f"match_{name}")
    return report


# ---------------------------------------------------------------------------- 3. mailboxes


def pop3_tables(boxes: dict[str, Any]) -> str:
    return "".join(
        f'\n[[pop3]]\nname = "{name}"\nhost = "{box.host}"\nport = {box.pop3_port}\n'
        f'security = "plain"\nuser = "{box.user}"\npassword = "{box.password}"\n'
        "timeout = 60.0\n"
        for name, box in boxes.items())


def run_mailboxes(server: PrivatePostgres, dovecot: Any, work: Path, template: str,
                  parts: Sequence[Sequence[bytes]], label: str) -> dict[str, Any]:
    """``run --once`` over ``len(parts)`` fresh mailboxes into a fresh database: seconds,
    CPU seconds (this process and the workers), and the checks."""
    boxes = {f"box{i + 1}": dovecot.new_user() for i in range(len(parts))}
    for box, messages in zip(boxes.values(), parts, strict=True):
        box.deliver_many(list(messages))
    url = server.fresh_database(label, template)
    config = common.write_config(work / label, url=url, extra=pop3_tables(boxes))
    dovecot_pid = int((dovecot.base / "run" / "master.pid").read_text().split()[0])
    cpu0, kids0 = time.process_time(), children_cpu()
    servers0 = {"postgresql": tree_cpu(server.pid), "dovecot": tree_cpu(dovecot_pid)}
    with stderr_to(work / f"{label}.log"):
        seconds, _ = common.timed(lambda: common.cli("run", "--config", str(config), "--once"))
    cpu = time.process_time() - cpu0 + children_cpu() - kids0
    servers = {"postgresql": tree_cpu(server.pid) - servers0["postgresql"],
               "dovecot": tree_cpu(dovecot_pid) - servers0["dovecot"]}
    left = {name: len(box.message_files()) for name, box in boxes.items()}
    if any(left.values()):
        fail(f"{label}: messages left in the mailboxes after run --once: {left}")
    rows = server.sql("SELECT source_name, outcome, count(*) FROM processed "
                      "GROUP BY source_name, outcome", database=label)
    per_box: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for source, outcome, n in rows:
        per_box[source] += n
        outcomes[outcome] += n
    want = {name: len(messages) for name, messages in zip(boxes, parts, strict=True)}
    if dict(per_box) != want:
        fail(f"{label}: the processed log files {dict(per_box)}, the mailboxes held {want}")
    if outcomes["quarantined"] or outcomes["duplicate"]:
        fail(f"{label}: quarantined or duplicate outcomes for unique messages: "
             f"{dict(outcomes)}")
    tickets = int(server.sql("SELECT count(*) FROM tickets", database=label)[0][0])
    server.drop_database(label)
    return {"seconds": seconds, "cpu_seconds": cpu, "server_cpu_seconds": servers,
            "outcomes": dict(sorted(outcomes.items())),
            "tickets": tickets}


def bench_mailboxes(server: PrivatePostgres, work: Path, count: int, rounds: int,
                    warmup: bool) -> dict[str, Any]:
    from tests.dovecot_fixtures import dovecot_binary, start_dovecot  # noqa: PLC0415 (see the note on imports)

    if dovecot_binary() is None:
        fail("dovecot is not installed (apt-get install dovecot-pop3d)")
    count -= count % 3
    messages = gen_corpus.generate(count)
    thirds = [messages[i::3] for i in range(3)]
    template = "run_template"
    url = server.fresh_database(template)
    with tempfile.TemporaryDirectory(prefix="ce-pg-accounts-") as tmp:
        csv = gen_corpus.write_accounts_csv(Path(tmp) / "accounts.csv", gen_corpus.accounts())
        setup = common.write_config(work / "run-setup", url=url)
        common.cli("accounts", "--config", str(setup), "import", str(csv))
    server.sql("ANALYZE", database=template)
    dovecot = start_dovecot(work / "dovecot")
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "three": []}
    try:
        if warmup:  # Dovecot's, PostgreSQL's and the page cache's first-time costs
            run_mailboxes(server, dovecot, work, template, [messages[:60]], "run_warm")
        for r in range(rounds):
            order = ("one", "three") if r % 2 == 0 else ("three", "one")
            for side in order:
                parts = [messages] if side == "one" else thirds
                runs[side].append(run_mailboxes(server, dovecot, work, template, parts,
                                                f"run_{side}_{r}"))
    finally:
        dovecot.stop()
        server.drop_database(template)
    per_round = [o["seconds"] / t["seconds"] for o, t in zip(runs["one"], runs["three"],
                                                              strict=True)]
    one_s = [x["seconds"] for x in runs["one"]]
    three_s = [x["seconds"] for x in runs["three"]]
    cores = os.cpu_count() or 1

    def busy(x: dict[str, Any]) -> float:
        """CPU seconds of everyone involved: ours, the workers', PostgreSQL's, Dovecot's."""
        return float(x["cpu_seconds"] + sum(x["server_cpu_seconds"].values()))

    # What the CPU time allows: one mailbox keeps about one core busy (it and PostgreSQL
    # take turns), three cannot take less than all their CPU time spread over every core.
    # A speed-up well below this: the shared machine's neighbours had the cores.
    allowed = [cores * busy(o) / busy(t)
               for o, t in zip(runs["one"], runs["three"], strict=True)]
    return {
        "messages": count,
        "rounds": rounds,
        "store": "postgresql",
        "seconds": {"one": [round(s, 3) for s in one_s], "three": [round(s, 3) for s in three_s]},
        # ours: this process and the workers; the servers': their whole process trees
        "cpu_seconds": {k: [round(x["cpu_seconds"], 2) for x in v] for k, v in runs.items()},
        "server_cpu_seconds": {k: [{s: round(c, 2) for s, c in x["server_cpu_seconds"].items()}
                                   for x in v] for k, v in runs.items()},
        "messages_per_s": {"one": round(count / statistics.median(one_s), 1),
                           "three": round(count / statistics.median(three_s), 1)},
        "speedup": common.Stats.of(per_round).rounded(),
        # cores kept busy (all CPU seconds / wall seconds), and the speed-up the CPU times
        # of each round allow on this many cores: cores x CPU(one) / CPU(three)
        "cores_busy": {k: [round(busy(x) / x["seconds"], 2) for x in v] for k, v in runs.items()},
        "speedup_cpu_allows": common.Stats.of(allowed).rounded(),
        "cores": cores,
        "target": 1.5,
        "tickets": {k: [x["tickets"] for x in v] for k, v in runs.items()},
        "outcomes": {k: v[0]["outcomes"] for k, v in runs.items()},
    }


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="messages for `process`")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--small", type=int, default=1000, help="Accounts, small directory")
    parser.add_argument("--large", type=int, default=100_000, help="Accounts, big directory")
    parser.add_argument("--messages", type=int, default=3000, help="senders to match")
    parser.add_argument("--run-count", type=int, default=3000,
                        help="messages for `run --once` (a third in each of three mailboxes)")
    parser.add_argument("--rounds", type=int, default=3, help="`run --once` rounds")
    parser.add_argument("--synchronous-commit", choices=("on", "off"), default="off")
    parser.add_argument("--only", choices=("process", "matching", "mailboxes"),
                        action="append", help="measure only this (repeatable)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few messages and cards, one repetition: checks results only")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.count, args.reps, args.small, args.large = 60, 1, 100, 200
        args.messages, args.run_count, args.rounds = 100, 30, 1
    parts = args.only or ["process", "matching", "mailboxes"]
    work = Path(tempfile.mkdtemp(prefix="ce-pg-bench-"))
    os.chmod(work, 0o755)  # Dovecot's and PostgreSQL's users traverse it
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    server = start_postgres(work / "pg", synchronous_commit=args.synchronous_commit)
    data: dict[str, Any] = {"name": "postgres", "started": started, "smoke": args.smoke,
                            "postgresql": server.settings}
    try:
        if "process" in parts:
            data["process"] = bench_process(server, work, args.count, args.reps,
                                            warmup=not args.smoke)
        if "matching" in parts:
            data["matching"] = bench_matching(server, work, args.small, args.large,
                                              args.messages, args.reps)
        if "mailboxes" in parts:
            data["mailboxes"] = bench_mailboxes(server, work, args.run_count, args.rounds,
                                                warmup=not args.smoke)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    data["machine"] = common.machine()
    human = human_line(data)
    if args.smoke:
        human = "smoke (results checked, sizes too small to time): " + human
    common.print_report(data, human, json_out=args.json_out)
    return 0


def human_line(data: dict[str, Any]) -> str:
    said = []
    if "process" in data:
        p = data["process"]
        said.append(
            f"process into PostgreSQL {p['postgresql_rate']['median']:.0f} msg/s vs SQLite "
            f"{p['sqlite_rate']['median']:.0f} msg/s = {p['ratio']['median']:.2f}x "
            f"(min {p['ratio']['min']:.2f} max {p['ratio']['max']:.2f}, {p['reps']} reps; "
            f"CPU {p['cpu_ratio']['median']:.2f}x)")
    if "matching" in data:
        m = data["matching"]
        said.append(
            f"matching on PostgreSQL {m['cards']['large']:,} cards vs {m['cards']['small']:,}: "
            f"cost {m['cost_ratio']['median']:.2f}x (min {m['cost_ratio']['min']:.2f} max "
            f"{m['cost_ratio']['max']:.2f}; target <= 1.2x; COPY import of "
            f"{m['cards']['large']:,} cards {m['import_seconds']['large']} s)")
    if "mailboxes" in data:
        b = data["mailboxes"]
        said.append(
            f"run --once three mailboxes {b['messages_per_s']['three']:.0f} msg/s vs one "
            f"{b['messages_per_s']['one']:.0f} msg/s = {b['speedup']['median']:.2f}x "
            f"(min {b['speedup']['min']:.2f} max {b['speedup']['max']:.2f}, {b['rounds']} "
            f"rounds, {b['messages']} messages, PostgreSQL; target >= 1.5x; the CPU time "
            f"allows {b['speedup_cpu_allows']['median']:.2f}x on {b['cores']} cores)")
    return "; ".join(said)


if __name__ == "__main__":
    sys.exit(main())
