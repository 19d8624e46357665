"""Hostile mail: time and peak RSS per hostile input, against an ordinary mail of the same run.

Each input is processed by ``Connector.process`` (in-memory store, the XML API on, the
default ``message_time_limit``) in a fresh child process (``--child NAME``), so that one
input's memory does not hide the next one's; the child reads its own ``/proc/self/status``
(VmHWM is reset before the message through ``/proc/self/clear_refs``). Reported per input:
seconds, peak RSS growth over the RSS before the message, the outcome, and the time as a
multiple of the reference (an ordinary 3 KB customer mail, measured the same way).

Targets: every input under 5 s and under 200 MB of RSS growth, with a clear outcome.

    python benchmarks/hostile_bench.py            # full size (the inputs of the security issue)
    python benchmarks/hostile_bench.py --smoke    # a tenth of the size: checks outcomes only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/x.py``: import this checkout
    sys.path.insert(0, str(ROOT))

from benchmarks import common
from commit_email.testing import build_message, make_config, make_connector
from commit_email.xml_api import Transaction, render_transaction

PASSWORD = "bench-password"
TIME_TARGET_S = 5.0
RSS_TARGET_BYTES = 200 * 2**20


def _html_mail(html: str) -> bytes:
    return build_message(sender="eve@evil.example", subject="html", body="", html=html)


def _encoded_subject(scale: float) -> bytes:
    words = " ".join(["=?utf-8?q?Hilfe_=C3=A4?="] * int(200_000 * scale))
    return (f"From: eve@evil.example\r\nTo: support@msp.example\r\nSubject: {words}\r\n"
            "Message-ID: <subject@evil.example>\r\n\r\nHelp\r\n").encode()


def _guesses(scale: float) -> bytes:
    body = "\n".join(render_transaction(Transaction(
        external_application_name="x", send_response_to="eve@evil.example",
        password=f"guess-{n}", return_transaction_id=str(n), data_kind="ACCOUNT",
        fields={"FLDCRDFULLNAME": "Evil"})).decode() for n in range(int(2000 * scale)))
    return build_message(sender="eve@evil.example", subject="guesses", body=body)


def _deep_mime(scale: float) -> bytes:
    depth = int(500 * scale)
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{n}\r\n\r\n--b{n}\r\n"
                   for n in range(depth))
    return (f"From: eve@evil.example\r\nSubject: nest\r\nMIME-Version: 1.0\r\n{head}"
            "Content-Type: text/plain\r\n\r\nbottom\r\n").encode()


#: name -> builder(scale) of the raw message
INPUTS: dict[str, Callable[[float], bytes]] = {
    "reference": lambda scale: build_message(sender="jane@acme.example"),
    "html_unclosed_comments": lambda scale: _html_mail("<!--" * int(200_000 * scale)),
    "html_huge_attributes": lambda scale: _html_mail(
        "<p " + 'a="x" ' * int(8_000_000 * scale / 6) + ">hi</p>"),
    "html_many_lt": lambda scale: _html_mail("<" * int(8_000_000 * scale)),
    "subject_encoded_words": _encoded_subject,
    "xml_password_guesses": _guesses,
    "deep_mime_nesting": _deep_mime,
}


def child(name: str, scale: float) -> dict[str, object]:
    raw = INPUTS[name](scale)
    config = make_config(xml_api={"enabled": True, "password": PASSWORD})
    connector = make_connector(config)
    connector.process(build_message(sender="warm@up.example"))  # imports, caches
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = common.rss_bytes()
    start = time.perf_counter()
    outcome = connector.process(raw)
    seconds = time.perf_counter() - start
    return {"input": name, "bytes": len(raw), "seconds": round(seconds, 4),
            "rss_growth_bytes": common.peak_rss_bytes() - before,
            "outcome": outcome.kind.value, "detail": outcome.detail[:120]}


def run_child(name: str, scale: float) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, "--child", name, "--scale", str(scale)],
                         capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"hostile_bench child {name} failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tenth of the size")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.scale)))
        return 0

    scale = 0.1 if args.smoke else args.scale
    results = [run_child(name, scale) for name in INPUTS]
    reference = results[0]
    ref_s = max(float(str(reference["seconds"])), 1e-6)
    failures = []
    for result in results:
        result["x_reference_time"] = round(float(str(result["seconds"])) / ref_s, 1)
        if result["outcome"] == "quarantined" and result["input"] != "reference":
            # a clear outcome, but a time limit hit means the input was not handled in time
            failures.append(f"{result['input']} was quarantined: {result['detail']}")
    worst_s = max(float(str(r["seconds"])) for r in results)
    worst_rss = max(int(str(r["rss_growth_bytes"])) for r in results)
    met = worst_s < TIME_TARGET_S and worst_rss < RSS_TARGET_BYTES
    data = {"name": "hostile", "scale": scale, "results": results,
            "targets": {"seconds": TIME_TARGET_S, "rss_growth_bytes": RSS_TARGET_BYTES},
            "targets_met": met, "machine": common.machine()}
    lines = [f"  {r['input']:<24} {int(str(r['bytes'])) / 1e6:7.2f} MB  {r['seconds']:>7} s "
             f"({r['x_reference_time']}x ref)  +{int(str(r['rss_growth_bytes'])) / 2**20:6.1f} MB"
             f"  {r['outcome']}" for r in results]
    human = "\n".join(lines) + (
        f"\nhostile: worst {worst_s:.2f} s and +{worst_rss / 2**20:.1f} MB RSS per message "
        f"(targets < {TIME_TARGET_S:g} s, < {RSS_TARGET_BYTES / 2**20:.0f} MB): "
        f"{'met' if met else 'MISSED'}")
    common.print_report(data, human, json_out=args.json_out)
    if failures:
        raise SystemExit("hostile_bench: " + "; ".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
