"""The first stage: mail that must never open a ticket or get an answer.

Bounces (DSNs and other delivery reports) and auto-replies (``Auto-Submitted:
auto-replied``, out-of-office notices; :mod:`commit_email.verdicts` tells them) are
``ignored``, and so is mail that carries the connector's own loop header or comes from its
own address, which would otherwise start a loop. Auto-generated mail passes on: it can
still be an alert.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from .config import Config
from .hookspecs import hookimpl
from .message import Message
from .model import Outcome, OutcomeKind
from .outgoing import LOOP_HEADER
from .stages import FILTER_ORDER, FILTER_STAGE, Context, Stage
from .verdicts import bounce_or_auto_reply_reason

__all__ = ["FilterStage", "ignore_reason"]


def ignore_reason(message: Message, config: Config) -> str | None:
    """Why this message must be ignored, or None."""
    reason = bounce_or_auto_reply_reason(message)
    if reason is not None:
        return reason
    if message.header(LOOP_HEADER) is not None:
        return f"carries our own {LOOP_HEADER} header (mail loop)"
    own = config.connector.public_address.lower()
    if own and message.sender == own:
        return "sent from the connector's own address (mail loop)"
    return None


@frozen
class FilterStage:
    config: Config
    name: str = FILTER_STAGE
    order: int = FILTER_ORDER

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        reason = ignore_reason(message, self.config)
        if reason is None:
            return None
        ctx.note("ignored", reason)
        return Outcome(kind=OutcomeKind.IGNORED, detail=reason)


@hookimpl(trylast=True)
def commit_email_register_stages(config: Config) -> Sequence[Stage]:
    return [FilterStage(config)]
