"""``commit-email process`` and ``run --once`` with mail going out through a distant relay,
against the same commands without SMTP, in the same run.

    python benchmarks/smtp_bench.py [--count N] [--reps R] [--rtt-ms 0,10,40]
                                    [--pop3-rtt-ms 40] [--connections K] [--no-pop3]
                                    [--smoke] [--json-out FILE]

The relay is aiosmtpd (the tests' ``SmtpTestServer``: STARTTLS required, AUTH PLAIN/LOGIN
after it, PIPELINING offered, a throw-away CA's certificate) in a child process of its own,
so that its event loop does not compete with the measured code for the interpreter lock;
``benchmarks/delay_proxy.py`` (another child process) sits between commit-email and it and
adds the round trip time (0 ms: through the proxy without delay). The mail is the benchmark
corpus (``gen_corpus.py``) with its 5,000 Accounts; with ``[smtp]`` configured, every ticket
opened by email-to-ticket is answered (the auto-response, on by default) and every mail no
stage consumes is forwarded to ``internal_address``: more than half of the corpus causes
outgoing mail (checked, or the benchmark fails).

Measured, repetitions interleaved (``common.interleaved``, each side on a fresh store):

- for each RTT: ``commit-email process --json DIR`` (in-process) with ``[smtp]`` through
  the proxy, against ``process`` of the same files with no ``[smtp]`` (the outbox is still
  written, nothing is sent). ``process`` waits at the end until the outbox is sent
  (``smtp.drain_timeout``), so its time includes the drain;
- ``commit-email run --once --json`` from a private Dovecot POP3 (as ``pop3_bench.py``
  starts it; a fresh mailbox holding the N mails for each repetition) with SMTP at
  ``--pop3-rtt-ms``, against ``run --once`` without ``[smtp]``. Needs root and Dovecot:
  without them this part is skipped with a note, except under ``CI=true`` (a failure).

After every run with SMTP the benchmark checks, and fails otherwise, that every mail in
the outbox is marked sent and arrived at the server **exactly once** (counted by
Message-ID at the server), over TLS and logged in, and nothing else arrived; it reports the
TCP connections the server accepted per 1,000 mails sent, and the bound the round trip
sets: one mail per round trip and session, so ``smtp.connections`` sessions need at least
``outgoing x RTT / connections`` seconds (``--connections`` overrides the default).
Output: one JSON object, then one line for humans. ``--smoke``: 30 mails, 10 ms, one
repetition, no warm-up: it checks the results and judges no timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import common
from benchmarks.delay_proxy import DelayProxy
from commit_email.config import SmtpConfig
from commit_email.outgoing import replied_to

RTTS_MS = (0.0, 10.0, 40.0)
USER, PASSWORD = "support", "secret"  # what tests/smtp_fixtures.py's server accepts


# ---------------------------------------------------------------------------- the relay


def serve_smtp(ca_dir: Path, out: TextIO = sys.stdout) -> int:
    """The child process: the tests' aiosmtpd server with STARTTLS, AUTH and PIPELINING.

    Prints ``{"host": ..., "port": ...}`` when it listens, then answers commands read from
    stdin, one a line: ``clear`` (forget what arrived, start counting connections anew) and
    ``stats`` (one JSON line: connections, Message-IDs with their counts, mails not over TLS
    or not logged in, how many MAILs came pipelined). Ends at the end of stdin."""
    logging.basicConfig(level=logging.ERROR)
    from tests.dovecot_fixtures import TestCA  # noqa: PLC0415
    from tests.smtp_fixtures import SmtpTestServer  # noqa: PLC0415

    ca = TestCA(ca_cert=ca_dir / "ca.pem", server_cert=ca_dir / "server.pem",
                server_key=ca_dir / "server.key")
    server = SmtpTestServer(security="starttls", ca=ca, pipelining=True)
    server.start()
    parser = BytesHeaderParser(policy=compat32)
    base_connections = base_pipelined = 0
    try:
        print(json.dumps({"host": server.host, "port": server.port}), file=out, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "clear":
                server.clear()
                base_connections = server.connections
                base_pipelined = len(server.pipelined)
                print("{}", file=out, flush=True)
            elif command == "stats":
                mails = server.messages
                ids = Counter(
                    str(parser.parsebytes(m.data).get("Message-ID", "")).strip().strip("<>")
                    for m in mails)
                pipelined = server.pipelined[base_pipelined:]
                print(json.dumps({
                    "connections": server.connections - base_connections,
                    "mails": len(mails),
                    "message_ids": ids,
                    "not_tls": sum(not m.tls for m in mails),
                    "not_logged_in": sum(m.auth_user != USER for m in mails),
                    "mail_commands": len(pipelined),
                    "pipelined": sum(pipelined),
                }), file=out, flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), file=out,
                      flush=True)
    finally:
        server.stop()
    return 0


class Relay:
    """The aiosmtpd child process, for as long as the ``with`` block lasts."""

    def __init__(self, ca_dir: Path) -> None:
        self.ca_dir = ca_dir
        self.host = "127.0.0.1"
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Relay:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-smtp", str(self.ca_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        info = self._read()
        self.host, self.port = info["host"], info["port"]
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def _read(self) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise SystemExit("smtp_bench: the SMTP server process ended")
        data: dict[str, Any] = json.loads(line)
        return data

    def _ask(self, command: str) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def clear(self) -> None:
        self._ask("clear")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")


def smtp_toml(host: str, port: int, ca_file: Path, connections: int | None) -> str:
    lines = [
        "[smtp]",
        f'host = "{host}"',
        f"port = {port}",
        'security = "starttls"',
        f'user = "{USER}"',
        f'password = "{PASSWORD}"',
        f'ca_file = "{ca_file}"',
        'from_address = "support@msp.example"',
    ]
    if connections is not None:
        lines.append(f"connections = {connections}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- one side


class Side:
    """One side of a comparison: a fresh installation before each run (untimed), the run,
    and the check of what it did (also untimed: done before the next run, and at the end)."""

    def __init__(self, name: str, inst: common.Installation, count: int,
                 run: Callable[[common.Installation], list[dict[str, Any]]], *,
                 relay: Relay | None = None,
                 before: Callable[[common.Installation], None] | None = None) -> None:
        self.name = name
        self.inst = inst
        self.count = count
        self._run = run
        self.relay = relay
        self._before = before
        self._outcomes: list[dict[str, Any]] | None = None
        #: one record per checked run
        self.checked: list[dict[str, Any]] = []

    def prepare(self) -> None:
        self.finish()
        if self._before is not None:
            self._before(self.inst)
        self.inst.reset()
        if self.relay is not None:
            self.relay.clear()

    def run(self) -> None:
        self._outcomes = self._run(self.inst)

    def finish(self) -> None:
        outcomes, self._outcomes = self._outcomes, None
        if outcomes is None:
            return
        record = check_run(self.name, self.inst.db, outcomes, self.count,
                           self.relay.stats() if self.relay is not None else None)
        self.checked.append(record)


def outbox_rows(db: Path) -> list[tuple[str, bool, bytes]]:
    """(Message-ID, sent, raw) of every outbox row."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [(str(m).strip("<>"), s is not None, bytes(r)) for m, s, r in
                conn.execute("SELECT message_id, sent, raw FROM outbox ORDER BY id")]


def check_run(name: str, db: Path, outcomes: Sequence[dict[str, Any]], count: int,
              stats: dict[str, Any] | None) -> dict[str, Any]:
    """What one run did; exits non-zero when it did not do all of it."""
    problems = []
    tally = Counter(str(o["outcome"]) for o in outcomes)
    if len(outcomes) != count:
        problems.append(f"{len(outcomes)} outcomes for {count} mails")
    if tally["quarantined"]:
        problems.append(f"{tally['quarantined']} quarantined")
    rows = outbox_rows(db)
    causes = {replied_to(raw) for _, _, raw in rows} - {""}
    record: dict[str, Any] = {"outcomes": dict(sorted(tally.items())), "outgoing": len(rows),
                              "mails_causing_outgoing": len(causes)}
    if stats is None:
        if any(sent for _, sent, _ in rows):
            problems.append("mail marked sent without [smtp]")
    else:
        if 2 * len(causes) < count:
            problems.append(f"only {len(causes)} of {count} mails caused outgoing mail "
                            "(at least half must)")
        unsent = sum(not sent for _, sent, _ in rows)
        if unsent:
            problems.append(f"{unsent} of {len(rows)} outgoing mails not sent at the end")
        arrived: dict[str, int] = stats["message_ids"]
        ours = Counter(mid for mid, _, _ in rows)
        if any(n != 1 for n in ours.values()):
            problems.append("two outbox rows share a Message-ID")
        missing = [m for m in ours if arrived.get(m, 0) == 0]
        twice = {m: n for m, n in arrived.items() if n > 1}
        strangers = [m for m in arrived if m not in ours]
        if missing:
            problems.append(f"{len(missing)} mails never arrived, e.g. {missing[:3]}")
        if twice:
            problems.append(f"{len(twice)} mails arrived more than once, e.g. "
                            f"{list(twice.items())[:3]}")
        if strangers:
            problems.append(f"{len(strangers)} mails arrived that are not in the outbox")
        if stats["not_tls"] or stats["not_logged_in"]:
            problems.append(f"{stats['not_tls']} mails arrived without TLS, "
                            f"{stats['not_logged_in']} without AUTH")
        record.update(
            delivered_once=len(ours) - len(missing),
            connections=stats["connections"],
            connections_per_1000_sent=round(1000 * stats["connections"] / max(1, len(rows)), 2),
            pipelined_mail_commands=f"{stats['pipelined']}/{stats['mail_commands']}",
        )
    if problems:
        raise SystemExit(f"smtp_bench: {name}: " + "; ".join(problems))
    return record


def add_bound(data: dict[str, Any], sessions: int) -> None:
    """What the round trip allows: a session sends at most one mail per round trip (a mail's
    content must wait for the 354 to its DATA, pipelined or not), so ``sessions`` of them
    send at most ``sessions / rtt`` mails a second; ``process`` cannot end sooner than the
    outgoing mail takes at that rate."""
    rtt = data["rtt_ms"] / 1000
    data["smtp_sessions"] = sessions
    if rtt > 0:
        rate = sessions / rtt
        data["sessions_bound_mails_per_s"] = round(rate, 1)
        data["sessions_bound_seconds"] = round(data["outgoing_mails"] / rate, 2)


def compare(label: str, subject: Side, reference: Side, *, count: int, nbytes: int,
            reps: int, warmup: bool) -> dict[str, Any]:
    """``subject`` against ``reference``, interleaved; the JSON of the comparison."""
    result = common.interleaved(
        label, subject.run, reference.run, messages=count, nbytes=nbytes, reps=reps,
        warmup=warmup, before_subject=subject.prepare, before_floor=reference.prepare)
    subject.finish()
    reference.finish()
    data = result.to_json()
    data.pop("machine")
    # In this comparison the "floor" is the same command without SMTP.
    data["reference_rate"] = data.pop("floor_rate")
    data["reference_cpu_rate"] = data.pop("floor_cpu_rate")
    data["runs_with_smtp"] = subject.checked
    data["runs_without_smtp"] = reference.checked
    last = subject.checked[-1]
    data["outgoing_mails"] = last["outgoing"]
    data["connections_per_1000_sent"] = statistics.median(
        r["connections_per_1000_sent"] for r in subject.checked)
    return data


# ---------------------------------------------------------------------------- the commands


def process_json(msg_dir: Path) -> Callable[[common.Installation], list[dict[str, Any]]]:
    def run(inst: common.Installation) -> list[dict[str, Any]]:
        out = common.cli("process", "--config", str(inst.config), "--json", str(msg_dir))
        return [json.loads(line) for line in out.splitlines() if line.strip()]
    return run


def run_once_json(inst: common.Installation) -> list[dict[str, Any]]:
    out = common.cli("run", "--config", str(inst.config), "--once", "--json")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def pop3_toml(box: Any) -> str:
    return (f'[pop3]\nhost = "{box.host}"\nport = {box.pop3_port}\nsecurity = "plain"\n'
            f'user = "{box.user}"\npassword = "{box.password}"\ntimeout = 60\n')


def dovecot_available() -> str | None:
    """None when this machine can run the private Dovecot, else why not."""
    from tests.dovecot_fixtures import dovecot_binary  # noqa: PLC0415

    if dovecot_binary() is None:
        return "dovecot is not installed (apt-get install dovecot-pop3d)"
    if os.geteuid() != 0:
        return "not root (Dovecot's Maildir is handed to the dovecot user)"
    return None


@contextlib.contextmanager
def dovecot(work: Path) -> Iterator[Any]:
    from tests.dovecot_fixtures import start_dovecot  # noqa: PLC0415

    try:
        server = start_dovecot(work / "dovecot")
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rtt-ms", default=",".join(f"{r:g}" for r in RTTS_MS),
                        help="round trips to the relay for `process`, comma-separated")
    parser.add_argument("--pop3-rtt-ms", type=float, default=40.0,
                        help="round trip to the relay for `run --once` from Dovecot")
    parser.add_argument("--connections", type=int, default=None,
                        help="smtp.connections (default: the configuration's default)")
    parser.add_argument("--no-pop3", action="store_true", help="skip the `run --once` part")
    parser.add_argument("--smoke", action="store_true",
                        help="30 mails, 10 ms, 1 repetition: checks results, no timing")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--serve-smtp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_smtp:
        return serve_smtp(args.serve_smtp)
    # `run` logs a line per message at INFO for the operator: here only warnings are shown
    # (the handler is in place before the CLI's basicConfig, which then adds none).
    quiet = logging.StreamHandler(sys.stderr)
    quiet.setLevel(logging.WARNING)
    logging.basicConfig(handlers=[quiet])
    if args.smoke:
        count, reps, rtts, pop3_rtt = 30, 1, [10.0], 10.0
    else:
        count, reps = args.count, max(1, args.reps)
        rtts = [float(r) for r in args.rtt_ms.split(",") if r.strip()]
        pop3_rtt = args.pop3_rtt_ms
    if any(r < 0 for r in (*rtts, pop3_rtt)):
        parser.error("round trips must not be negative")
    no_dovecot = None if args.no_pop3 else dovecot_available()
    if no_dovecot and os.environ.get("CI") == "true":
        raise SystemExit(f"smtp_bench: {no_dovecot}; under CI=true the run --once part "
                         "must run")
    from tests.dovecot_fixtures import make_test_ca  # noqa: PLC0415

    sessions = args.connections or SmtpConfig().connections
    with common.corpus(count) as (root, paths):
        msg_dir = paths[0].parent
        nbytes = sum(p.stat().st_size for p in paths)
        base = common.Installation.create(root, root / "accounts.csv")
        ca = make_test_ca(root / "ca")
        results: dict[str, Any] = {}
        with Relay(root / "ca") as relay:
            first = True
            for rtt in rtts:
                with DelayProxy(relay.host, relay.port, delay_ms=rtt / 2) as proxy:
                    toml = smtp_toml(proxy.host, proxy.port, ca.ca_cert, args.connections)
                    subject = Side(f"process, SMTP at {rtt:g} ms",
                                   base.variant(f"smtp{rtt:g}", toml), count,
                                   process_json(msg_dir), relay=relay)
                    reference = Side("process, no SMTP", base.variant(f"ref{rtt:g}"), count,
                                     process_json(msg_dir))
                    results[f"{rtt:g}"] = data = compare(
                        f"process with SMTP at {rtt:g} ms", subject, reference, count=count,
                        nbytes=nbytes, reps=reps, warmup=first and not args.smoke)
                    data["rtt_ms"] = rtt
                    add_bound(data, sessions)
                first = False
            pop3: dict[str, Any] | None = None
            if not args.no_pop3 and no_dovecot is None:
                messages = [p.read_bytes() for p in paths]
                work = Path(tempfile.mkdtemp(prefix="commit-email-smtp-bench-"))
                with dovecot(work) as server, \
                        DelayProxy(relay.host, relay.port, delay_ms=pop3_rtt / 2) as proxy:
                    def fill(smtp: str) -> Callable[[common.Installation], None]:
                        def before(inst: common.Installation) -> None:
                            box = server.new_user()
                            box.deliver_many(messages)
                            inst.extra = pop3_toml(box) + smtp
                        return before

                    toml = smtp_toml(proxy.host, proxy.port, ca.ca_cert, args.connections)
                    subject = Side(f"run --once, SMTP at {pop3_rtt:g} ms",
                                   base.variant("pop3-smtp"), count, run_once_json,
                                   relay=relay, before=fill(toml))
                    reference = Side("run --once, no SMTP", base.variant("pop3-ref"), count,
                                     run_once_json, before=fill(""))
                    pop3 = compare(f"run --once from Dovecot with SMTP at {pop3_rtt:g} ms",
                                   subject, reference, count=count, nbytes=nbytes, reps=reps,
                                   warmup=not args.smoke)
                    pop3["rtt_ms"] = pop3_rtt
                    add_bound(pop3, sessions)
    report: dict[str, Any] = {
        "benchmark": "smtp",
        "messages": count,
        "bytes": nbytes,
        "reps": reps,
        "smoke": args.smoke,
        "smtp": "aiosmtpd in a child process, STARTTLS + AUTH PLAIN, PIPELINING offered, "
                "behind delay_proxy.py",
        "smtp_connections_setting": args.connections,
        "process_by_rtt_ms": results,
        "run_once_pop3": pop3 if pop3 is not None else {"skipped": no_dovecot or "--no-pop3"},
        "target": "process with SMTP at 40 ms >= 0.5x process without SMTP",
        "machine": common.machine(),
    }
    common.print_report(report, human_line(report), json_out=args.json_out)
    return 0


def _ratio(data: dict[str, Any]) -> str:
    r = data["ratio"]
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def human_line(report: dict[str, Any]) -> str:
    by_rtt = report["process_by_rtt_ms"]
    parts = [f"{rtt} ms {data['subject_rate']['median']:.0f} msg/s = {_ratio(data)}"
             + (f" (its {data['smtp_sessions']} sessions need >= "
                f"{data['sessions_bound_seconds']:g} s for the mail out)"
                if "sessions_bound_seconds" in data else "")
             for rtt, data in by_rtt.items()]
    any_run = next(iter(by_rtt.values()))
    ref = statistics.median(d["reference_rate"]["median"] for d in by_rtt.values())
    conns = ", ".join(f"{d['connections_per_1000_sent']:g}" for d in by_rtt.values())
    line = (f"process of {report['messages']} mails with SMTP (STARTTLS+AUTH, "
            f"{any_run['outgoing_mails']} mails out, each delivered once) vs without "
            f"({ref:.0f} msg/s): " + "; ".join(parts)
            + f"; connections per 1,000 mails sent: {conns}")
    pop3 = report["run_once_pop3"]
    if "skipped" in pop3:
        line += f"; run --once from Dovecot skipped: {pop3['skipped']}"
    else:
        line += (f"; run --once from Dovecot with SMTP at {pop3['rtt_ms']:g} ms "
                 f"{pop3['subject_rate']['median']:.0f} vs {pop3['reference_rate']['median']:.0f}"
                 f" msg/s = {_ratio(pop3)}, {pop3['connections_per_1000_sent']:g} "
                 "connections per 1,000 sent")
    return line


if __name__ == "__main__":
    sys.exit(main())
