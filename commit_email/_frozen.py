"""Read-only mappings inside frozen attrs records (private: no stable API).

A frozen attrs class stops ``record.extra = {...}`` but not ``record.extra["X"] = "y"``
when the field is a plain dict: the record would change under whoever holds it (a store's
cache, a plugin, the next stage). :func:`frozen_mapping` copies the value into a new dict
and hands out a :class:`types.MappingProxyType` over it, so the record is frozen all the way
down. The copy matters: a proxy over the caller's own dict would still follow the caller's
later edits.

A ``mappingproxy`` cannot be pickled or deep-copied, so the records that hold one mix in
:class:`PicklesByFields`: they pickle as their class and field values (mappings as plain
dicts), and are rebuilt through ``__init__``, whose converter freezes the mapping again.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

import attrs

__all__ = ["PicklesByFields", "frozen_mapping"]


def frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of ``value`` (``None`` is an empty mapping): item assignment and
    deletion raise ``TypeError``. It compares equal to a dict with the same items."""
    return MappingProxyType(dict(value or {}))


def _rebuild(cls: type[Any], values: dict[str, Any]) -> Any:
    return cls(**values)


class PicklesByFields:
    """Pickling (and ``copy.deepcopy``) for a frozen attrs class with a frozen mapping field.

    The record is reduced to ``cls(**fields)``; the frozen mappings go as plain dicts. Only
    fields that ``__init__`` takes are passed, so every field must be an init field.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        values = {}
        for a in attrs.fields(cast("type[attrs.AttrsInstance]", type(self))):
            value = getattr(self, a.name)
            values[a.alias] = dict(value) if isinstance(value, MappingProxyType) else value
        return _rebuild, (type(self), values)
