"""The built-in sender matcher, registered as the last ``match_account`` hook.

Order: the full From address against email1/email2 of Accounts, secondary contacts (which
resolve to their parent Account) and employees; only when nothing matched, a bare domain
typed into one of those fields, unless the sender's domain is a public mail domain. Two
different Accounts for one sender is an :class:`~commit_email.errors.AmbiguousMatch`,
never a guess. Inactive Cards are never matched.
"""

from __future__ import annotations

from collections.abc import Iterable

from .config import Config
from .errors import AmbiguousMatch
from .hookspecs import hookimpl
from .message import Message
from .model import Account, AccountKind, Match
from .protocols import AccountDirectory

__all__ = ["PUBLIC_DOMAINS", "match_sender", "public_domains"]

#: Mail domains anyone can sign up to: never matched by domain.
PUBLIC_DOMAINS: frozenset[str] = frozenset(
    """
    gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.de yahoo.fr ymail.com rocketmail.com
    outlook.com outlook.de hotmail.com hotmail.co.uk hotmail.de hotmail.fr live.com live.de
    msn.com aol.com aol.de icloud.com me.com mac.com gmx.de gmx.net gmx.com gmx.at gmx.ch
    web.de t-online.de freenet.de mail.com email.com protonmail.com proton.me pm.me
    zoho.com yandex.com yandex.ru mail.ru inbox.ru list.ru bk.ru qq.com 163.com 126.com
    sina.com naver.com daum.net hanmail.net orange.fr wanadoo.fr free.fr laposte.net sfr.fr
    libero.it virgilio.it tiscali.it btinternet.com sky.com comcast.net verizon.net att.net
    sbcglobal.net bellsouth.net cox.net charter.net earthlink.net juno.com shaw.ca rogers.com
    sympatico.ca bigpond.com optusnet.com.au xtra.co.nz seznam.cz wp.pl o2.pl onet.pl
    interia.pl bluewin.ch hushmail.com fastmail.com tutanota.com mailbox.org posteo.de
    """.split()
)


def public_domains(config: Config) -> frozenset[str]:
    """The built-in public domains plus ``[email_to_ticket] public_domains``."""
    extra = {d.strip().lower().lstrip("@") for d in config.email_to_ticket.public_domains}
    return PUBLIC_DOMAINS | extra


def _resolve(cards: Iterable[Account], directory: AccountDirectory, how: str) -> list[Match]:
    """Turn matched Cards into Matches: contacts resolve to their active parent Account."""
    matches: list[Match] = []
    for card in cards:
        if not card.active:
            continue
        if card.kind is AccountKind.CONTACT:
            parent = directory.get_account(card.parent) if card.parent else None
            if parent is None or not parent.active:
                continue
            matches.append(Match(account=parent, contact=card, how="contact"))
        elif card.kind is AccountKind.EMPLOYEE:
            matches.append(Match(account=card, how="employee"))
        else:
            matches.append(Match(account=card, how=how))
    return matches


def _single(matches: list[Match], what: str) -> Match | None:
    if not matches:
        return None
    accounts = {m.account.rec_id for m in matches}
    if len(accounts) > 1:
        names = ", ".join(sorted(f"{m.account.file_as or '?'} ({m.account.rec_id})"
                                 for m in {m.account.rec_id: m for m in matches}.values()))
        raise AmbiguousMatch(f"{what} matches several Accounts: {names}",
                             candidates=tuple(sorted(accounts)))
    # One Account: prefer the Match that names a contact (it says who wrote).
    return next((m for m in matches if m.contact is not None), matches[0])


def match_sender(message: Message, directory: AccountDirectory, config: Config) -> Match | None:
    """The Account (and contact) a message's sender belongs to, or None."""
    address = message.sender
    if not address or "@" not in address:
        return None
    found = _single(_resolve(directory.find_by_email(address), directory, "email"),
                    f"the address {address}")
    if found is not None:
        return found
    domain = address.rpartition("@")[2]
    if not config.email_to_ticket.match_domains or domain in public_domains(config):
        return None
    return _single(_resolve(directory.find_by_domain(domain), directory, "domain"),
                   f"the domain {domain}")


@hookimpl(trylast=True)
def commit_email_match_account(
    message: Message, directory: AccountDirectory, config: Config
) -> Match | None:
    return match_sender(message, directory, config)
