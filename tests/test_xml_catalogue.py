"""The DataKind table and the ACCOUNT/TICKET field catalogues."""

from commit_email.model import ACCOUNT_FIELDS, TICKET_FIELDS
from commit_email.xml_catalogue import (
    ACCOUNT_CATALOGUE,
    DATA_KINDS,
    TICKET_CATALOGUE,
    DataKind,
    is_commit_field_name,
)


def test_the_catalogues_cover_every_field_the_model_maps():
    assert set(ACCOUNT_FIELDS) <= set(ACCOUNT_CATALOGUE)
    assert set(TICKET_FIELDS) <= set(TICKET_CATALOGUE)


def test_there_are_ten_data_kinds_each_with_its_own_rec_id_field():
    assert sorted(DATA_KINDS) == sorted(kind.value for kind in DataKind)
    assert len(DATA_KINDS) == 10
    rec_ids = [info.rec_id_field for info in DATA_KINDS.values()]
    assert len(set(rec_ids)) == 10
    assert all(is_commit_field_name(name) and name.endswith("RECID") for name in rec_ids)
    assert DATA_KINDS["ACCOUNT"].rec_id_field == "FLDCRDRECID"
    assert DATA_KINDS["TICKET"].rec_id_field == "FLDTKTRECID"
    assert DATA_KINDS["CHARGE"].rec_id_field == "FLDSLPRECID"


def test_programming_codes_follow_commits_table():
    assert [info.code for info in DATA_KINDS.values()] == list(range(10, 101, 10))


def test_field_name_shape():
    assert is_commit_field_name("FLDTKTPROBLEM")
    assert not is_commit_field_name("fldtktproblem")
    assert not is_commit_field_name("PROBLEM")
    assert not is_commit_field_name("FLD")
