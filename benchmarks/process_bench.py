"""End-to-end ``commit-email process`` against the floor, in the same run.

The subject is the command a user runs to ingest a backlog::

    commit-email process --config FILE --json DIR

run in-process (``commit_email.cli.main``) over the generated ``.eml`` files, into a fresh
SQLite store that holds the 5,000 generated Accounts and their contacts. Each repetition
starts from a copy of that store (untimed), so every run creates the same tickets. The
floor parses the same files with ``policy.default`` (see ``common.py``). Then the same
files are processed again into a store that has them all: a re-import, where every
message is a duplicate, known from its headers (its body is never decoded).

    python benchmarks/process_bench.py                 # 2,000 messages, 5 repetitions
    python benchmarks/process_bench.py --count 5000 --reps 7
    python benchmarks/process_bench.py --smoke         # 60 messages: checks outcomes only
    python benchmarks/process_bench.py --profile 20    # cProfile top entries of one run
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import common

# The core's routes must show up on the generated corpus, or the benchmark measures a
# pipeline that skips work (quarantining everything would be very fast).
EXPECTED_OUTCOMES = ("ticket_created", "forwarded", "ignored")
# Routes of feature stages (automated emails, XML API): reported when absent, since a branch
# may be measured before those stages are merged.
FEATURE_OUTCOMES = ("alert_ticket_created", "xml_applied")


def run_process(inst: common.Installation, msg_dir: Path) -> list[dict[str, object]]:
    out = common.cli("process", "--config", str(inst.config), "--json", str(msg_dir))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def check_outcomes(results: Sequence[dict[str, object]], count: int) -> Counter[str]:
    """The tally of one run; exits non-zero when the run did not do the real work."""
    tally = Counter(str(r["outcome"]) for r in results)
    problems = []
    if len(results) != count:
        problems.append(f"{len(results)} outcomes for {count} messages")
    if tally["quarantined"]:
        bad = [r for r in results if r["outcome"] == "quarantined"][:3]
        problems.append(f"{tally['quarantined']} quarantined, e.g. {bad}")
    if tally["duplicate"]:
        problems.append(f"{tally['duplicate']} duplicates in a corpus of unique messages")
    missing = [k for k in EXPECTED_OUTCOMES if not tally[k]]
    if missing and count >= 60:
        problems.append(f"no {', '.join(missing)} outcome (tally {dict(tally)})")
    if problems:
        raise SystemExit("process_bench: " + "; ".join(problems))
    absent = [k for k in FEATURE_OUTCOMES if not tally[k]]
    if absent and count >= 60:
        print(f"process_bench: note: no {', '.join(absent)} outcome on this branch",
              file=sys.stderr)
    return tally


def check_duplicates(results: Sequence[dict[str, object]], count: int) -> None:
    kinds = Counter(str(r["outcome"]) for r in results)
    if len(results) != count or set(kinds) != {"duplicate"}:
        raise SystemExit(f"process_bench: re-import gave {dict(kinds)}, not only duplicates")


def profile(inst: common.Installation, msg_dir: Path, top: int) -> str:
    inst.reset()
    prof = cProfile.Profile()
    prof.enable()
    run_process(inst, msg_dir)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="60 messages, 1 repetition")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="print the N top cProfile entries (by own time) of one run")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    count, reps = (60, 1) if args.smoke else (args.count, args.reps)

    with common.corpus(count) as (root, paths):
        msg_dir = paths[0].parent
        inst = common.Installation.create(root, root / "accounts.csv")
        inst.reset()
        tally = check_outcomes(run_process(inst, msg_dir), count)
        if args.profile:
            print(profile(inst, msg_dir, args.profile))
            return 0
        result = common.interleaved(
            "commit-email process",
            lambda: run_process(inst, msg_dir),
            lambda: common.floor_files(paths),
            messages=count,
            nbytes=sum(p.stat().st_size for p in paths),
            reps=reps,
            warmup=not args.smoke,
            before_subject=inst.reset,
        )
        # Importing mail that is already in (a year of mail re-imported, a mailbox
        # re-delivered): every message is a duplicate, known from its headers alone.
        inst.reset()
        run_process(inst, msg_dir)  # untimed: now the store holds every message
        again = common.interleaved(
            "re-import",
            lambda: check_duplicates(run_process(inst, msg_dir), count),
            lambda: common.floor_files(paths),
            messages=count,
            nbytes=sum(p.stat().st_size for p in paths),
            reps=reps,
            warmup=False,
        )
    result.extra["outcomes"] = dict(sorted(tally.items()))
    result.extra["command"] = "commit-email process --config FILE --json DIR (in-process)"
    reimport = again.to_json()
    reimport.pop("machine")
    result.extra["reimport_all_duplicates"] = reimport
    common.print_report(result, human=(
        f"{result.human()}; re-import of the same mail (all duplicates) "
        f"{again.subject_rate.median:.0f} msg/s = {again.ratio.median:.2f}x the floor "
        f"(min {again.ratio.min:.2f} max {again.ratio.max:.2f})"
    ), json_out=args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
