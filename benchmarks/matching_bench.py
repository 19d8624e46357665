"""Sender matching cost on a big directory against a small one, in the same run.

Two SQLite stores, loaded through the store's ``import_accounts`` (the ``accounts import``
path): 1,000 Accounts + 2,000 secondary contacts, and 100,000 Accounts + 200,000 contacts.
Each gets the same number of generated messages whose senders are drawn from its own
directory (contacts, Account addresses, domain matches, strangers at public domains). The
timed work is what the pipeline does per message: ``host.match_account(message, directory,
config)`` (plugins first, then the built-in matcher). Target: the big directory
costs at most 1.2x the small one per message.

    python benchmarks/matching_bench.py                  # 3,000 senders, 5 repetitions
    python benchmarks/matching_bench.py --smoke          # 200 + 400 cards: checks results only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import common, gen_corpus
from commit_email.accounts_csv import read_accounts_csv
from commit_email.config import load_config
from commit_email.errors import AmbiguousMatch
from commit_email.message import Message
from commit_email.pipeline import Connector
from commit_email.store import SQLiteStore, Store


class Directory:
    """One store with ``n`` Accounts (+ 2n contacts) and messages from its own senders.

    The store is a SQLite file in ``root`` unless another (empty) one is given: the
    PostgreSQL benchmark passes a ``PostgresStore``."""

    def __init__(self, root: Path, n: int, messages: int, store: Store | None = None) -> None:
        root.mkdir(parents=True)
        csv = gen_corpus.write_accounts_csv(
            root / "accounts.csv", gen_corpus.accounts(n, contacts=2 * n)
        )
        self.cards = 3 * n
        self.store = store if store is not None else SQLiteStore(root / "commit.db")
        t0 = time.perf_counter()
        self.store.import_accounts(read_accounts_csv(csv))
        self.import_seconds = time.perf_counter() - t0
        config = load_config(common.write_config(root, root / "commit.db"))
        self.config = config
        self.host = Connector.from_config(config, store=self.store).host
        self.messages = [
            Message.from_bytes(raw)
            for raw in gen_corpus.iter_messages(messages, seed=gen_corpus.SEED + n, n_accounts=n)
        ]

    def match_all(self) -> Counter[str]:
        """Match every sender once; the tally of how each matched."""
        how: Counter[str] = Counter()
        for message in self.messages:
            try:
                found = self.host.match_account(message, self.store, self.config)
            except AmbiguousMatch:
                how["ambiguous"] += 1
                continue
            how[found.how if found else "none"] += 1
        return how


def compare(small: Directory, large: Directory, messages: int, reps: int, *,
            label: str = "matching", who: str = "matching_bench",
            ) -> dict[str, Any]:
    """Matching in ``large`` against ``small``, interleaved: the report (matches per
    second, cost per match as large / small, the target, how the senders matched)."""
    tallies = {"small": small.match_all(), "large": large.match_all()}  # also warms caches
    check_matched(tallies, messages, who=who)
    result = common.interleaved(
        label, large.match_all, small.match_all,
        messages=messages, nbytes=0, reps=reps, warmup=False,
    )
    cost = common.Stats.of([1 / r for r in result.ratio.samples])
    cpu_cost = common.Stats.of([1 / r for r in result.cpu_ratio.samples])
    return {
        "cards": {"small": small.cards, "large": large.cards},
        "import_seconds": {"small": round(small.import_seconds, 2),
                           "large": round(large.import_seconds, 2)},
        "messages": messages,
        "reps": reps,
        "matches_per_s": {"small": result.floor_rate.rounded(0),
                          "large": result.subject_rate.rounded(0)},
        "cost_ratio": cost.rounded(),
        "cpu_cost_ratio": cpu_cost.rounded(),
        "target": 1.2,
        "how": {k: dict(sorted(v.items())) for k, v in tallies.items()},
    }


def check_matched(tallies: dict[str, Counter[str]], messages: int,
                  who: str = "matching_bench") -> None:
    """Exit when a directory matched too few senders: the benchmark would time look-ups
    that find nothing (a broken index, an empty store)."""
    for name, tally in tallies.items():
        matched = messages - tally["none"] - tally["ambiguous"]
        if matched < 0.6 * messages:
            raise SystemExit(f"{who}: only {matched} of {messages} senders "
                             f"matched in the {name} directory: {dict(tally)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000, help="Accounts in the small store")
    parser.add_argument("--large", type=int, default=100_000, help="Accounts in the big store")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.small, args.large, args.messages, args.reps = 100, 200, 100, 1

    with tempfile.TemporaryDirectory(prefix="ce-match-") as tmp:
        small = Directory(Path(tmp) / "small", args.small, args.messages)
        large = Directory(Path(tmp) / "large", args.large, args.messages)
        compared = compare(small, large, args.messages, args.reps)
    data = {"name": "matching", **compared, "machine": common.machine()}
    rate, cost = compared["matches_per_s"], compared["cost_ratio"]
    human = (
        f"matching {large.cards:,} cards {rate['large']['median']:.0f}/s vs {small.cards:,} "
        f"cards {rate['small']['median']:.0f}/s: cost ratio {cost['median']:.2f}x "
        f"(min {cost['min']:.2f} max {cost['max']:.2f}, {args.reps} reps; target <= 1.2x)"
    )
    common.print_report(data, human, json_out=args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
