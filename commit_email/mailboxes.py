"""The built-in mailboxes: the ``[pop3]`` and ``[imap]`` sections as
:class:`~commit_email.sources.Mailbox` objects, registered (``trylast``, like every built-in)
as the implementation of ``commit_email_register_sources``.

IMAPClient is imported only when an IMAP session is opened, so a configuration without
IMAP never needs the ``imap`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .hookspecs import hookimpl
from .pop3 import Pop3Mailbox
from .sources import Mailbox

if TYPE_CHECKING:
    from .config import Config
    from .oauth import OAuthCredentials

__all__ = ["commit_email_register_sources", "pop3_mailbox"]


@hookimpl(trylast=True)
def commit_email_register_sources(
    config: Config, credentials: OAuthCredentials
) -> Sequence[Mailbox]:
    """The ``[pop3]`` mailbox when it has a host, or every ``[[pop3]]`` table."""
    return [pop3_mailbox(config.for_mailbox(m), credentials) for m in config.mailboxes]


def pop3_mailbox(config: Config, credentials: OAuthCredentials | None = None) -> Mailbox:
    """The ``[pop3]`` section as a :class:`~commit_email.sources.Mailbox`; an OAuth login
    takes its tokens from ``credentials`` (the cache outlives each session)."""
    if credentials is None and config.pop3.sasl_mechanism:
        from .oauth import OAuthCredentials  # noqa: PLC0415 - only when OAuth is used

        credentials = OAuthCredentials(config)

    def open_session() -> Pop3Mailbox:
        return Pop3Mailbox.from_config(config, credentials=credentials)

    cfg = config.pop3
    return Mailbox(
        name=cfg.mailbox, kind="pop3", open_session=open_session,
        poll_interval=cfg.poll_interval, reconnect_delay=cfg.reconnect_delay,
        reconnect_max_delay=cfg.reconnect_max_delay, once_attempts=cfg.once_attempts,
        messages_per_session=cfg.messages_per_session,
    )

