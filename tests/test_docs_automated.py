"""The automated-email how-tos are executed: their files, commands and outputs are real."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import attrs

from commit_email.config import AccountRule, AutomatedConfig, DetectionRule, SkipRule

ROOT = Path(__file__).resolve().parents[1]
HOWTO = ROOT / "docs" / "howto"

_BLOCK = re.compile(r"^```(?P<lang>\w+)(?: file=(?P<file>\S+))?\n(?P<body>.*?)^```$",
                    re.MULTILINE | re.DOTALL)


def blocks(page: str) -> list[tuple[str, str | None, str]]:
    text = (HOWTO / page).read_text(encoding="utf-8")
    return [(m["lang"], m["file"], m["body"]) for m in _BLOCK.finditer(text)]


def write_files(page: str, workdir: Path) -> list[str]:
    """Every block marked ``file=NAME`` written to ``workdir``; returns the console blocks."""
    consoles = []
    for lang, name, body in blocks(page):
        if name:
            (workdir / name).write_text(body, encoding="utf-8")
        elif lang == "console":
            consoles.append(body)
    return consoles


def run(command: str, workdir: Path) -> str:
    argv = shlex.split(command)
    assert argv[0] == "commit-email"
    done = subprocess.run(
        [sys.executable, "-m", "commit_email", *argv[1:]], cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def check_console(block: str, workdir: Path) -> int:
    """Run each ``$ commit-email ...`` line; the lines shown after it must be in its output
    (JSON lines must be equal as JSON). Returns the number of commands run."""
    commands = 0
    output = ""
    for line in block.splitlines():
        if line.startswith("$ "):
            output = run(line[2:], workdir)
            commands += 1
            actual = [a.strip() for a in output.splitlines()]
            continue
        if line.startswith("{"):
            assert json.loads(line) in [json.loads(a) for a in actual if a.startswith("{")]
        else:
            assert line.strip() in actual, f"{line!r} not in:\n{output}"
    return commands


def test_rules_for_a_new_rmm_tool(tmp_path: Path) -> None:
    consoles = write_files("rules-for-a-new-rmm-tool.md", tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"commit-email.toml", "accounts.csv",
                                                     "alert.eml", "cleared.eml"}
    assert sum(check_console(block, tmp_path) for block in consoles) == 4
    run("commit-email check-config --config commit-email.toml", tmp_path)


def test_write_an_alert_parser(tmp_path: Path) -> None:
    consoles = write_files("write-an-alert-parser.md", tmp_path)
    assert consoles == []
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_zabbix_alerts.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    # the packaging snippet points its entry point at the plugin object the page defines
    project = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["commit_email"]["zabbix"]
    module, _, attr = target.partition(":")
    assert (tmp_path / f"{module}.py").exists()
    assert f"\n{attr} = " in (tmp_path / f"{module}.py").read_text()


def test_every_automated_config_key_is_documented() -> None:
    reference = (ROOT / "docs" / "reference" / "automated.md").read_text(encoding="utf-8")
    sections = reference.split("\n## ")
    for cls, title in [(AutomatedConfig, "`[automated]` keys"),
                       (DetectionRule, "`[[automated.detection]]`"),
                       (SkipRule, "`[[automated.skip]]`"),
                       (AccountRule, "`[[automated.account]]`")]:
        section = next(s for s in sections if s.startswith(title))
        for f in attrs.fields(cls):
            assert f"| `{f.name}` |" in section, f"{cls.__name__}.{f.name} is not documented"
