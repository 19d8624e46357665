"""Plus-addressing: mail to ``support+ACME-001@msp.example`` belongs to Account ACME-001.

Many MSPs give each customer its own address on the support mailbox (and point each
customer's RMM at it): the part after ``+`` is the Account's account number. The built-in
matcher only looks at the sender, so this one runs first and looks at the recipients.
"""

from __future__ import annotations

from commit_email import AccountDirectory, AccountKind, Config, Match, Message


def account_tag(message: Message, mailbox: str) -> str:
    """The ``+tag`` of the first To/Cc address that is ``mailbox`` with a tag, else ""."""
    user, _, domain = mailbox.lower().partition("@")
    for recipient in (*message.to, *message.cc):
        local, _, recipient_domain = recipient.address.lower().partition("@")
        base, plus, tag = local.partition("+")
        if plus and tag and base == user and recipient_domain == domain:
            return tag
    return ""


def match_by_tag(message: Message, directory: AccountDirectory, config: Config) -> Match | None:
    """The one active Account whose account number is the tag; None lets the next matcher try."""
    tag = account_tag(message, config.connector.public_address)
    if not tag:
        return None
    found = [
        card
        for card in directory.find_by_field("account_number", tag)
        if card.active and card.kind is AccountKind.ACCOUNT
    ]
    if len(found) != 1:  # an unknown or duplicated number: let the sender decide, never guess
        return None
    return Match(account=found[0], how="plugin")
