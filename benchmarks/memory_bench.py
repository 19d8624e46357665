"""Memory: one 25 MB message, and RSS over a long run.

Each case runs in a fresh child process (``--child``) so that the parent's corpus and
imports do not blur the figures; the child reads its own ``/proc/self/status``.

* **big**: a connector is set up and warmed on a few ordinary messages, the peak-RSS mark
  is reset (``/proc/self/clear_refs``), then one ~25 MB message (three base64 attachments)
  is read from disk and processed into the SQLite store. Reported: peak RSS growth over the
  RSS before reading the file, as a multiple of the message size (target <= 4x).
* **flat**: N generated messages (20,000 by default) are processed one after another into
  one store, as ``process`` or ``run`` would over a backlog. RSS is sampled every N/20
  messages; growth is measured from the sample at 10% (after warm-up: imports, caches,
  SQLite's page cache filling) to the end (target <= 10%).

    python benchmarks/memory_bench.py                   # 25 MB + 20,000 messages
    python benchmarks/memory_bench.py --smoke           # 2 MB + 300 messages: checks only
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import common, gen_corpus
from commit_email.config import load_config
from commit_email.model import OutcomeKind, SourceRef
from commit_email.pipeline import Connector


def _connector(root: Path) -> Connector:
    root.mkdir(parents=True, exist_ok=True)
    inst = common.Installation.create(root, gen_corpus.write_accounts_csv(
        root / "accounts.csv", gen_corpus.accounts(5000)))
    inst.reset()
    return Connector.from_config(load_config(inst.config))


def _reset_peak() -> bool:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child_big(root: Path, size: int) -> dict[str, object]:
    path = root / "big.eml"
    path.write_bytes(gen_corpus.big_message(size))
    connector = _connector(root / "inst")
    for raw in gen_corpus.generate(20):  # warm-up: lazy imports, statement cache, plugins
        connector.process(raw)
    gc.collect()
    reset = _reset_peak()
    before = common.rss_bytes()
    raw = path.read_bytes()
    outcome = connector.process(raw, SourceRef(kind="file", name=str(path)))
    peak = common.peak_rss_bytes()
    return {
        "message_bytes": len(raw),
        "outcome": outcome.kind.value,
        "attachments_stored": _documents(connector, outcome.ticket),
        "rss_before": before,
        "peak_rss": peak,
        "peak_reset": reset,
        "growth_bytes": peak - before,
        "growth_x": round((peak - before) / len(raw), 2),
    }


def _documents(connector: Connector, ticket: str | None) -> int:
    if not ticket:
        return 0
    found = connector.sink.get_ticket(number=ticket)
    documents = getattr(connector.sink, "documents", None)
    if not found or documents is None:
        return 0
    return sum(1 for d in documents(found.rec_id) if d.kind == "attachment")


def child_flat(root: Path, count: int) -> dict[str, object]:
    connector = _connector(root / "inst")
    every = max(1, count // 20)
    samples: list[tuple[int, int]] = []
    outcomes: dict[str, int] = {}
    for i, raw in enumerate(gen_corpus.iter_messages(count), start=1):
        outcome = connector.process(raw, SourceRef(kind="bytes", uidl=str(i)))
        outcomes[outcome.kind.value] = outcomes.get(outcome.kind.value, 0) + 1
        if i % every == 0:
            samples.append((i, common.rss_bytes()))
    warm = next(rss for i, rss in samples if i >= count // 10)
    end = samples[-1][1]
    return {
        "messages": count,
        "outcomes": dict(sorted(outcomes.items())),
        "rss_samples_mb": [(i, round(rss / 2**20, 1)) for i, rss in samples],
        "rss_after_10pct": warm,
        "rss_end": end,
        "growth_pct": round(100 * (end - warm) / warm, 1),
    }


def run_child(mode: str, arg: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--arg", str(arg)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"memory_bench child {mode} failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=25_000_000, help="big message bytes")
    parser.add_argument("--count", type=int, default=20_000, help="messages in the flat run")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--child", choices=("big", "flat"), help=argparse.SUPPRESS)
    parser.add_argument("--arg", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        with tempfile.TemporaryDirectory(prefix="ce-mem-") as tmp:
            func = child_big if args.child == "big" else child_flat
            print(json.dumps(func(Path(tmp), args.arg)))
        return 0

    size, count = (2_000_000, 300) if args.smoke else (args.size, args.count)
    big = run_child("big", size)
    flat = run_child("flat", count)
    if big["outcome"] != OutcomeKind.TICKET_CREATED.value or big["attachments_stored"] != 3:
        raise SystemExit(f"memory_bench: the big message was not filed with its attachments: {big}")
    if "quarantined" in flat["outcomes"]:  # type: ignore[operator]
        raise SystemExit(f"memory_bench: messages quarantined in the flat run: {flat['outcomes']}")
    data = {"name": "memory", "big": big, "flat": flat,
            "targets": {"big_growth_x": 4.0, "flat_growth_pct": 10.0}, "machine": common.machine()}
    human = (
        f"memory: {big['message_bytes'] / 1e6:.1f} MB message -> peak RSS growth "
        f"{big['growth_bytes'] / 1e6:.1f} MB = {big['growth_x']}x its size (target <= 4x); "
        f"{count:,} messages -> RSS {flat['rss_after_10pct'] / 2**20:.1f} MB at 10% to "
        f"{flat['rss_end'] / 2**20:.1f} MB at the end = {flat['growth_pct']:+}% (target <= 10%)"
    )
    common.print_report(data, human, json_out=args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
