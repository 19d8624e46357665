"""Messages per second of ``run --once`` over IMAP against a bare IMAPClient loop, and how
soon a mail delivered while ``run`` IDLEs gets its outcome.

    python benchmarks/imap_bench.py [--count N] [--rounds R] [--seed S] [--rtt-ms MS]
                                    [--idle-samples K] [--smoke] [--json-only]

In one run, on one private Dovecot (started here, as the tests do), the same N messages
are put into fresh mailboxes and measured three ways per round (order rotated):

- ``imapclient``: a bare IMAPClient loop: SELECT, UID SEARCH, UID FETCH BODY.PEEK[] in
  batches of 64, one UID MOVE of them all to ``Processed``: the floor cost of moving the
  bytes through IMAP, with no parsing and no store;
- ``run_once``: ``Runner(config, connector).run(once=True)`` with ``[imap] after = "move"``
  (the code behind ``commit-email run --once``, in-process), on a fresh SQLite store with
  the Accounts loaded;
- ``process_files``: ``Connector.process`` on the same messages read from local files (what
  ``commit-email process`` does), on another fresh store: the pipeline without IMAP.

The ratios are taken per round and reported as medians. Then the IDLE latency: ``run`` (not
``--once``) is started on a fresh mailbox with ``idle = true``; K messages are delivered
into its Maildir one at a time, at random gaps, and the seconds from the delivery to the
message's outcome are reported (median, max). Dovecot is configured, as in the tests, to
check a mailbox for changes every second while a client IDLEs (``mailbox_idle_check_interval
= 1 secs``; its default is 30 s, and a delivery through Dovecot's LDA is seen at once).

``--rtt-ms MS`` puts ``benchmarks/delay_proxy.py`` between both IMAP clients and Dovecot.
Prints one JSON object, then one line for humans (``--json-only`` drops it). ``--smoke``
uses a few messages and samples, for CI: it checks the benchmark runs, not the speed.
Needs root (Dovecot's Maildir is handed to the dovecot user) and ``dovecot-imapd``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.delay_proxy import DelayProxy
from benchmarks.pop3_bench import SEED, connector_for, load_corpus
from commit_email.config import Config, parse_config
from commit_email.model import Account, Outcome, SourceRef
from commit_email.runner import Runner
from tests.dovecot_fixtures import DovecotServer, imap_binary, start_dovecot

_BATCH = 64


def config_for(server: DovecotServer, work: Path, name: str, **imap: Any) -> Config:
    return parse_config({
        "connector": {"public_address": "support@msp.example",
                      "internal_address": "helpdesk@msp.example",
                      "state_dir": str(work / f"{name}-state")},
        "store": {"url": f"sqlite:///{work / f'{name}.db'}"},
        "imap": {"host": server.host, "port": server.imap_port, "security": "plain",
                 "user": server.user, "password": server.password, "timeout": 60.0,
                 "after": "move", **imap},
    })


def bench_imapclient(server: DovecotServer, count: int) -> float:
    import imapclient  # noqa: PLC0415 - the imap extra, needed only here

    started = time.perf_counter()
    client = imapclient.IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=60)
    client.login(server.user, server.password)
    client.create_folder("Processed")
    client.select_folder("INBOX")
    uids = client.search(["ALL"])
    fetched = 0
    for i in range(0, len(uids), _BATCH):
        fetched += len(client.fetch(uids[i:i + _BATCH], ["BODY.PEEK[]"]))
    client.move(uids, "Processed")
    client.logout()
    elapsed = time.perf_counter() - started
    if fetched != count:
        raise SystemExit(f"the bare loop fetched {fetched} of {count} messages")
    return elapsed


def bench_run_once(server: DovecotServer, work: Path, accounts: Sequence[Account],
                   name: str) -> float:
    config = config_for(server, work, name)
    runner = Runner(config, connector_for(config, accounts))
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
    return attrs.evolve(box, host=proxy.host, imap_port=proxy.port, process=None)


def idle_latencies(server: DovecotServer, proxy: DelayProxy | None, work: Path,
                   accounts: Sequence[Account], messages: Sequence[bytes],
                   seed: int) -> list[float]:
    """Seconds from each delivery to its outcome while ``run`` waits in IDLE."""
    config = config_for(through(server, proxy), work, "idle", idle=True, poll_interval=600)
    done = threading.Event()

    def on_outcome(source: SourceRef, outcome: Outcome) -> None:
        done.set()

    runner = Runner(config, connector_for(config, accounts), on_outcome=on_outcome)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    rng = random.Random(seed)
    latencies = []
    try:
        time.sleep(1.0)  # logged in and idling
        for raw in messages:
            done.clear()
            delivered = time.perf_counter()
            server.deliver(raw)
            if not done.wait(60):
                raise SystemExit("a message delivered during IDLE got no outcome in 60 s")
            latencies.append(time.perf_counter() - delivered)
            time.sleep(rng.uniform(0.2, 0.6))  # back in IDLE, at a random phase
    finally:
        runner.request_stop()
        thread.join(30)
    if runner.last_error is not None:
        raise SystemExit(f"run stopped on an error: {runner.last_error}")
    return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rounds", type=int, default=3,
                        help="repetitions (order rotated); medians are reported")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="round trip time to add between client and Dovecot (0: loopback)")
    parser.add_argument("--idle-samples", type=int, default=20)
    parser.add_argument("--smoke", action="store_true",
                        help="30 messages, 1 round, 3 IDLE samples, for CI")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    count = 30 if args.smoke else args.count
    rounds = 1 if args.smoke else max(1, args.rounds)
    samples = 3 if args.smoke else max(1, args.idle_samples)
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must not be negative")
    if imap_binary() is None:
        print("imap_bench: Dovecot's IMAP server is not installed (apt-get install "
              "dovecot-imapd)", file=sys.stderr)
        return 2
    messages, accounts, corpus_name = load_corpus(count, args.seed)
    work = Path(tempfile.mkdtemp(prefix="commit-email-imap-bench-"))
    server = start_dovecot(work / "dovecot")
    times: dict[str, list[float]] = {"imapclient": [], "run_once": [], "process_files": []}
    try:
        files_dir = work / "files"
        files_dir.mkdir()
        files = []
        for i, raw in enumerate(messages):
            path = files_dir / f"{i:06d}.eml"
            path.write_bytes(raw)
            files.append(path)
        # one-time costs (imports, regexes, page cache) before any timing
        bench_process(files[:20], server, work, accounts, "warm-up")
        with contextlib.ExitStack() as stack:
            proxy = None
            if args.rtt_ms > 0:
                proxy = stack.enter_context(
                    DelayProxy(server.host, server.imap_port, delay_ms=args.rtt_ms / 2))
            for r in range(rounds):
                bare_box, run_box = server.new_user(), server.new_user()
                bare_box.deliver_many(list(messages))
                run_box.deliver_many(list(messages))
                steps = [
                    ("imapclient", partial(bench_imapclient, through(bare_box, proxy), count)),
                    ("run_once", partial(bench_run_once, through(run_box, proxy), work,
                                         accounts, f"run{r}")),
                    ("process_files", partial(bench_process, files, server, work, accounts,
                                              f"process{r}")),
                ]
                for name, step in steps[r % 3:] + steps[: r % 3]:
                    times[name].append(step())
            idle = idle_latencies(server.new_user(), proxy, work, accounts,
                                  messages[:samples], args.seed)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    vs_process = [p / r for p, r in zip(times["process_files"], times["run_once"], strict=True)]
    vs_bare = [b / r for b, r in zip(times["imapclient"], times["run_once"], strict=True)]
    result: dict[str, Any] = {
        "benchmark": "imap",
        "messages": count,
        "bytes": sum(len(m) for m in messages),
        "corpus": corpus_name,
        "seed": args.seed,
        "rounds": rounds,
        "rtt_ms": args.rtt_ms,
        "seconds_per_round": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "messages_per_s": {k: round(count / t, 1) for k, t in medians.items()},
        "run_once_vs_process_files": round(statistics.median(vs_process), 4),
        "run_once_vs_process_files_min_max": [round(min(vs_process), 4),
                                              round(max(vs_process), 4)],
        "run_once_vs_imapclient": round(statistics.median(vs_bare), 4),
        "idle_latency_s": {"samples": len(idle), "median": round(statistics.median(idle), 3),
                           "max": round(max(idle), 3)},
        "smoke": args.smoke,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
    }
    print(json.dumps(result, indent=2))
    if not args.json_only:
        rate, latency = result["messages_per_s"], result["idle_latency_s"]
        where = f" over a {args.rtt_ms:g} ms round trip" if args.rtt_ms else ""
        print(f"run --once{where}: {rate['run_once']} msg/s from Dovecot IMAP = "
              f"{result['run_once_vs_process_files']:.2f}x `process` on the same {count} "
              f"files ({rate['process_files']} msg/s) and "
              f"{result['run_once_vs_imapclient']:.1%} of a bare IMAPClient fetch+move loop "
              f"({rate['imapclient']} msg/s); IDLE: outcome {latency['median']} s after "
              f"delivery (median of {latency['samples']}, max {latency['max']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
