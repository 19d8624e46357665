"""The rules benchmark runs (smoke mode) and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rules_benchmark_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rules_bench.py"), "--smoke"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    first, human = done.stdout.splitlines()
    report = json.loads(first)
    assert report["smoke"] is True
    assert report["per_message_us_1000_rules"] > 0
    # Speed is judged from the benchmark's numbers, not asserted here: a timing bound
    # flakes on a loaded 2-core CI machine (it did: 15x under load).
    assert report["ratio_1000_vs_10"] > 0
    assert report["linear_scan_us_1000_rules"] > 0
    # every figure is reported over the repetitions, the ratio taken per repetition
    ratio = report["ratio_1000_vs_10_stats"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert len(ratio["samples"]) == report["reps"]
    for key in ("per_message_us_10_rules_stats", "per_message_us_1000_rules_stats"):
        assert 0 < report[key]["min"] <= report[key]["median"] <= report[key]["max"]
    assert report["pipeline_ratio_1000_vs_10_stats"]["min"] > 0
    assert human.startswith("rules: ")
