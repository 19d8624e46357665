"""The built-in mailboxes: the ``[pop3]`` and ``[imap]`` sections as
:class:`~commit_email.sources.Mailbox` objects, registered (``trylast``, like every built-in)
as the implementation of ``commit_email_register_sources``.

IMAPClient is imported only when an IMAP session is opened, so a configuration without
IMAP never needs the ``imap`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .config import ImapConfig
from .hookspecs import hookimpl
from .pop3 import Pop3Mailbox
from .sources import Mailbox

if TYPE_CHECKING:
    from .config import Config
    from .oauth import OAuthCredentials

__all__ = ["commit_email_register_sources", "imap_mailbox", "pop3_mailbox"]


@hookimpl(trylast=True)
def commit_email_register_sources(
    config: Config, credentials: OAuthCredentials
) -> Sequence[Mailbox]:
    """Every mailbox with a host: the ``[pop3]``/``[[pop3]]`` tables, then the
    ``[imap]``/``[[imap]]`` tables."""
    return [
        imap_mailbox(config.for_mailbox(m), credentials) if isinstance(m, ImapConfig)
        else pop3_mailbox(config.for_mailbox(m), credentials)
        for m in config.mailboxes
    ]


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


def imap_mailbox(config: Config, credentials: OAuthCredentials | None = None) -> Mailbox:
    """The ``[imap]`` section as a :class:`~commit_email.sources.Mailbox`; a missing
    ``imap`` extra is a :class:`~commit_email.errors.ConfigError` now, not at the first poll.
    An OAuth login takes its tokens from ``credentials`` (the cache outlives each session)."""
    from .imap import ImapMailbox, import_imapclient  # noqa: PLC0415 (the optional extra)

    import_imapclient()
    if credentials is None and config.imap.sasl_mechanism:
        from .oauth import OAuthCredentials  # noqa: PLC0415 - only when OAuth is used

        credentials = OAuthCredentials(config)

    def open_session() -> ImapMailbox:
        return ImapMailbox.from_config(config, credentials=credentials)

    cfg = config.imap
    return Mailbox(
        name=cfg.mailbox, kind="imap", open_session=open_session,
        poll_interval=cfg.poll_interval, reconnect_delay=cfg.reconnect_delay,
        reconnect_max_delay=cfg.reconnect_max_delay, once_attempts=cfg.once_attempts,
        messages_per_session=cfg.messages_per_session,
    )
