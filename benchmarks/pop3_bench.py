"""Messages per second of ``run --once`` from Dovecot, against a bare poplib loop.

    python benchmarks/pop3_bench.py [--count N] [--rounds R] [--seed S] [--rtt-ms MS]
                                    [--smoke] [--json-only]

In one run, on one private Dovecot (started here, as the tests do), the same N messages
are put into three mailboxes and measured three ways:

- ``poplib``: a bare ``poplib.POP3`` loop, RETR + DELE per message, QUIT: the floor cost of
  moving the bytes through POP3, with no parsing and no store;
- ``run_once``: ``Runner(config, connector).run(once=True)``, the code behind
  ``commit-email run --once`` (in-process, so interpreter start-up is not counted), on a
  fresh SQLite file store with the Accounts loaded;
- ``process_files``: ``Connector.process`` on the same messages read from local files (what
  ``commit-email process`` does), on another fresh store: the pipeline without POP3.

Each round uses fresh mailboxes and stores; the order of the three rotates per round.
The ratio ``run_once / process_files`` is taken per round (the two ran minutes apart at
most, so a neighbour's load hits both) and reported as min / median / max; the message
rates are medians (the machine is shared, load comes and goes).
``--rtt-ms MS`` puts the network of a real deployment between client and server: ``poplib``
and ``run_once`` then talk to Dovecot through ``benchmarks/delay_proxy.py`` (in a child
process), which delays every chunk by ``MS / 2`` each way, so each command waits ``MS`` for
its reply unless it was pipelined. The bare loop pays two round trips per message (RETR,
then DELE); the report adds what the round trips cost each side.
The corpus is ``benchmarks/gen_corpus.py``'s when that module exists, else simple customer
mail made here. Prints one JSON object, then one line for humans (``--json-only`` drops
it). ``--smoke`` uses a few messages, for CI: it checks the benchmark runs, not the speed.
Needs root (Dovecot's Maildir is handed to the dovecot user) and ``dovecot-pop3d``.
"""

from __future__ import annotations

import argparse
import contextlib
import email.policy
import json
import os
import platform
import poplib
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.delay_proxy import DelayProxy
from commit_email.accounts_csv import read_accounts_csv
from commit_email.config import Config, parse_config
from commit_email.model import Account, SourceRef
from commit_email.pipeline import Connector
from commit_email.runner import Runner
from commit_email.store import open_store
from tests.dovecot_fixtures import DovecotServer, dovecot_binary, start_dovecot

try:  # the shared corpus generator, when the benchmarks helper's module is there
    from benchmarks import gen_corpus
except ImportError:
    gen_corpus = None

SEED = 20261128


def simple_corpus(count: int, seed: int) -> tuple[list[bytes], list[Account]]:
    """Customer mail from 50 customer domains (tickets), 20% from strangers (forwards),
    bodies of 1-30 KB and an attachment on every tenth message."""
    rng = random.Random(seed)
    accounts = [
        Account(rec_id=f"CRDBENCH{n:012d}", file_as=f"Customer {n}", email1=f"cust{n}.example")
        for n in range(50)
    ]
    messages = []
    for i in range(count):
        msg = EmailMessage(policy=email.policy.SMTP)
        domain = f"cust{rng.randrange(50)}.example" if rng.random() < 0.8 else "nowhere.example"
        msg["From"] = f"user{i}@{domain}"
        msg["To"] = "support@msp.example"
        msg["Subject"] = f"Request {i}: printer on floor {rng.randrange(9)}"
        msg["Message-ID"] = f"<bench{i}.{seed}@{domain}>"
        msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
        words = rng.choices(["printer", "toner", "network", "mail", "please", "urgent"], k=200)
        msg.set_content((" ".join(words) + "\n") * rng.randint(1, 25))
        if i % 10 == 0:
            msg.add_attachment(rng.randbytes(rng.randint(20_000, 200_000)),
                               maintype="application", subtype="octet-stream",
                               filename=f"log{i}.bin")
        messages.append(msg.as_bytes())
    return messages, accounts


def load_corpus(count: int, seed: int) -> tuple[list[bytes], list[Account], str]:
    if gen_corpus is None:
        messages, accounts = simple_corpus(count, seed)
        return messages, accounts, "simple (benchmarks/gen_corpus.py not present)"
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = gen_corpus.write_accounts_csv(Path(tmp) / "a.csv",
                                                 gen_corpus.accounts(5000, seed))
        accounts = read_accounts_csv(csv_path)
    return gen_corpus.generate(count, seed), accounts, "benchmarks/gen_corpus.py"


def config_for(server: DovecotServer, work: Path, name: str) -> Config:
    db = work / f"{name}.db"
    data = {
        "connector": {"public_address": "support@msp.example",
                      "internal_address": "helpdesk@msp.example",
                      "state_dir": str(work / f"{name}-state")},
        "store": {"url": f"sqlite:///{db}"},
        "pop3": {"host": server.host, "port": server.pop3_port, "security": "plain",
                 "user": server.user, "password": server.password, "timeout": 60.0},
    }
    return parse_config(data)


def connector_for(config: Config, accounts: Sequence[Account]) -> Connector:
    store = open_store(config.store.url)
    store.import_accounts(accounts)
    return Connector.from_config(config, store=store, autoload=False)


def warm_up(server: DovecotServer, work: Path, accounts: Sequence[Account],
            messages: Sequence[bytes]) -> None:
    """Pay one-time costs (lazy imports, regex compilation, SQLite page cache) before any
    timing, so that whichever measurement runs first is not charged for them."""
    connector = connector_for(config_for(server, work, "warm-up"), accounts)
    for raw in messages:
        connector.process(raw, SourceRef(kind="bytes"))


def bench_poplib(server: DovecotServer, count: int) -> float:
    started = time.perf_counter()
    pop = poplib.POP3(server.host, server.pop3_port, timeout=60)
    pop.user(server.user)
    pop.pass_(server.password)
    for number in range(1, count + 1):
        pop.retr(number)
        pop.dele(number)
    pop.quit()
    return time.perf_counter() - started


def bench_run_once(server: DovecotServer, work: Path, accounts: Sequence[Account],
                   name: str) -> float:
    config = config_for(server, work, name)
    connector = connector_for(config, accounts)
    runner = Runner(config, connector)
    started = time.perf_counter()
    status = runner.run(once=True)
    elapsed = time.perf_counter() - started
    if status != 0 or server.message_files():
        raise SystemExit(f"run --once failed (status {status}); not a number to report")
    return elapsed


def bench_process(files: Sequence[Path], server: DovecotServer, work: Path,
                  accounts: Sequence[Account], name: str) -> float:
    connector = connector_for(config_for(server, work, name), accounts)
    started = time.perf_counter()
    for path in files:
        connector.process(path.read_bytes(), SourceRef(kind="file", name=str(path)))
    return time.perf_counter() - started


def through(box: DovecotServer, proxy: DelayProxy | None) -> DovecotServer:
    """The mailbox as the client sees it: behind the delay proxy when there is one."""
    if proxy is None:
        return box
    return attrs.evolve(box, host=proxy.host, pop3_port=proxy.port, process=None)


def measure(server: DovecotServer, proxy: DelayProxy | None, work: Path,
            accounts: Sequence[Account], messages: Sequence[bytes], files: Sequence[Path],
            rounds: int) -> dict[str, list[float]]:
    """Seconds per round of each of the three, in fresh mailboxes and stores every round."""
    count = len(messages)
    times: dict[str, list[float]] = {"poplib": [], "run_once": [], "process_files": []}
    for r in range(rounds):
        bare_box, run_box = server.new_user(), server.new_user()
        bare_box.deliver_many(list(messages))
        run_box.deliver_many(list(messages))
        steps = [
            ("poplib", partial(bench_poplib, through(bare_box, proxy), count)),
            ("run_once",
             partial(bench_run_once, through(run_box, proxy), work, accounts, f"run{r}")),
            ("process_files",
             partial(bench_process, files, server, work, accounts, f"process{r}")),
        ]
        # Rotate the order per round: on a shared machine, load comes and goes, and no
        # measurement should always get the same slot.
        for name, step in steps[r % 3:] + steps[: r % 3]:
            times[name].append(step())
    return times


def round_trip_costs(times: dict[str, list[float]], count: int, rtt: float) -> dict[str, float]:
    """What the round trips cost, in round trips: the bare loop's per message (2 when the
    server's work is nothing), and what ``run --once`` took beyond ``process`` on files."""
    t_poplib, t_run, t_process = (statistics.median(times[k])
                                  for k in ("poplib", "run_once", "process_files"))
    return {
        "poplib_rtts_per_message": round(t_poplib / count / rtt, 2),
        "run_once_extra_seconds": round(t_run - t_process, 3),
        "run_once_extra_rtts": round((t_run - t_process) / rtt, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rounds", type=int, default=3,
                        help="repetitions (order rotated); medians are reported")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="round trip time to add between client and Dovecot (0: loopback)")
    parser.add_argument("--smoke", action="store_true", help="30 messages, 1 round, for CI")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    count = 30 if args.smoke else args.count
    rounds = 1 if args.smoke else max(1, args.rounds)
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must not be negative")
    if dovecot_binary() is None:
        print("pop3_bench: dovecot is not installed (apt-get install dovecot-pop3d)",
              file=sys.stderr)
        return 2
    messages, accounts, corpus_name = load_corpus(count, args.seed)
    work = Path(tempfile.mkdtemp(prefix="commit-email-pop3-bench-"))
    server = start_dovecot(work / "dovecot")
    try:
        files_dir = work / "files"
        files_dir.mkdir()
        files = []
        for i, raw in enumerate(messages):
            path = files_dir / f"{i:06d}.eml"
            path.write_bytes(raw)
            files.append(path)
        warm_up(server, work, accounts, messages[:20])
        with contextlib.ExitStack() as stack:
            proxy = None
            if args.rtt_ms > 0:
                proxy = stack.enter_context(
                    DelayProxy(server.host, server.pop3_port, delay_ms=args.rtt_ms / 2))
            times = measure(server, proxy, work, accounts, messages, files, rounds)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    total = sum(len(m) for m in messages)
    t_poplib, t_run, t_process = (statistics.median(times[k])
                                  for k in ("poplib", "run_once", "process_files"))
    per_round = [p / r for p, r in zip(times["process_files"], times["run_once"], strict=True)]
    vs_poplib = [b / r for b, r in zip(times["poplib"], times["run_once"], strict=True)]
    result: dict[str, Any] = {
        "benchmark": "pop3",
        "messages": count,
        "bytes": total,
        "corpus": corpus_name,
        "seed": args.seed,
        "rounds": rounds,
        "rtt_ms": args.rtt_ms,
        "seconds_per_round": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "median_seconds": {"poplib": round(t_poplib, 3), "run_once": round(t_run, 3),
                           "process_files": round(t_process, 3)},
        "messages_per_s": {"poplib": round(count / t_poplib, 1),
                           "run_once": round(count / t_run, 1),
                           "process_files": round(count / t_process, 1)},
        "run_once_vs_poplib": round(statistics.median(vs_poplib), 4),
        "run_once_vs_process_files": round(statistics.median(per_round), 4),
        "run_once_vs_process_files_per_round": {
            "min": round(min(per_round), 4), "median": round(statistics.median(per_round), 4),
            "max": round(max(per_round), 4)},
        "smoke": args.smoke,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
    }
    if args.rtt_ms > 0:
        result["round_trips"] = round_trip_costs(times, count, args.rtt_ms / 1000)
    print(json.dumps(result, indent=2))
    if not args.json_only:
        print(human_line(result, per_round))
    return 0


def human_line(result: dict[str, Any], per_round: Sequence[float]) -> str:
    rate, count, rtt = result["messages_per_s"], result["messages"], result["rtt_ms"]
    vs_poplib, vs_process = result["run_once_vs_poplib"], result["run_once_vs_process_files"]
    spread = f"; per round min {min(per_round):.2f}x max {max(per_round):.2f}x"
    if not rtt:
        return (
            f"run --once: {rate['run_once']} msg/s from Dovecot = "
            f"{vs_poplib:.1%} of a bare poplib RETR loop "
            f"({rate['poplib']} msg/s) and {vs_process:.2f}x "
            f"`process` on the same {count} messages as files ({rate['process_files']} msg/s)"
            + spread
        )
    trips = result["round_trips"]
    return (
        f"over a {rtt:g} ms round trip: run --once {rate['run_once']} msg/s = "
        f"{vs_poplib:.2f}x a bare poplib RETR+DELE loop ({rate['poplib']} msg/s, "
        f"{trips['poplib_rtts_per_message']} round trips per message) and {vs_process:.2f}x "
        f"`process` on the same {count} messages as files ({rate['process_files']} msg/s); "
        f"run --once took {trips['run_once_extra_seconds']} s "
        f"(= {trips['run_once_extra_rtts']} round trips) more than `process`" + spread
    )


if __name__ == "__main__":
    raise SystemExit(main())
