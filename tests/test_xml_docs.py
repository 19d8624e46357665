"""docs/reference/xml-api.md stays in step with the code it documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from commit_email.xml_api import ErrorCode
from commit_email.xml_catalogue import ACCOUNT_CATALOGUE, DATA_KINDS, TICKET_CATALOGUE

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "xml-api.md"


def documented_table(kind: str) -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    table = text.split(f"<!-- catalogue:{kind} -->", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"^\| `(FLD\w+)` \| (.+?) \|$", table, re.MULTILINE))


@pytest.mark.parametrize(("kind", "catalogue"),
                         [("ACCOUNT", ACCOUNT_CATALOGUE), ("TICKET", TICKET_CATALOGUE)])
def test_the_field_catalogue_is_documented_exactly(kind, catalogue):
    assert documented_table(kind) == dict(catalogue)


def test_every_error_code_is_documented_with_its_number():
    text = PAGE.read_text(encoding="utf-8")
    for code in ErrorCode:
        assert f"| {int(code)} | `{code.name}` |" in text


def test_every_data_kind_is_documented_with_its_rec_id_field():
    text = PAGE.read_text(encoding="utf-8")
    for name, info in DATA_KINDS.items():
        assert re.search(rf"^\| `{re.escape(name)}` \| {info.table} \| `{info.rec_id_field}`",
                         text, re.MULTILINE), name


def example_script() -> str:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Example: a ticket by email against the embedded store", 1)[1]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0]


def test_the_copy_paste_example_works_against_the_embedded_store(tmp_path, cli_env):
    script = example_script().replace("commit-email ", f"{sys.executable} -m commit_email ")
    run = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=cli_env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    processed = json.loads(next(line for line in lines if '"outcome"' in line))
    assert processed["outcome"] == "xml_applied"
    assert processed["account"] == "CRDACME0000000000001"
    tickets = json.loads(run.stdout[run.stdout.index("\n[") :])
    assert [(t["number"], t["description"]) for t in tickets] == [
        (processed["ticket"], "Printer is out of toner")
    ]
