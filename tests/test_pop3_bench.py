"""The POP3 benchmark's smoke mode runs end to end and reports sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.dovecot_fixtures import dovecot_binary, require_server_tool

pytestmark = pytest.mark.server


def test_pop3_benchmark_smoke(cli_env: dict[str, str]) -> None:
    require_server_tool("dovecot", dovecot_binary())
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pop3_bench.py"), "--smoke", "--json-only"],
        env=cli_env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["messages"] == 30
    assert set(report["messages_per_s"]) == {"poplib", "run_once", "process_files"}
    assert all(rate > 0 for rate in report["messages_per_s"].values())
    assert 0 < report["run_once_vs_poplib"] < 10
    spread = report["run_once_vs_process_files_per_round"]
    assert 0 < spread["min"] <= spread["median"] <= spread["max"]
    assert report["run_once_vs_process_files"] == spread["median"]
