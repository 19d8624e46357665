"""How many delivery reports in a folder of .eml files commit-email recognises.

    python tools/bounce_rate.py DIR [--skip-prefix arf-] [--show forwarded]

Every file is processed by a connector on its own in-memory store with no Accounts and no SMTP
(what a report is about is unknown here, so a recognised report is ``ignored``; one taken for
a person's mail is ``forwarded``). Prints the outcomes, the recognition rate and, per MTA
family (the file name before its number), what was not recognised. The data is not part of
this repository: point it at any public collection of bounces.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from commit_email.model import OutcomeKind  # noqa: E402
from commit_email.testing import make_config, make_connector  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--skip-prefix", action="append", default=[],
                        help="leave out files whose name starts with this (e.g. arf-)")
    parser.add_argument("--show", default="", help="list the files with this outcome")
    args = parser.parse_args(argv)
    config = make_config(connector={"public_address": "support@msp.example",
                                    "internal_address": "helpdesk@msp.example"})
    outcomes: Counter[str] = Counter()
    missed: dict[str, list[str]] = defaultdict(list)
    files = sorted(p for p in args.folder.iterdir() if p.suffix == ".eml" and not any(
        p.name.startswith(prefix) for prefix in args.skip_prefix))
    for path in files:
        # A fresh store per file: copies of one report in a collection are not duplicates.
        kind = make_connector(config).process(path.read_bytes()).kind
        outcomes[kind.value] += 1
        if kind is not OutcomeKind.IGNORED:
            missed[re.sub(r"-\d+$", "", path.stem)].append(f"{path.name}: {kind.value}")
        if args.show and kind.value == args.show:
            print(f"{args.show}: {path}")
    total = sum(outcomes.values())
    families = {re.sub(r"-\d+$", "", p.stem) for p in files}
    print(f"{total} reports from {len(families)} families: "
          + ", ".join(f"{n} {k}" for k, n in outcomes.most_common()))
    print(f"recognised (ignored): {outcomes['ignored']}/{total} = "
          f"{100 * outcomes['ignored'] / max(total, 1):.1f}%")
    for family, items in sorted(missed.items()):
        print(f"  {family}: {len(items)} not recognised ({', '.join(items[:3])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
