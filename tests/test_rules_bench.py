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
    assert human.startswith("rules: ")
