"""Plugin code as an author writes it, fully typed; checked with ``mypy --strict``."""

from __future__ import annotations

from commit_email import (
    AccountDirectory,
    Config,
    Context,
    Match,
    Message,
    Outcome,
    OutcomeKind,
    hookimpl,
)
from commit_email.model import Account
from commit_email.testing import (
    HookRecorder,
    RecordingMailer,
    assert_valid_plugin,
    build_message,
    build_reply,
    make_connector,
    record_hooks,
)


class PlusAddressMatcher:
    """``support+ACME-001@msp.example`` goes to the Account whose account_number is ACME-001."""

    @hookimpl
    def commit_email_match_account(
        self, message: Message, directory: AccountDirectory, config: Config
    ) -> Match | None:
        for recipient in (*message.to, *message.cc):
            local = recipient.address.partition("@")[0]
            _, plus, tag = local.partition("+")
            if plus and tag:
                found = directory.find_by_field("account_number", tag)
                if len(found) == 1:
                    return Match(account=found[0], how="plugin")
        return None


class VipStage:
    """A pipeline stage before email to ticket: mail from the CEO is always forwarded."""

    name = "vip"
    order = 350

    def handle(self, message: Message, ctx: Context) -> Outcome | None:
        if message.sender != "ceo@msp.example":
            return None
        return ctx.forward(message, "the CEO's mail goes to a human", stage=self.name)


class VipPlugin:
    @hookimpl
    def commit_email_register_stages(self, config: Config) -> list[VipStage]:
        return [VipStage()]


def check() -> HookRecorder:
    assert assert_valid_plugin(PlusAddressMatcher()) == ["commit_email_match_account"]
    assert_valid_plugin(VipPlugin())
    acme = Account(rec_id="CRDACME", file_as="Acme", account_number="ACME-001")
    mailer = RecordingMailer()
    connector = make_connector(plugins=[PlusAddressMatcher(), VipPlugin()], accounts=[acme],
                               mailer=mailer)
    with record_hooks(connector) as calls:
        outcome = connector.process(build_message(to="support+ACME-001@msp.example"))
        reply = connector.process(build_reply(outcome.ticket or "0", to="support@msp.example"))
    assert outcome.kind is OutcomeKind.TICKET_CREATED and outcome.account == "CRDACME"
    assert reply.kind in (OutcomeKind.TICKET_UPDATED, OutcomeKind.FORWARDED)
    return calls
