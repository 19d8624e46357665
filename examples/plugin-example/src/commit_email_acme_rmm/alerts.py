"""An alert parser for the (fictional) Acme RMM's notification mails::

    Subject: [Acme RMM] FAILED: Disk space on C is low on ACME-DC01

    Acme RMM alert
    Status: FAILED
    Device: ACME-DC01
    Check: Disk space on C
    Alert ID: 48213
    Details: 4.8 GB free (5%)

The recovery has ``Status: RESOLVED`` and the same Alert ID, which is the correlation key.
"""

from __future__ import annotations

from commit_email.alerts import Alert, AlertState, field_lines
from commit_email.message import Message

STATES = {"FAILED": AlertState.PROBLEM, "WARNING": AlertState.PROBLEM,
          "RESOLVED": AlertState.RECOVERY}


class AcmeRmmParser:
    """``parse`` returns an Alert for an Acme RMM mail and None for any other mail."""

    name = "acme-rmm"

    def parse(self, message: Message) -> Alert | None:
        if not message.subject.startswith("[Acme RMM]"):
            return None
        fields = field_lines(message.text)
        device, check = fields.get("device", ""), fields.get("check", "")
        if not (device and check):
            return None  # an RMM newsletter or a report, not an alert
        status = fields.get("status", "").upper()
        return Alert(
            source=self.name,
            host=device,
            service=check,
            state=STATES.get(status, AlertState.OTHER),
            severity=status,
            output=fields.get("details", ""),
            external_id=fields.get("alert id", ""),
        )
