"""The mappings inside the frozen records (``Account.extra``, ``Ticket.extra``,
``TicketDraft.extra``, ``Alert.fields``, ``Transaction.fields``) are frozen too, and the
records still compare, copy and pickle as before (``run``'s worker processes are spawned)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from commit_email.alerts import Alert, AlertState
from commit_email.model import Account, AccountKind, Ticket, TicketDraft
from commit_email.xml_api import Transaction

WHEN = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)

#: (record class, the name of its mapping field, the other arguments it needs)
RECORDS: list[tuple[Callable[..., Any], str, dict[str, Any]]] = [
    (Account, "extra", {"rec_id": "A1", "kind": AccountKind.CONTACT, "parent": "A0"}),
    (TicketDraft, "extra", {"account": "A1", "description": "Printer"}),
    (Ticket, "extra", {"rec_id": "T1", "number": "0001", "account": "A1",
                       "description": "Printer", "created": WHEN, "updated": WHEN}),
    (Alert, "fields", {"source": "nagios", "host": "web01", "state": AlertState.PROBLEM}),
    (Transaction, "fields", {"data_kind": "TICKET", "password": "s3cret", "position": 2}),
]
IDS = [cls.__name__ for cls, _, _ in RECORDS]


def _build(cls: Callable[..., Any], name: str, others: dict[str, Any],
           mapping: Mapping[str, str]) -> Any:
    return cls(**others, **{name: mapping})


@pytest.mark.parametrize(("cls", "name", "others"), RECORDS, ids=IDS)
def test_the_mapping_refuses_mutation(cls: Callable[..., Any], name: str,
                                      others: dict[str, Any]) -> None:
    record = _build(cls, name, others, {"FLDCITY": "Springfield"})
    mapping = getattr(record, name)
    with pytest.raises(TypeError):
        mapping["FLDCITY"] = "Shelbyville"
    with pytest.raises(TypeError):
        del mapping["FLDCITY"]
    with pytest.raises(AttributeError):
        mapping.update({"FLDCITY": "Shelbyville"})
    assert mapping == {"FLDCITY": "Springfield"}


@pytest.mark.parametrize(("cls", "name", "others"), RECORDS, ids=IDS)
def test_the_mapping_is_a_copy(cls: Callable[..., Any], name: str,
                               others: dict[str, Any]) -> None:
    given = {"FLDCITY": "Springfield"}
    record = _build(cls, name, others, given)
    given["FLDCITY"] = "Shelbyville"
    given["FLDNEW"] = "x"
    assert getattr(record, name) == {"FLDCITY": "Springfield"}


@pytest.mark.parametrize(("cls", "name", "others"), RECORDS, ids=IDS)
def test_records_compare_evolve_copy_and_pickle(cls: Callable[..., Any], name: str,
                                                others: dict[str, Any]) -> None:
    record = _build(cls, name, others, {"FLDCITY": "Springfield"})
    same = _build(cls, name, others, {"FLDCITY": "Springfield"})
    other = _build(cls, name, others, {"FLDCITY": "Shelbyville"})
    assert record == same
    assert record != other

    changed = attrs.evolve(record, **{name: {**getattr(record, name), "FLDZIP": "49007"}})
    assert getattr(changed, name) == {"FLDCITY": "Springfield", "FLDZIP": "49007"}
    assert getattr(record, name) == {"FLDCITY": "Springfield"}

    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(record, protocol=protocol))
        assert type(back) is cls
        assert attrs.astuple(back, recurse=False) == attrs.astuple(record, recurse=False)
        with pytest.raises(TypeError):
            getattr(back, name)["FLDCITY"] = "Shelbyville"
    for copied in (copy.copy(record), copy.deepcopy(record)):
        assert attrs.astuple(copied, recurse=False) == attrs.astuple(record, recurse=False)
        with pytest.raises(TypeError):
            getattr(copied, name)["FLDCITY"] = "Shelbyville"


def test_a_missing_mapping_is_empty_and_frozen() -> None:
    account = Account(rec_id="A1")
    assert account.extra == {}
    with pytest.raises(TypeError):
        account.extra["FLDCITY"] = "Springfield"  # type: ignore[index]
