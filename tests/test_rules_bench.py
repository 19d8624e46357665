"""The rules benchmark runs (smoke mode) and its indexes keep 1,000 rules cheap."""

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
    # generous bound for a shared 2-core machine; a rule-by-rule scan is ~30x
    assert report["ratio_1000_vs_10"] < 10
    assert report["linear_scan_us_1000_rules"] > report["per_message_us_1000_rules"]
    assert human.startswith("rules: ")
