"""What every benchmark shares: the floor, repeated timing, and the report format.

The **floor** is what a bare stdlib parse of the same files costs: read the file,
``email.message_from_bytes(raw, policy=email.policy.default)``, ``get_body(('plain', 'html'))``
+ ``get_content()``, and ``get_content()`` of every attachment. commit-email is measured against
it *in the same run*, repetitions interleaved (floor, subject, floor, subject, ...) so that the
other engineers' load on this shared 2-core machine hits both sides alike. Each repetition yields
a ratio; the report gives min/median/max of throughput and of the per-repetition ratio.

Output: one JSON object on stdout, then one human line, e.g.
``commit-email 512 msg/s vs floor 430 msg/s = 1.19x (median of 5; ratio min 1.10 max 1.25)``.

Run alone, this module measures the floor only:
``python benchmarks/common.py --count 2000 --reps 5``.
"""

from __future__ import annotations

import argparse
import email
import email.message
import email.policy
import gc
import io
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import gen_corpus  # after the path set-up above
from commit_email.cli import main as commit_email_main

__all__ = [
    "Comparison",
    "Installation",
    "Stats",
    "cli",
    "corpus",
    "floor_files",
    "floor_one",
    "interleaved",
    "peak_rss_bytes",
    "print_report",
    "rss_bytes",
    "timed",
]


# ---------------------------------------------------------------------------- the floor


def floor_one(raw: bytes) -> int:
    """Parse one message the modern stdlib way and touch everything a ticket needs.

    Returns the characters/bytes read so the work cannot be optimised away. Content that the
    stdlib refuses (unknown charset, broken base64) counts as read-nothing, not a crash: the
    floor must finish on any corpus commit-email finishes on.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    total = 0
    body = msg.get_body(("plain", "html"))
    if body is not None:
        total += _content_size(body)
    for part in msg.iter_attachments():
        total += _content_size(part)
    return total


def _content_size(part: email.message.EmailMessage) -> int:
    try:
        content = part.get_content()
    except (LookupError, ValueError, KeyError):
        return 0
    if isinstance(content, (str, bytes)):
        return len(content)
    return 1  # message/rfc822 and friends: a parsed Message


def floor_files(paths: Sequence[Path]) -> int:
    """The floor over files: read + parse + bodies + attachments, one file after another."""
    return sum(floor_one(p.read_bytes()) for p in paths)


# ---------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Stats:
    """min / median / max of a list of samples."""

    min: float
    median: float
    max: float
    samples: tuple[float, ...] = field(default=())

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        return cls(min(samples), statistics.median(samples), max(samples), tuple(samples))

    def rounded(self, digits: int = 3) -> dict[str, object]:
        return {
            "min": round(self.min, digits),
            "median": round(self.median, digits),
            "max": round(self.max, digits),
            "samples": [round(s, digits) for s in self.samples],
        }


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Collect before a timed section so one side does not pay for the other's garbage."""
    gc.collect()
    yield


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call of ``fn``."""
    with _quiet_gc():
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0


@dataclass(frozen=True)
class Comparison:
    """A subject measured against the floor, repetitions interleaved."""

    name: str
    messages: int
    bytes: int
    reps: int
    subject_rate: Stats  # messages/s, wall clock
    floor_rate: Stats
    ratio: Stats  # subject rate / floor rate, per repetition
    subject_cpu_rate: Stats  # messages/s of process CPU time: less sensitive to a busy machine
    floor_cpu_rate: Stats
    cpu_ratio: Stats
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            k: (v.rounded() if isinstance(v, Stats) else v) for k, v in asdict(self).items()
        }
        for key in (
            "subject_rate",
            "floor_rate",
            "ratio",
            "subject_cpu_rate",
            "floor_cpu_rate",
            "cpu_ratio",
        ):
            out[key] = getattr(self, key).rounded(3 if "ratio" in key else 1)
        out["machine"] = machine()
        return out

    def human(self) -> str:
        return (
            f"{self.name} {self.subject_rate.median:.0f} msg/s vs floor "
            f"{self.floor_rate.median:.0f} msg/s = {self.ratio.median:.2f}x "
            f"(median of {self.reps}; ratio min {self.ratio.min:.2f} max {self.ratio.max:.2f}; "
            f"CPU-time ratio {self.cpu_ratio.median:.2f}x; {self.messages} messages, "
            f"{self.bytes / self.messages / 1024:.1f} KB average)"
        )


def interleaved(
    name: str,
    subject: Callable[[], object],
    floor: Callable[[], object],
    *,
    messages: int,
    nbytes: int,
    reps: int,
    warmup: bool = True,
    before_subject: Callable[[], object] | None = None,
    before_floor: Callable[[], object] | None = None,
) -> Comparison:
    """Run floor and subject ``reps`` times each, alternating which goes first.

    ``before_subject`` runs untimed before every subject repetition (e.g. a fresh store);
    ``before_floor`` likewise before every floor repetition, when the reference is not the
    stdlib floor but another commit-email run that needs its own fresh store.
    """
    if warmup:
        if before_floor:
            before_floor()
        floor()
        if before_subject:
            before_subject()
        subject()
    s_wall, f_wall, s_cpu, f_cpu = [], [], [], []
    for rep in range(reps):
        order = ("floor", "subject") if rep % 2 == 0 else ("subject", "floor")
        for side in order:
            if side == "floor":
                if before_floor:
                    before_floor()
                w, c = timed(floor)
                f_wall.append(w)
                f_cpu.append(c)
            else:
                if before_subject:
                    before_subject()
                w, c = timed(subject)
                s_wall.append(w)
                s_cpu.append(c)
    return Comparison(
        name=name,
        messages=messages,
        bytes=nbytes,
        reps=reps,
        subject_rate=Stats.of([messages / t for t in s_wall]),
        floor_rate=Stats.of([messages / t for t in f_wall]),
        ratio=Stats.of([f / s for s, f in zip(s_wall, f_wall, strict=True)]),
        subject_cpu_rate=Stats.of([messages / t for t in s_cpu]),
        floor_cpu_rate=Stats.of([messages / t for t in f_cpu]),
        cpu_ratio=Stats.of([f / s for s, f in zip(s_cpu, f_cpu, strict=True)]),
    )


def print_report(
    result: Comparison | dict[str, object], human: str | None = None, json_out: Path | None = None
) -> None:
    """The JSON object on stdout, then the human line (also on stdout: one pipe, one record)."""
    data = result.to_json() if isinstance(result, Comparison) else result
    text = json.dumps(data, indent=2, sort_keys=False)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")
    print(human if human is not None else result.human() if isinstance(result, Comparison) else "")


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(terse=True),
    }


# ---------------------------------------------------------------------------- corpus, memory


@contextmanager
def corpus(count: int, seed: int = gen_corpus.SEED) -> Iterator[tuple[Path, list[Path]]]:
    """A temporary directory with ``count`` generated messages and accounts.csv."""
    with tempfile.TemporaryDirectory(prefix="ce-bench-") as tmp:
        root = Path(tmp)
        yield root, gen_corpus.write_corpus(root, count, seed)


def _status_field(name: str) -> int:
    """A ``/proc/self/status`` memory field (kB) in bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return _status_field("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (VmHWM)."""
    return _status_field("VmHWM")


# ---------------------------------------------------------------------------- commit-email set-up

CONFIG_TEMPLATE = """\
[connector]
public_address = "support@msp.example"
internal_address = "helpdesk@msp.example"
state_dir = "{state}"

[store]
url = "{url}"

[xml_api]
enabled = true
password = "{xml_password}"
"""


def write_config(root: Path, db: Path | None = None, extra: str = "", *, url: str = "") -> Path:
    """A configuration like a new user's (defaults everywhere), with the XML API switched on
    so that the corpus's transactions take their real route. No [smtp]: mail stays queued in
    the store's outbox, which is the durable work; sending is SMTP's cost, not ours.

    The store is the SQLite file ``db``, or ``url`` (a ``postgresql://`` one, say).
    ``extra`` is TOML appended to it (``smtp_bench.py``'s ``[smtp]`` and ``[pop3]``,
    ``postgres_bench.py``'s ``[[pop3]]`` tables)."""
    if not url:
        if db is None:
            raise ValueError("write_config needs a database file or a store URL")
        url = f"sqlite:///{db}"
    root.mkdir(parents=True, exist_ok=True)
    path = root / "commit-email.toml"
    path.write_text(CONFIG_TEMPLATE.format(
        state=root / "state", url=url, xml_password=gen_corpus.XML_PASSWORD
    ) + (f"\n{extra}" if extra else ""))
    return path


def cli(*argv: str) -> str:
    """Run the ``commit-email`` command in this process; return what it printed.

    In-process on purpose: the benchmark measures the CLI's library path, not interpreter
    start-up. A non-zero exit is a failed benchmark, never a number."""
    out = io.StringIO()
    status = commit_email_main(list(argv), out=out)
    if status != 0:
        raise SystemExit(f"commit-email {' '.join(argv)} exited {status}:\n{out.getvalue()}")
    return out.getvalue()


@dataclass
class Installation:
    """A configured commit-email with the accounts imported, and a pristine copy of its store
    so each repetition starts from the same fresh database.

    Every :meth:`reset` makes a new directory (config, store, state) instead of overwriting
    the last one: a connection of the previous run that the garbage collector has not closed
    yet must never see its database replaced underneath it."""

    root: Path
    template: Path
    config: Path
    db: Path
    runs: int = 0
    #: TOML appended to every configuration :meth:`reset` writes
    extra: str = ""

    @classmethod
    def create(cls, root: Path, accounts_csv: Path) -> Installation:
        db = root / "setup" / "commit.db"
        config = write_config(root / "setup", db)
        cli("accounts", "--config", str(config), "import", str(accounts_csv))
        template = root / "template.db"
        _copy_db(db, template)
        return cls(root=root, template=template, config=config, db=db)

    def variant(self, name: str, extra: str = "") -> Installation:
        """Another installation on the same accounts (no second import), in a directory of
        its own, whose configurations carry ``extra``."""
        root = self.root / name
        root.mkdir(parents=True, exist_ok=True)
        return Installation(root=root, template=self.template, config=self.config,
                            db=self.db, extra=extra)

    def reset(self) -> None:
        """A fresh store (accounts only) and an empty state dir: untimed, before each run."""
        if self.runs:
            shutil.rmtree(self.root / f"run-{self.runs}", ignore_errors=True)
        self.runs += 1
        run = self.root / f"run-{self.runs}"
        run.mkdir()
        self.db = run / "commit.db"
        _copy_db(self.template, self.db)
        self.config = write_config(run, self.db, self.extra)


def _copy_db(src: Path, dst: Path) -> None:
    gc.collect()  # close connections of earlier runs that only the collector can reach
    if src.suffix == ".db" and src.exists() and dst != src:
        with sqlite3.connect(src) as db:  # fold the WAL into the main file before copying
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    shutil.copyfile(src, dst)


# ---------------------------------------------------------------------------- CLI: floor only


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the floor alone on a generated corpus.")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="20 messages, 1 repetition")
    args = parser.parse_args(argv)
    count, reps = (20, 1) if args.smoke else (args.count, args.reps)
    with corpus(count) as (_, paths):
        nbytes = sum(p.stat().st_size for p in paths)
        floor_files(paths)  # warm the page cache and the stdlib's lazy imports
        samples = [timed(lambda: floor_files(paths)) for _ in range(reps)]
    wall = Stats.of([count / w for w, _ in samples])
    cpu = Stats.of([count / c for _, c in samples])
    data = {
        "name": "floor",
        "messages": count,
        "bytes": nbytes,
        "reps": reps,
        "floor_rate": wall.rounded(1),
        "floor_cpu_rate": cpu.rounded(1),
        "seconds": Stats.of([w for w, _ in samples]).rounded(3),
        "machine": machine(),
    }
    print_report(
        data,
        f"floor {wall.median:.0f} msg/s (min {wall.min:.0f}, max {wall.max:.0f}, "
        f"{reps} reps; {count} messages, {nbytes / count / 1024:.1f} KB average)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
