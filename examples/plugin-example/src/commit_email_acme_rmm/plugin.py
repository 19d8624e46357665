"""The plugin object: this module, registered through the ``commit_email`` entry point.

Each hook takes only the arguments it needs (pluggy passes them by name) and none has a
default value (pluggy would never pass it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from commit_email import AccountDirectory, Config, Match, Message, hookimpl
from commit_email.xml_actions import XmlAction

from .alerts import AcmeRmmParser
from .matching import match_by_tag
from .xml_actions import add_device


@hookimpl
def commit_email_match_account(
    message: Message, directory: AccountDirectory, config: Config
) -> Match | None:
    return match_by_tag(message, directory, config)


@hookimpl
def commit_email_register_alert_parsers() -> Sequence[AcmeRmmParser]:
    return [AcmeRmmParser()]


@hookimpl
def commit_email_register_xml_actions() -> Mapping[str, XmlAction]:
    return {"RMM-DEVICE": add_device}
