"""The alert mails of ``tests/data/alerts`` as parsed messages, for parser and stage tests."""

from __future__ import annotations

from pathlib import Path

from commit_email.message import Message

ALERTS = Path(__file__).parent / "data" / "alerts"


def alert_path(name: str) -> Path:
    """``"nagios/service-1-problem"`` -> the .eml file."""
    return ALERTS / f"{name}.eml"


def alert_message(name: str) -> Message:
    return Message.from_bytes(alert_path(name).read_bytes())


def sequence(folder: str, prefix: str) -> list[str]:
    """The names of one PROBLEM -> repeat -> RECOVERY -> PROBLEM sequence, in order."""
    return sorted(
        f"{folder}/{p.stem}" for p in (ALERTS / folder).glob(f"{prefix}-*.eml")
    )
