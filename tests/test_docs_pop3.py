"""The POP3 how-to stays in step with the code: every [pop3] key, the summary line's form."""

from __future__ import annotations

import attrs

from commit_email.config import Pop3Config
from commit_email.runner import PollSummary
from tests.shared import ROOT

HOWTO = ROOT / "docs" / "howto" / "run-against-pop3.md"


def test_every_pop3_config_key_is_in_the_howto_table() -> None:
    table = [line for line in HOWTO.read_text(encoding="utf-8").splitlines()
             if line.startswith("| `")]
    keys = "\n".join(line.split(" | ")[0] for line in table)
    missing = [f.name for f in attrs.fields(Pop3Config)
               if f"`{f.name}`" not in keys and not f.metadata.get("internal")]
    assert missing == []


def test_the_documented_summary_line_is_what_run_logs() -> None:
    line = PollSummary(fetched=2, tickets=1, forwarded=1, deleted=2, seconds=0.1).line()
    assert f"INFO support@mail.acme.example:995: {line}\n" in HOWTO.read_text(encoding="utf-8")
