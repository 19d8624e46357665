"""The command line: the README's main job, JSON output, and one-line user errors."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from commit_email.cli import main
from tests.shared import ROOT

EXAMPLES = ROOT / "examples"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A copy of examples/ (config, accounts, sample messages) in a temp dir."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("state"))
    return target


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commit_email", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_the_readme_main_job(demo: Path, cli_env: dict[str, str]) -> None:
    config = str(demo / "commit-email.toml")
    imported = run_cli(["accounts", "--config", config, "import", str(demo / "accounts.csv")],
                       cli_env)
    assert imported.returncode == 0, imported.stderr
    assert "imported 6 cards (4 accounts, 1 contact, 1 employee;" in imported.stdout
    processed = run_cli(["process", "--config", config, "--json", str(demo / "messages")],
                        cli_env)
    assert processed.returncode == 0, processed.stderr
    results = [json.loads(line) for line in processed.stdout.splitlines()]
    by_file = {Path(r["source"]).name: r for r in results}
    assert set(results[0]) == {"source", "message_id", "outcome", "ticket", "account", "detail"}
    assert {k: v["outcome"] for k, v in by_file.items()} == {
        "01-domain-match.eml": "ticket_created",
        "02-contact.eml": "ticket_created",
        "03-attachment.eml": "ticket_created",
        "04-html-only.eml": "ticket_created",
        "05-unknown-sender.eml": "forwarded",
        "06-ambiguous-domain.eml": "forwarded",
        "07-out-of-office.eml": "ignored",
        "08-bounce.eml": "ignored",
        "09-employee.eml": "forwarded",
    }
    assert by_file["01-domain-match.eml"]["message_id"] == "20261123091244.alice@acme.example"
    tickets = json.loads(run_cli(["tickets", "--config", config, "--json"], cli_env).stdout)
    assert [t["description"] for t in tickets] == [
        "Printer on floor 2 is out of toner", "VPN geht nicht über WLAN",
        "Server room temperature log attached", "Invoice question"]
    assert {"number", "rec_id", "account", "status", "description", "history",
            "created"} <= set(tickets[0])
    assert all(t["history"] == 1 for t in tickets)
    # A second run finds every message already processed.
    again = run_cli(["process", "--config", config, "--json", str(demo / "messages")], cli_env)
    assert {json.loads(line)["outcome"] for line in again.stdout.splitlines()} == {"duplicate"}


def test_human_output_lists_the_tickets_made(demo: Path) -> None:
    config = str(demo / "commit-email.toml")
    assert run("accounts", "--config", config, "import", str(demo / "accounts.csv"))[0] == 0
    code, out = run("process", "--config", config, str(demo / "messages"))
    assert code == 0
    assert "9 messages: 3 forwarded, 2 ignored, 4 ticket_created" in out
    assert "Acme Corporation" in out and "Printer on floor 2" in out
    assert "configure [smtp]" in out


def test_inspect_json_shows_fields_and_route_and_writes_nothing(demo: Path) -> None:
    config = str(demo / "commit-email.toml")
    run("accounts", "--config", config, "import", str(demo / "accounts.csv"))
    code, out = run("inspect", "--config", config, "--json",
                    str(demo / "messages" / "03-attachment.eml"))
    assert code == 0
    doc = json.loads(out)
    for key in ("from", "from_name", "to", "cc", "subject", "message_id", "date", "text",
                "attachments", "auto_submitted", "bounce", "route"):
        assert key in doc
    assert doc["from"] == "it@globex.example" and doc["from_name"] == "Globex IT"
    assert doc["date"] == "2026-11-23T11:30:00+00:00"
    assert doc["attachments"] == [{"filename": "Temperaturprotokoll März.csv",
                                   "content_type": "text/csv", "size": 22, "inline": False}]
    assert doc["route"]["outcome"] == "ticket_created"
    assert json.loads(run("tickets", "--config", config, "--json")[1]) == []


def test_accounts_csv_errors_name_the_line(demo: Path, cli_env: dict[str, str]) -> None:
    config = str(demo / "commit-email.toml")
    bad = demo / "bad.csv"
    bad.write_text("rec_id,file_as,kind,parent\nCRD1,Acme,account,\nCRD2,Bob,contact,\n")
    result = run_cli(["accounts", "--config", config, "import", str(bad)], cli_env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"commit-email: error: {bad}:3: a contact needs parent (its Account's rec_id)")
    bad.write_text("rec_id,file_as,colour\n")
    assert "unknown column 'colour'" in run_cli(
        ["accounts", "--config", config, "import", str(bad)], cli_env).stderr
    bad.write_text("file_as,kind,parent\nBob,contact,CRDNOPE\n")
    assert ":2: parent CRDNOPE is not a known Account" in run_cli(
        ["accounts", "--config", config, "import", str(bad)], cli_env).stderr


@pytest.mark.parametrize("toml,expected", [
    ("[pop3]\nhots = 'x'\n", "pop3: unknown key 'hots'"),
    ("[pop3\n", "invalid TOML"),
    ("[[automated.detection]]\nsubject_regex = '(['\n", "automated.detection[0].subject_regex"),
])
def test_config_errors_are_one_line_without_traceback(
    tmp_path: Path, cli_env: dict[str, str], toml: str, expected: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    result = run_cli(["check-config", "--config", str(path)], cli_env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_inputs_are_user_errors(demo: Path, cli_env: dict[str, str]) -> None:
    config = str(demo / "commit-email.toml")
    for args in (["process", "--config", config, str(demo / "nope.eml")],
                 ["inspect", "--config", config, str(demo / "nope.eml")],
                 ["tickets", "--config", str(demo / "nope.toml")]):
        result = run_cli(args, cli_env)
        assert result.returncode == 2, args
        assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_check_config_ok(demo: Path) -> None:
    code, out = run("check-config", "--config", str(demo / "commit-email.toml"))
    assert code == 0 and ": OK" in out and "builtin:commit_email.ticketing" in out


def test_process_reads_maildir_and_mbox(demo: Path, tmp_path: Path) -> None:
    import mailbox

    config = str(demo / "commit-email.toml")
    run("accounts", "--config", config, "import", str(demo / "accounts.csv"))
    messages = sorted((demo / "messages").glob("0[1-3]*.eml"))
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for m in messages[:2]:
        md.add(m.read_bytes())
    mb = mailbox.mbox(tmp_path / "inbox.mbox", create=True)
    mb.add(messages[2].read_bytes())
    mb.flush()
    code, out = run("process", "--config", config, "--json", str(tmp_path / "Maildir"),
                    str(tmp_path / "inbox.mbox"))
    assert code == 0
    outcomes = [json.loads(line) for line in out.splitlines()]
    assert [o["outcome"] for o in outcomes] == ["ticket_created"] * 3
    assert outcomes[-1]["source"].endswith("inbox.mbox#0")


def test_quarantine_list_and_replay(demo: Path) -> None:
    config = demo / "commit-email.toml"
    text = config.read_text()
    config.write_text(text.replace('state_dir = "./state"',
                                   'state_dir = "./state"\nmax_message_bytes = 300'))
    code, out = run("process", "--config", str(config), "--json",
                    str(demo / "messages" / "01-domain-match.eml"))
    assert json.loads(out)["outcome"] == "quarantined"
    code, out = run("quarantine", "--config", str(config), "--json", "list")
    [entry] = json.loads(out)
    assert "max_message_bytes" in entry["reason"]
    config.write_text(config.read_text().replace("max_message_bytes = 300", ""))
    run("accounts", "--config", str(config), "import", str(demo / "accounts.csv"))
    code, out = run("quarantine", "--config", str(config), "replay", entry["id"])
    assert code == 0 and json.loads(out)["outcome"] == "ticket_created"
    code, out = run("quarantine", "--config", str(config), "list")
    assert "[replayed: ticket_created]" in out


def test_a_replay_that_quarantines_again_marks_the_old_entry(demo: Path) -> None:
    config = demo / "commit-email.toml"
    text = config.read_text()
    config.write_text(text.replace('state_dir = "./state"',
                                   'state_dir = "./state"\nmax_message_bytes = 300'))
    run("process", "--config", str(config), str(demo / "messages" / "01-domain-match.eml"))
    code, out = run("quarantine", "--config", str(config), "--json", "list")
    [first] = json.loads(out)
    code, out = run("quarantine", "--config", str(config), "replay", first["id"])
    assert code == 1 and json.loads(out)["outcome"] == "quarantined"
    code, out = run("quarantine", "--config", str(config), "--json", "list")
    entries = {e["id"]: e for e in json.loads(out)}
    assert len(entries) == 2
    [second] = [e for e in entries.values() if e["id"] != first["id"]]
    assert entries[first["id"]]["resolved"] == f"quarantined again as {second['id']}"
    assert second["resolved"] == ""


@pytest.mark.parametrize("bad_id", ["x" * 300, "../../etc/passwd", "20261207T000000-abc/.."])
def test_a_bad_quarantine_id_is_one_line_not_a_traceback(
    demo: Path, cli_env: dict[str, str], bad_id: str
) -> None:
    result = run_cli(["quarantine", "--config", str(demo / "commit-email.toml"), "replay",
                      bad_id], cli_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no quarantine entry" in result.stderr


def test_accounts_round_trip_import_twice_export_and_compare(
    demo: Path, tmp_path: Path
) -> None:
    config = str(demo / "commit-email.toml")
    # The sample CSV has no rec_id column: the second import must match, not duplicate.
    assert run("accounts", "--config", config, "import", str(demo / "accounts.csv"))[0] == 0
    code, out = run("accounts", "--config", config, "import", str(demo / "accounts.csv"))
    assert code == 0 and "0 new, 6 updated" in out
    first = tmp_path / "first.csv"
    assert run("accounts", "export", str(first), "--config", config)[0] == 0
    exported = first.read_bytes().decode("utf-8")
    assert exported.count("\r\n") == 7  # the header and six cards, once each

    code, out = run("accounts", "--config", config, "import", str(first))
    assert code == 0 and "0 new, 6 updated" in out
    code, again = run("accounts", "--config", config, "export")  # to standard output
    assert code == 0 and again == exported
    rows = exported.splitlines()
    assert rows[0].startswith("rec_id,file_as,email1")
    assert all(row.split(",")[0].startswith("CRD") for row in rows[1:])


# -- one message per file, options anywhere, reading a ticket ----------------------------

def test_an_eml_file_is_one_message_even_with_from_lines_in_its_body(
    demo: Path, tmp_path: Path
) -> None:
    config = str(demo / "commit-email.toml")
    eml = tmp_path / "saved.eml"
    eml.write_bytes(
        b"From jane@customer.example Mon Dec  7 10:00:00 2026\n"
        b"From: Jane <jane@customer.example>\nTo: support@acme.example\n"
        b"Subject: Two paragraphs\nMessage-ID: <one-file@customer.example>\n\n"
        b"First paragraph.\n\nFrom what I can tell the printer is broken.\n"
    )
    code, output = run("process", "--config", config, "--json", str(eml))
    assert code == 0
    (line,) = output.splitlines()
    assert json.loads(line)["message_id"] == "one-file@customer.example"
    code, output = run("inspect", "--config", config, str(eml))
    assert code == 0
    assert "jane@customer.example" in output and "Two paragraphs" in output
    assert "From what I can tell" in output


def test_a_file_is_read_as_mbox_by_name_or_when_asked(demo: Path, tmp_path: Path) -> None:
    config = str(demo / "commit-email.toml")
    two = (b"From a@x Mon Dec  7 10:00:00 2026\nFrom: a@customer.example\nSubject: one\n"
           b"Message-ID: <m1@x>\n\nbody\n\n"
           b"From b@x Mon Dec  7 10:00:00 2026\nFrom: b@customer.example\nSubject: two\n"
           b"Message-ID: <m2@x>\n\nbody\n")
    (tmp_path / "archive").write_bytes(two)
    code, output = run("process", "--config", config, "--json", str(tmp_path / "archive"))
    assert code == 0 and len(output.splitlines()) == 1
    code, output = run("process", "--config", config, "--json", "--mbox",
                       str(tmp_path / "archive"))
    ids = [json.loads(line)["message_id"] for line in output.splitlines()]
    assert code == 0 and ids[-1] == "m2@x"


def test_version() -> None:
    from commit_email import __version__

    with pytest.raises(SystemExit) as exit_:
        run("--version")
    assert exit_.value.code == 0
    result = subprocess.run([sys.executable, "-m", "commit_email", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"commit-email {__version__}"


@pytest.mark.parametrize("argv", [
    ["--config", "{c}", "accounts", "import", "{csv}"],
    ["accounts", "--config", "{c}", "import", "{csv}"],
    ["accounts", "import", "{csv}", "--config", "{c}"],
    ["-v", "accounts", "import", "--config={c}", "{csv}"],
])
def test_config_is_accepted_before_or_after_the_command(demo: Path, argv: list[str]) -> None:
    values = {"c": str(demo / "commit-email.toml"), "csv": str(demo / "accounts.csv")}
    code, output = run(*(a.format(**values) for a in argv))
    assert code == 0 and "imported 6 cards" in output


def test_tickets_show_prints_history_and_documents(demo: Path) -> None:
    config = str(demo / "commit-email.toml")
    run("accounts", "import", str(demo / "accounts.csv"), "--config", config)
    code, _ = run("process", str(demo / "messages" / "03-attachment.eml"), "--config", config)
    assert code == 0
    code, listing = run("tickets", "--config", config)
    assert code == 0 and listing.splitlines()[0].split()[:2] == ["TICKET", "STATE"]
    code, output = run("tickets", "show", "1", "--json", "--config", config)
    assert code == 0
    ticket = json.loads(output)
    assert ticket["number"] == "1" and ticket["history"][0]["text"]
    assert {d["kind"] for d in ticket["documents"]} >= {"attachment"}
    assert all(d["size"] > 0 for d in ticket["documents"])
    code, text = run("--config", config, "tickets", "show", "1")
    assert code == 0 and "1 history entry" in text and ticket["description"] in text
    assert run("tickets", "show", "999", "--config", config)[0] == 2


def test_summaries_count_in_the_singular(demo: Path) -> None:
    config = str(demo / "commit-email.toml")
    code, output = run("process", "--config", config, str(demo / "messages" / "08-bounce.eml"))
    assert code == 0 and "\n1 message: 1 ignored" in output


@pytest.mark.parametrize(("csv_text", "line"), [
    # the quote opened on line 3 swallows line 4 into Bob's file_as
    ('file_as,email1\nAcme,acme.example\n"Bob Builder,bob@b.example\nCarol,carol@c.example\n',
     3),
    ('file_as,email1\nAcme,acme.example\nGlobex,"it@globex.example\n', 3),
])
def test_a_csv_with_an_unclosed_quote_is_rejected_whole_naming_the_line(
    demo: Path, tmp_path: Path, csv_text: str, line: int
) -> None:
    config = str(demo / "commit-email.toml")
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text)
    code, output = run("accounts", "import", str(bad), "--config", config)
    assert code == 2 and "imported" not in output
    code, _ = run("accounts", "import", str(demo / "accounts.csv"), "--config", config)
    assert code == 0
    from commit_email.config import load_config
    from commit_email.store import open_store

    cfg = load_config(config)
    names = {a.file_as for a in open_store(cfg.store.url, base_dir=cfg.base_dir).list_accounts()}
    assert "Bob Builder" not in names and "Globex" not in names  # nothing of the bad file
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stderr", err)
        run("accounts", "import", str(bad), "--config", config)
    assert f"{bad}:{line}:" in err.getvalue()


def test_importing_the_same_csv_twice_updates_instead_of_duplicating(
    demo: Path, tmp_path: Path
) -> None:
    config = str(demo / "commit-email.toml")
    csv_path = tmp_path / "no-ids.csv"
    csv_path.write_text("file_as,email1,account_number\nAcme,acme.example,A-1\n"
                        "Solo Shop,owner@solo.example,S-1\nNo Mail Ltd,,N-1\n")
    code, first = run("accounts", "import", str(csv_path), "--config", config)
    assert code == 0 and "3 new, 0 updated" in first
    csv_path.write_text("file_as,email1,account_number\nAcme,acme.example,A-2\n"
                        "Solo Shop,owner@solo.example,S-1\nno mail ltd,,N-2\n")
    code, second = run("accounts", "import", str(csv_path), "--config", config)
    assert code == 0 and "0 new, 3 updated" in second
    from commit_email.config import load_config
    from commit_email.store import open_store

    cfg = load_config(config)
    stored = open_store(cfg.store.url, base_dir=cfg.base_dir).list_accounts()
    assert sorted((a.file_as.lower(), a.account_number) for a in stored) == [
        ("acme", "A-2"), ("no mail ltd", "N-2"), ("solo shop", "S-1")]
    # the domain is still on one Account, so Acme's mail still opens tickets
    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: x@acme.example\nTo: support@acme.example\nSubject: help\n"
                     b"Message-ID: <twice@acme.example>\n\nplease\n")
    code, output = run("process", str(mail), "--config", config, "--json")
    assert json.loads(output)["outcome"] == "ticket_created"
