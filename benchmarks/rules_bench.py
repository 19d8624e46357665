"""Per-message cost of the automated-email rules with 1,000 detection rules vs 10.

    python benchmarks/rules_bench.py [--reps 9] [--smoke]

The rule sets look like an MSP's: rules per customer and tool that combine a sender (or a
sender domain) with a subject text, subject-only rules, body-text rules and regex rules
(one in a hundred, and one in the 10-rule set); every message is checked against
detection, skip and account rules the way the automated stage does. Messages: alerts
that match a rule near the end of the list, a Nagios mail no rule names, and ordinary
customer mail that matches nothing (the common case, and the one a linear scan pays most
for).

Timing: ``--reps`` repetitions; in each, the 10-rule and the 1,000-rule engine are timed
one after the other (alternating which goes first), each as the best of a few short rounds
(as ``timeit`` reports: on a shared machine the slower rounds measure the neighbours), and
the ratio is taken per repetition. The report gives min / median / max over the
repetitions of both per-message figures and of the ratio, for wall-clock and process CPU
time. Also measured: a rule-by-rule scan of the 1,000 rules (the reference the index is
tested against) and the whole pipeline per message (``Connector.inspect``: parsing, every
stage, the store transaction). Prints one JSON object, then one line for humans.
``--smoke`` runs a few iterations only (CI): it checks the answers, not the timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import common
from commit_email.automated import AutomatedRules
from commit_email.config import parse_config
from commit_email.message import Message
from commit_email.testing import make_config, make_connector

ALERTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "alerts"


def rule_set(n: int) -> dict[str, object]:
    detection: list[dict[str, object]] = []
    for i in range(n):
        kind = i % 10
        if kind < 5:
            detection.append({"senders": [f"alerts{i}@rmm{i % 37}.example"],
                              "subject_contains": f"Alert {i}:"})
        elif kind < 8:
            detection.append({"subject_contains": f"[CUST-{i:04d}] Monitor"})
        elif kind == 8:
            detection.append({"senders": [f"*@tool{i}.example"], "body_contains": f"Device {i}"})
        else:
            detection.append({"body_contains": f"Probe #{i} reports"})
    # regex rules, one in a hundred (subject or body): no sender and no literal to index them
    for i in range(50, n, 100):
        detection[i] = ({"subject_regex": rf"^\[(?:crit|warn)\] probe-{i}\b"} if i % 200 == 50
                        else {"body_regex": rf"^Check probe-{i}: (?:CRITICAL|WARNING)\b"})
    detection[n // 2] = {"subject_regex": rf"^\[(?:crit|warn)\] probe-{n // 2}\b"}
    # the last rule matches the RMM corpus mails
    detection[-1] = {"senders": ["noreply@rmm-datto.example"], "subject_contains": "Alert "}
    return {
        "automated": {
            "detection": detection,
            "skip": [{"subject_contains": "Self Healed"}, {"subject_regex": r"\btest alert\b"}],
            "account": [{"search_for": "account_number", "regex": r"\[Site: ([^\]]+)\]"},
                        {"search_for": "account_number", "after": "Client: ", "before": ")"}],
        }
    }


def corpus() -> list[Message]:
    names = ["rmm-datto/cpu-1-problem", "rmm-nable/disk-1-problem", "nagios/service-1-problem",
             "monit/nginx-1-problem", "icinga2/service-3-recovery"]
    mails = [Message.from_bytes((ALERTS / f"{n}.eml").read_bytes()) for n in names]
    body = "Hello team,\n\nthe printer on floor 2 jams again since Monday.\n" * 20
    for who in ("jane@customer.example", "bob@acme.example", "it@globex.example"):
        raw = (f"From: {who}\r\nTo: support@msp.example\r\nSubject: Printer jams again - "
               f"please help\r\n\r\n{body}").encode()
        mails.append(Message.from_bytes(raw))
    return mails


def one_pass(rules: AutomatedRules, mails: list[Message], *, linear: bool = False
             ) -> Callable[[], None]:
    """What the automated stage asks the rules for each message, over every message."""
    detect = rules.detection.scan if linear else rules.detect

    def run() -> None:
        for m in mails:
            index = detect(m)
            if index is not None:
                rules.skipped_by(m)
                list(rules.account_values(m))

    return run


def per_message(run: Callable[[], object], messages: int, *, rounds: int, passes: int
                ) -> tuple[float, float]:
    """(wall, CPU) seconds per message: the best of ``rounds`` rounds of ``passes`` runs."""
    def round_() -> None:
        for _ in range(passes):
            run()

    samples = [common.timed(round_) for _ in range(rounds)]
    per = messages * passes
    return min(w for w, _ in samples) / per, min(c for _, c in samples) / per


@dataclass(frozen=True)
class RuleTimes:
    """Per-message seconds of both engines and their ratio, one sample per repetition."""

    small: common.Stats  # 10 rules, wall clock
    large: common.Stats  # 1,000 rules
    ratio: common.Stats  # large / small, per repetition
    cpu_ratio: common.Stats


def compare(small: Callable[[], object], large: Callable[[], object], messages: int, *,
            reps: int, rounds: int, passes: int) -> RuleTimes:
    """Time both engines ``reps`` times, alternating which goes first."""
    small(), large()  # warm up: caches, lazily compiled state
    times: dict[str, list[tuple[float, float]]] = {"small": [], "large": []}
    for rep in range(reps):
        order = ("small", "large") if rep % 2 == 0 else ("large", "small")
        for side in order:
            run = small if side == "small" else large
            times[side].append(per_message(run, messages, rounds=rounds, passes=passes))
    s, lg = times["small"], times["large"]
    return RuleTimes(
        small=common.Stats.of([w for w, _ in s]),
        large=common.Stats.of([w for w, _ in lg]),
        ratio=common.Stats.of([b[0] / a[0] for a, b in zip(s, lg, strict=True)]),
        cpu_ratio=common.Stats.of([b[1] / a[1] for a, b in zip(s, lg, strict=True)]),
    )


def pipeline_run(n: int, mails: list[Message]) -> Callable[[], None]:
    """Every message through the whole pipeline (parse, every stage, store transaction),
    with ``Connector.inspect`` so that nothing accumulates in the store between runs."""
    connector = make_connector(make_config(**rule_set(n)))
    raws = [m.raw for m in mails]

    def run() -> None:
        for raw in raws:
            connector.inspect(raw)

    return run


def _us(stats: common.Stats) -> dict[str, object]:
    return {k: round(v * 1e6, 2) for k, v in
            (("min", stats.min), ("median", stats.median), ("max", stats.max))}


def _x(stats: common.Stats) -> dict[str, object]:
    return {"min": round(stats.min, 2), "median": round(stats.median, 2),
            "max": round(stats.max, 2), "samples": [round(r, 2) for r in stats.samples]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="repetitions (default 9)")
    parser.add_argument("--smoke", action="store_true", help="a few iterations only")
    args = parser.parse_args(argv)
    reps, rounds, passes = (2, 2, 2) if args.smoke else (max(1, args.reps), 5, 25)
    mails = corpus()
    engines, compile_s = {}, {}
    for n in (10, 1000):
        start = time.perf_counter()
        engines[n] = AutomatedRules(parse_config(rule_set(n)).automated)
        compile_s[n] = time.perf_counter() - start
        # the benchmark measures real matching, and the index gives the reference's answers
        assert engines[n].detect(mails[0]) == n - 1
        for m in mails:
            assert engines[n].detect(m) == engines[n].detection.scan(m), m.subject
    times = compare(one_pass(engines[10], mails), one_pass(engines[1000], mails), len(mails),
                    reps=reps, rounds=rounds, passes=passes)
    linear = per_message(one_pass(engines[1000], mails, linear=True), len(mails),
                         rounds=rounds, passes=max(1, passes // 5))[0]
    pipeline = compare(pipeline_run(10, mails), pipeline_run(1000, mails), len(mails),
                       reps=reps, rounds=rounds, passes=1)
    report = {
        "benchmark": "rules_bench",
        "smoke": args.smoke,
        "messages": len(mails),
        "reps": reps,
        "rounds_per_rep": rounds,
        "per_message_us_10_rules": round(times.small.median * 1e6, 2),
        "per_message_us_1000_rules": round(times.large.median * 1e6, 2),
        "ratio_1000_vs_10": round(times.ratio.median, 2),
        "per_message_us_10_rules_stats": _us(times.small),
        "per_message_us_1000_rules_stats": _us(times.large),
        "ratio_1000_vs_10_stats": _x(times.ratio),
        "cpu_ratio_1000_vs_10_stats": _x(times.cpu_ratio),
        "compile_ms_1000_rules": round(compile_s[1000] * 1e3, 1),
        "linear_scan_us_1000_rules": round(linear * 1e6, 2),
        "pipeline_us_10_rules": round(pipeline.small.median * 1e6, 1),
        "pipeline_us_1000_rules": round(pipeline.large.median * 1e6, 1),
        "pipeline_ratio_1000_vs_10": round(pipeline.ratio.median, 2),
        "pipeline_ratio_1000_vs_10_stats": _x(pipeline.ratio),
        "machine": common.machine(),
    }
    print(json.dumps(report))
    print(
        f"rules: {report['per_message_us_10_rules']} us/message with 10 detection rules, "
        f"{report['per_message_us_1000_rules']} us with 1,000 = "
        f"{report['ratio_1000_vs_10']}x (median of {reps}; ratio min {times.ratio.min:.2f} "
        f"max {times.ratio.max:.2f}; CPU-time ratio {times.cpu_ratio.median:.2f}x; 1,000 rules "
        f"{times.large.min * 1e6:.2f}-{times.large.max * 1e6:.2f} us, 10 rules "
        f"{times.small.min * 1e6:.2f}-{times.small.max * 1e6:.2f} us); compiling 1,000 rules "
        f"{report['compile_ms_1000_rules']} ms; a rule-by-rule scan of 1,000 would take "
        f"{report['linear_scan_us_1000_rules']} us; whole pipeline per message "
        f"{report['pipeline_us_10_rules']} vs {report['pipeline_us_1000_rules']} us "
        f"(ratio {report['pipeline_ratio_1000_vs_10']}x, min {pipeline.ratio.min:.2f} "
        f"max {pipeline.ratio.max:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
