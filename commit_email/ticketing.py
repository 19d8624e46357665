"""Email to ticket: a matched sender opens a ticket; an employee is forwarded."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from .config import Config
from .errors import AmbiguousMatch
from .hookspecs import hookimpl
from .message import Message
from .model import Outcome, OutcomeKind
from .stages import EMAIL_TO_TICKET_ORDER, EMAIL_TO_TICKET_STAGE, Context, Stage

__all__ = ["EmailToTicketStage"]


@frozen
class EmailToTicketStage:
    name: str = EMAIL_TO_TICKET_STAGE
    order: int = EMAIL_TO_TICKET_ORDER

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        try:
            match = ctx.match_sender(message)
        except AmbiguousMatch as exc:
            ctx.note("match", f"ambiguous: {exc}")
            return ctx.forward(message, f"ambiguous sender: {exc}", stage=self.name)
        if match is None:
            ctx.note("match", f"no Account for {message.sender or '(no sender)'}")
            return None
        ctx.note("match", f"{match.how}: {match.account.file_as} ({match.account.rec_id})"
                 + (f", contact {match.contact.file_as}" if match.contact else ""))
        if match.is_employee:
            return ctx.forward(
                message, "employee mail without a ticket number", account=match.account.rec_id,
                stage=self.name,
            )
        ticket = ctx.open_ticket(message, match)
        return Outcome(
            kind=OutcomeKind.TICKET_CREATED,
            detail=f"sender matched by {match.how}",
            ticket=ticket.number,
            account=match.account.rec_id,
        )


@hookimpl(trylast=True)
def commit_email_register_stages(config: Config) -> Sequence[Stage]:
    return [EmailToTicketStage()] if config.email_to_ticket.enabled else []
