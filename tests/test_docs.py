"""The documentation cannot fall behind the code.

- Every hook, config key, CLI command and outcome word is in the reference, and the
  generated reference pages equal what ``tools/gen_reference.py`` makes from the code now.
- The site builds with ``mkdocs build --strict`` (a broken link is a failure), and every
  page is in the navigation.
- Code blocks marked ``source=PATH`` equal that file, ``excerpt=PATH`` come from it, and
  the how-tos' ``file=NAME`` tests and the getting-started commands run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from commit_email import config as config_module
from commit_email import hookspecs
from commit_email.cli import build_parser
from commit_email.model import OutcomeKind
from tools import gen_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"

_BLOCK = re.compile(
    r"^```(?P<lang>[\w+-]+)(?: (?P<attr>file|source|excerpt)=(?P<path>\S+))?[ \t]*\n"
    r"(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

#: How-tos whose ``file=`` blocks this test runs (the automated how-tos run in their own test).
RUNNABLE_HOWTOS = ("write-a-matcher.md", "write-an-xml-action.md")


def blocks(page: Path) -> list[re.Match[str]]:
    return list(_BLOCK.finditer(page.read_text(encoding="utf-8")))


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


# -- the reference is complete and current ----------------------------------------------------


def test_the_generated_reference_pages_are_current() -> None:
    stale = gen_reference.stale_pages()
    assert not stale, f"{', '.join(stale)} out of date: run python tools/gen_reference.py"


def test_every_hook_is_in_the_hook_reference() -> None:
    text = (REFERENCE / "hooks.md").read_text()
    hooks = [name for name in vars(hookspecs) if name.startswith("commit_email_")]
    assert len(hooks) >= 6
    missing = [h for h in hooks if f"## `{h}`" not in text]
    assert not missing, f"hooks missing from docs/reference/hooks.md: {missing}"


def config_rows() -> list[tuple[str, str]]:
    """(section heading, key) for every key of every config class, found from attrs alone."""
    rows = []
    for section in attrs.fields(config_module.Config):
        if section.metadata.get("internal"):
            continue
        named = section.metadata.get("named")
        if named is not None:  # [oauth.NAME]: one table per NAME
            rows += [(f"## `[{section.name}.NAME]`", f.name) for f in attrs.fields(named)
                     if not f.metadata.get("internal")]
            continue
        factory = getattr(section.default, "factory", None)
        cls = type(factory() if callable(factory) else section.default)
        heading = f"## `[{section.name}]`"
        if section.metadata.get("many"):  # [pop3] or [[pop3]]
            heading += f" or `[[{section.name}]]`"
        for f in attrs.fields(cls):
            if f.metadata.get("internal"):
                continue
            rows.append((heading, f.name))
            rules = f.metadata.get("rules")
            for rule_field in attrs.fields(rules) if rules else ():
                rows.append((f"## `[[{section.name}.{f.name}]]`", rule_field.name))
    return rows


def test_every_config_key_is_in_the_config_reference_with_its_default() -> None:
    text = (REFERENCE / "config.md").read_text()
    sections = {m.group(0): m.start() for m in re.finditer(r"^## `.+`$", text, re.MULTILINE)}
    missing = []
    for heading, key in config_rows():
        start = sections.get(heading)
        end = min([s for s in sections.values() if start is not None and s > start] or
                  [len(text)])
        if start is None or f"| `{key}` |" not in text[start:end]:
            missing.append(f"{heading.strip('#` ')} {key}")
    assert not missing, f"config keys missing from docs/reference/config.md: {missing}"
    assert len(config_rows()) > 60
    assert "| `poll_interval` | number | `60.0` |" in text  # the default is shown


def cli_commands(parser: argparse.ArgumentParser, prefix: str = "commit-email") -> list[str]:
    commands = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands.append(f"{prefix} {name}")
                commands += cli_commands(sub, f"{prefix} {name}")
    return commands


def test_every_cli_command_is_in_the_cli_reference() -> None:
    text = (REFERENCE / "cli.md").read_text()
    commands = cli_commands(build_parser())
    assert {"commit-email run", "commit-email process", "commit-email quarantine replay"} <= \
        set(commands)
    missing = [c for c in commands if not re.search(rf"^#+ `{re.escape(c)}`$", text, re.M)]
    assert not missing, f"commands missing from docs/reference/cli.md: {missing}"


def test_every_outcome_word_is_in_the_outcome_reference() -> None:
    text = (REFERENCE / "outcomes.md").read_text()
    missing = [k.value for k in OutcomeKind if f"| `{k.value}` |" not in text]
    assert not missing, f"outcome words missing from docs/reference/outcomes.md: {missing}"


def test_a_new_undocumented_config_key_fails_the_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @attrs.frozen(kw_only=True)
    class Pop3WithNewKey(config_module.Pop3Config):
        brand_new_key: int = 3

    @attrs.frozen(kw_only=True)
    class ConfigWithNewKey(config_module.Config):
        pop3: Pop3WithNewKey = attrs.field(factory=Pop3WithNewKey)

    monkeypatch.setattr(config_module, "Config", ConfigWithNewKey)
    with pytest.raises(gen_reference.MissingDocs, match=r"pop3\.brand_new_key"):
        gen_reference.config_page()


# -- the site ---------------------------------------------------------------------------------


def test_every_page_is_in_the_navigation() -> None:
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    on_disk = {str(p.relative_to(DOCS)) for p in pages()}
    assert not on_disk - nav, f"add these pages to nav in mkdocs.yml: {sorted(on_disk - nav)}"
    assert not nav - on_disk, f"nav names missing pages: {sorted(nav - on_disk)}"


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed (it is in the test extra)")
        pytest.skip("mkdocs is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    html = (tmp_path / "howto" / "write-a-matcher" / "index.html").read_text()
    assert "<code>test_plus_matcher.py</code>" in html  # the hook captioned the tested block
    assert "def match_by_tag" in html


# -- the examples in the pages are real -------------------------------------------------------


def test_source_blocks_equal_their_files() -> None:
    checked = 0
    for page in pages():
        for m in blocks(page):
            if m["attr"] == "source":
                expected = (ROOT / m["path"]).read_text(encoding="utf-8")
                assert m["body"] == expected, f"{page.name}: the block differs from {m['path']}"
                checked += 1
    assert checked >= 4


def _imported_names(text: str) -> set[tuple[str, str]]:
    found = set()
    for module, names in re.findall(r"^from (\S+) import \(?([^)]*?)\)?$", text, re.M | re.S):
        for name in re.split(r"[,\s]+", names):
            if name:
                found.add((module, name))
    return found


def test_excerpt_blocks_come_from_their_files() -> None:
    checked = 0
    for page in pages():
        for m in blocks(page):
            if m["attr"] != "excerpt":
                continue
            source = (ROOT / m["path"]).read_text(encoding="utf-8")
            lines = source.splitlines()
            position = 0
            for line in m["body"].splitlines():
                if not line.strip():
                    continue
                if line.startswith("from "):
                    assert _imported_names(line) <= _imported_names(source), \
                        f"{page.name}: {line!r} imports what {m['path']} does not"
                    continue
                assert line in lines[position:], \
                    f"{page.name}: {line!r} is not in {m['path']} (in this order)"
                position = lines.index(line, position) + 1
            checked += 1
    assert checked >= 4


def test_the_howto_tests_pass(tmp_path: Path) -> None:
    for name in RUNNABLE_HOWTOS:
        for m in blocks(DOCS / "howto" / name):
            if m["attr"] == "file":
                (tmp_path / m["path"]).write_text(m["body"], encoding="utf-8")
    tests = sorted(p.name for p in tmp_path.glob("test_*.py"))
    assert len(tests) == len(RUNNABLE_HOWTOS)
    env = {**os.environ,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'examples' / 'plugin-example' / 'src'}"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_the_getting_started_commands_and_code_run(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("state", "*.db", "plugin-example"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    page = DOCS / "getting-started.md"
    commands = [line for m in blocks(page) if m["lang"] == "sh"
                for line in m["body"].splitlines() if line.startswith("commit-email ")]
    assert len(commands) >= 4
    outputs = []
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "commit_email", *shlex.split(command)[1:]],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        outputs.append(done.stdout)
    assert "ticket_created" in outputs[2]  # the first `process`
    (python,) = [m["body"] for m in blocks(page) if m["lang"] == "python"]
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "duplicate"  # processed by the command above already
