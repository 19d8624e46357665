"""Every message of the shared third-party corpus gets exactly one outcome through process."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

from commit_email.cli import main
from tests.corpus import corpus_messages, require_corpus

#: Files of the corpus that are delivery reports (DSNs, read receipts, complaints): ignored.
BOUNCES = {
    "flanker/bounce/broken-mime.eml", "flanker/bounce/delayed.eml",
    "flanker/bounce/delayed-broken.eml", "flanker/bounce/gmail-invalid-address.eml",
    "flanker/bounce/gmail-no-dns.eml", "flanker/bounce/mailbox-full.eml",
    "flanker/bounce/no-mx.eml", "flanker/bounce/office365.eml", "flanker/bounce/zed.eml",
    "nodemailer-mailparser/delivery-status.eml", "flanker/complaints/aol.eml",
    "flanker/complaints/yahoo.eml", "flanker/disposition-notification.eml",
}
#: Not RFC 822 at all: an Outlook .msg (OLE compound file) dropped among the mail.
# Not RFC 822 messages: an Outlook .msg file, a digest's headerless preamble and two
# header-less texts (mime4j's "message not having headers" cases). They are quarantined,
# kept byte for byte, rather than forwarded to a human as if they were mail.
NOT_MAIL = {
    "spamscope-mail-parser/mail_outlook_1",
    "cpython-test_email/msg_19.txt",
    "mime4j/testmsgs/malformedHeader-noheader.msg",
    "mime4j/testmsgs/malformedHeaderStartsBody-noheader.msg",
}


def test_every_corpus_message_gets_exactly_one_outcome(tmp_path: Path) -> None:
    root = require_corpus()
    files = corpus_messages(root)
    assert len(files) >= 200
    config = tmp_path / "c.toml"
    config.write_text(f'[connector]\nstate_dir = "{tmp_path}/state"\n'
                      'internal_address = "helpdesk@msp.example"\n'
                      f'[store]\nurl = "sqlite:///{tmp_path}/commit.db"\n')
    out = io.StringIO()
    assert main(["process", "--config", str(config), "--json", *map(str, files)], out=out) == 0
    results = [json.loads(line) for line in out.getvalue().splitlines()]
    sources = [r["source"] for r in results]
    assert len(sources) == len(set(sources))  # one outcome per message
    # Every file is there, in order, each one message (mbox only by name).
    assert list(dict.fromkeys(s.split("#")[0] for s in sources)) == [str(f) for f in files]
    tally = Counter(r["outcome"] for r in results)
    print("\ncorpus tally:", dict(sorted(tally.items())), "of", len(results))
    by_name = {str(Path(r["source"].split("#")[0]).relative_to(root)): r for r in results}
    for name in BOUNCES:
        assert by_name[name]["outcome"] == "ignored", name
    quarantined = {name for name, r in by_name.items() if r["outcome"] == "quarantined"}
    assert quarantined == NOT_MAIL
    assert "Outlook .msg" in by_name["spamscope-mail-parser/mail_outlook_1"]["detail"]
