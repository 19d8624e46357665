"""What the XML API knows about Commit's records: the ten DataKinds and their field names.

Commit's XML API names every record field by its database field name (``FLDTKTPROBLEM``);
each DataKind has a REC ID field whose presence turns a transaction from "add" into
"update". ACCOUNT and TICKET fields are validated against the catalogues below;
the other kinds accept any well-formed Commit field name, because their schemas vary
between Commit versions and the store keeps them as plain name/value pairs.

Sources, checked while writing this (see ``docs/reference/xml-api.md``): the RangerMSP
(formerly Commit CRM) wiki "API Reference Manual" gives the DataKind table; an open-source
Python wrapper of Commit's programming API lists the FLDCRD*/FLDTKT* names used here and the
REC ID fields of ACCOUNT, TICKET, CHARGE, HISTORY-NOTE, ITEM and ASSET. The REC ID field
names of OPPORTUNITY, DOCUMENT, APPOINTMENT-OR-TASK and KBARTICLE follow the same
``FLD<prefix>RECID`` pattern but could not be confirmed from a public source.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

from attrs import frozen

__all__ = [
    "ACCOUNT_CATALOGUE",
    "DATA_KINDS",
    "TICKET_CATALOGUE",
    "DataKind",
    "DataKindInfo",
    "is_commit_field_name",
]


class DataKind(enum.StrEnum):
    """The ten XML DataKind names, as Commit spells them."""

    ACCOUNT = "ACCOUNT"
    OPPORTUNITY = "OPPORTUNITY"
    DOCUMENT = "DOCUMENT"
    CHARGE = "CHARGE"
    APPOINTMENT_OR_TASK = "APPOINTMENT-OR-TASK"
    HISTORY_NOTE = "HISTORY-NOTE"
    TICKET = "TICKET"
    ITEM = "ITEM"
    ASSET = "ASSET"
    KBARTICLE = "KBARTICLE"


@frozen(kw_only=True)
class DataKindInfo:
    """One DataKind: its Commit table, programming-API code and REC ID field."""

    kind: DataKind
    table: str
    code: int
    rec_id_field: str
    #: whether ``rec_id_field`` was confirmed from a public source (see module docstring)
    rec_id_verified: bool


DATA_KINDS: Mapping[str, DataKindInfo] = {
    info.kind.value: info
    for info in (
        DataKindInfo(kind=DataKind.ACCOUNT, table="Cards", code=10,
                     rec_id_field="FLDCRDRECID", rec_id_verified=True),
        DataKindInfo(kind=DataKind.OPPORTUNITY, table="Opps", code=20,
                     rec_id_field="FLDOPPRECID", rec_id_verified=False),
        DataKindInfo(kind=DataKind.DOCUMENT, table="Docs", code=30,
                     rec_id_field="FLDDOCRECID", rec_id_verified=False),
        DataKindInfo(kind=DataKind.CHARGE, table="Slips", code=40,
                     rec_id_field="FLDSLPRECID", rec_id_verified=True),
        DataKindInfo(kind=DataKind.APPOINTMENT_OR_TASK, table="Events", code=50,
                     rec_id_field="FLDEVTRECID", rec_id_verified=False),
        DataKindInfo(kind=DataKind.HISTORY_NOTE, table="Notebook", code=60,
                     rec_id_field="FLDHISRECID", rec_id_verified=True),
        DataKindInfo(kind=DataKind.TICKET, table="Tickets", code=70,
                     rec_id_field="FLDTKTRECID", rec_id_verified=True),
        DataKindInfo(kind=DataKind.ITEM, table="Items", code=80,
                     rec_id_field="FLDITMRECID", rec_id_verified=True),
        DataKindInfo(kind=DataKind.ASSET, table="Assets", code=90,
                     rec_id_field="FLDASTRECID", rec_id_verified=True),
        DataKindInfo(kind=DataKind.KBARTICLE, table="KBArticles", code=100,
                     rec_id_field="FLDKBARECID", rec_id_verified=False),
    )
}

#: Commit database field -> what it holds, for ACCOUNT (table Cards). The names mapped in
#: ``model.ACCOUNT_FIELDS`` become Account attributes; the others go to ``Account.extra``.
ACCOUNT_CATALOGUE: Mapping[str, str] = {
    "FLDCRDRECID": "Account REC ID (20 characters)",
    "FLDCRDFULLNAME": "File As (the Account's display name)",
    "FLDCRDCOMPANY": "Company",
    "FLDCRDCONTACT": "Contact name",
    "FLDCRDLASTNAME": "Last name",
    "FLDCRDDEAR": "Dear",
    "FLDCRDTITLE": "Title",
    "FLDCRDSUFFIX": "Salutation",
    "FLDCRDDEPARTMENT": "Department",
    "FLDCRDASSISTANT": "Assistant",
    "FLDCRDCARDID2": "Account #",
    "FLDCRDCARDID3": "ID",
    "FLDCRDSUBCODE": "Sub-contact code",
    "FLDCRDSUBCONTSTATUS": "Sub-contact status",
    "FLDCRDPERSONID": "Person ID",
    "FLDCRDKIND": "Type",
    "FLDCRDENTITYKIND": "Account type",
    "FLDCRDACCOUNTSTATUS": "Status (RangerMSP)",
    "FLDCRDASSIGNCARDID": "Account manager (employee REC ID)",
    "FLDCRDBCRECID": "Default contract REC ID",
    "FLDCRDEMAIL1": "Email 1",
    "FLDCRDEMAIL2": "Email 2",
    "FLDCRDURL1": "Web address 1",
    "FLDCRDURL2": "Web address 2",
    "FLDCRDPHONE1": "Phone 1",
    "FLDCRDPHONE2": "Phone 2",
    "FLDCRDPHONE3": "Phone 3",
    "FLDCRDPHONE4": "Phone 4",
    "FLDCRDPHNDESC1": "Phone 1 extension",
    "FLDCRDPHNDESC2": "Phone 2 extension",
    "FLDCRDPHNDESC3": "Phone 3 extension",
    "FLDCRDPHNDESC4": "Phone 4 extension",
    "FLDCRDFAX1": "Fax",
    "FLDCRDFAXDESC1": "Fax extension",
    "FLDCRDADDRESS1": "Address line 1",
    "FLDCRDADDRESS2": "Address line 2",
    "FLDCRDADDRESS3": "Address line 3",
    "FLDCRDCITY": "City",
    "FLDCRDSTATE": "State",
    "FLDCRDZIP": "Zip",
    "FLDCRDCOUNTRY": "Country",
    "FLDCRDREGIONCODE": "Region",
    "FLDCRDTAXCODE1": "Tax 1",
    "FLDCRDTAXCODE2": "Tax 2",
    "FLDCRDNOTES": "Notes",
    "FLDCRDCARDMESSAGE": "Pop-up message",
    "FLDCRDSHOWMESSAGE": "Show pop-up message",
    "FLDCRDDOCSFOLDER": "Document storage folder",
    "FLDCRDUSER1": "Status (user field 1)",
    "FLDCRDUSER2": "Field1",
    "FLDCRDUSER3": "Field2",
    "FLDCRDUSER4": "Field3",
    "FLDCRDUSER5": "Field4",
    "FLDCRDCREATEDATE": "Creation date",
    "FLDCRDCREATEUSERID": "Created by user",
    "FLDCRDUPDATEUSERID": "Last updated by user",
}

#: Commit database field -> what it holds, for TICKET (table Tickets). The names mapped in
#: ``model.TICKET_FIELDS`` become Ticket attributes; the others go to ``Ticket.extra``.
TICKET_CATALOGUE: Mapping[str, str] = {
    "FLDTKTRECID": "Ticket REC ID (20 characters)",
    "FLDTKTTICKETNO": "Ticket number (assigned by Commit; read-only)",
    "FLDTKTCARDID": "Account REC ID (required on add; the Account must exist)",
    "FLDTKTCONTACTID": "Contact REC ID",
    "FLDTKTPROBLEM": "Description (required on add)",
    "FLDTKTSTATUS": "Status",
    "FLDTKTPRIORITY": "Priority",
    "FLDTKTKIND": "Ticket type",
    "FLDTKTSOURCE": "Source",
    "FLDTKTWORKERID": "Manager (employee REC ID)",
    "FLDTKTBCRECID": "Contract REC ID",
    "FLDTKTASSETRECID": "Asset REC ID",
    "FLDTKTDUEDATETIME": "Due date",
    "FLDTKTSCHEDLENESTIM": "Estimated duration",
    "FLDTKTFORDISPATCH": "Show ticket in dispatcher",
    "FLDTKTSOLUTION": "Resolution",
    "FLDTKTCREATEUSER": "Created by user",
}

_FIELD_NAME = re.compile(r"FLD[A-Z0-9]{3,40}")


def is_commit_field_name(name: str) -> bool:
    """Whether ``name`` has the shape of a Commit database field name (``FLD`` + letters)."""
    return _FIELD_NAME.fullmatch(name) is not None
