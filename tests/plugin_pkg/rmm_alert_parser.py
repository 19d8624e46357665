"""An alert parser plugin for an RMM's alert mails (the format of tests/data/alerts/rmm-nable).

Subject ``Alert: <check> on <device> (Client: <client>) - Failed|Normal``, a body of
``Key: value`` lines with an ``Alert ID``. The alert id is the RMM's own problem number,
so it is the correlation key: a renamed device keeps its ticket.
"""

from __future__ import annotations

import re

from commit_email import hookimpl
from commit_email.alerts import Alert, AlertMail, AlertState, field_lines

_SUBJECT = re.compile(
    r"^Alert:\s*(?P<check>.+?)\s+on\s+(?P<device>\S+)\s+\(Client:\s*(?P<client>[^)]+)\)\s*-\s*"
    r"(?P<status>\w+)\s*$",
    re.IGNORECASE,
)
_STATES = {"failed": AlertState.PROBLEM, "normal": AlertState.RECOVERY}


class RmmParser:
    name = "rmm"

    def parse(self, message: AlertMail) -> Alert | None:
        m = _SUBJECT.match(message.subject)
        if m is None:
            return None
        fields = field_lines(message.text)
        status = m.group("status")
        return Alert(
            source=self.name,
            host=m.group("device"),
            service=m.group("check"),
            state=_STATES.get(status.lower(), AlertState.OTHER),
            severity=status,
            output=fields.get("details", ""),
            external_id=fields.get("alert id", ""),
            timestamp=message.date,
            fields={"client": m.group("client").strip()},
        )


class RmmPlugin:
    @hookimpl
    def commit_email_register_alert_parsers(self) -> list[RmmParser]:
        return [RmmParser()]


plugin = RmmPlugin()
