"""Optional dependencies: imported only by the users who need them, with an error that says
which extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ConfigError

__all__ = ["require"]


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise a :class:`ConfigError` naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{feature} needs the {module!r} package: pip install 'commit-email[{extra}]' "
            f"({exc})"
        ) from None
